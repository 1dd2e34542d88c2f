"""Continual evaluation on digits: min-ACC, WC-ACC and the stability gap per strategy.

    .venv/bin/python benchmarks/stability_gap.py --seeds 0,1,2 --eval-every 5

Each run evaluates every ``--eval-every`` optimiser steps on all experiences seen so far
(``LearnSpec.eval_every``); the metrics are :mod:`obliviate.metrics.stability` on those curves
(De Lange et al., ICLR 2023). ``drop``: mean over (old experience, task switch) pairs of the
accuracy just before the switch minus the minimum while the next experience trains; ``recovery``:
that minimum to the accuracy at the end of the next experience.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from obliviate.experiments import LearnSpec, run_learn
from obliviate.metrics.stability import min_acc, stability_gap, wc_acc


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--scenario", default="class-incremental")
    ap.add_argument("--strategies", default="naive,ewc,replay,der,agem,joint")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--eval-every", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(
        f"{args.dataset} / {args.scenario}, 5 experiences, default recipe, eval every {args.eval_every} steps, seeds {seeds}"
    )
    print("| strategy | final ACC | min-ACC | WC-ACC | stability gap: drop | recovery |")
    print("|---|---|---|---|---|---|")
    for name in args.strategies.split(","):
        rows = []
        for s in seeds:
            spec = LearnSpec(
                dataset=args.dataset,
                scenario=args.scenario,
                strategy=name,
                seed=s,
                eval_every=args.eval_every,
            )
            out = run_learn(spec)
            c, r = out["curves"], np.array(out["accuracy_matrix"], dtype=float)
            acc = np.array(
                [[np.nan if v is None else v for v in row] for row in c["acc"]], dtype=float
            )
            gap = stability_gap(acc, c["experience"], r)
            rows.append(
                (
                    out["acc"],
                    min_acc(acc, c["experience"], r),
                    wc_acc(acc, c["experience"], r),
                    gap["mean_drop"],
                    gap["mean_recovery"],
                )
            )
        table = np.array(rows, dtype=float)
        cells = " | ".join(
            "–"
            if np.isnan(col).all()
            else f"{np.mean(col):.3f} ± {np.std(col, ddof=1) if len(col) > 1 else 0.0:.3f}"
            for col in table.T
        )
        print(f"| {name} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
