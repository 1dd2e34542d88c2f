"""LUCIR, CoPE, SLDA, PNN, L2P and REMIND beside naive and replay on a 5-experience split.

Usage::

    python benchmarks/cl_architectural.py [--seeds 0,1,2] [--dataset digits|mnist]
        [--data-dir DIR] [--limit N] [--epochs N] [--strategies naive,replay,...]
        [--encoder fashion-mnist|blobs] [--set strategy.key=value ...]

A row ``name:key=value;key=value`` runs the strategy with those hyperparameters (its own row).

Class-incremental split, 5 experiences x 2 classes, the dataset's default recipe
(:data:`obliviate.experiments.RECIPES`; ``--epochs`` overrides it). PNN needs task ids, so it
runs on the task-incremental split of the same classes (multi-head model), and so do the
``naive-til`` / ``replay-til`` reference rows. SLDA, L2P and REMIND run on a frozen encoder
pretrained on Fashion-MNIST (``--encoder``; resized to 8x8 for digits), never on the stream
(:mod:`obliviate.continual._encoder`). Prints ACC, BWT and forgetting as mean +- sample std over
the seeds, and seconds per run (training loop only; the encoder's pretraining is cached on disk
after the first run per seed and its time is not in the loop's clock).
"""

from __future__ import annotations

import argparse
import ast
import time

import numpy as np
import torch

from obliviate.experiments import LearnSpec, run_learn

ENCODER_STRATEGIES = ("slda", "l2p", "remind")
TASK_AWARE = {"pnn": "pnn", "naive-til": "naive", "replay-til": "replay"}
DEFAULT = "naive,replay,lucir,cope,slda,l2p,remind,naive-til,replay-til,pnn"


def main() -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--limit", type=int, default=None, help="keep the first N training rows")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--strategies", default=DEFAULT)
    p.add_argument("--encoder", default="fashion-mnist", choices=("fashion-mnist", "blobs"))
    p.add_argument(
        "--set", action="append", default=[], help="strategy.key=value (a Python literal)"
    )
    args = p.parse_args()
    params: dict[str, dict] = {}
    for item in args.set:
        lhs, _, value = item.partition("=")
        strategy, _, key = lhs.partition(".")
        params.setdefault(strategy, {})[key] = ast.literal_eval(value)
    seeds = [int(s) for s in args.seeds.split(",")]
    recipe = {} if args.epochs is None else {"n_epochs": args.epochs}
    print(
        f"{args.dataset}, 5 experiences, seeds {seeds}, limit {args.limit}, "
        f"recipe overrides {recipe or 'none'}, encoder {args.encoder}"
    )
    print(f"{'strategy':22s} {'scenario':18s} {'ACC':>15s} {'BWT':>16s} {'forgetting':>15s}  s/run")
    for row in [s for s in args.strategies.split(",") if s]:
        base, _, overrides = row.partition(":")  # e.g. "cope:momentum=0.9"
        name = TASK_AWARE.get(base, base)
        scenario = "task-incremental" if base in TASK_AWARE else "class-incremental"
        extra = dict(params.get(base, {}))
        for item in [o for o in overrides.split(";") if o]:
            key, _, value = item.partition("=")
            extra[key] = ast.literal_eval(value)
        if name in ENCODER_STRATEGIES:
            extra.setdefault("encoder", args.encoder)
        runs = []
        for seed in seeds:
            spec = LearnSpec(
                dataset=args.dataset,
                scenario=scenario,
                n_experiences=5,
                strategy=name,
                params=extra,
                seed=seed,
                data_dir=args.data_dir,
                limit=args.limit,
                **recipe,
            )
            started = time.perf_counter()
            result = run_learn(spec)
            result["wall"] = time.perf_counter() - started
            runs.append(result)

        def stat(key: str, runs: list = runs) -> str:
            v = np.asarray([r[key] for r in runs], dtype=float)
            sd = v.std(ddof=1) if v.size > 1 else 0.0
            return f"{v.mean():.3f} +- {sd:.3f}"

        secs = np.mean([r["seconds"] for r in runs])
        per_seed = ", ".join(f"{r['acc']:.3f}" for r in runs)
        print(
            f"{row:22s} {scenario:18s} {stat('acc'):>15s} {stat('bwt'):>16s} "
            f"{stat('forgetting'):>15s}  {secs:.1f}   "
            f"(ACC per seed {per_seed})",
            flush=True,
        )


if __name__ == "__main__":
    main()
