"""A user's own model with state (BatchNorm, Dropout, a forward that takes ``x`` only):
evaluation gives every submodule back its own mode, and no trainer ever builds a one-row batch,
so whether a run works never depends on ``len(data) % batch_size``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from obliviate.continual import make_strategy
from obliviate.continual.loop import train_stream
from obliviate.data import build_scenario, synthetic_dataset
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.training import TrainConfig, accuracy, batches, eval_mode, fit, min_batch_rows
from obliviate.unlearning import make_unlearner
from obliviate.unlearning.base import ForgetRequest
from obliviate.unlearning.evaluate import relearn_steps


def user_model(n_features: int = 8, n_classes: int = 4, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(n_features, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(16, n_classes),
    )  # fmt: skip


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Dataset]:
    return synthetic_dataset(n_classes=4, n_per_class=60, n_features=8, seed=0)


def test_eval_mode_restores_each_submodules_own_mode():
    model = user_model()
    model[1].eval()  # the user froze the BatchNorm
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert model.training and not model[1].training and model[3].training


@pytest.mark.parametrize("strategy", ["naive", "ewc", "mas"])
def test_a_frozen_batchnorm_stays_frozen_through_train_stream(data, strategy):
    """Issue example: after the first accuracy call the BatchNorm was in training mode again
    and its running mean drifted by 0.146; expected 0."""
    train, test = data
    model = user_model()
    model[1].eval()
    before = model[1].running_mean.clone()
    stream = build_scenario("class-incremental", train, test, n_experiences=2, seed=0)
    config = TrainConfig(n_epochs=1, batch_size=16, lr=0.05, seed=0)
    train_stream(model, stream, make_strategy(strategy), config)
    assert not model[1].training
    assert torch.equal(model[1].running_mean, before)


def test_min_batch_rows_and_batches():
    model = user_model()
    assert min_batch_rows(model) == 2
    model.eval()
    assert min_batch_rows(model) == 1
    assert min_batch_rows(nn.Linear(2, 2)) == 1
    d = Dataset.from_arrays(torch.randn(66, 3), torch.arange(66) % 2)
    sizes = [len(b.y) for b in batches(d, 65, torch.Generator().manual_seed(0), min_rows=2)]
    assert sizes == [66]
    sizes = [len(b.y) for b in batches(d, 65, torch.Generator().manual_seed(0))]
    assert sizes == [65, 1]  # unchanged without BatchNorm: every figure measured stays the same
    rows = torch.cat(
        list(b.ids for b in batches(d, 65, torch.Generator().manual_seed(0), min_rows=2))
    )
    assert sorted(rows.tolist()) == list(range(66))


def test_fit_with_batchnorm_and_a_trailing_single_row(data):
    """Issue example: an experience of 66 rows at batch 65 crashed (one row per channel)."""
    train, _ = data
    part = train.subset(torch.arange(66))
    model = fit(user_model(), part, TrainConfig(n_epochs=2, batch_size=65, lr=0.05, seed=0))
    assert accuracy(model, part) > 0.25


@pytest.mark.parametrize("method", ["gradient_ascent", "neggrad_plus", "scrub", "finetune"])
def test_unlearners_with_batchnorm_and_n_mod_batch_size_1(data, method):
    """Forgetting 33 rows (32 + 1) at batch 32 crashed gradient_ascent, neggrad_plus, scrub and
    the relearn attack on a BatchNorm model while 32 rows worked."""
    train, _ = data
    model = fit(user_model(), train, TrainConfig(n_epochs=2, batch_size=32, lr=0.05, seed=0))
    ids = train.ids[:33]
    request = ForgetRequest.from_ids(train, ids)
    out = make_unlearner(method).unlearn(model, request)
    assert all(torch.isfinite(p).all() for p in out.parameters())
    assert relearn_steps(out, request.forget, 1.1, cap=3) == 3  # runs, 2 batches per pass


def test_a_diverging_unlearner_stops_with_a_one_line_error(data):
    from obliviate.training import Diverged

    train, _ = data
    model = fit(user_model(), train, TrainConfig(n_epochs=1, batch_size=32, lr=0.05, seed=0))
    request = ForgetRequest.from_ids(train, train.ids[:40])
    with pytest.raises(Diverged, match=r"GradientAscent diverged.*lr=1e\+30"):
        make_unlearner("gradient_ascent", lr=1e30, n_epochs=3).unlearn(model, request)


def test_finite_weights_with_overflowing_outputs_count_as_diverged(data, monkeypatch):
    """JiT on MNIST left finite weights so large that the logits overflowed; the evaluation then
    died in scikit-learn ("Input X contains NaN") instead of saying the method diverged."""
    from obliviate.training import Diverged
    from obliviate.unlearning.finetune import Finetune

    train, _ = data
    model = fit(user_model(), train, TrainConfig(n_epochs=1, batch_size=32, lr=0.05, seed=0))
    request = ForgetRequest.from_ids(train, train.ids[:40])

    def blow_up(self, model, request):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1e30)  # finite (< 3.4e38) but the logits overflow to inf
        return model

    monkeypatch.setattr(Finetune, "_unlearn", blow_up)
    with pytest.raises(Diverged, match="Finetune diverged: the weights or outputs"):
        make_unlearner("finetune").unlearn(model, request)


def test_a_diverging_stream_stops_with_a_clear_error(data):
    from obliviate.training import Diverged

    train, test = data
    stream = build_scenario("class-incremental", train, test, n_experiences=2, seed=0)
    with pytest.raises(Diverged, match="EWC diverged"):
        config = TrainConfig(n_epochs=3, batch_size=16, lr=1e30, seed=0)
        train_stream(user_model(), stream, make_strategy("ewc"), config)


class TaskAwareUserModel(nn.Module):
    """A user's multi-head model: one head per task, chosen by the ``task`` keyword."""

    def __init__(self, n_features: int = 64, n_tasks: int = 5, n_classes: int = 10) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(n_features, 32), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(32, n_classes) for _ in range(n_tasks))
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(x)
        if task is None:
            return self.heads[0](h)
        self.seen.append(int(task[0]))
        return torch.stack([self.heads[int(t)](h[i]) for i, t in enumerate(task)])


def test_a_user_model_on_task_ids_receives_them_or_is_refused():
    """Issue example: PackNet on task-incremental digits with a user's nn.Sequential trained
    single-head without a word (ACC 0.585 against 0.992 multi-head)."""
    from obliviate.data.datasets import load_dataset
    from obliviate.errors import ObliviateError

    train, test = load_dataset("digits", limit=300)
    stream = build_scenario("task-incremental", train, test, n_experiences=5, seed=0)
    config = TrainConfig(n_epochs=1, batch_size=32, lr=0.05, seed=0)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with pytest.raises(ObliviateError, match="takes no `task` argument"):
        train_stream(plain, stream, make_strategy("packnet"), config)
    model = TaskAwareUserModel()
    train_stream(model, stream, make_strategy("naive"), config)
    assert set(model.seen) == {0, 1, 2, 3, 4}


def test_dropout_runs_are_reproducible_from_the_seed(data):
    """A user model with Dropout: train_stream and SCRUB gave different weights on every run
    (dropout drew from torch's global generator); now the seed fixes the masks."""
    train, test = data
    stream = build_scenario("class-incremental", train, test, n_experiences=2, seed=0)
    config = TrainConfig(n_epochs=1, batch_size=16, lr=0.05, seed=0)
    states = []
    for _ in range(2):
        model = user_model()  # same init (seeded)
        torch.manual_seed(len(states) + 123)  # then a different global state for each run
        train_stream(model, stream, make_strategy("naive"), config)
        request = ForgetRequest.from_ids(train, train.ids[:20])
        states.append(make_unlearner("scrub", n_epochs=2).unlearn(model, request).state_dict())
    for a, b in zip(states[0].values(), states[1].values(), strict=True):
        assert torch.equal(a, b)


def test_a_one_row_forget_set_on_batchnorm_is_a_clear_error(data):
    from obliviate.errors import ObliviateError

    train, _ = data
    model = fit(user_model(), train, TrainConfig(n_epochs=1, batch_size=32, lr=0.05, seed=0))
    request = ForgetRequest.from_ids(train, train.ids[:1])
    with pytest.raises(ObliviateError, match="forget at least 2 samples"):
        make_unlearner("gradient_ascent").unlearn(model, request)


def _frozen_first_layer(train: Dataset) -> nn.Sequential:
    model = fit(user_model(), train, TrainConfig(n_epochs=2, batch_size=32, lr=0.05, seed=0))
    model[0].requires_grad_(False)  # the user's frozen "backbone"
    model[1].eval()  # and a frozen BatchNorm
    return model


@pytest.mark.parametrize(
    "method", ["finetune", "gradient_ascent", "neggrad_plus", "scrub", "ssd", "salun", "sfron"]
)
def test_unlearners_leave_the_users_frozen_parameters_alone(data, method):
    """A parameter the user froze (requires_grad=False) is not changed by unlearning and stays
    frozen in the returned model, as ``fit`` (and so the retrain oracle) leaves it alone."""
    train, _ = data
    model = _frozen_first_layer(train)
    before = model[0].weight.detach().clone()
    request = ForgetRequest.from_ids(train, train.ids[:20])
    out = make_unlearner(method).unlearn(model, request)
    assert torch.equal(out[0].weight, before)
    assert not out[0].weight.requires_grad and out[4].weight.requires_grad
    assert torch.equal(model[0].weight, before) and not model[1].training  # input untouched


def _importance_passes():
    from obliviate.unlearning import lf_ssd, salun, sfron, ssd

    return {
        "ssd": lambda m, d: ssd.batch_importances(m, d, 32),
        "lf_ssd": lambda m, d: lf_ssd.output_norm_importances(m, d, 32),
        "salun": lambda m, d: salun.saliency_mask(m, d, 0.5, 32),
        "sfron": lambda m, d: sfron._squared_grads(m, d, 32),
    }


@pytest.mark.parametrize("method", ["ssd", "lf_ssd", "salun", "sfron"])
def test_importance_passes_keep_each_submodules_mode(data, method):
    """The importance passes of SSD, LF-SSD, SalUn and SFRon put every submodule in the top
    module's mode afterwards (``model.train(was)``), or left the model in eval mode: a BatchNorm
    the user froze came back in training mode. Each submodule now gets its own mode back."""
    train, _ = data
    model = _frozen_first_layer(train)
    model.train()
    model[1].eval()
    _importance_passes()[method](model, train)
    assert model.training and not model[1].training and model[3].training


def test_an_entirely_frozen_model_is_a_clear_error(data):
    train, _ = data
    model = _frozen_first_layer(train).requires_grad_(False)
    request = ForgetRequest.from_ids(train, train.ids[:20])
    with pytest.raises(ObliviateError, match="no trainable parameter"):
        make_unlearner("finetune").unlearn(model, request)


def _frozen_batchnorm_model(train: Dataset) -> nn.Sequential:
    model = fit(user_model(), train, TrainConfig(n_epochs=2, batch_size=32, lr=0.05, seed=0))
    model[1].eval().requires_grad_(False)  # a frozen BatchNorm: weights and statistics
    return model


def test_fit_keeps_a_frozen_batchnorm_frozen(data):
    train, _ = data
    model = _frozen_batchnorm_model(train)
    stats = model[1].running_mean.clone(), model[1].running_var.clone()
    fit(model, train, TrainConfig(n_epochs=1, batch_size=32, lr=0.05, seed=1))
    assert torch.equal(model[1].running_mean, stats[0])
    assert torch.equal(model[1].running_var, stats[1])


@pytest.mark.parametrize("method", ["scrub", "random_label", "finetune", "l1_sparse", "sfron"])
def test_unlearners_keep_a_frozen_batchnorm_frozen(data, method):
    """``model.train()`` in the unlearners' loops switched a frozen BatchNorm back to batch
    statistics and its running mean/var drifted; training.train_mode keeps it in eval mode."""
    train, _ = data
    model = _frozen_batchnorm_model(train)
    stats = model[1].running_mean.clone(), model[1].running_var.clone()
    out = make_unlearner(method).unlearn(model, ForgetRequest.from_ids(train, train.ids[:20]))
    assert torch.equal(out[1].running_mean, stats[0])
    assert torch.equal(out[1].running_var, stats[1])
