"""The population trainer (torch.func, vmap over models) against training one by one with fit."""

from dataclasses import replace

import pytest
import torch
from torch import nn

import obliviate.population as population
from obliviate.data.datasets import load_dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec
from obliviate.population import fit_population, vectorisable
from obliviate.training import Recipe, TrainConfig

TOL = 1e-5
"""Stated tolerance: largest absolute difference of any weight or test logit. Measured on
torch 2.13 CPU: 0 (bitwise) for these recipes; the contract is float tolerance, not bits."""


@pytest.fixture(scope="module")
def digits():
    train, test = load_dataset("digits")
    return train.subset(torch.arange(400)), test


def _recipes(train: TrainConfig, n: int = 4) -> list[Recipe]:
    base = Recipe(ModelSpec("mlp", (32,)), train)
    return [
        Recipe(replace(base.model, seed=s), replace(base.train, seed=100 + s)) for s in range(n)
    ]


def _max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        w = max(
            float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters(), strict=True)
        )
        return max(w, float((a(x) - b(x)).abs().max()))


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(n_epochs=3, batch_size=32, lr=1e-3, optimizer="adam", weight_decay=1e-4),
        TrainConfig(n_epochs=3, batch_size=48, lr=0.05, momentum=0.9, weight_decay=1e-3),
    ],
    ids=["adam", "sgd-momentum"],
)
def test_population_equals_one_by_one(digits, config):
    train, test = digits
    recipes = _recipes(config)
    together = fit_population(recipes, train)
    alone = [r.fit(train) for r in recipes]
    for t, a in zip(together, alone, strict=True):
        assert not t.training
        assert _max_diff(t, a, test.x) <= TOL
    # the models differ from each other: per-model seeds for init and batch order took effect
    assert _max_diff(together[0], together[1], test.x) > 0.1


def test_batch_order_is_per_model(digits):
    """Same init, different data-order seed: the population reproduces each order."""
    train, test = digits
    cfg = TrainConfig(n_epochs=2, batch_size=32, lr=1e-3, optimizer="adam")
    base = Recipe(ModelSpec("mlp", (16,), seed=7), cfg)
    recipes = [base, Recipe(base.model, replace(cfg, seed=1))]
    together = fit_population(recipes, train)
    for t, r in zip(together, recipes, strict=True):
        assert _max_diff(t, r.fit(train), test.x) <= TOL
    assert _max_diff(together[0], together[1], test.x) > 1e-3


def test_stateful_models_are_refused_or_trained_one_by_one(digits, monkeypatch):
    assert vectorisable(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))) is not None
    assert "BatchNorm1d" in (vectorisable(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))) or "")
    assert vectorisable(nn.Sequential(nn.Linear(4, 4), nn.ReLU())) is None
    train, test = digits
    recipes = _recipes(TrainConfig(n_epochs=1, lr=1e-3, optimizer="adam"), n=2)
    monkeypatch.setattr(population, "vectorisable", lambda m: "it has a Dropout layer (x)")
    with pytest.raises(ObliviateError, match="Dropout.*fallback=True"):
        fit_population(recipes, train, fallback=False)
    fallen_back = fit_population(recipes, train)  # one by one: bitwise fit
    for t, r in zip(fallen_back, recipes, strict=True):
        assert _max_diff(t, r.fit(train), test.x) == 0.0


def test_recipes_must_differ_only_in_seeds(digits):
    train, _ = digits
    a = Recipe(ModelSpec("mlp", (16,)), TrainConfig(lr=1e-3))
    with pytest.raises(ObliviateError, match="more than its seeds"):
        fit_population([a, Recipe(a.model, replace(a.train, lr=0.1))], train)
    with pytest.raises(ObliviateError, match="more than its seeds"):
        fit_population([a, Recipe(replace(a.model, hidden=(8,)), a.train)], train)
    with pytest.raises(ObliviateError, match="at least one"):
        fit_population([], train)
