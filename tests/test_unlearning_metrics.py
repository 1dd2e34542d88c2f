"""Differential and constructed-case tests of the unlearning metrics and the Newton removal."""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from obliviate.data import synthetic_dataset
from obliviate.metrics import (
    auc,
    bin_scores,
    confidence_scores,
    entropy_auc,
    forgetting_quality,
    js_divergence,
    logistic_attack,
    loss_threshold_auc,
    per_example_epsilon,
)
from obliviate.models import ModelSpec
from obliviate.training import Recipe, TrainConfig
from obliviate.unlearning import make_unlearner
from obliviate.unlearning.base import ForgetRequest
from obliviate.unlearning.newton import fit_head


# ---- membership inference ------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_equals_sklearn_roc_auc_with_ties(seed):
    rng = np.random.default_rng(seed)
    members = rng.normal(0.3, 1.0, size=57).round(1)  # rounding creates ties
    nonmembers = rng.normal(0.0, 1.0, size=80).round(1)
    labels = np.r_[np.ones(57), np.zeros(80)]
    ref = roc_auc_score(labels, np.r_[members, nonmembers])
    assert auc(members, nonmembers) == pytest.approx(ref, abs=1e-12)
    # the loss attack scores low loss as member
    losses_m, losses_n = np.exp(-members), np.exp(-nonmembers)
    assert loss_threshold_auc(losses_m, losses_n) == pytest.approx(
        roc_auc_score(labels, -np.r_[losses_m, losses_n]), abs=1e-12
    )


def test_entropy_and_logistic_attacks():
    rng = np.random.default_rng(0)
    confident = np.tile([0.97, 0.01, 0.01, 0.01], (40, 1))
    unsure = np.tile([0.4, 0.2, 0.2, 0.2], (40, 1))
    assert entropy_auc(confident, unsure) == 1.0
    assert entropy_auc(unsure, confident) == 0.0
    same = rng.exponential(size=400)
    chance = logistic_attack(same[:200], same[200:], seed=0)
    assert abs(chance["auc"] - 0.5) < 0.12
    separated = logistic_attack(
        rng.exponential(0.01, size=100), rng.exponential(1.0, size=100), seed=0
    )
    assert separated["auc"] > 0.9 and separated["accuracy"] > 0.8


# ---- epsilon and forgetting quality ----------------------------------------------------------
# The differential test against the challenge's written definition (a brute force over decision
# rules, Algorithm 1, the bins) is tests/test_forgetting_quality.py.
def test_epsilon_constructed_cases():
    same = np.linspace(-1, 1, 16)[:, None]
    assert per_example_epsilon(same, same)[0] == 0.0  # identical outputs: no attack works
    sep = per_example_epsilon(
        np.full((16, 1), 5.0) + np.arange(16)[:, None] * 0.01, np.zeros((16, 1))
    )
    assert sep[0] == math.inf  # perfect separation: unbounded (Algorithm 1)
    # farther apart distributions give a larger epsilon
    rng = np.random.default_rng(0)
    r = rng.normal(size=(200, 30))
    e_near = per_example_epsilon(rng.normal(0.2, 1, size=(200, 30)), r).mean()
    e_far = per_example_epsilon(rng.normal(1.5, 1, size=(200, 30)), r).mean()
    assert e_far > e_near + 0.5


def test_bins_and_quality():
    assert bin_scores([0.0, 0.49]).tolist() == [1.0, 1.0]
    # 13 bins of width 0.5 on [0, 6.5); beyond them (inf included) the challenge scored 0
    assert bin_scores([0.5, 1.0, 6.0, 6.5, 60.0, math.inf]).tolist() == [
        0.5,
        0.25,
        2 / 2**13,
        0.0,
        0.0,
        0.0,
    ]
    same = np.tile(np.linspace(-1, 1, 8)[:, None], (1, 5))
    assert forgetting_quality(same, same)["F"] == 1.0
    apart = forgetting_quality(same + 10.0, same)
    assert apart["F"] == 0.0 and apart["n_separated"] == 5


def test_confidence_scores_and_js():
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    p = z.softmax(1)[torch.arange(6), y]
    np.testing.assert_allclose(confidence_scores(z, y), torch.log(p / (1 - p)).numpy(), atol=1e-5)
    q = z.softmax(1).numpy()
    assert js_divergence(q, q) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(np.eye(3), np.roll(np.eye(3), 1, axis=1)) == pytest.approx(math.log(2))
    other = np.roll(q, 1, axis=1)
    assert js_divergence(q, other) == pytest.approx(js_divergence(other, q))


# ---- Newton removal vs retraining on a logistic model ------------------------------------------
def test_newton_removal_lands_near_retrained_logistic_model():
    train, _ = synthetic_dataset(n_classes=2, n_per_class=100, n_features=5, seed=1)
    recipe = Recipe(ModelSpec("mlp", (), seed=0), TrainConfig(n_epochs=1))
    lam = 1e-2
    original = fit_head(recipe.build(train.sample_shape, 2), train, reg_strength=lam)
    ids = train.ids[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:15]]
    request = ForgetRequest.from_ids(train, ids, recipe)
    retrained = fit_head(recipe.build(train.sample_shape, 2), request.retain, reg_strength=lam)
    newton = make_unlearner("newton", reg_strength=lam)
    removed = newton.unlearn(original, request)

    def flat(m):
        return torch.cat([p.detach().reshape(-1) for p in m.head_parameters()])

    ratio = float(
        (flat(removed) - flat(retrained)).norm() / (flat(original) - flat(retrained)).norm()
    )
    print(
        f"newton distance ratio ||w_newton - w_retrain|| / ||w_orig - w_retrain|| = {ratio:.4f}; "
        f"certificate {newton.certificate_}"
    )
    assert ratio < 0.1, ratio
    assert newton.certificate_["gradient_residual_norm"] < 1e-3
