"""Deletion time of one random sample vs full retraining, SISA S x R grid, and shard graphs.

For each dataset and each (S, R), trains a store in-process (inline backend: one job after the
other, one torch thread, so times are compute, not parallelism), deletes ``--deletions`` random
training samples one request at a time, and prints a table: test accuracy, full (re)training
time, mean deletion time, the speed-up, SISA's ideal speed-up S*2R/(R+1) and the fraction of it
reached. Two speed-ups are shown:

* wall: ``ShardedStore.train`` wall time / ``forget`` wall time (everything: ledger transactions
  with fsync, checkpoint writes, the receipt's accuracy-before/after verification);
* CPU: the same in CPU time of the process (``time.process_time``): robust to other load on a
  shared machine, blind to fsync waits;
* retrain: wall time running the shard jobs in full training / in the deletion (the part SISA
  speeds up, without ledger and verification overheads).

``--graphs`` adds a shard-graph table (SAFE): for one (S, R), each graph's test accuracy, expected
forgetting cost (fraction of full training one random deletion re-runs, from the actual
assignment) and measured deletion speed-up, next to plain SISA.

``--breakdown`` prints instead where the CPU time of one deletion goes, phase by phase (the
refuse-before-record check, recording the request, the receipt's accuracy figures, the shard
jobs and, inside them, SGD steps, checkpoint writes with fsync, model builds and base reads;
garbage collection of replaced checkpoints), for each (S, R) on digits, mean over
``--deletions`` deletions after a warm-up deletion.

Example (the run in docs/sharded.md)::

    python benchmarks/sharded_deletion.py --datasets digits,mnist --data-dir /path/to/mnist \
        --mnist-limit 20000 --json results/sharded.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch


def parse_ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="digits,mnist")
    ap.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    ap.add_argument("--shards", default="1,2,5,10,20")
    ap.add_argument("--slices", default="1,4")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument(
        "--mnist-epochs", type=int, default=None, help="epochs on mnist (default --epochs)"
    )
    ap.add_argument(
        "--mnist-limit",
        type=int,
        default=None,
        help="first N MNIST training rows (default all 60000)",
    )
    ap.add_argument("--hidden", default="100")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument(
        "--deletions", type=int, default=3, help="deletions per configuration (mean reported)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs per configuration with seeds seed..seed+N-1 (mean ± std over them)",
    )
    ap.add_argument(
        "--train-repeats",
        type=int,
        default=3,
        help="full trainings timed per configuration on digits (median); 1 on mnist",
    )
    ap.add_argument(
        "--graphs", default="", help="shard graphs to compare, e.g. none,ring:1,cliques:2 (digits)"
    )
    ap.add_argument("--graph-shards", type=int, default=10)
    ap.add_argument("--graph-slices", type=int, default=1)
    ap.add_argument("--json", default=None, help="append one JSON line per run to this file")
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="print the per-phase CPU time of one deletion (digits) instead of the speed-up table",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.breakdown:
        for s in parse_ints(args.shards):
            for r in parse_ints(args.slices):
                breakdown(s, r, args.deletions, args.epochs, args.lr, parse_ints(args.hidden))
        return 0

    from obliviate.experiments import run_sharded

    hidden = parse_ints(args.hidden)
    out = open(args.json, "a") if args.json else None  # noqa: SIM115

    def run(spec: dict) -> dict:
        res = run_sharded(spec)
        if out:
            out.write(json.dumps(res, default=str) + "\n")
            out.flush()
        return res

    # warm-up: first-call costs (lazy imports, kernels, first touch of the full-size data tensors)
    # must not land in the first row of the table
    run_sharded(
        {
            "dataset": "digits",
            "limit": 200,
            "n_shards": 2,
            "n_slices": 2,
            "hidden": hidden,
            "n_epochs": 1,
            "n_deletions": 1,
        }
    )
    for dataset in [d for d in args.datasets.split(",") if d]:
        run_sharded(
            {
                "dataset": dataset,
                "data_dir": args.data_dir,
                "n_shards": 1,
                "n_slices": 1,
                "hidden": hidden,
                "n_epochs": 0,
                "n_deletions": 1,
                "limit": args.mnist_limit if dataset == "mnist" else None,
            }
        )
    header = (
        "| dataset | n_train | S | R | test acc | full retrain s | deletion s | speed-up wall "
        "| speed-up CPU | speed-up retrain | ideal S·2R/(R+1) | % of ideal wall | % of ideal CPU |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for dataset in [d for d in args.datasets.split(",") if d]:
        epochs = args.mnist_epochs if dataset == "mnist" and args.mnist_epochs else args.epochs
        limit = args.mnist_limit if dataset == "mnist" else None
        for s in parse_ints(args.shards):
            for r in parse_ints(args.slices):
                reps = [
                    run(
                        {
                            "dataset": dataset,
                            "data_dir": args.data_dir,
                            "limit": limit,
                            "n_shards": s,
                            "n_slices": r,
                            "hidden": hidden,
                            "n_epochs": epochs,
                            "lr": args.lr,
                            "n_deletions": args.deletions,
                            "seed": args.seed + k,  # another assignment, init and victims
                            "train_repeats": 1 if dataset == "mnist" else args.train_repeats,
                        }
                    )
                    for k in range(args.repeats)
                ]
                res = reps[0]
                ideal = res["ideal_speedup"]

                def cell(key: str, fmt: str = ".2f", scale: float = 1.0, reps: list = reps) -> str:
                    vals = [scale * x[key] for x in reps]
                    mean = statistics.fmean(vals)
                    if len(vals) == 1:
                        return f"{mean:{fmt}}"
                    return f"{mean:{fmt}} ± {statistics.stdev(vals):{fmt}}"

                pct = 100 / ideal
                print(
                    f"| {dataset} | {res['n_train']} | {s} | {r} | {cell('test_accuracy', '.4f')} | "
                    f"{cell('train_seconds')} | {cell('deletion_seconds', '.3f')} | "
                    f"{cell('speedup')} | {cell('cpu_speedup')} | {cell('retrain_speedup')} | "
                    f"{ideal:.2f} | {cell('speedup', '.0f', pct)} % | "
                    f"{cell('cpu_speedup', '.0f', pct)} % |",
                    flush=True,
                )
    graphs = [g for g in args.graphs.split(",") if g]
    if graphs:
        print()
        print(
            "| graph (digits) | S | R | test acc | expected cost (fraction of full training) | "
            "deletion s | speed-up CPU |"
        )
        print("|---|---|---|---|---|---|---|")
        for g in graphs:
            res = run(
                {
                    "dataset": "digits",
                    "n_shards": args.graph_shards,
                    "n_slices": args.graph_slices,
                    "graph": g,
                    "hidden": hidden,
                    "n_epochs": args.epochs,
                    "lr": args.lr,
                    "n_deletions": args.deletions,
                    "seed": args.seed,
                    "train_repeats": args.train_repeats,
                }
            )
            print(
                f"| {g} | {args.graph_shards} | {args.graph_slices} | {res['test_accuracy']:.4f} | "
                f"{res['expected_cost']:.3f} | {res['deletion_seconds']:.3f} | {res['cpu_speedup']:.2f} |",
                flush=True,
            )
    if out:
        out.close()
    return 0


def breakdown(
    n_shards: int, n_slices: int, n_deletions: int, n_epochs: int, lr: float, hidden: list[int]
) -> None:
    """Per-phase CPU time of one deletion on digits (inline backend, one thread)."""
    import collections
    import functools
    import tempfile
    import time

    import numpy as np

    from obliviate.models import ModelSpec
    from obliviate.sharded import building, deletion, jobs, receipts
    from obliviate.sharded.config import DataSpec, ShardConfig
    from obliviate.sharded.sisa import ShardedStore
    from obliviate.training import Recipe, TrainConfig

    spent: dict[str, float] = collections.defaultdict(float)
    spent_wall: dict[str, float] = collections.defaultdict(float)
    originals = []

    def wrap(owner: object, name: str, label: str) -> None:
        fn = getattr(owner, name)
        originals.append((owner, name, fn))

        @functools.wraps(fn)
        def timed(*a: object, **k: object) -> object:
            c0, w0 = time.process_time(), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += time.process_time() - c0
                spent_wall[label] += time.perf_counter() - w0

        setattr(owner, name, timed)

    phases = [
        (ShardedStore, "_recover_locked", "recover (finish interrupted requests)"),
        (deletion, "check_bases", "refuse-before-record check"),
        (deletion, "submit", "record the request (1 transaction)"),
        (deletion, "training_rows", "load the removed rows"),
        (deletion, "shard_scores", "receipt accuracy before/after: shard scores"),
        (deletion, "accuracy_of", "receipt accuracy before/after: ensemble"),
        (deletion, "run", "shard jobs (retraining), total"),
        (jobs, "train_stage", "  SGD steps"),
        (jobs.CheckpointBatch, "add", "  checkpoint serialise + write"),
        (jobs.CheckpointBatch, "commit", "  checkpoint fsyncs (grouped) + renames"),
        (jobs, "build_model", "  model build"),
        (jobs, "read_checkpoint", "  base checkpoint (re-hashed by the check, kept)"),
        (deletion, "complete", "commit the pass (1 transaction, receipt)"),
        (receipts, "build_receipt", "  build the receipt"),
        (building, "collect_garbage", "delete replaced checkpoints"),
    ]
    for owner, name, label in phases:
        wrap(owner, name, label)
    try:
        recipe = Recipe(
            model=ModelSpec(name="mlp", hidden=tuple(hidden), seed=0),
            train=TrainConfig(n_epochs=n_epochs, batch_size=32, lr=lr, seed=0),
        )
        config = ShardConfig(n_shards=n_shards, n_slices=n_slices, seed=0, recipe=recipe)
        data = DataSpec(dataset="digits")
        with tempfile.TemporaryDirectory() as tmp:
            ShardedStore.train(
                Path(tmp) / "warm", data=data, config=config, backend="inline"
            ).close()
            c0 = time.process_time()
            store = ShardedStore.train(Path(tmp) / "s", data=data, config=config, backend="inline")
            train_cpu = time.process_time() - c0
            ids = store.ledger.samples(("active",))[:, 0]
            victims = np.random.default_rng(0).choice(ids, n_deletions + 1, replace=False)
            store.forget([int(victims[0])])  # warm-up
            spent.clear()
            spent_wall.clear()
            c0, w0 = time.process_time(), time.perf_counter()
            for v in victims[1:].tolist():
                store.forget([v])
            per = (time.process_time() - c0) / n_deletions
            per_wall = (time.perf_counter() - w0) / n_deletions
            store.close()
    finally:
        for owner, name, fn in originals:
            setattr(owner, name, fn)
    ideal = n_shards * 2 * n_slices / (n_slices + 1)
    print(
        f"digits S={n_shards} R={n_slices}: full training {1000 * train_cpu:.0f} ms CPU, one "
        f"deletion {1000 * per:.1f} ms CPU, {1000 * per_wall:.1f} ms wall (mean of {n_deletions}); "
        f"CPU speed-up {train_cpu / per:.1f} against the ideal {ideal:.1f} "
        f"({100 * train_cpu / per / ideal:.0f} %)"
    )
    print("| phase | CPU ms per deletion | share of CPU | wall ms per deletion | share of wall |")
    print("|---|---|---|---|---|")
    for _, _, label in phases:
        c, w = spent[label] / n_deletions, spent_wall[label] / n_deletions
        print(
            f"| {label} | {1000 * c:.2f} | {100 * c / per:.0f} % | {1000 * w:.2f} | "
            f"{100 * w / per_wall:.0f} % |"
        )
    top = [k for k in spent if not k.startswith("  ")]
    oc = per - sum(spent[k] for k in top) / n_deletions
    ow = per_wall - sum(spent_wall[k] for k in top) / n_deletions
    print(
        f"| everything else (locks, ledger reads, receipt read) | {1000 * oc:.2f} | "
        f"{100 * oc / per:.0f} % | {1000 * ow:.2f} | {100 * ow / per_wall:.0f} % |"
    )
    print()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    raise SystemExit(main())
