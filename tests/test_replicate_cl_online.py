"""benchmarks/replicate_cl.py's online protocols: valid strategies, per-task sampling, streams."""

from __future__ import annotations

from pathlib import Path

import torch
from _benchmarks import load

from obliviate.continual import STRATEGIES, make_strategy
from obliviate.data.dataset import Dataset

ROOT = Path(__file__).resolve().parents[1]
rep = load("replicate_cl")


def _digits(n: int, seed: int) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    y = torch.arange(n) % 10
    return Dataset.from_arrays(x.numpy(), y.numpy(), n_classes=10, name="toy")


def test_every_protocol_builds_its_strategies_and_cites_a_source() -> None:
    for name, p in rep.ONLINE.items():
        assert p["source"], name
        assert set(p["reference"]) <= set(p["methods"]), name
        for method, params in p["methods"].items():
            assert method in STRATEGIES, (name, method)
            make_strategy(method, **params)  # raises on a bad hyperparameter
        if "mir" in p["methods"]:  # the virtual step is the optimiser's step (Algorithm 1)
            assert p["methods"]["mir"]["virtual_lr"] == p["lr"], name


def test_sample_per_task_draws_distinct_rows_per_seed_and_keeps_tests() -> None:
    train, test = _digits(200, 0), _digits(50, 1)
    stream = rep.split_stream(train, test, "class")
    a = rep.sample_per_task(stream, 7, seed=0)
    b = rep.sample_per_task(stream, 7, seed=1)
    for e, ea in zip(stream, a, strict=True):
        assert len(ea.train) == 7 and ea.test is e.test
        assert set(ea.train.y.tolist()) <= set(e.classes)
        assert set(ea.train.ids.tolist()) <= set(e.train.ids.tolist())
    assert any(not torch.equal(ea.train.ids, eb.train.ids) for ea, eb in zip(a, b, strict=True))
    assert rep.sample_per_task(stream, 0, seed=0) is stream


def test_perm_stream_gives_disjoint_rows_per_task_and_a_permutation_each() -> None:
    train, test = _digits(200, 0), _digits(50, 1)
    stream = rep.perm_stream(train, test, n_tasks=3, per_task=20, seed=0)
    assert len(stream) == 3
    ids = [set(e.train.ids.tolist()) for e in stream]
    assert all(len(s) == 20 for s in ids)
    assert not (ids[0] & ids[1]) and not (ids[1] & ids[2])
    # the first task is unpermuted, a later one is a permutation of the same test pixels
    assert torch.equal(stream[0].test.x, test.x)
    flat0 = stream[0].test.x.reshape(len(test), -1)
    flat2 = stream[2].test.x.reshape(len(test), -1)
    assert not torch.equal(flat0, flat2)
    assert torch.equal(flat0.sort(dim=1).values, flat2.sort(dim=1).values)
