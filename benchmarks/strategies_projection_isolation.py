"""ACC of gradient-projection and parameter-isolation strategies on digits (5 experiences x 2 classes).

Usage::

    python benchmarks/strategies_projection_isolation.py --seeds 0,1,2 [--epochs 5 --lr 0.05 --batch-size 32 --memory 200]

- class-incremental: naive, gem, agem, fpf (FPF on replay) and k-FPF (``fpf_every=20``), each
  memory-based one with ``--memory`` samples in total;
- task-incremental (multi-head): naive, packnet (per-weight and per-unit pruning), hft; then
  the capacity report of the per-unit PackNet (free vs reused units per layer after each task,
  as in CLNP) for the first seed;
- online: the class-incremental stream without boundaries, blurry 0.1, one pass in batches of
  10 (``online_config``): naive, der, derpp (boundary-free strategies);
- recurring: 20 experiences over the 5 class-incremental tasks on a power-law schedule
  (alpha 1): naive and agem; ACC is the mean final accuracy over the 5 distinct tasks.

Prints ACC mean +- std over the seeds and the mean seconds per run. The seed drives the class
order, the model init, the data order and the strategies' own draws.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from obliviate.continual import make_strategy
from obliviate.continual.loop import train_stream
from obliviate.data import build_scenario, load_dataset
from obliviate.data.streams import distinct_tasks, task_accuracy
from obliviate.models import ModelSpec, model_for_stream
from obliviate.training import TrainConfig, online_config


def run(scenario: str, name: str, params: dict, seed: int, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """ACC after the last experience (mean over distinct tasks), seconds, the trained strategy."""
    train, test = load_dataset("digits")
    extra = dict(SCENARIO_ARGS.get(scenario, {}))
    n_exp = extra.pop("n_experiences", 5)
    stream = build_scenario(scenario, train, test, n_experiences=n_exp, seed=seed, **extra)
    model = model_for_stream(ModelSpec(hidden=tuple(args.hidden), seed=seed), stream)
    config = TrainConfig(n_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed)
    if scenario == "online":
        config = online_config(config)
    strategy = make_strategy(name, **params)
    started = time.perf_counter()
    result = train_stream(model, stream, strategy, config)
    final = task_accuracy(result.accuracy_matrix, distinct_tasks(stream))[-1]
    return float(np.mean(final)), time.perf_counter() - started, strategy


SCENARIO_ARGS = {
    "online": {"blurry": 0.1},  # single pass, batches of 10 (online_config)
    "recurring": {
        "n_experiences": 20,
        "n_tasks": 5,
        "alpha": 1.0,
    },  # class-incremental tasks recurring
}


def main() -> None:
    torch.set_num_threads(1)
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, nargs="+", default=[100])
    p.add_argument("--memory", type=int, default=200)
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    m = args.memory
    table = [
        ("class-incremental", "naive", {}),
        ("class-incremental", "gem", {"memory_size": m}),
        ("class-incremental", "agem", {"memory_size": m}),
        ("class-incremental", "fpf", {"memory_size": m}),
        ("class-incremental", "fpf", {"memory_size": m, "fpf_every": 20}),
        ("task-incremental", "naive", {}),
        ("task-incremental", "packnet", {}),
        ("task-incremental", "packnet", {"granularity": "unit"}),
        ("task-incremental", "hft", {}),
        ("online", "naive", {}),
        ("online", "der", {"memory_size": m}),
        ("online", "derpp", {"memory_size": m}),
        ("recurring", "naive", {}),
        ("recurring", "agem", {"memory_size": m}),
    ]
    print(
        f"digits, 5 x 2 classes, MLP {args.hidden}, {args.epochs} epochs, lr {args.lr}, batch {args.batch_size}, seeds {seeds}"
    )
    print(f"{'scenario':<18} {'strategy':<36} {'ACC':>15} {'s/run':>7}")
    packnet_report = None
    for scenario, name, params in table:
        accs, secs = [], []
        for seed in seeds:
            acc, sec, strategy = run(scenario, name, dict(params), seed, args)
            accs.append(acc)
            secs.append(sec)
            if name == "packnet" and params and packnet_report is None:
                packnet_report = strategy.capacity_report()
        label = name + (
            "" if not params else "(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"
        )
        print(
            f"{scenario:<18} {label:<36} {np.mean(accs):.3f} +- {np.std(accs):.3f} {np.mean(secs):7.2f}"
        )
    if packnet_report:
        print(
            f"\nPackNet, granularity=unit, capacity (seed {seeds[0]}), per layer and task: claimed weights | used / reused / new / free units"
        )
        for rec in packnet_report:
            print(
                f"{rec['layer']}: {rec['n_units']} units, {rec['n_weights']} weights, {rec['free_weights']} free now"
            )
            for t in range(len(rec["weights"])):
                print(
                    f"  task {t}: {rec['weights'][t]:>6} weights | used {rec['used_units'][t]:>4}  "
                    f"reused {rec['reused_units'][t]:>4}  new {rec['new_units'][t]:>4}  free {rec['free_units'][t]:>4}"
                )


if __name__ == "__main__":
    main()
