"""IAU, SCAR and UPCORE: their specific mechanisms."""

import copy

import pytest
import torch
import torch.nn.functional as F

from obliviate.data import load_dataset, synthetic_dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec
from obliviate.training import Recipe, TrainConfig, accuracy
from obliviate.unlearning import make_unlearner
from obliviate.unlearning.base import ForgetRequest
from obliviate.unlearning.upcore import deletion_utility_auc


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    tr, te = synthetic_dataset(n_classes=4, n_per_class=60, n_features=8)
    recipe = Recipe(ModelSpec(hidden=(32,), seed=0), TrainConfig(n_epochs=30, lr=0.1, seed=0))
    model = recipe.fit(tr)
    return tr, te, recipe, model


def test_iau_is_one_corrected_gradient_step(setup):
    tr, _, recipe, model = setup
    req = ForgetRequest.from_ids(tr, tr.ids[:10], recipe)
    out = make_unlearner("iau", optimizer="sgd", lr=0.5, retain_weight=0.7).unlearn(model, req)
    ref = copy.deepcopy(model)
    loss = 0.7 * F.cross_entropy(ref(req.retain.x), req.retain.y) - F.cross_entropy(
        ref(req.forget.x), req.forget.y
    )
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    for p, g, q in zip(ref.parameters(), grads, out.parameters(), strict=True):
        torch.testing.assert_close(q, p - 0.5 * g, rtol=1e-5, atol=1e-6)


def test_scar_forgets_a_class_without_retain_data():
    tr, te = load_dataset("digits")
    model = Recipe(ModelSpec(hidden=(100,), seed=0), TrainConfig(n_epochs=20, lr=0.05, seed=0)).fit(
        tr
    )
    req = ForgetRequest(forget=tr.subset(tr.y == 3))  # retain-free: nothing but the forget set
    out = make_unlearner("scar").unlearn(model, req)
    keep = te.subset(te.y != 3)
    assert accuracy(model, req.forget) > 0.95
    assert accuracy(out, req.forget) < 0.2
    assert accuracy(out, keep) > accuracy(model, keep) - 0.12


def test_upcore_prunes_a_planted_outlier(setup):
    tr, _, recipe, model = setup
    ids = tr.ids[tr.y == 1]
    x = tr.x.clone()
    x[torch.nonzero(tr.ids == ids[0])[0, 0]] = 25.0  # far from everything
    tr2 = tr.with_x(x)
    req = ForgetRequest.from_ids(tr2, ids, recipe)
    up = make_unlearner("upcore", contamination=0.05)
    core, pruned = up.coreset(model, req)
    assert int(ids[0]) in pruned.tolist() and int(ids[0]) not in core.tolist()
    assert len(core) + len(pruned) == len(ids)
    out = up.unlearn(model, req)
    direct = make_unlearner("neggrad_plus").unlearn(
        model,
        ForgetRequest(
            forget=req.forget.select_ids(core), retain=req.retain, train=req.train, recipe=recipe
        ),
    )
    for a, b in zip(out.parameters(), direct.parameters(), strict=True):
        assert torch.equal(a, b)  # the wrapped method saw exactly the core set


def test_upcore_errors_and_auc():
    with pytest.raises(ObliviateError, match="not a wrappable"):
        make_unlearner("upcore", method="nope")
    with pytest.raises(ObliviateError, match="contamination"):
        make_unlearner("upcore", contamination=0.9)
    # utility falls linearly from 1 to 0.5 while deletion goes 0 -> 1: area 0.75
    assert deletion_utility_auc([0.0, 0.5, 1.0], [1.0, 0.75, 0.5]) == pytest.approx(0.75)
    assert deletion_utility_auc([1.0, 0.0], [0.5, 1.0]) == pytest.approx(0.75)


def test_upcore_validates_the_wrapped_methods_params_at_construction():
    with pytest.raises(ObliviateError, match="has no parameter 'bogus'"):
        make_unlearner("upcore", method_params={"bogus": 1})
    with pytest.raises(ObliviateError, match="alpha"):
        make_unlearner("upcore", method_params={"alpha": 5.0})
