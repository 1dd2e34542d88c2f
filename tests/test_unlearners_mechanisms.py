"""Mechanism tests of random_label, bad_teacher, scrub, ssd, famr, l1_sparse and salun."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from obliviate.continual.penalties import diagonal_fisher
from obliviate.data.datasets import synthetic_dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec
from obliviate.training import Recipe, TrainConfig, accuracy, predict_logits
from obliviate.unlearning import UNLEARNERS, make_unlearner
from obliviate.unlearning._ops import fresh_like
from obliviate.unlearning.base import ForgetRequest
from obliviate.unlearning.l1_sparse import l1_norm, l1_schedule
from obliviate.unlearning.probe import probe_accuracy
from obliviate.unlearning.random_label import random_wrong_labels, relabelled_forget_set
from obliviate.unlearning.salun import saliency_mask
from obliviate.unlearning.ssd import batch_importances, class_sorted, dampening_factors

MINE = ("random_label", "bad_teacher", "scrub", "ssd", "famr", "l1_sparse", "salun")


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    train, test = synthetic_dataset(n_classes=4, n_per_class=50, n_features=8, seed=1)
    recipe = Recipe(
        ModelSpec(hidden=(16,), seed=0), TrainConfig(n_epochs=30, lr=1e-2, optimizer="adam", seed=0)
    )
    model = recipe.fit(train)
    class_ids = train.ids[train.y == 1]
    random_ids = train.ids[
        torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:15]
    ]
    return {
        "train": train,
        "test": test,
        "model": model,
        "class": ForgetRequest.from_ids(train, class_ids, recipe),
        "random": ForgetRequest.from_ids(train, random_ids, recipe),
    }


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def test_registered():
    for name in MINE:
        assert name in UNLEARNERS
        cls = make_unlearner(name).__class__
        assert cls.guarantee == "approximate"
        assert cls.needs <= {"retain", "train", "recipe"}


@pytest.mark.parametrize("name", MINE)
def test_empty_forget_is_identity_and_input_untouched(setup, name):
    model = setup["model"]
    before = weights(model)
    empty = ForgetRequest.from_ids(setup["train"], [], setup["class"].recipe)
    out = make_unlearner(name).unlearn(model, empty)
    assert out is not model
    assert all(torch.equal(a, b) for a, b in zip(weights(out), before, strict=True))
    out2 = make_unlearner(name, seed=3).unlearn(model, setup["class"])
    assert all(torch.equal(a, b) for a, b in zip(weights(model), before, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(weights(out2), before, strict=True))


@pytest.mark.parametrize("name", MINE)
def test_same_seed_same_bits(setup, name):
    a = make_unlearner(name, seed=5).unlearn(setup["model"], setup["random"])
    b = make_unlearner(name, seed=5).unlearn(setup["model"], setup["random"])
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b), strict=True))


@pytest.mark.parametrize("name", MINE)
def test_missing_needs_raise(setup, name):
    cls = make_unlearner(name).__class__
    bare = ForgetRequest(forget=setup["class"].forget)
    if not cls.needs:
        make_unlearner(name).unlearn(setup["model"], bare)
        return
    with pytest.raises(ObliviateError, match=sorted(cls.needs)[0]):
        make_unlearner(name).unlearn(setup["model"], bare)


TOY_PARAMS = {  # the toy has ~150 rows: epoch-based methods get more epochs to take enough steps
    "random_label": {"n_epochs": 10},
    "salun": {"n_epochs": 10},
    "bad_teacher": {"n_epochs": 10, "lr": 1e-2},
    "scrub": {"n_epochs": 10, "msteps": 8},
    "ssd": {},
    "famr": {},
}


@pytest.mark.parametrize("name", sorted(TOY_PARAMS))
def test_class_forgetting_forgets(setup, name):
    req = setup["class"]
    assert accuracy(setup["model"], req.forget) == 1.0
    out = make_unlearner(name, **TOY_PARAMS[name]).unlearn(setup["model"], req)
    assert accuracy(out, req.forget) < 0.1
    assert accuracy(out, req.retain) > 0.95


# ---- SSD -------------------------------------------------------------------------------------
def test_dampening_factors_formula():
    d = torch.tensor([1.0, 1.0, 0.0, 2.0, 0.0])
    f = torch.tensor([5.0, 20.0, 3.0, 20.0, 0.0])
    got = dampening_factors(d, f, selection_weighting=10.0, dampening_constant=1.0)
    # selected where f > 10 d: entries 1 (beta 1/20), 2 (d = 0 -> beta 0); 3 has f = 10 d exactly
    assert torch.equal(got, torch.tensor([1.0, 0.05, 0.0, 1.0, 1.0]))
    capped = dampening_factors(d, f, selection_weighting=10.0, dampening_constant=100.0)
    assert torch.equal(capped, torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0]))  # beta = min(., 1)


def test_ssd_dampens_exactly_the_selected_parameters(setup):
    req, model = setup["class"], setup["model"]
    ssd = make_unlearner("ssd", selection_weighting=10.0, dampening_constant=1.0, batch_size=64)
    out = ssd.unlearn(model, req)
    imp_d = batch_importances(model, class_sorted(req.train), 64)
    imp_f = batch_importances(model, class_sorted(req.forget), 64)
    n_sel = n_kept = 0
    for (name, p0), p1 in zip(model.named_parameters(), out.parameters(), strict=True):
        sel = imp_f[name] > 10.0 * imp_d[name]
        beta = torch.clamp(imp_d[name][sel] / imp_f[name][sel], max=1.0)
        assert torch.equal(p1[~sel], p0[~sel]), name  # bitwise untouched
        assert torch.equal(p1[sel], p0[sel] * beta), name
        n_sel, n_kept = n_sel + int(sel.sum()), n_kept + int((~sel).sum())
    assert n_sel > 0 and n_kept > 0


def test_ssd_importance_with_batch_one_is_per_sample_fisher(setup):
    model, data = setup["model"], setup["class"].forget.subset(torch.arange(6))
    imp = batch_importances(model, data, 1)
    ref = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(data)):
        model.zero_grad()
        F.cross_entropy(model(data.x[i : i + 1]), data.y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            ref[n] += p.grad**2 / len(data)
    model.zero_grad(set_to_none=True)
    shared = diagonal_fisher(model, data, fisher="empirical")  # the continual-learning Fisher
    for n in imp:
        torch.testing.assert_close(imp[n], ref[n])
        torch.testing.assert_close(imp[n], shared[n])


# ---- SalUn -----------------------------------------------------------------------------------
def test_salun_updates_only_salient_weights(setup):
    req, model = setup["class"], setup["model"]
    mask = saliency_mask(model, req.forget, 0.3)
    n_total = sum(m.numel() for m in mask.values())
    assert sum(int(m.sum()) for m in mask.values()) == round(0.3 * n_total)
    out = make_unlearner("salun", sparsity=0.3).unlearn(model, req)
    changed = 0
    for (name, p0), p1 in zip(model.named_parameters(), out.parameters(), strict=True):
        assert torch.equal(p1[~mask[name]], p0[~mask[name]]), name
        changed += int((p1[mask[name]] != p0[mask[name]]).sum())
    assert changed > 0.5 * round(0.3 * n_total)


def test_salun_mask_picks_largest_gradients(setup):
    req, model = setup["class"], setup["model"]
    mask = saliency_mask(model, req.forget, 0.1)
    grads = torch.autograd.grad(
        F.cross_entropy(model(req.forget.x), req.forget.y), list(model.parameters())
    )
    flat = torch.cat([g.abs().reshape(-1) for g in grads])
    chosen = torch.cat([m.reshape(-1) for m in mask.values()])
    assert flat[chosen].min() >= flat[~chosen].max() * (1 - 1e-5)


# ---- random labels and the probe ---------------------------------------------------------------
def test_random_wrong_labels_are_wrong_and_cover_every_other_class():
    y = torch.arange(5).repeat(400)
    z = random_wrong_labels(y, 5, torch.Generator().manual_seed(0))
    assert not bool((z == y).any())
    assert int(z.min()) >= 0 and int(z.max()) <= 4
    for c in range(5):
        assert set(z[y == c].tolist()) == set(range(5)) - {c}


def test_random_label_trains_forget_rows_on_their_wrong_labels(setup):
    req, model = setup["class"], setup["model"]
    relabelled = relabelled_forget_set(req, 4, 0, "random_label")
    assert torch.equal(relabelled.ids, req.forget.ids)
    assert not bool((relabelled.y == req.forget.y).any())
    out = make_unlearner("random_label", retain_fraction=0.0, n_epochs=5).unlearn(model, req)

    # fitted towards the wrong labels: their loss falls, the true labels' loss rises
    def ce(m, d):
        return float(F.cross_entropy(predict_logits(m, d), d.y))

    assert ce(out, relabelled) < ce(model, relabelled)
    assert ce(out, req.forget) > ce(model, req.forget)


def test_probe_accuracy(setup):
    req, model = setup["random"], setup["model"]
    acc = probe_accuracy(model, req.retain, req.forget)
    assert acc == probe_accuracy(model, req.retain, req.forget)
    assert acc > 0.8
    # a user model's features are its output layer's input (traced); a model whose logits are
    # not an nn.Linear's output has none to probe
    linear = torch.nn.Linear(8, 4)
    assert probe_accuracy(linear, req.retain, req.forget) >= 0.0  # features = the input rows
    with pytest.raises(ObliviateError, match="nn.Linear"):
        probe_accuracy(
            torch.nn.Sequential(linear, torch.nn.LogSoftmax(dim=1)), req.retain, req.forget
        )
    with pytest.raises(ObliviateError, match="two classes"):
        probe_accuracy(model, req.forget.subset(req.forget.y == req.forget.y[0]), req.forget)


# ---- bad teacher, SCRUB, FAMR, l1-sparse -------------------------------------------------------
def kl(p_logits, q_logits):
    """KL(softmax p || softmax q), batch mean."""
    return float(
        F.kl_div(
            F.log_softmax(q_logits, 1),
            F.log_softmax(p_logits, 1),
            reduction="batchmean",
            log_target=True,
        )
    )


def test_bad_teacher_moves_forget_outputs_toward_the_random_teacher(setup):
    req, model = setup["class"], setup["model"]
    out = make_unlearner("bad_teacher", seed=2, **TOY_PARAMS["bad_teacher"]).unlearn(model, req)
    bad = predict_logits(fresh_like(model, 2, "bad_teacher"), req.forget)
    assert kl(bad, predict_logits(out, req.forget)) < 0.5 * kl(
        bad, predict_logits(model, req.forget)
    )
    # and retain outputs stay near the original (competent) teacher
    assert kl(predict_logits(model, req.retain), predict_logits(out, req.retain)) < 0.1


def test_scrub_max_steps_push_forget_outputs_away_from_teacher(setup):
    req, model = setup["class"], setup["model"]
    with_max = make_unlearner("scrub", n_epochs=10, msteps=8).unlearn(model, req)
    min_only = make_unlearner("scrub", n_epochs=10, msteps=0).unlearn(model, req)
    t = predict_logits(model, req.forget)
    assert kl(t, predict_logits(with_max, req.forget)) > 2 * kl(
        t, predict_logits(min_only, req.forget)
    )


def test_famr_flattens_forget_outputs_and_anchor_holds_weights(setup):
    req, model = setup["class"], setup["model"]
    out = make_unlearner("famr").unlearn(model, req)

    def entropy(m):
        p = F.softmax(predict_logits(m, req.forget), 1)
        return float(-(p * p.log()).sum(1).mean())

    assert entropy(out) > entropy(model) + 0.5

    def dist(m):
        return sum(
            float(((a - b) ** 2).sum()) for a, b in zip(weights(m), weights(model), strict=True)
        )

    loose = make_unlearner("famr", reg_strength=0.0).unlearn(model, req)
    tight = make_unlearner("famr", reg_strength=10.0).unlearn(model, req)
    assert dist(tight) < 0.5 * dist(loose)


def test_l1_schedule_decays_linearly_and_sparsifies(setup):
    assert [l1_schedule(1.0, t, 4) for t in range(4)] == [1.0, 0.75, 0.5, 0.25]
    req, model = setup["random"], setup["model"]
    plain = make_unlearner("l1_sparse", reg_strength=0.0).unlearn(model, req)
    sparse = make_unlearner("l1_sparse", reg_strength=5e-2).unlearn(model, req)
    assert float(l1_norm(sparse).detach()) < 0.9 * float(l1_norm(plain).detach())


# ---- hyperparameter validation -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "params", "text"),
    [
        ("ssd", {"selection_weighting": 0.0}, "selection_weighting"),
        ("ssd", {"dampening_constant": -1.0}, "dampening_constant"),
        ("ssd", {"batch_size": 0}, "batch_size"),
        ("scrub", {"msteps": 4, "n_epochs": 3}, "msteps"),
        ("scrub", {"temperature": 0.0}, "temperature"),
        ("scrub", {"alpha": -0.1}, "alpha"),
        ("bad_teacher", {"retain_fraction": 1.5}, "retain_fraction"),
        ("bad_teacher", {"optimizer": "rmsprop"}, "optimizer"),
        ("random_label", {"lr": 0.0}, "lr"),
        ("random_label", {"n_epochs": 0}, "n_epochs"),
        ("famr", {"reg_strength": -1.0}, "reg_strength"),
        ("famr", {"momentum": 1.0}, "momentum"),
        ("l1_sparse", {"reg_strength": float("nan")}, "reg_strength"),
        ("salun", {"sparsity": 0.0}, "sparsity"),
        ("salun", {"sparsity": 1.2}, "sparsity"),
    ],
)
def test_bad_hyperparameters_raise_naming_the_value(name, params, text):
    with pytest.raises(ObliviateError, match=text):
        make_unlearner(name, **params)


def test_clone_round_trip():
    for name in MINE:
        u = make_unlearner(name, seed=7)
        assert u.clone().get_params() == u.get_params()
        assert copy.deepcopy(u).get_params() == u.get_params()
