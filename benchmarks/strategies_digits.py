"""ACC of the first strategies on digits: class-incremental 5x2 and domain-permutation 5.

Usage::

    python benchmarks/strategies_digits.py --seeds 0,1,2 [--epochs 5 --lr 0.01 --momentum 0.9]
        [--strategies naive,ewc,lwf,replay,joint] [--scenarios class-incremental,domain-permutation]
        [--set ewc.reg_strength=1000 ...]

Prints one line per (scenario, strategy): ACC mean +- std over seeds and the seconds per run.
The default recipe is obliviate's digits recipe (``obliviate.experiments.RECIPES["digits"]``: MLP
(100,), SGD lr 0.01 momentum 0.9, batch 32, 5 epochs per experience). The seed drives the class
order / permutations, the model init, the data order and the strategy's ``seed`` (unless set).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from obliviate._hyper import param_names
from obliviate.continual import make_strategy, strategy_class
from obliviate.continual.loop import train_stream
from obliviate.data import build_scenario, load_dataset
from obliviate.models import ModelSpec, model_for_stream
from obliviate.training import TrainConfig


def run(
    scenario: str, name: str, seed: int, params: dict, args: argparse.Namespace
) -> tuple[float, float]:
    train, test = load_dataset("digits")
    stream = build_scenario(scenario, train, test, n_experiences=5, seed=seed)
    model = model_for_stream(ModelSpec(hidden=tuple(args.hidden), seed=seed), stream)
    config = TrainConfig(
        n_epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        seed=seed,
    )
    started = time.perf_counter()
    if "seed" in param_names(strategy_class(name)):
        params = {"seed": seed, **params}
    res = train_stream(model, stream, make_strategy(name, **params), config)
    return float(np.mean(res.accuracy_matrix[-1])), time.perf_counter() - started


def main() -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, nargs="+", default=[100])
    p.add_argument("--strategies", default="naive,ewc,lwf,replay,joint")
    p.add_argument("--scenarios", default="class-incremental,domain-permutation")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        help="strategy.key=value (value parsed as Python literal)",
    )
    args = p.parse_args()
    import ast

    params: dict[str, dict] = {}
    for item in args.set:
        lhs, _, value = item.partition("=")
        strat, _, key = lhs.partition(".")
        params.setdefault(strat, {})[key] = ast.literal_eval(value)
    seeds = [int(s) for s in args.seeds.split(",")]
    for scenario in args.scenarios.split(","):
        for name in args.strategies.split(","):
            accs, secs = zip(
                *(run(scenario, name, s, params.get(name, {}), args) for s in seeds), strict=True
            )
            print(
                f"{scenario:20s} {name:10s} ACC {np.mean(accs):.3f} +- {np.std(accs):.3f}  "
                f"({', '.join(f'{a:.3f}' for a in accs)})  {np.mean(secs):.1f} s/run",
                flush=True,
            )


if __name__ == "__main__":
    main()
