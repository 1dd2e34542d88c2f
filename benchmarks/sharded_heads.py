"""Exact sharded unlearning of a classifier: per-shard heads on a frozen backbone (SAFE's
design, :class:`obliviate.sharded.heads.ShardedHeads`) against whole models per shard
(:class:`obliviate.sharded.ShardedStore`, SISA), digits.

The backbone is the 100-unit hidden layer of an MLP pre-trained on 30 % of the training rows
(the "public" pre-training data, never deleted); both sharded models train on the other 70 %,
S shards x R slices, the same epochs, batch size and Adam lr. Each deletion request is one id.

    python benchmarks/sharded_heads.py [--seeds 0,1,2] [--shards 5] [--slices 2] [--requests 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from torch import nn

from obliviate._rng import generator
from obliviate.data.datasets import load_dataset
from obliviate.models import ModelSpec
from obliviate.models.base import seeded_init
from obliviate.sharded import DataSpec, ShardConfig, ShardedStore
from obliviate.sharded.heads import ShardedHeads
from obliviate.training import Recipe, TrainConfig, fit


def one_seed(seed: int, a: argparse.Namespace) -> dict[str, float]:
    train, test = load_dataset("digits")
    perm = torch.randperm(len(train), generator=generator(seed, "bench-heads-split"))
    n_pre = int(0.3 * len(train))
    pre, own = train.subset(perm[:n_pre]), train.subset(perm[n_pre:])
    with seeded_init(seed):
        trunk = nn.Sequential(nn.Flatten(), nn.Linear(64, 100), nn.ReLU())
        net = nn.Sequential(trunk, nn.Linear(100, 10))
    fit(
        net,
        pre,
        TrainConfig(n_epochs=a.epochs, batch_size=32, lr=1e-3, optimizer="adam", seed=seed),
    )
    for p in trunk.parameters():
        p.requires_grad_(False)
    ids = own.ids[
        torch.randperm(len(own), generator=generator(seed, "bench-heads-req"))[: a.requests]
    ]

    out: dict[str, float] = {}
    t0 = time.perf_counter()
    heads = ShardedHeads(
        n_shards=a.shards, n_slices=a.slices, n_epochs=a.epochs, lr=1e-3, batch_size=32, seed=seed
    ).fit(trunk, own)
    out["heads_train_s"] = time.perf_counter() - t0
    secs = [heads.forget([int(i)])["seconds"] for i in ids]
    out["heads_request_s"] = statistics.mean(secs)
    out["heads_acc"] = float((heads.predict(test.x) == test.y).float().mean())

    with tempfile.TemporaryDirectory() as tmp:
        np.savez(
            f"{tmp}/own.npz",
            x=own.x.flatten(1).numpy(),
            y=own.y.numpy(),
            ids=own.ids.numpy(),
            x_test=test.x.flatten(1).numpy(),
            y_test=test.y.numpy(),
            ids_test=np.arange(10**6, 10**6 + len(test)),
        )
        data = DataSpec(f"npz:{tmp}/own.npz")
        config = ShardConfig(
            n_shards=a.shards,
            n_slices=a.slices,
            seed=seed,
            recipe=Recipe(
                ModelSpec("mlp", (100,), seed=seed),
                TrainConfig(n_epochs=a.epochs, batch_size=32, lr=1e-3, optimizer="adam", seed=seed),
            ),
        )
        t0 = time.perf_counter()
        store = ShardedStore.train(f"{tmp}/store", data=data, config=config, backend="inline")
        out["whole_train_s"] = time.perf_counter() - t0
        secs = []
        for i in ids:
            t0 = time.perf_counter()
            store.forget([int(i)])
            secs.append(time.perf_counter() - t0)
        out["whole_request_s"] = statistics.mean(secs)
        _, st_test = load_dataset(data.dataset)
        out["whole_acc"] = float(store.accuracy(st_test) or float("nan"))
        store.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--shards", type=int, default=5)
    p.add_argument("--slices", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--requests", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)
    rows = [one_seed(int(s), a) for s in a.seeds.split(",")]
    print(
        f"digits, S={a.shards} R={a.slices}, {a.epochs} epochs, {len(rows)} seed(s), "
        f"{a.requests} one-id requests each (mean ± std over seeds)"
    )
    print("| model | train s | s per request | test acc |")
    print("|---|---|---|---|")
    for name, key in (
        ("whole MLP(100) per shard (SISA)", "whole"),
        ("frozen backbone + linear head per shard (SAFE)", "heads"),
    ):
        cells = []
        for col in ("train_s", "request_s", "acc"):
            v = [r[f"{key}_{col}"] for r in rows]
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{statistics.mean(v):.3f} ± {sd:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
