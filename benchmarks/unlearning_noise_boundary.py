"""Measure Fisher forgetting, UNSIR, Boundary Shrink/Expand, LF-SSD and JiT beside the oracle.

Every method runs through the forget-run machinery (:func:`obliviate.experiments.run_forget`):
per seed the original and the retrained oracle are trained once (the dataset's default forget
recipe) and shared by all methods; each method gets its defaults and the run seed. Reported per
method, mean +- standard deviation over the seeds: forget / retain / test accuracy, the
loss-threshold MIA AUC (forget rows vs test rows, as ``obliviate forget`` reports it) and the
CPU time of the method as a fraction of retraining's CPU time (``cpu_seconds`` /
``oracle_cpu_seconds``; ``retrain`` itself is about 1).

    python benchmarks/unlearning_noise_boundary.py --dataset digits --forget class:3 --seeds 0,1,2
    python benchmarks/unlearning_noise_boundary.py --dataset digits --forget random:10% --seeds 0,1,2
    python benchmarks/unlearning_noise_boundary.py --dataset mnist --data-dir DIR --forget class:3

Nothing here looks at the test split to choose anything; it is only reported. The relearn
attack is off (``relearn_cap=0``) to keep the run short. A method whose run fails (e.g. its
weights turn NaN and the evaluation refuses them) is reported as failed on that seed, with the
error, instead of stopping the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from typing import Any

import torch

from obliviate.errors import ObliviateError
from obliviate.experiments import ForgetSpec, run_forget
from obliviate.experiments.forget import prepare

METHODS = (
    "retrain",
    "ssd",
    "scrub",
    "fisher_forgetting",
    "unsir",
    "boundary_shrink",
    "boundary_expand",
    "lf_ssd",
    "jit",
)
KEYS = ("forget_acc", "retain_acc", "test_acc", "mia_auc", "cpu_ratio")


def row(result: dict[str, Any]) -> dict[str, float]:
    """The figures of one run: the unlearned model's accuracies and MIA AUC, the CPU ratio."""
    u = result["unlearned"]
    out = {k: float(u[k]) for k in ("forget_acc", "retain_acc", "test_acc", "mia_auc")}
    out["cpu_ratio"] = float(result["cpu_seconds"]) / float(result["oracle_cpu_seconds"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--forget", default="class:3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--cache-dir", default=None, help="keep trained originals and oracles here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in ["original", *methods]}
    failures: dict[str, list[str]] = {}
    for seed in seeds:
        base = ForgetSpec(
            dataset=args.dataset,
            forget=args.forget,
            method="retrain",
            seed=seed,
            relearn_cap=0,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            limit=args.limit,
        )
        prepared = prepare(base)
        for name in methods:
            try:
                result = run_forget(dataclasses.replace(base, method=name), prepared=prepared)
            except (ValueError, ObliviateError) as exc:
                reason = str(exc).splitlines()[0]
                failures.setdefault(name, []).append(f"seed {seed}: {reason}")
                print(f"seed {seed} {name}: FAILED {reason}", flush=True)
                continue
            rows[name].append(row(result))
            if name == methods[0]:
                o = result["original"]
                rows["original"].append(
                    {k: float(o[k]) for k in KEYS if k in o} | {"cpu_ratio": 0.0}
                )
            print(f"seed {seed} {name}: {rows[name][-1]}", flush=True)

    print(f"\n{args.dataset} forget={args.forget} seeds={seeds} (mean +- std over seeds)")
    print("| method | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    summary: dict[str, dict[str, list[float]]] = {}
    for name, rs in rows.items():
        if not rs:
            print(f"| {name} | " + " | ".join(["failed"] * len(KEYS)) + " |")
            continue
        cells, summary[name] = [], {}
        for k in KEYS:
            vals = [r[k] for r in rs]
            mean = statistics.mean(vals)
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            summary[name][k] = [mean, std]
            cells.append(f"{mean:.3f} ± {std:.3f}")
        failed = f" (failed on {len(failures[name])} seed(s))" if name in failures else ""
        print(f"| {name}{failed} | " + " | ".join(cells) + " |")
    for name, why in failures.items():
        print(f"{name} failed: " + "; ".join(why))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"args": vars(args), "rows": rows, "summary": summary, "failures": failures},
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
