"""NegMerge, SFR-on, CF-k, EU-k, the stochastic teacher and SCRUB+R: their defining computations
on hand-computed tensors, and each method on a user-style model (batch norm, dropout,
``forward(x)`` only)."""

import copy
import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from obliviate.data import load_dataset, synthetic_dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec
from obliviate.testing import toy_setup
from obliviate.training import Recipe, TrainConfig, accuracy, fit
from obliviate.unlearning import make_unlearner
from obliviate.unlearning._ops import fresh_like, frozen_copy, run_steps
from obliviate.unlearning.base import ForgetRequest
from obliviate.unlearning.negmerge import sign_consensus_merge
from obliviate.unlearning.scrub import rewind_index, rewind_reference
from obliviate.unlearning.sfron import adaptive_forget_loss, saliency_mask
from obliviate.unlearning.stochastic_teacher import distillation_loss

NEW = ["negmerge", "sfron", "cf_k", "eu_k", "stochastic_teacher"]


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def mlp_setup():
    torch.set_num_threads(1)
    tr, te = synthetic_dataset(n_classes=4, n_per_class=60, n_features=8)
    recipe = Recipe(ModelSpec(hidden=(16,), seed=0), TrainConfig(n_epochs=10, lr=0.1, seed=0))
    model = recipe.fit(tr)
    req = ForgetRequest.from_ids(tr, tr.ids[:20], recipe)
    return tr, recipe, model, req


# ---- NegMerge --------------------------------------------------------------------------------
def test_sign_consensus_merge_by_hand():
    t1 = torch.tensor([1.0, -2.0, 3.0, 0.0, -1.0])
    t2 = torch.tensor([3.0, -4.0, -1.0, 2.0, -3.0])
    t3 = torch.tensor([2.0, -3.0, 1.0, 1.0, 4.0])
    # same sign in all: mean; mixed signs, or a zero anywhere: 0
    assert torch.equal(sign_consensus_merge([t1, t2]), torch.tensor([2.0, -3.0, 0.0, 0.0, -2.0]))
    assert torch.equal(sign_consensus_merge([t1, t2, t3]), torch.tensor([2.0, -3.0, 0, 0, 0]))
    assert torch.equal(sign_consensus_merge([t1]), t1 * (t1 != 0))
    with pytest.raises(ObliviateError):
        sign_consensus_merge([])


def test_negmerge_with_one_config_negates_the_scaled_task_vector(mlp_setup):
    _, _, model, req = mlp_setup
    u = make_unlearner(
        "negmerge",
        lrs=(0.1,),
        epoch_grid=(1,),
        coefficients=(2.0,),
        batch_size=10_000,  # one full-batch step: theta_ft = theta - 0.1 grad
        retain_threshold=0.0,
    )
    out = u.unlearn(model, req)
    ref = copy.deepcopy(model)
    grads = torch.autograd.grad(
        F.cross_entropy(ref(req.forget.x), req.forget.y), list(ref.parameters())
    )
    # theta - 2 (theta_ft - theta) = theta + 2 * 0.1 * grad
    for p, g, q in zip(ref.parameters(), grads, out.parameters(), strict=True):
        torch.testing.assert_close(q, p + 0.2 * g, rtol=1e-5, atol=1e-6)
    assert u.learned()["coefficient_"] == 2.0
    assert 0.0 < u.learned()["consensus_fraction_"] <= 1.0


def test_negmerge_coefficient_respects_the_retain_threshold(mlp_setup):
    _, _, model, req = mlp_setup
    coefs = (0.5, 4.0, 64.0)
    strict = make_unlearner("negmerge", coefficients=coefs, retain_threshold=1.0)
    loose = make_unlearner("negmerge", coefficients=coefs, retain_threshold=0.0)
    strict.unlearn(model, req)
    out = loose.unlearn(model, req)
    assert loose.learned()["coefficient_"] in coefs
    assert strict.learned()["coefficient_"] <= loose.learned()["coefficient_"]
    # the loose choice is the coefficient with the lowest forget accuracy
    assert accuracy(out, req.forget) <= accuracy(model, req.forget)


# ---- SFR-on ----------------------------------------------------------------------------------
def test_sfron_adaptive_loss_and_saliency_mask_by_hand():
    losses = torch.tensor([1.0, 4.0])
    # lambda 0.5: coefficients 1/1, 1/2 -> weights 2/3, 1/3 -> 2/3 * 1 + 1/3 * 4 = 2
    torch.testing.assert_close(adaptive_forget_loss(losses, 0.5), torch.tensor(2.0))
    torch.testing.assert_close(adaptive_forget_loss(losses, 0.0), torch.tensor(2.5))  # the mean
    ff = {"w": torch.tensor([2.0, 1.0, 0.0, 3.0])}
    fr = {"w": torch.tensor([1.0, 2.0, 0.0, 3.0])}
    assert torch.equal(saliency_mask(ff, fr, 1.0)["w"], torch.tensor([1.0, 0.0, 1.0, 1.0]))
    assert torch.equal(saliency_mask(ff, fr, 1.5)["w"], torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_sfron_weights_outside_the_mask_move_only_by_retain_steps(mlp_setup):
    _, _, model, req = mlp_setup
    # with forget_alpha tiny, SFR-on is nearly retain-only fine-tuning; with a huge threshold
    # the mask is empty and the forget steps change nothing at all
    a = make_unlearner("sfron", saliency_threshold=1e30, n_steps=20).unlearn(model, req)
    b = make_unlearner("sfron", saliency_threshold=1e30, n_steps=20, forget_alpha=1e-9)
    b = b.unlearn(model, req)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)  # momentum: tiny, not zero


# ---- CF-k and EU-k ---------------------------------------------------------------------------
class UserCNN(nn.Module):
    """What a user brings: convolutions, batch norm, dropout, ``forward(x)`` only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.bn1 = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.2)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        h = self.drop(torch.relu(self.bn1(self.conv1(x))))
        h = torch.relu(self.bn2(self.conv2(h)))
        return self.fc(h.flatten(1))


@pytest.fixture(scope="module")
def user_setup():
    torch.set_num_threads(1)
    tr, te = load_dataset("digits")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UserCNN()
        fit(model, tr, TrainConfig(n_epochs=8, lr=1e-2, optimizer="adam", seed=0))
    req = ForgetRequest.from_ids(tr, tr.ids[tr.y == 3])
    return tr, te, model, req


# parameterised layers of UserCNN in registration order: conv1, bn1, conv2, bn2, fc
@pytest.mark.parametrize("name", ["cf_k", "eu_k"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_last_k_layers_only_are_touched(user_setup, name, k):
    _, _, model, req = user_setup
    before = _state(model)
    out = make_unlearner(name, k=k, n_epochs=1).unlearn(model, req)
    after = _state(out)
    trained = ["conv1", "bn1", "conv2", "bn2", "fc"][-k:]
    for key in before:
        layer = key.split(".")[0]
        if layer in trained:
            continue
        assert torch.equal(before[key], after[key]), f"{name} k={k} changed {key}"
    for layer in trained:
        assert not torch.equal(before[f"{layer}.weight"], after[f"{layer}.weight"]), layer
    assert torch.equal(_state(model)["fc.weight"], before["fc.weight"])  # input untouched


def test_eu_k_reinitialises_before_training(user_setup):
    _, _, model, req = user_setup
    # on an empty retain set nothing is trained: EU-k's last layer is a fresh draw, CF-k's the
    # original's
    no_retain = dataclasses.replace(req, retain=req.forget.subset(torch.arange(0)))
    eu = make_unlearner("eu_k", k=1).unlearn(model, no_retain)
    cf = make_unlearner("cf_k", k=1).unlearn(model, no_retain)
    assert torch.equal(cf.fc.weight, model.fc.weight)
    assert not torch.equal(eu.fc.weight, model.fc.weight)
    assert torch.equal(eu.conv2.weight, model.conv2.weight)
    fresh = nn.Linear(256, 10)
    assert eu.fc.weight.std() < 2 * fresh.weight.std()  # a default init draw, not the trained one


@pytest.mark.parametrize("name", ["cf_k", "eu_k"])
def test_k_beyond_the_model_raises(user_setup, name):
    _, _, model, req = user_setup
    with pytest.raises(ObliviateError, match="k=6 exceeds the 5 parameterised layer"):
        make_unlearner(name, k=6).unlearn(model, req)
    with pytest.raises(ObliviateError, match="k"):
        make_unlearner(name, k=0)


# ---- the stochastic teacher ------------------------------------------------------------------
def test_stochastic_teacher_is_erasure_then_reconstruction(mlp_setup):
    _, _, model, req = mlp_setup
    u = make_unlearner(
        "stochastic_teacher", erase_epochs=2, reconstruct_epochs=1, batch_size=8, seed=4
    )
    out = u.unlearn(model, req)
    # the two phases by hand, from the same building blocks
    student = copy.deepcopy(model)
    random_teacher = fresh_like(model, 4, "stochastic_teacher")
    for p in random_teacher.parameters():
        p.requires_grad_(False)
    erase = dict(batch_size=8, optimizer="adam", seed=4)
    run_steps(
        student,
        req.forget,
        distillation_loss(random_teacher, 1.0),
        n_epochs=2,
        lr=1e-2,
        key=("stochastic_teacher", "erase"),
        **erase,
    )
    with torch.no_grad():  # phase 1 pulls the forget outputs towards the random teacher
        kl = lambda m: F.kl_div(  # noqa: E731
            F.log_softmax(m(req.forget.x), 1),
            F.log_softmax(random_teacher(req.forget.x), 1),
            reduction="batchmean",
            log_target=True,
        )
        assert kl(student) < 0.8 * kl(model)
    run_steps(
        student,
        req.retain,
        distillation_loss(frozen_copy(model), 1.0),
        n_epochs=1,
        lr=1e-3,
        key=("stochastic_teacher", "reconstruct"),
        **erase,
    )
    for p, q in zip(student.parameters(), out.parameters(), strict=True):
        assert torch.equal(p, q)


def test_distillation_loss_is_zero_against_itself(mlp_setup):
    _, _, model, req = mlp_setup
    from obliviate.training import batches

    b = next(iter(batches(req.forget, 8, None)))
    assert float(distillation_loss(frozen_copy(model), 2.0)(model, b).detach()) == pytest.approx(
        0, abs=1e-6
    )


# ---- SCRUB+R ---------------------------------------------------------------------------------
def test_rewind_index_by_hand():
    errors = [0.1, 0.5, 0.9, 0.5]
    assert rewind_index(errors, 0.45) == 1  # 0.5 twice: ties go to the earliest (authors' min)
    assert rewind_index([0.0, 1.0, 1.0, 1.0, 1.0], 0.5) == 0  # every gap 0.5: epoch 1
    assert rewind_index(errors, 1.0) == 2
    assert rewind_index(errors, 0.0) == 0
    assert rewind_index([0.3], 0.9) == 0
    with pytest.raises(ObliviateError):
        rewind_index([], 0.5)


def test_scrub_rewind_returns_the_chosen_checkpoint():
    toy = toy_setup()
    plain = make_unlearner("scrub", seed=1)
    final = plain.unlearn(toy.original, toy.request)
    assert set(plain.learned().values()) == {None}
    probe = make_unlearner("scrub", seed=1, rewind=True, rewind_target=0.0)
    probe.unlearn(toy.original, toy.request)
    errors = probe.learned()["forget_errors_"]
    assert len(errors) == 5
    assert errors[-1] == pytest.approx(1 - accuracy(final, toy.request.forget))
    for target in (0.0, 0.5, 1.0, errors[1]):
        u = make_unlearner("scrub", seed=1, rewind=True, rewind_target=target)
        out = u.unlearn(toy.original, toy.request)
        epoch = u.learned()["rewind_epoch_"]
        assert epoch == rewind_index(errors, target) + 1
        assert 1 - accuracy(out, toy.request.forget) == pytest.approx(errors[epoch - 1])
        if epoch == 5:  # the last checkpoint is plain SCRUB's model, bit for bit
            assert all(
                torch.equal(a, b)
                for a, b in zip(_state(out).values(), _state(final).values(), strict=True)
            )
    with pytest.raises(ObliviateError, match="validation=.*rewind_target"):
        make_unlearner("scrub", rewind=True).unlearn(toy.original, toy.request)


def test_scrub_rewind_reference_is_the_final_models_error_on_held_out_forget_classes():
    toy = toy_setup()
    forget = toy.request.forget.subset(torch.nonzero(toy.request.forget.y < 2).reshape(-1))
    assert len(forget) > 0 and set(forget.y.tolist()) <= {0, 1}
    req = ForgetRequest.from_ids(toy.train, forget.ids, toy.recipe)
    req = dataclasses.replace(req, validation=toy.test)
    final = make_unlearner("scrub", seed=1).unlearn(toy.original, req)
    final.eval()
    wrong = n = 0  # by hand: rows of classes 0 and 1 only, one at a time
    with torch.no_grad():
        for x, y in zip(toy.test.x, toy.test.y, strict=True):
            if int(y) in (0, 1):
                n += 1
                wrong += int(int(final(x[None]).argmax()) != int(y))
    u = make_unlearner("scrub", seed=1, rewind=True)
    out = u.unlearn(toy.original, req)
    got = u.learned()
    assert got["n_validation_rows_"] == n == int((toy.test.y < 2).sum()) < len(toy.test)
    assert got["rewind_reference_"] == pytest.approx(wrong / n)
    assert rewind_reference(final, toy.test, forget) == pytest.approx(wrong / n)
    assert got["rewind_epoch_"] == rewind_index(got["forget_errors_"], wrong / n) + 1
    err = 1 - accuracy(out, req.forget)
    assert err == pytest.approx(got["forget_errors_"][got["rewind_epoch_"] - 1])
    # a fixed rewind_target overrides the held-out rows; none of the forget classes: an error
    v = make_unlearner("scrub", seed=1, rewind=True, rewind_target=1.0)
    v.unlearn(toy.original, req)
    assert v.learned()["rewind_reference_"] == 1.0 and v.learned()["n_validation_rows_"] is None
    other = dataclasses.replace(
        req, validation=toy.test.subset(torch.nonzero(toy.test.y >= 2)[:, 0])
    )
    with pytest.raises(ObliviateError, match="no held-out row with a forget-set label"):
        u.unlearn(toy.original, other)


def test_scrub_rewind_runs_from_the_cli_on_digits(tmp_path):
    from obliviate.cli.main import main

    out = tmp_path / "r.json"
    args = ["forget", "--dataset", "digits", "--forget", "random:10%", "--method", "scrub"]
    args += ["--set", "rewind=true", "--relearn-cap", "0", "--cache", str(tmp_path)]
    assert main([*args, "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    learned, val = r["learned"], r["validation"]
    assert len(learned["forget_errors_"]) == 5 and 1 <= learned["rewind_epoch_"] <= 5
    assert 0.0 <= learned["rewind_reference_"] <= 1.0
    assert learned["n_validation_rows_"] == val["n_rows"] > 0
    test = load_dataset("digits")[1]  # its test split, cut in two: 20 % of each class held out
    assert val["n_rows"] + val["n_test_rows"] == len(test)
    assert val["n_rows"] == sum(int(0.2 * int((test.y == c).sum())) for c in test.y.unique())


# ---- every new method on the user-style model ------------------------------------------------
@pytest.mark.parametrize("name", NEW)
def test_new_methods_run_on_a_user_model(user_setup, name):
    tr, te, model, req = user_setup
    before = _state(model)
    a = make_unlearner(name, seed=2).unlearn(model, req)
    b = make_unlearner(name, seed=2).unlearn(model, req)
    assert type(a) is UserCNN and a is not model
    assert all(
        torch.equal(x, y) for x, y in zip(_state(a).values(), _state(b).values(), strict=True)
    ), f"{name}: same seed, different bits on a model with dropout"
    assert all(torch.equal(before[k], v) for k, v in _state(model).items())
    assert not model.training
    keep = te.subset(te.y != 3)
    assert accuracy(a, keep) > accuracy(model, keep) - 0.1, name
    if name == "eu_k":  # a head retrained without class 3 cannot predict it
        assert accuracy(a, req.forget) < 0.2


@pytest.mark.parametrize(
    "name, params",
    [
        ("negmerge", {"lrs": ()}),
        ("negmerge", {"epoch_grid": (1.5,)}),
        ("negmerge", {"coefficients": (-1.0,)}),
        ("negmerge", {"retain_threshold": 1.5}),
        ("sfron", {"n_steps": 0}),
        ("sfron", {"adaptive_power": -1.0}),
        ("cf_k", {"k": 0}),
        ("eu_k", {"lr": 0.0}),
        ("stochastic_teacher", {"temperature": 0.0}),
        ("scrub", {"rewind_target": 1.5, "rewind": True}),
    ],
)
def test_bad_hyperparameters_raise_naming_the_value(name, params):
    with pytest.raises(ObliviateError, match=next(iter(params))):
        make_unlearner(name, **params)
