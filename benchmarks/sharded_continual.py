"""Cost of an exact deletion inside a stream (sharded continual learning) vs re-running the stream.

Per repeat (seed ``s`` = model init, data order and the ids picked): a
:class:`~obliviate.sharded.continual.ShardedContinual` store with ``--shards`` shards learns the
digits class-incremental stream (``--experiences`` experiences) with ``--strategy``; then

* ``one id``: one id drawn uniformly from the learned samples is forgotten;
* ``5 %``: 5 % of the remaining samples, drawn uniformly, are forgotten in one request;

and a fresh store learns the stream without all those ids from the start (the re-run, i.e. the
oracle the deletion must equal): its checkpoint hashes are compared with the deleted store's
(``equal``). For context, one model learns the stream with the continual loop
(:func:`obliviate.continual.loop.train_stream`, same recipe and strategy).

Times are wall seconds of the whole call (ledger transactions with fsync, checkpoint writes,
the receipt's accuracy figures included); the replay part is the receipt's replay time alone;
CPU speed-ups use the process's CPU time (robust to other load on a shared machine, blind to
fsync waits). One torch thread. Prints mean ± std over the repeats and the speed-ups (re-run / deletion).

Example (the run in docs/sharded.md)::

    python benchmarks/sharded_continual.py --repeats 3 --json results/sharded_continual.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--strategy", default="replay")
    ap.add_argument("--memory-size", type=int, default=200, help="replay memory (samples)")
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--slices", type=int, default=1)
    ap.add_argument("--experiences", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="append one JSON line per repeat here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from obliviate.continual import make_strategy
    from obliviate.continual.loop import train_stream
    from obliviate.data.datasets import load_dataset
    from obliviate.data.scenarios import build_scenario
    from obliviate.data.splits import Experience
    from obliviate.models import ModelSpec, build_model
    from obliviate.sharded.continual import ShardedContinual
    from obliviate.training import Recipe, TrainConfig

    train, test = load_dataset("digits")
    stream = build_scenario(
        "class-incremental", train, test, n_experiences=args.experiences, seed=0
    )
    params = {"memory_size": args.memory_size} if args.strategy in ("replay", "derpp") else {}

    def create(path: Path, recipe: Recipe, seed: int) -> ShardedContinual:
        return ShardedContinual.create(
            path,
            n_shards=args.shards,
            strategy=args.strategy,
            strategy_params=params,
            n_classes=stream.n_classes,
            sample_shape=stream.sample_shape,
            recipe=recipe,
            n_slices=args.slices,
            seed=seed,
        )

    with tempfile.TemporaryDirectory() as tmp:  # warm-up: imports, first kernels
        with create(Path(tmp) / "warm", Recipe(), 0) as warm:
            warm.learn(stream[0])
    rows = []
    for seed in range(args.repeats):
        recipe = Recipe(
            ModelSpec(hidden=(100,), seed=seed),
            TrainConfig(n_epochs=args.epochs, batch_size=32, lr=0.05, seed=seed),
        )
        rng = np.random.default_rng(seed)
        with tempfile.TemporaryDirectory() as tmp:
            store = create(Path(tmp) / "store", recipe, seed)
            t0, c0 = time.perf_counter(), time.process_time()
            for exp in stream.experiences:
                store.learn(exp)
            learn_s, learn_cpu = time.perf_counter() - t0, time.process_time() - c0
            acc = store.accuracy(test)
            learned = store.learned_ids()
            one = rng.choice(learned, size=1, replace=False)
            t0, c0 = time.perf_counter(), time.process_time()
            r1 = store.forget(one)
            one_s, one_cpu = time.perf_counter() - t0, time.process_time() - c0
            left = store.learned_ids()
            many = rng.choice(left, size=round(0.05 * len(learned)), replace=False)
            t0, c0 = time.perf_counter(), time.process_time()
            r2 = store.forget(many)
            many_s, many_cpu = time.perf_counter() - t0, time.process_time() - c0
            gone = np.concatenate([one, many])
            oracle = create(Path(tmp) / "oracle", recipe, seed)
            t0, c0 = time.perf_counter(), time.process_time()
            for exp in stream.experiences:
                keep = torch.as_tensor(~np.isin(exp.train.ids.numpy(), gone))
                oracle.learn(
                    Experience(
                        exp.index, exp.train.subset(keep), exp.test, exp.classes, exp.task_id
                    )
                )
            rerun_s, rerun_cpu = time.perf_counter() - t0, time.process_time() - c0
            equal = oracle.checkpoint_hashes() == store.checkpoint_hashes()
            store.close()
            oracle.close()
        model = build_model(recipe.model, stream.sample_shape, stream.n_classes)
        t0 = time.perf_counter()
        train_stream(model, stream, make_strategy(args.strategy, **params), recipe.train)
        single_s = time.perf_counter() - t0
        row = {
            "seed": seed,
            "strategy": args.strategy,
            "n_shards": args.shards,
            "n_slices": args.slices,
            "n_epochs": args.epochs,
            "test_accuracy": acc,
            "learn_s": learn_s,
            "learn_cpu_s": learn_cpu,
            "forget_one_cpu_s": one_cpu,
            "forget_5pct_cpu_s": many_cpu,
            "rerun_cpu_s": rerun_cpu,
            "forget_one_s": one_s,
            "forget_one_replay_s": r1["timings"]["retrain_seconds"],
            "forget_one_shards": len(r1["rolled_back_to"]),
            "forget_5pct_s": many_s,
            "forget_5pct_replay_s": r2["timings"]["retrain_seconds"],
            "n_forget_5pct": len(many),
            "rerun_s": rerun_s,
            "single_model_stream_s": single_s,
            "equal": equal,
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")

    def ms(key: str) -> str:
        v = np.array([r[key] for r in rows], dtype=float)
        return f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2f}"

    def ratio(num: str, den: str) -> str:
        v = np.array([r[num] / r[den] for r in rows])
        return f"{v.mean():.1f}× ± {v.std(ddof=1) if len(v) > 1 else 0.0:.1f}"

    print(
        f"digits class-incremental, {args.experiences} experiences, {args.strategy}, "
        f"S={args.shards}, R={args.slices}, {args.epochs} epochs, {len(rows)} repeats "
        "(mean ± std)"
    )
    print("| quantity | value |\n|---|---|")
    print(f"| test accuracy of the aggregate | {ms('test_accuracy')} |")
    print(f"| learn the stream (S shards), s | {ms('learn_s')} |")
    print(f"| re-run the stream without the deleted ids, s | {ms('rerun_s')} |")
    print(
        f"| forget 1 random id, s (replay part) | {ms('forget_one_s')} ({ms('forget_one_replay_s')}) |"
    )
    print(
        f"| forget 5 % of the samples, s (replay part) | {ms('forget_5pct_s')} ({ms('forget_5pct_replay_s')}) |"
    )
    print(f"| speed-up, 1 id (re-run / forget) | {ratio('rerun_s', 'forget_one_s')} |")
    print(f"| speed-up, 5 % (re-run / forget) | {ratio('rerun_s', 'forget_5pct_s')} |")
    print(f"| speed-up in CPU time, 1 id | {ratio('rerun_cpu_s', 'forget_one_cpu_s')} |")
    print(f"| speed-up in CPU time, 5 % | {ratio('rerun_cpu_s', 'forget_5pct_cpu_s')} |")
    print(f"| one model, continual loop, s | {ms('single_model_stream_s')} |")
    print(f"| bitwise equal to the re-run | {sum(r['equal'] for r in rows)}/{len(rows)} |")
    return 0 if all(r["equal"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
