"""A user's own model with state (BatchNorm, Dropout, an output layer registered first): the
output layer found by tracing, methods that need features, the per-sample Fisher's paths,
teachers and snapshots that copy buffers, and the small faults of issues #10 and #15."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from obliviate.continual import strategy_class
from obliviate.continual.loop import train_stream
from obliviate.continual.penalties import (
    diagonal_fisher,
    fisher_path,
    per_sample_grads,
    per_sample_path,
)
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.models import MLP
from obliviate.models.base import seeded_init
from obliviate.models.output_layer import OutputLayerView, feature_model, find_output_layer
from obliviate.testing.models import UserCNN
from obliviate.testing.strategies import _Watched, tiny_setup
from obliviate.testing.unlearners import toy_setup
from obliviate.unlearning import make_unlearner, unlearner_class
from obliviate.unlearning._ops import frozen_copy
from obliviate.unlearning._output_layer import output_layer


def user_cnn(seed: int = 0, **kw) -> UserCNN:
    with seeded_init(seed):
        return UserCNN(**kw)


def images(n: int = 12, side: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, side, side, generator=g), torch.randint(0, 4, (n,), generator=g)


def buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b.detach().clone() for b in model.buffers()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ---- the output layer, found by what produces the logits ---------------------------------------
def test_output_layer_is_the_layer_that_produces_the_logits_not_the_last_registered():
    model = user_cnn()
    x, _ = images()
    assert list(dict(model.named_modules()))[1] == "out"  # registered first: a trap
    name, layer = find_output_layer(model, x, owner="test")
    assert name == "out" and layer is model.out
    assert output_layer(model, 4, "test", x) is model.out
    view = feature_model(model, x)
    assert isinstance(view, OutputLayerView) and view.feature_dim == 16 and view.n_classes == 4
    model.eval()
    with torch.no_grad():
        assert torch.equal(view.classify(view.features(x)), model(x))
        assert torch.equal(view(x), model(x))


def test_tracing_leaves_batchnorm_statistics_and_modes_alone():
    model = user_cnn()
    model.bn1d.eval()  # the user froze one BatchNorm
    before, modes = buffers(model), [m.training for m in model.modules()]
    find_output_layer(model, images()[0], owner="test")
    assert same(before, buffers(model))
    assert [m.training for m in model.modules()] == modes


def test_a_model_whose_logits_are_post_processed_is_refused_in_one_line():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log_softmax(self.fc(x.flatten(1)), dim=1)

    with pytest.raises(ObliviateError, match="nn.Linear") as err:
        find_output_layer(Scaled(), images()[0], owner="SCAR")
    assert "\n" not in str(err.value) and "SCAR" in str(err.value)


# ---- methods that need features, on a user model ------------------------------------------------
@pytest.mark.parametrize("name", ["scar", "upcore", "newton"])
def test_feature_methods_run_on_a_user_model_and_declare_what_they_need(name):
    toy = toy_setup("user")
    out = make_unlearner(name).unlearn(toy.original, toy.request)
    assert out(toy.test.x[:3]).shape == (3, 4)
    assert unlearner_class(name).model_requirement


def test_newton_on_a_users_single_head_mlp_counts_its_head_right():
    train, _ = toy_setup().train, None
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    request = toy_setup().request
    out = make_unlearner("newton").unlearn(model, request)
    assert out[2].weight.shape == (4, 32) and len(train) > 0
    no_bias = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4, bias=False))
    with pytest.raises(ObliviateError, match="no bias"):
        make_unlearner("newton").unlearn(no_bias, request)


def test_strategy_and_unlearner_listings_say_what_the_model_needs(capsys, monkeypatch):
    from obliviate.cli.main import main

    monkeypatch.setenv("COLUMNS", "300")
    assert main(["list", "strategies"]) == 0
    assert "model needs" in capsys.readouterr().out
    assert strategy_class("pnn").model_requirement
    assert "nn.Linear" in strategy_class("icarl").model_requirement  # features: traced
    assert strategy_class("ewc").model_requirement is None  # any classifier
    assert main(["list", "unlearners"]) == 0
    out = capsys.readouterr().out
    assert "model needs" in out and "nn.Linear" in out


# ---- per-sample gradients and the Fisher --------------------------------------------------------
def test_per_sample_paths_agree_on_a_cnn_with_batchnorm():
    model = user_cnn().eval()
    x, y = images(6)
    loop = per_sample_grads(model, x, y, path="loop")
    batched = per_sample_grads(model, x, y, path="batched")
    for k in loop:
        assert torch.allclose(loop[k], batched[k], rtol=1e-4, atol=1e-6), k
    true_loop = per_sample_grads(model, x[:3], None, path="loop")
    true_batched = per_sample_grads(model, x[:3], None, path="batched")
    for k in true_loop:
        assert torch.allclose(true_loop[k], true_batched[k], rtol=1e-4, atol=1e-6), k


@pytest.mark.slow  # the first vmap call imports torch._dynamo (~6 s)
def test_vmap_path_agrees_with_the_loop():
    model = user_cnn().eval()
    x, y = images(5)
    loop = per_sample_grads(model, x, y, path="loop")
    vm = per_sample_grads(model, x, y, path="vmap")
    for k in loop:
        assert torch.allclose(loop[k], vm[k], rtol=1e-4, atol=1e-6), k
    data = Dataset(x, y, torch.arange(5), 4)
    a = diagonal_fisher(model, data, vectorised=False)
    from obliviate.continual.penalties import _fisher_by

    b = _fisher_by(model, data, "vmap")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-9) for k in a)


def test_the_fisher_path_is_the_measured_choice():
    mlp = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    cnn = user_cnn()
    assert fisher_path(mlp, 100) == "linear"  # exact closed form: every parameter in nn.Linear
    assert fisher_path(cnn, 100) == "loop"  # conv + BatchNorm: the loop beats the batched pass
    assert fisher_path(cnn, 4096) == "vmap"  # enough rows to repay vmap's set-up
    assert per_sample_path(mlp, 100) == "batched"
    assert per_sample_path(cnn, 4096, torch.zeros(4096, dtype=torch.int64)) == "loop"  # task ids
    batch_stats = nn.Sequential(
        nn.Linear(16, 8),
        nn.BatchNorm1d(8, affine=False, track_running_stats=False),
        nn.Linear(8, 4),
    )
    assert fisher_path(batch_stats, 100) == "loop"  # rows interact even in eval mode: not exact


def test_diagonal_fisher_on_batchnorm_and_dropout_is_eval_mode_and_leaves_the_model_alone():
    model = user_cnn()
    model.bn2d.eval()  # a frozen BatchNorm must stay frozen
    model.hidden.weight.requires_grad_(False)  # a frozen parameter gets no entry
    x, y = images(10)
    data = Dataset(x, y, torch.arange(10), 4)
    before, modes = buffers(model), [m.training for m in model.modules()]
    fast = diagonal_fisher(model, data)
    ref = diagonal_fisher(model, data, vectorised=False)
    assert same(before, buffers(model)) and [m.training for m in model.modules()] == modes
    assert "hidden.weight" not in fast and "bn1d.weight" in fast
    assert all(torch.allclose(fast[k], ref[k], rtol=1e-4, atol=1e-10) for k in ref)
    # eval mode: Dropout off, BatchNorm on running statistics -> each row's own gradient
    model.eval()
    one = diagonal_fisher(model, dataclasses.replace(data).subset(torch.arange(1)))
    alone = per_sample_grads(model, x[:1], y[:1], path="loop")
    assert torch.allclose(one["out.weight"], alone["out.weight"][0] ** 2, rtol=1e-5)


# ---- teachers and snapshots copy buffers --------------------------------------------------------
@pytest.mark.parametrize(
    "name, attr",
    [("lwf", "teacher_"), ("icarl", "old_model_"), ("lucir", "old_model_"), ("bic", "teacher_")],
)
def test_continual_teachers_copy_batchnorm_statistics(name, attr):
    cls = strategy_class(name)
    setup = tiny_setup(cls, model="user")
    model = setup.model()
    strategy = cls()
    checked = []

    def watch(event, i, _batch):
        if event == "begin" and i == 1:
            teacher = getattr(strategy, attr)
            assert teacher is not None and teacher is not model
            assert same(buffers(model), buffers(teacher))  # running mean/var and counts too
            assert any(b.abs().sum() > 0 for b in teacher.buffers())
            checked.append(teacher)

    train_stream(model, setup.stream, _Watched(strategy, watch), setup.config)
    assert checked


def test_unlearning_teachers_and_checkpoints_hold_buffers():
    toy = toy_setup("user")
    teacher = frozen_copy(toy.original)
    assert same(buffers(teacher), buffers(toy.original))
    with torch.no_grad():
        next(teacher.buffers()).add_(1.0)  # an independent copy
    assert not same(buffers(teacher), buffers(toy.original))
    assert {k for k, _ in toy.original.named_buffers()} <= set(toy.original.state_dict())
    model = copy.deepcopy(toy.original)
    assert same(buffers(model), buffers(toy.original))


# ---- #15: SCRUB's rewind target -----------------------------------------------------------------
def test_scrub_rewind_target_without_rewind_is_an_error():
    from obliviate.unlearning.scrub import SCRUB

    with pytest.raises(ObliviateError, match="rewind=True"):
        SCRUB(rewind_target=0.5)
    SCRUB(rewind=True, rewind_target=0.5)


def test_speedup_figure_is_meaningful_when_a_method_is_slower_than_retraining():
    from obliviate.cli.forget import speedup_text

    def cell(values, fmt="{:.3f}"):
        return fmt.format(values[0])

    slow = speedup_text([0.0123], [0.02], cell)
    assert "0.012x" in slow and "slower than retraining" in slow and "0.0x" not in slow
    assert speedup_text([25.3], [20.1], cell) == "speed-up vs retraining 25x (CPU time 20x)"


def test_mlp_is_still_single_head_for_newton():  # the built-in head is found too
    with seeded_init(0):
        model = MLP(8, 4, (16,))
    view = feature_model(model)
    assert view is model


class _ScaledLogits(UserCNN):
    """Logits scaled after the last nn.Linear: no layer's output *is* the model's output."""

    def forward(self, x):
        return 2.0 * super().forward(x)


def test_scaled_logits_are_refused_every_time():
    """The trace matched layers by id() of their outputs; a freed intermediate's id could be
    reused by the model's output, so a hidden layer was taken as the output layer in about
    four tries of five."""
    torch.manual_seed(0)
    for _ in range(20):
        model = _ScaledLogits()
        with pytest.raises(ObliviateError, match="something else"):
            find_output_layer(model, torch.randn(4, 1, 4, 4), owner="test")
