"""Population trainer vs one-by-one training: N digits MLPs, side by side in one run (issue #16).

Trains the same N recipes (the digits forget recipe: MLP(128), Adam 1e-3, batch 32; N seeds)
once with :func:`obliviate.population.fit_population` and once one by one with
``Recipe.fit``, ``--repeats`` times in alternation, on one thread (``torch.set_num_threads(1)``)
unless ``--threads`` says otherwise, and prints each repeat, the median ratio with its range,
the largest weight difference between the two (the agreement), and the machine's load average.

    python benchmarks/population.py                       # N = 32, 30 epochs, 3 repeats
    python benchmarks/population.py --n-models 8 --n-epochs 2 --repeats 2   # quick
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace

import torch

from obliviate.data.datasets import load_dataset
from obliviate.experiments.forget import default_recipe, seeded
from obliviate.population import fit_population


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-models", type=int, default=32)
    ap.add_argument("--n-epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, _ = load_dataset("digits")
    base = default_recipe("digits")
    base = type(base)(base.model, replace(base.train, n_epochs=args.n_epochs))
    recipes = [seeded(base, s) for s in range(args.n_models)]
    fit_population(recipes[:2], train)  # warm up torch.func's first-call costs
    recipes[0].fit(train)
    print(
        f"digits MLP(128) Adam lr 1e-3 batch 32, {args.n_epochs} epochs, N={args.n_models}, "
        f"threads={args.threads}, CPU, torch {torch.__version__}"
    )
    print(f"load average before: {os.getloadavg()}")
    ratios, diffs = [], []
    for rep in range(args.repeats):
        t = time.perf_counter()
        together = fit_population(recipes, train)
        t_pop = time.perf_counter() - t
        t = time.perf_counter()
        alone = [r.fit(train) for r in recipes]
        t_one = time.perf_counter() - t
        with torch.no_grad():
            diff = max(
                float((p - q).abs().max())
                for a, b in zip(together, alone, strict=True)
                for p, q in zip(a.parameters(), b.parameters(), strict=True)
            )
        ratios.append(t_one / t_pop)
        diffs.append(diff)
        print(
            f"repeat {rep}: one by one {t_one:7.2f} s   population {t_pop:6.2f} s   "
            f"ratio {t_one / t_pop:5.2f}x   max |w_pop - w_fit| {diff:.2e}"
        )
    print(
        f"speed-up: median {statistics.median(ratios):.2f}x "
        f"(range {min(ratios):.2f}-{max(ratios):.2f}, {args.repeats} repeats); "
        f"largest weight difference {max(diffs):.2e}"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
