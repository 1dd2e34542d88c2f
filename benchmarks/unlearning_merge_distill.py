"""Measure NegMerge, SFR-on, CF-k, EU-k, the stochastic teacher and SCRUB+R beside the oracle.

Every method runs through the forget-run machinery (:func:`obliviate.experiments.run_forget`):
per seed the original and the retrained oracle are trained once (the dataset's default forget
recipe) and shared by all methods; each method gets its defaults and the run seed. Reported per
method, mean +- standard deviation over the seeds: forget / retain / test accuracy, the
loss-threshold MIA AUC (forget rows vs test rows of the same classes, as ``obliviate forget``
reports it) and the CPU time of the method as a fraction of retraining's CPU time
(``cpu_seconds`` / ``oracle_cpu_seconds``; ``retrain`` itself is about 1).

    python benchmarks/unlearning_merge_distill.py --dataset digits --forget class:3 --seeds 0,1,2
    python benchmarks/unlearning_merge_distill.py --dataset digits --forget random:10% --seeds 0,1,2
    python benchmarks/unlearning_merge_distill.py --dataset mnist --data-dir DIR --forget class:3

``--methods a,b`` runs a subset; ``--cache-dir DIR`` keeps the trained originals and oracles
for the next run.

``scrub_r`` is SCRUB with its rewind step (``scrub`` with ``rewind=True``). Its reference
error is measured as Kurmanji et al. (2023) do: the error of the final (un-rewound) SCRUB model
on a validation set from the forget set's distribution. Here that validation set is a seeded
half of the test rows of the forget set's classes (a request carries no held-out rows); those
rows also enter the reported test accuracy and MIA AUC, so SCRUB+R has seen the labels of a part
of the test split, which no other method has. The CPU time of ``scrub_r`` is that of the rewind
run (the whole SCRUB trajectory plus a forget-set evaluation per epoch); the first, plain run
that measures the reference is ``scrub``'s row. Nothing else looks at the test split. The
relearn attack is off (``relearn_cap=0``) to keep the run short.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from typing import Any

import torch

from obliviate._rng import generator
from obliviate.experiments import ForgetSpec, run_forget
from obliviate.experiments.forget import make_method, prepare
from obliviate.training import accuracy
from obliviate.unlearning.evaluate import nonmembers

METHODS = (
    "retrain",
    "scrub",
    "scrub_r",
    "negmerge",
    "sfron",
    "cf_k",
    "eu_k",
    "stochastic_teacher",
)
KEYS = ("forget_acc", "retain_acc", "test_acc", "mia_auc", "cpu_ratio")


def row(result: dict[str, Any]) -> dict[str, float]:
    """The figures of one run: the unlearned model's accuracies and MIA AUC, the CPU ratio."""
    u = result["unlearned"]
    out = {k: float(u[k]) for k in ("forget_acc", "retain_acc", "test_acc", "mia_auc")}
    out["cpu_ratio"] = float(result["cpu_seconds"]) / float(result["oracle_cpu_seconds"])
    return out


def rewind_target(spec: ForgetSpec, prepared: Any) -> float:
    """SCRUB+R's reference: the final SCRUB model's error on the validation half of the test
    rows of the forget set's classes (see the module docstring)."""
    held = nonmembers(prepared.request, prepared.test)
    order = torch.randperm(len(held), generator=generator(spec.seed, "scrub_r-validation"))
    validation = held.subset(order[: max(1, len(held) // 2)])
    final = make_method(dataclasses.replace(spec, method="scrub", params={})).unlearn(
        prepared.original, prepared.request
    )
    return 1.0 - accuracy(final, validation)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--forget", default="class:3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--json", default=None)
    ap.add_argument("--cache-dir", default=None, help="keep trained originals/oracles here")
    args = ap.parse_args()
    torch.set_num_threads(1)

    methods = [m for m in args.methods.split(",") if m]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in ["original", *methods]}
    extra: dict[str, list[Any]] = {"scrub_r_target": [], "scrub_r_epoch": [], "failures": []}
    for seed in seeds:
        base = ForgetSpec(
            dataset=args.dataset,
            forget=args.forget,
            method="retrain",
            seed=seed,
            relearn_cap=0,
            data_dir=args.data_dir,
            limit=args.limit,
            cache_dir=args.cache_dir,
        )
        prepared = prepare(base)
        for name in methods:
            if name == "scrub_r":
                target = rewind_target(base, prepared)
                spec = dataclasses.replace(
                    base, method="scrub", params={"rewind": True, "rewind_target": target}
                )
            else:
                spec = dataclasses.replace(base, method=name)
            try:
                result = run_forget(spec, prepared=prepared)
            except (ValueError, RuntimeError) as exc:  # e.g. a method whose weights diverged
                why = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                extra["failures"].append(f"seed {seed} {name}: {why}")
                rows[name].append({k: float("nan") for k in KEYS})
                print(f"seed {seed} {name}: FAILED ({why})", flush=True)
                continue
            rows[name].append(row(result))
            if name == "scrub_r":
                extra["scrub_r_target"].append(target)
                extra["scrub_r_epoch"].append(result["learned"].get("rewind_epoch_"))
            if name == methods[0]:
                o = result["original"]
                rows["original"].append(
                    {k: float(o[k]) for k in KEYS if k in o} | {"cpu_ratio": 0.0}
                )
            print(f"seed {seed} {name}: {rows[name][-1]}", flush=True)

    print(f"\n{args.dataset} forget={args.forget} seeds={seeds} (mean +- std over seeds)")
    if extra["scrub_r_target"]:
        print(
            f"scrub_r: reference errors {extra['scrub_r_target']}, epochs {extra['scrub_r_epoch']}"
        )
    for failure in extra["failures"]:
        print(f"failed (NaN in the table): {failure}")
    print("| method | " + " | ".join(KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    summary: dict[str, dict[str, list[float]]] = {}
    for name, rs in rows.items():
        cells, summary[name] = [], {}
        for k in KEYS:
            vals = [r[k] for r in rs if math.isfinite(r[k])]  # failed runs are NaN
            mean = statistics.mean(vals) if vals else float("nan")
            std = statistics.stdev(vals) if len(vals) > 1 else 0.0
            summary[name][k] = [mean, std]
            cells.append(f"{mean:.3f} ± {std:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"args": vars(args), "rows": rows, "summary": summary, "extra": extra}, fh, indent=1
            )


if __name__ == "__main__":
    main()
