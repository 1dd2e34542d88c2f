"""ACC of SI, MAS, L2 (domain-incremental) and DER, DER++, iCaRL, GDumb (class-incremental) on digits.

Usage::

    python benchmarks/strategies_regularisers_replay.py [--seeds 0,1,2] [--epochs N --lr LR --momentum M]
        [--regularisers naive,si,mas,l2] [--replay naive,der,derpp,icarl,gdumb,replay]
        [--set si.reg_strength=3 ...]

Regularisers run on 5-permutation domain-incremental digits, replay methods on class-incremental
digits (5 experiences x 2 classes). Every run uses the strategies' default hyperparameters
(``--set`` overrides) and, unless flags override it, the digits recipe of
:data:`obliviate.experiments.RECIPES`. Prints ACC mean +- std over the seeds and seconds per run.
The seed drives the class order / permutations, the model init, the data order and the
strategy's own seed.
"""

from __future__ import annotations

import argparse
import ast
import time

import numpy as np
import torch

from obliviate.experiments import LearnSpec, run_learn


def main() -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--regularisers", default="naive,si,mas,l2")
    p.add_argument("--replay", default="naive,der,derpp,icarl,gdumb")
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
    recipe = {
        "n_epochs": args.epochs,
        "lr": args.lr,
        "momentum": args.momentum,
        "batch_size": args.batch_size,
    }
    recipe = {k: v for k, v in recipe.items() if v is not None}
    jobs = [("domain-permutation", s) for s in args.regularisers.split(",") if s] + [
        ("class-incremental", s) for s in args.replay.split(",") if s
    ]
    print(
        f"digits, 5 experiences, seeds {seeds}, recipe overrides {recipe or 'none (digits default)'}"
    )
    for scenario, name in jobs:
        accs, secs = [], []
        for seed in seeds:
            spec = LearnSpec(
                dataset="digits",
                scenario=scenario,
                n_experiences=5,
                strategy=name,
                params=params.get(name, {}),
                seed=seed,
                **recipe,
            )
            started = time.perf_counter()
            accs.append(run_learn(spec)["acc"])
            secs.append(time.perf_counter() - started)
        print(
            f"{scenario:20s} {name:8s} ACC {np.mean(accs):.3f} +- {np.std(accs):.3f}  "
            f"(per seed {', '.join(f'{a:.3f}' for a in accs)})  {np.mean(secs):.1f} s/run",
            flush=True,
        )


if __name__ == "__main__":
    main()
