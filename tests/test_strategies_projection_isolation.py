"""GEM, A-GEM, PackNet, HFT and FPF: projections, masks, freezing and bad input."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from obliviate.continual import make_strategy
from obliviate.continual.agem import agem_project
from obliviate.continual.gem import constraint_tolerance, gem_project
from obliviate.continual.loop import train_stream
from obliviate.data import build_scenario, synthetic_dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, model_for_stream
from obliviate.training import Batch, TrainConfig, predict_logits


def _random_case(seed: int, k: int, p: int, parallel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    G = rng.normal(size=(k, p))
    if parallel and k > 1:  # nearly dependent constraints: the degenerate case of the QP
        G[1:] = G[0] * rng.uniform(0.5, 2.0, size=(k - 1, 1)) + 1e-3 * rng.normal(size=(k - 1, p))
    g = rng.normal(size=p)
    return torch.from_numpy(G), torch.from_numpy(g)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    k=st.integers(1, 6),
    p=st.integers(1, 30),
    margin=st.sampled_from([0.0, 0.1, 0.5]),
    parallel=st.booleans(),
)
def test_gem_projection_satisfies_every_constraint(seed, k, p, margin, parallel):
    G, g = _random_case(seed, k, p, parallel)
    out = gem_project(G, g, margin)
    dots = G @ out
    tol = torch.from_numpy(constraint_tolerance(G.numpy(), g.numpy(), out.numpy()))
    assert bool((dots >= -tol).all()), dots / tol
    if margin == 0.0 and bool((G @ g >= 0).all()):
        assert torch.allclose(out, g, atol=1e-9)  # nothing to project


@pytest.mark.parametrize("seed", [5, 352, 691])
def test_gem_projection_nearly_parallel_constraints(seed):
    """Cases where the k x k reduction alone violated a constraint by 2e-7 to 1.4e-6 (relative)."""
    G, g = _random_case(seed, 5, 5, parallel=True)
    out = gem_project(G, g, 0.0)
    tol = torch.from_numpy(constraint_tolerance(G.numpy(), g.numpy(), out.numpy()))
    assert bool((G @ out >= -tol).all()), (G @ out) / tol


def _brute_force(G: np.ndarray, g: np.ndarray, margin: float) -> np.ndarray:
    """min_{v >= margin} 1/2 |G^T v + g|^2 by enumerating which v_i sit at the bound."""
    k = G.shape[0]
    A, b = G @ G.T, G @ g
    best, best_v = np.inf, None
    for r in range(k + 1):
        for free in itertools.combinations(range(k), r):
            v = np.full(k, margin)
            f = list(free)
            if f:
                fixed = [i for i in range(k) if i not in free]
                rhs = -(b[f] + A[np.ix_(f, fixed)] @ v[fixed])
                v[f] = np.linalg.lstsq(A[np.ix_(f, f)], rhs, rcond=None)[0]
            if (v < margin - 1e-12).any():
                continue
            obj = 0.5 * np.sum((G.T @ v + g) ** 2)
            if obj < best - 1e-12:
                best, best_v = obj, v
    return G.T @ best_v + g


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("margin", [0.0, 0.3])
def test_gem_qp_matches_brute_force(seed, margin):
    k = 1 + seed % 4
    G, g = _random_case(seed, k, 7, parallel=seed % 3 == 0)
    expected = _brute_force(G.numpy(), g.numpy(), margin)
    out = gem_project(G, g, margin).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("seed", range(8))
def test_gem_single_constraint_equals_agem(seed):
    G, g = _random_case(seed, 1, 11, parallel=False)
    if float(G[0] @ g) > 0:
        g = -g
    expected = agem_project(g, G[0])
    np.testing.assert_allclose(
        gem_project(G, g, 0.0).numpy(), expected.numpy(), rtol=1e-9, atol=1e-12
    )
    assert float(expected @ G[0]) == pytest.approx(0.0, abs=1e-9)
    assert agem_project(-g, G[0]) is not None and torch.equal(agem_project(-g, G[0]), -g)


# ---- small runs ------------------------------------------------------------------------------
def _stream(kind: str, n_exp: int = 3):
    tr, te = synthetic_dataset(n_classes=2 * n_exp, n_per_class=30, n_features=8)
    return build_scenario(kind, tr, te, n_experiences=n_exp, seed=0)


CFG = TrainConfig(n_epochs=2, batch_size=16, lr=0.1, momentum=0.9, weight_decay=0.01, seed=0)


def _run(name: str, kind: str, params: dict | None = None, **kw):
    stream = _stream(kind)
    model = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
    strategy = make_strategy(name, **(params or {}))
    return stream, model, strategy, train_stream(model, stream, strategy, CFG, **kw)


@pytest.mark.parametrize("name", ["gem", "agem"])
def test_gem_agem_project_and_bound_memory(name):
    _, _, strategy, result = _run(name, "class-incremental", {"memory_size": 30})
    assert strategy.memory_used() <= 30
    assert strategy.n_projections_ > 0
    assert np.isfinite(result.accuracy_matrix).all()


@pytest.mark.parametrize("granularity", ["weight", "unit"])
def test_packnet_freezes_claimed_weights_bitwise_and_masks_are_disjoint(granularity):
    stream = _stream("task-incremental")
    model = model_for_stream(ModelSpec(hidden=(16, 16), seed=0), stream)
    strategy = make_strategy("packnet", prune_ratio=0.5, retrain_epochs=1, granularity=granularity)
    claimed: list[tuple[dict, dict]] = []
    logits_after: list[torch.Tensor] = []
    state = None
    for k in range(1, len(stream) + 1):
        result = train_stream(model, stream, strategy, CFG, stop_after=k, resume=state)
        state = result.state
        strategy = state.strategy
        owner = {n: o.clone() for n, o in strategy.masks_.owner.items()}
        claimed.append((owner, {n: p.detach().clone() for n, p in model.named_parameters()}))
        logits_after.append(predict_logits(model, stream[k - 1].test))
    final_owner, final_values = claimed[-1]
    for rank, (owner, values) in enumerate(claimed):
        for name, o in owner.items():
            mine = o == rank
            assert torch.equal(final_owner[name][mine], o[mine])  # ownership never changes
            assert torch.equal(final_values[name][mine], values[name][mine])  # bitwise frozen
            free = o == -1
            if name in strategy.prunable_:
                assert bool((values[name][free] == 0).all())  # released weights are zero
    # disjoint claims: what task r claims was free after task r-1 (no task takes another's)
    for r in range(1, len(claimed)):
        for name, cur in claimed[r][0].items():
            assert bool((claimed[r - 1][0][name][cur == r] == -1).all())
    for o in final_owner.values():  # every entry has one owner or none
        assert bool(((o >= -1) & (o < len(stream))).all())
    # task-aware inference: a task's outputs (so its accuracy) never change after it is learned
    for j, before in enumerate(logits_after):
        assert torch.equal(predict_logits(model, stream[j].test), before)
    matrix = result.accuracy_matrix
    for j in range(len(stream)):
        assert np.all(matrix[j:, j] == matrix[j, j])
    report = strategy.capacity_report()
    assert report and all(sum(r["weights"]) + r["free_weights"] == r["n_weights"] for r in report)
    if granularity == "unit":  # tasks claim whole units: 8, 4, 2 of 16; the rest stay free
        for name in strategy.prunable_:
            rows = final_owner[name].reshape(final_owner[name].shape[0], -1)
            assert bool((rows == rows[:, :1]).all())
        for rec in report:
            assert rec["new_units"] == [8, 4, 2] and rec["reused_units"] == [0, 8, 12]
            assert rec["free_units"] == [8, 4, 2]


def test_packnet_prunes_the_requested_fraction():
    _, model, strategy, _ = _run(
        "packnet", "task-incremental", {"prune_ratio": 0.25, "retrain_epochs": 0}
    )
    for rec in strategy.capacity_report():
        n = rec["n_weights"]
        expected = []
        free = n
        for _ in rec["weights"]:
            claim = free - int(0.25 * free)
            expected.append(claim)
            free -= claim
        assert rec["weights"] == expected


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_hft_freezes_half_of_every_tensor_despite_momentum_and_weight_decay(optimizer):
    stream = _stream("class-incremental")
    model = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    strategy = make_strategy("hft")
    cfg = TrainConfig(
        n_epochs=2,
        batch_size=16,
        lr=0.01,
        optimizer=optimizer,
        momentum=0.9,
        weight_decay=0.05,
        seed=0,
    )
    train_stream(model, stream, strategy, cfg, stop_after=1)
    masks = strategy.frozen_
    for name, p in model.named_parameters():
        m = masks[name]
        assert int(m.sum()) == p.numel() // 2
        assert torch.equal(p.detach()[m], before[name][m])
        assert not torch.equal(p.detach()[~m], before[name][~m])
    first = {n: m.clone() for n, m in masks.items()}
    strategy.begin(model, stream[1])
    assert any(
        not torch.equal(first[n], strategy.frozen_[n]) for n in first
    )  # fresh half per experience


def test_fpf_round_tunes_only_the_selected_modules():
    stream = _stream("class-incremental")
    model = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
    strategy = make_strategy("fpf", memory_size=20, n_modules=1, fpf_steps=5)
    data = stream[0].train
    for start in range(0, len(data), 16):
        idx = torch.arange(start, min(start + 16, len(data)))
        strategy.loss(model, Batch(data.x[idx], data.y[idx], data.ids[idx], None, 0))
    assert strategy.memory_used() == 20
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    strategy.end(model, stream[0])
    changed = {
        n.rsplit(".", 1)[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])
    }
    assert changed == set(strategy.selected_)
    assert set(strategy.sensitivity_) == {"body.1", "head"}


def test_kfpf_runs_periodic_rounds_without_replay():
    _, _, strategy, result = _run(
        "fpf", "class-incremental", {"memory_size": 25, "fpf_every": 4, "fpf_steps": 2}
    )
    assert strategy.n_rounds_ == result.n_steps // 4
    assert strategy.memory_used() <= 25


@pytest.mark.parametrize(
    ("name", "params", "shown"),
    [
        ("gem", {"memory_size": 0}, "memory_size"),
        ("agem", {"memory_size": 0}, "memory_size"),
        ("fpf", {"memory_size": 0}, "memory_size"),
        ("gem", {"memory_strength": -0.5}, "-0.5"),
        ("packnet", {"prune_ratio": 0.0}, "prune_ratio"),
        ("packnet", {"prune_ratio": 1.0}, "prune_ratio"),
        ("packnet", {"prune_ratio": 1.5}, "1.5"),
        ("hft", {"frozen_fraction": 1.0}, "frozen_fraction"),
    ],
)
def test_bad_input_names_the_value(name, params, shown):
    with pytest.raises(ObliviateError, match=shown) as err:
        make_strategy(name, **params)
    assert repr(next(iter(params.values()))) in str(err.value)


def test_packnet_needs_task_ids():
    stream = _stream("class-incremental")
    model = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
    with pytest.raises(ObliviateError, match="task ids"):
        train_stream(model, stream, make_strategy("packnet"), CFG)
