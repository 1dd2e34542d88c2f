"""Fisher forgetting, UNSIR, Boundary Shrink/Expand, LF-SSD and JiT: each defining computation on
hand-computed tensors, and every method on user-style models (BatchNorm, Dropout, forward(x))."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.testing.unlearners import toy_setup
from obliviate.training import TrainConfig, accuracy, fit
from obliviate.unlearning import make_unlearner, unlearner_class
from obliviate.unlearning.base import ForgetRequest
from obliviate.unlearning.boundary_expand import widened_logits
from obliviate.unlearning.boundary_shrink import nearest_wrong_labels
from obliviate.unlearning.fisher_forgetting import fisher_noise_variance
from obliviate.unlearning.jit import lipschitz_loss, perturb
from obliviate.unlearning.lf_ssd import output_norm_importances
from obliviate.unlearning.unsir import error_maximising_noise, noise_objective

NEW = ("fisher_forgetting", "unsir", "boundary_shrink", "boundary_expand", "lf_ssd", "jit")


def linear(weight, bias=None):
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.zeros(weight.shape[0]) if bias is None else torch.as_tensor(bias))
    return layer


# ---- Fisher forgetting ---------------------------------------------------------------------
def test_fisher_noise_variance_by_hand():
    fisher = torch.tensor([[1.0, 3.0], [0.0, 1e9]])
    var = fisher_noise_variance(fisher, 0.5, is_output=False)
    # 1/(F+1e-8) capped at 1e3: [[1, 1/3], [1e3, ~1e-9]]; row means [2/3, 500]; times alpha
    expected = torch.tensor([[1 / 3, 1 / 3], [250.0, 250.0]])
    assert torch.allclose(var, expected, rtol=1e-5)
    # a 1-D tensor (bias / norm scale) gets 10x; the output layer is capped at 1e2, then 10x
    assert torch.allclose(
        fisher_noise_variance(torch.tensor([4.0]), 0.5, is_output=False), torch.tensor([1.25])
    )
    out = fisher_noise_variance(torch.tensor([[0.0, 0.0], [1.0, 1.0]]), 1.0, is_output=True)
    assert torch.allclose(out, torch.tensor([[1e3, 1e3], [10.0, 10.0]]), rtol=1e-5)


def test_fisher_forgetting_noise_follows_the_variance_and_clears_the_class_row():
    toy = toy_setup()
    train = toy.train
    ids = train.ids[train.y == 2]
    req = ForgetRequest.from_ids(train, ids, toy.recipe)
    out = make_unlearner("fisher_forgetting", alpha=1e-4, seed=1).unlearn(toy.original, req)
    head_w = dict(out.named_parameters())["head.weight"].detach()
    # class 2 has no retain row: its output row is reset to 0 plus noise of variance 1e-3
    assert float(head_w[2].std()) == pytest.approx(math.sqrt(1e-3), rel=0.3)
    assert float(head_w[2].mean().abs()) < 0.02
    # other parameters moved, by different amounts per unit (the Fisher shapes the noise)
    name = next(iter(dict(toy.original.named_parameters())))  # the first hidden weight
    before = dict(toy.original.named_parameters())[name].detach()
    delta = (dict(out.named_parameters())[name].detach() - before).std(dim=1)
    assert float(delta.min()) > 0 and float(delta.max()) > 1.5 * float(delta.min())


# ---- UNSIR -----------------------------------------------------------------------------------
def test_unsir_noise_objective_by_hand():
    model = linear(torch.eye(2))
    noise = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    ce = (math.log(1 + math.exp(-1)) + math.log(1 + math.exp(2))) / 2
    got = noise_objective(model, noise, 0, reg_strength=0.1).detach()
    assert float(got) == pytest.approx(-ce + 0.1 * (1 + 4) / 2, rel=1e-6)


def test_unsir_noise_maximises_the_error_on_the_forget_class():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    gen = torch.Generator().manual_seed(0)
    start = torch.randn((16, 4), generator=torch.Generator().manual_seed(0))
    noise = error_maximising_noise(
        model, 1, (16, 4), n_steps=100, lr=0.1, reg_strength=0.1, gen=gen
    )

    def objective(x):
        return float(noise_objective(model, x, 1, 0.1).detach())

    def ce(x):
        return float(F.cross_entropy(model(x), torch.full((16,), 1)).detach())

    assert objective(noise) < objective(start) - 0.5
    assert ce(noise) > ce(start)
    assert all(p.grad is None for p in model.parameters())  # the model is not trained


# ---- Boundary Shrink / Expand --------------------------------------------------------------
def test_nearest_wrong_label_by_fgsm():
    model = linear(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    x = torch.tensor([[1.0, 0.1], [1.0, -0.1]])
    y = torch.tensor([0, 0])
    # FGSM with eps 0.5: (0.5, 0.6) -> class 1 wins; (0.5, -0.6) -> class 2 wins
    assert nearest_wrong_labels(model, x, y, 0.5).tolist() == [1, 2]
    # a step too small to cross: the highest wrong class of the adversarial logits
    assert nearest_wrong_labels(model, x, y, 0.01).tolist() == [1, 2]
    assert all(p.grad is None for p in model.parameters())


def test_widened_logits_appends_the_shadow_class():
    out = torch.tensor([[1.0, 2.0]])
    h = torch.tensor([[3.0, 4.0]])
    got = widened_logits(out, h, torch.tensor([[1.0, -1.0]]), torch.tensor([0.5]))
    assert got.tolist() == [[1.0, 2.0, -0.5]]


def test_boundary_expand_removes_the_shadow_unit():
    toy = toy_setup()
    out = make_unlearner("boundary_expand").unlearn(toy.original, toy.request)
    assert out(toy.test.x[:5]).shape == (5, toy.train.n_classes)
    assert not any(m._forward_hooks for m in out.modules())


@pytest.mark.parametrize("name", ["fisher_forgetting", "boundary_expand"])
def test_methods_needing_an_output_layer_refuse_a_model_without_one(name):
    toy = toy_setup()
    model = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 6), nn.Flatten())
    with pytest.raises(ObliviateError, match="nn.Linear"):
        make_unlearner(name).unlearn(model, toy.request)
    assert unlearner_class(name).model_requirement


# ---- LF-SSD --------------------------------------------------------------------------------
def test_lf_ssd_importance_is_the_gradient_of_the_output_norm():
    model = linear(torch.eye(2))
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.0]])
    data = Dataset(x=x, y=torch.tensor([0, 1]), ids=torch.arange(2), n_classes=2)
    # one row per batch: d||Wx+b||^2/dW = 2 f x^T, d/db = 2 f, with f = x here; mean of |.|
    imp = output_norm_importances(model, data, batch_size=1)
    g_w = [2 * torch.outer(r, r).abs() for r in x]
    assert torch.allclose(imp["weight"], (g_w[0] + g_w[1]) / 2)
    assert torch.allclose(imp["bias"], (2 * x.abs()).mean(dim=0))
    # labels are never read
    relabelled = dataclasses.replace(data, y=torch.tensor([1, 0]))
    again = output_norm_importances(model, relabelled, batch_size=1)
    assert all(torch.equal(imp[k], again[k]) for k in imp)
    # one batch of both rows: |gradient of the batch mean|
    both = output_norm_importances(model, data, batch_size=2)
    assert torch.allclose(
        both["weight"], ((2 * torch.outer(x[0], x[0]) + 2 * torch.outer(x[1], x[1])) / 2).abs()
    )


# ---- JiT -----------------------------------------------------------------------------------
def test_jit_lipschitz_loss_by_hand():
    out = torch.zeros(1, 2, requires_grad=True)
    x = torch.zeros(1, 2)
    xs = [torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 1.0]])]
    outs = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])]
    loss = lipschitz_loss(out, x, outs, xs)
    assert float(loss) == pytest.approx((1 / 5 + 2 / 1) / 2)
    loss.backward()
    assert out.grad is not None and torch.isfinite(out.grad).all()


def test_jit_perturbation_is_seeded_and_stays_in_the_batch_range():
    x = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    a = perturb(x, 0.5, torch.Generator().manual_seed(3))
    b = perturb(x, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert float(a.min()) >= -1.0 and float(a.max()) <= 2.0


# ---- user-style models ----------------------------------------------------------------------
class SmallCNN(nn.Module):
    """A user's CNN: forward(x) only, BatchNorm and Dropout, input [B, 64] reshaped to 8x8."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(4 * 64, 32),
            nn.ReLU(),
        )
        self.out = nn.Linear(32, n_classes)

    def forward(self, x):
        return self.out(self.body(x.reshape(-1, 1, 8, 8)))


def user_mlp(n_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, n_classes)
    )


# (model, method) -> reason: the method runs (bits, input, shapes checked) but is not required to
# lower forget accuracy on that model's memorised toy rows. One line each, measured.
NO_FORGETTING_CHECK = {
    ("cnn", "lf_ssd"): "label-free importances do not single out the mislabelled rows: 1.0 -> 1.0",
    (
        "mlp",
        "lf_ssd",
    ): "the same on the MLP once its Dropout masks come from the seed: 0.93 -> 0.93",
}
# (model, method) -> how far retain accuracy may fall instead of 0.15, with the measured reason.
RETAIN_DROP = {
    ("cnn", "unsir"): (0.3, "its impair step with defaults set on digits costs 0.26 on this CNN"),
}


def _state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.fixture(scope="module", params=["mlp", "cnn"])
def user_setup(request):
    toy = toy_setup()
    torch.manual_seed(0)
    k = toy.train.n_classes
    model = user_mlp(k) if request.param == "mlp" else SmallCNN(k)
    fit(
        model, toy.train, TrainConfig(n_epochs=30, batch_size=16, lr=3e-3, optimizer="adam", seed=0)
    )
    model.eval()
    return request.param, model, toy


@pytest.mark.parametrize("name", NEW)
def test_new_unlearners_run_on_user_models(name, user_setup):
    kind, model, toy = user_setup
    before = _state(model)
    a = make_unlearner(name, seed=2).unlearn(model, toy.request)
    b = make_unlearner(name, seed=2).unlearn(model, toy.request)
    sa, sb = _state(a), _state(b)
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "same seed, different bits"
    assert all(torch.equal(before[k], _state(model)[k]) for k in before), "input mutated"
    assert not model.training
    assert all(torch.isfinite(v).all() for v in sa.values() if v.is_floating_point())
    assert a(toy.test.x[:3]).shape == (3, toy.train.n_classes)
    fa_orig = accuracy(model, toy.request.forget)
    assert fa_orig >= 0.5, f"user model did not memorise the toy ({fa_orig:.2f})"
    if (kind, name) not in NO_FORGETTING_CHECK:
        assert accuracy(a, toy.request.forget) < fa_orig
    drop = RETAIN_DROP.get((kind, name), (0.15, ""))[0]
    assert accuracy(a, toy.request.retain) >= accuracy(model, toy.request.retain) - drop


def test_list_unlearners_says_what_a_method_needs_of_the_model(capsys, monkeypatch):
    from obliviate.cli.main import main

    monkeypatch.setenv("COLUMNS", "250")
    assert main(["list", "unlearners"]) == 0
    out = capsys.readouterr().out
    lines = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3}
    assert "model needs" in out
    for name in NEW:
        assert name in lines, name
    for name in ("boundary_expand", "fisher_forgetting"):
        assert "nn.Linear" in lines[name]
    for name in ("unsir", "boundary_shrink", "lf_ssd", "jit"):
        assert "nn.Linear" not in lines[name]
