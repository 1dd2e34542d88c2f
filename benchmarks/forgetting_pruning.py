"""Toneva et al. (2019), Sec. 5: remove the least forgettable examples and retrain.

For each seed: train once while recording every example's correctness at each presentation,
rank examples by forgetting events (unforgettable first, never-learned last), then for each
fraction k retrain from scratch (same init and recipe) on the data without (a) the k least
forgettable examples or (b) k random examples, and compare test accuracy.

    .venv/bin/python benchmarks/forgetting_pruning.py --dataset mnist1d --seeds 0,1,2

The paper's claim to check: removing unforgettable examples costs little test accuracy, much
less than removing the same number of random examples.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from obliviate.continual.events import record_presentations
from obliviate.data import load_dataset
from obliviate.metrics.forgetting_events import forgettability_order, forgetting_counts, summary
from obliviate.models import ModelSpec, build_model
from obliviate.training import TrainConfig, accuracy, fit


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--dataset", default="mnist1d")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--fractions", default="0.1,0.2,0.3,0.4")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--hidden", default="256,256")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions = [float(f) for f in args.fractions.split(",")]
    hidden = tuple(int(h) for h in args.hidden.split(","))
    train, test = load_dataset(args.dataset, data_dir=args.data_dir)
    rows: dict[tuple[str, float], list[float]] = {}
    started = time.perf_counter()
    for seed in seeds:
        spec = ModelSpec(hidden=hidden, seed=seed)
        config = TrainConfig(n_epochs=args.epochs, lr=args.lr, seed=seed)
        model = build_model(spec, train.sample_shape, train.n_classes)
        log = record_presentations(model, train, config)
        counts = forgetting_counts(log.correct)
        s = summary(log.correct)
        print(
            f"seed {seed}: full-data test acc {accuracy(model, test):.4f}; unforgettable "
            f"{int(s['unforgettable'])}/{len(train)}, never learned {int(s['never_learned'])}"
        )
        rows.setdefault(("full", 0.0), []).append(accuracy(model, test))
        order = log.ids[forgettability_order(counts, seed=seed)]
        rng = np.random.default_rng(seed)
        for frac in fractions:
            k = int(round(frac * len(train)))
            for how, drop in (
                ("unforgettable", order[:k]),
                ("random", rng.choice(log.ids, size=k, replace=False)),
            ):
                m = build_model(spec, train.sample_shape, train.n_classes)
                fit(m, train.without_ids(drop), config)
                rows.setdefault((how, frac), []).append(accuracy(m, test))
    print(
        f"\n{args.dataset}, MLP {hidden}, {args.epochs} epochs, lr {args.lr}, seeds {seeds} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    print("| removed | least forgettable removed: test acc | random removed: test acc |")
    print("|---|---|---|")
    full = rows[("full", 0.0)]
    print(
        f"| 0 % | {np.mean(full):.4f} ± {np.std(full):.4f} | {np.mean(full):.4f} ± {np.std(full):.4f} |"
    )
    for frac in fractions:
        a, b = rows[("unforgettable", frac)], rows[("random", frac)]
        print(
            f"| {frac:.0%} | {np.mean(a):.4f} ± {np.std(a):.4f} | {np.mean(b):.4f} ± {np.std(b):.4f} |"
        )


if __name__ == "__main__":
    main()
