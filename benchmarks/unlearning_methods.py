"""Measure the approximate unlearners against the retrained oracle on a small dataset.

For each seed: train the original model with the recipe, build the forget request, retrain the
oracle (same recipe and seed on the retain set), run every method, and report retain / forget /
test accuracy, the loss-threshold membership-inference AUC (forget rows vs test rows of the same
classes, as ``obliviate forget`` computes it), a linear probe
of leftover knowledge, and wall time relative to retraining.

    python benchmarks/unlearning_methods.py --forget class:3 --seeds 0,1,2
    python benchmarks/unlearning_methods.py --forget random:10% --seeds 0,1,2

Hyperparameters are each method's defaults unless ``--set method.key=value`` is given. Nothing
here looks at the test split to choose anything; it is only reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import torch

from obliviate.data.datasets import load_dataset
from obliviate.training import Recipe
from obliviate.unlearning import make_unlearner
from obliviate.unlearning.base import build_request
from obliviate.unlearning.evaluate import model_report, nonmembers
from obliviate.unlearning.probe import probe_accuracy

METHODS = (
    "ssd",
    "scrub",
    "neggrad_plus",
    "famr",
    "bad_teacher",
    "random_label",
    "l1_sparse",
    "salun",
)


def default_recipe(dataset: str, seed: int) -> Recipe:
    """The recipe ``obliviate forget`` uses for ``dataset`` (:func:`obliviate.experiments.forget.default_recipe`)."""
    from obliviate.experiments.forget import default_recipe as run_default

    return run_default(dataset, seed=seed)


def evaluate(
    model: torch.nn.Module, request: Any, test: Any, class_forgetting: bool, seed: int
) -> dict[str, float]:
    """Accuracies and the loss-threshold MIA AUC as ``obliviate forget`` reports them (forget rows
    vs test rows of the same classes), plus the linear probe of leftover knowledge."""
    report = model_report(model, request, test, nonmembers(request, test), seed=seed)
    out = {k: float(report[k]) for k in ("retain_acc", "forget_acc", "test_acc", "mia_auc")}
    # Leftover knowledge: a probe fitted on retain features (random forgetting) or on held-out
    # features that contain the forgotten class (class forgetting), scored on the forget set.
    out["probe_acc"] = probe_accuracy(
        model, test if class_forgetting else request.retain, request.forget
    )
    return out


def timed_unlearn(unlearner: Any, model: torch.nn.Module, request: Any) -> tuple[Any, float]:
    """The unlearned model and the wall seconds ``unlearner.unlearn`` took."""
    t0 = time.perf_counter()
    result = unlearner.unlearn(model, request)
    return result, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--forget", default="class:3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--set", action="append", default=[], help="method.key=value (number)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)

    params: dict[str, dict[str, Any]] = {}
    for item in args.set:
        lhs, _, value = item.partition("=")
        method, _, key = lhs.partition(".")
        params.setdefault(method, {})[key] = (
            int(value) if value.lstrip("-").isdigit() else float(value)
        )
    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",")]
    train, test = load_dataset(args.dataset, data_dir=args.data_dir)
    class_forgetting = args.forget.startswith("class:")

    rows: list[dict[str, Any]] = []
    for seed in seeds:
        recipe = default_recipe(args.dataset, seed)
        original = recipe.fit(train)
        request = build_request(train, args.forget, seed=seed, recipe=recipe)
        oracle, t_retrain = timed_unlearn(make_unlearner("retrain"), original, request)
        rows.append(
            {
                "method": "original",
                "seed": seed,
                "seconds": 0.0,
                **evaluate(original, request, test, class_forgetting, seed),
            }
        )
        rows.append(
            {
                "method": "retrain",
                "seed": seed,
                "seconds": t_retrain,
                **evaluate(oracle, request, test, class_forgetting, seed),
            }
        )
        for name in methods:
            unl = make_unlearner(name, seed=seed, **params.get(name, {}))
            model, secs = timed_unlearn(unl, original, request)
            rows.append(
                {
                    "method": name,
                    "seed": seed,
                    "seconds": secs,
                    **evaluate(model, request, test, class_forgetting, seed),
                }
            )
        print(f"seed {seed}: retrain {t_retrain:.2f}s", flush=True)

    keys = ("retain_acc", "forget_acc", "test_acc", "mia_auc", "probe_acc")
    print(
        f"\n{args.dataset} forget={args.forget} seeds={seeds} (mean over seeds; time = median seconds, % of retrain median)"
    )
    print(
        f"{'method':<14}"
        + "".join(f"{k:>11}" for k in keys)
        + f"{'dRA':>8}{'seconds':>9}{'%retrain':>9}"
    )
    t_oracle = statistics.median(r["seconds"] for r in rows if r["method"] == "retrain")
    ra_oracle = statistics.mean(r["retain_acc"] for r in rows if r["method"] == "retrain")
    summary = {}
    for name in ["original", "retrain", *methods]:
        sel = [r for r in rows if r["method"] == name]
        mean = {k: statistics.mean(r[k] for r in sel) for k in keys}
        secs = statistics.median(r["seconds"] for r in sel)
        mean["retain_gap_max"] = max(
            abs(
                r["retain_acc"]
                - next(
                    o["retain_acc"]
                    for o in rows
                    if o["method"] == "retrain" and o["seed"] == r["seed"]
                )
            )
            for r in sel
        )
        mean["forget_acc_max"] = max(r["forget_acc"] for r in sel)
        summary[name] = {**mean, "seconds": secs}
        print(
            f"{name:<14}"
            + "".join(f"{mean[k]:>11.4f}" for k in keys)
            + f"{mean['retain_acc'] - ra_oracle:>8.4f}{secs:>9.3f}{100 * secs / t_oracle:>8.1f}%"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows, "summary": summary}, fh, indent=1)


if __name__ == "__main__":
    main()
