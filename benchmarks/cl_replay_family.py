"""ER-ACE, X-DER, RWalk, MIR, GSS and BiC beside naive, replay and DER++ on class-incremental data.

Usage::

    python benchmarks/cl_replay_family.py [--seeds 0,1,2] [--dataset digits|mnist]
        [--data-dir DIR] [--strategies naive,replay,...] [--limit N] [--set name.key=value ...]

Every run is ``obliviate learn``'s machinery (:func:`obliviate.experiments.run_learn`): the
dataset's default recipe (:data:`obliviate.experiments.RECIPES`), 5 class-incremental experiences
of 2 classes, each strategy's default hyperparameters (``--set`` overrides; memory strategies
hold 200 samples). The seed drives the class order, the model init, the data order and the
strategy's own seed. Prints, per strategy, the mean +- sample std over the seeds of ACC (mean
final accuracy over the experiences), BWT, forgetting, learning accuracy (mean accuracy on
each experience right after learning it) and the seconds per run.
"""

from __future__ import annotations

import argparse
import ast
import json

import numpy as np
import torch

from obliviate.experiments import LearnSpec, run_learn

DEFAULT = "naive,replay,derpp,erace,xder,rwalk,mir,gss,bic"


def main() -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--dataset", default="digits", choices=("digits", "mnist"))
    p.add_argument("--data-dir", default=None, help="folder of the MNIST IDX files")
    p.add_argument("--strategies", default=DEFAULT)
    p.add_argument("--limit", type=int, default=None, help="keep the first N training rows")
    p.add_argument("--set", action="append", default=[], help="strategy.key=value (a literal)")
    p.add_argument("--json", default=None, help="also write every run's figures to this file")
    args = p.parse_args()
    params: dict[str, dict] = {}
    for item in args.set:
        lhs, _, value = item.partition("=")
        name, _, key = lhs.partition(".")
        params.setdefault(name, {})[key] = ast.literal_eval(value)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"{args.dataset}, class-incremental, 5 experiences, seeds {seeds}, default recipe"
        + (f", first {args.limit} training rows" if args.limit else "")
    )
    print(
        f"{'strategy':10s} {'ACC':>15s} {'BWT':>16s} {'forgetting':>15s} {'learning acc':>15s} "
        f"{'s/run':>7s}"
    )
    runs: dict[str, list[dict]] = {}
    for name in [s for s in args.strategies.split(",") if s]:
        rows = []
        for seed in seeds:
            spec = LearnSpec(
                dataset=args.dataset,
                scenario="class-incremental",
                n_experiences=5,
                strategy=name,
                params=params.get(name, {}),
                seed=seed,
                data_dir=args.data_dir,
                limit=args.limit,
            )
            r = run_learn(spec)
            keys = ("acc", "bwt", "forgetting", "learning_accuracy", "seconds", "n_steps")
            rows.append({k: r[k] for k in keys})
        runs[name] = rows

        def cell(key: str, rows: list[dict] = rows) -> str:
            v = np.array([r[key] for r in rows], dtype=float)
            sd = v.std(ddof=1) if v.size > 1 else 0.0
            return f"{v.mean():.3f} ± {sd:.3f}"

        secs = np.mean([r["seconds"] for r in rows])
        print(
            f"{name:10s} {cell('acc'):>15s} {cell('bwt'):>16s} {cell('forgetting'):>15s} "
            f"{cell('learning_accuracy'):>15s} {secs:7.1f}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "runs": runs}, fh, indent=1)


if __name__ == "__main__":
    main()
