"""All registered unlearners against the retrained oracle on digits: the unlearning table.

Usage::

    python benchmarks/unlearning_table.py [--seeds 0,1,2] [--forget class:3 random:10%]
        [--methods all] [--out docs/unlearning.md] [--json PATH] [--cache DIR]

For every forget spec and seed the original and the oracle are trained once (default digits
recipe: MLP 128, Adam 1e-3, 30 epochs; cached under ``--cache``) and every method unlearns the
same original (``obliviate.experiments.forget.run_forget``). Reported per method, mean ± std over
the seeds: retain / forget / test accuracy and their gaps to the oracle (points), the
loss-threshold MIA AUC (forget vs held-out test rows of the same classes) next to the oracle's,
the JS divergence to the oracle on the forget set, relearn steps (capped at 200), the median
CPU time of ``unlearn`` (``time.process_time``, one thread: steadier than wall time on a shared
machine; the median wall time is shown too) and the speed-up = median retraining CPU time /
median method CPU time, with retraining timed as the ``retrain`` method in the same process.
Writes its tables into its own section of ``--out`` (between ``<!-- unlearning-table:start -->``
and ``<!-- unlearning-table:end -->``; :func:`obliviate.io.write_markdown_section`), keeping the
rest of the file (``docs/unlearning.md`` holds other scripts' tables too), and prints them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from obliviate.data import load_dataset
from obliviate.errors import ObliviateError
from obliviate.experiments.forget import ForgetSpec, prepare, run_forget
from obliviate.io import markdown_out_problem, write_json_atomic, write_markdown_section
from obliviate.recipes import recipe
from obliviate.unlearning import UNLEARNERS
from obliviate.unlearning.base import build_request


def fmt(vals: list[float], scale: float = 1.0, digits: int = 3) -> str:
    vals = [v * scale for v in vals]
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


MARKER = "unlearning-table"
"""The section of ``--out`` this script rewrites (``<!-- unlearning-table:start -->`` ...)."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--forget", nargs="+", default=["class:3", "random:10%"])
    ap.add_argument("--methods", default="all", help="comma-separated registry keys, or all")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--out", default="docs/unlearning.md")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--cache", default=None, help="cache folder for originals/oracles (default: none)"
    )
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        ap.exit(2, f"error: --seeds {args.seeds!r}: give integers separated by commas\n")
    methods = sorted(UNLEARNERS) if args.methods == "all" else args.methods.split(",")
    unknown = [m for m in methods if m not in UNLEARNERS]
    problem = (
        f"--seeds {args.seeds!r} repeats a seed"
        if len(set(seeds)) < len(seeds)
        else f"--methods {args.methods!r} repeats a method"
        if len(set(methods)) < len(methods)
        else f"--methods: unknown {', '.join(unknown)} (obliviate list unlearners)"
        if unknown
        else markdown_out_problem(args.out, MARKER)
    )
    if problem is None:
        try:  # the dataset and the forget specs, checked before any training
            train, _ = load_dataset(args.dataset, data_dir=args.data_dir)
            for forget in args.forget:
                build_request(train, forget, seed=seeds[0])
        except ObliviateError as exc:
            problem = str(exc)
    if problem:
        ap.exit(2, f"error: {problem}\n")
    if "retrain" in methods:
        methods = ["retrain"] + [m for m in methods if m != "retrain"]
    results: dict[str, dict[str, list[dict]]] = {}
    failed: list[str] = []
    t0 = time.perf_counter()
    for forget in args.forget:
        results[forget] = {m: [] for m in methods}
        for seed in seeds:
            base = ForgetSpec(
                dataset=args.dataset,
                forget=forget,
                seed=seed,
                cache_dir=args.cache,
                data_dir=args.data_dir,
            )
            p = prepare(base)
            for m in methods:
                spec = ForgetSpec(
                    dataset=args.dataset,
                    forget=forget,
                    method=m,
                    seed=seed,
                    cache_dir=args.cache,
                    data_dir=args.data_dir,
                )
                try:
                    r = run_forget(spec, prepared=p)
                except ObliviateError as exc:  # e.g. a method that diverges at its defaults
                    failed.append(f"{m} on {forget}, seed {seed}: {str(exc).splitlines()[0]}")
                    print(f"{forget} seed {seed} {m}: FAILED {exc}", file=sys.stderr)
                    continue
                results[forget][m].append(r)
                print(
                    f"[{time.perf_counter() - t0:7.1f}s] {forget} seed {seed} {m}: RA {r['unlearned']['retain_acc']:.3f} "
                    f"FA {r['unlearned']['forget_acc']:.3f} TA {r['unlearned']['test_acc']:.3f} "
                    f"MIA {r['unlearned']['mia_auc']:.3f} t {r['seconds']:.3f}s",
                    file=sys.stderr,
                    flush=True,
                )
    lines = [
        f"# Unlearning on {args.dataset}: "
        f"{'every method' if args.methods == 'all' else 'methods ' + args.methods} "
        "against the retrained oracle",
        "",
        f"Command: `python benchmarks/unlearning_table.py --seeds {args.seeds} --forget {' '.join(args.forget)}"
        + (f" --methods {args.methods}" if args.methods != "all" else "")
        + (f" --dataset {args.dataset}" if args.dataset != "digits" else "")
        + "`"
        f" (dataset {args.dataset}, its forget recipe: "
        + ", ".join(f"{k} {v}" for k, v in (recipe("forget", args.dataset) or {}).items())
        + "; default hyperparameters for every method; one CPU thread).",
        "",
        "RA / FA / TA: retain / forget / test accuracy of the unlearned model; Δ: minus the oracle's (points);"
        " MIA: loss-threshold membership AUC, forget set vs held-out test rows of the same classes (oracle's value"
        " in brackets — the target); JS: Jensen-Shannon divergence to the oracle's softmax on the forget set (nats);"
        " relearn: Adam steps on the forget set until forget accuracy is back at the original's (cap 200; oracle's"
        " in brackets); CPU s / wall s: median CPU and wall seconds of `unlearn`; % of retrain and speed-up:"
        " from the median CPU times (retraining = the `retrain` row).",
        "",
    ]
    summary = {}
    for forget, per in results.items():
        per = {m: rs for m, rs in per.items() if rs}  # a method that failed on every seed: below
        if not per:
            continue
        rt = (
            statistics.median(r["cpu_seconds"] for r in per.get("retrain", []))
            if "retrain" in per
            else statistics.median(r["oracle_cpu_seconds"] for rs in per.values() for r in rs)
        )
        o = [r["oracle"] for r in next(iter(per.values()))]
        lines += [
            f"## forget `{forget}` ({next(iter(per.values()))[0]['n_forget']} training samples), "
            f"{len(seeds)} seeds",
            "",
            f"Oracle: RA {fmt([x['retain_acc'] for x in o])}, FA {fmt([x['forget_acc'] for x in o])}, "
            f"TA {fmt([x['test_acc'] for x in o])}, MIA {fmt([x['mia_auc'] for x in o])}; "
            f"retraining median {rt:.3f} CPU s.",
            "",
            "| method | RA | FA | TA | ΔRA | ΔFA | ΔTA | MIA [oracle] | JS forget | relearn [oracle] | CPU s | wall s | % of retrain | speed-up |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        summary[forget] = {}
        for m, rs in per.items():
            u = [r["unlearned"] for r in rs]
            g = [r["gaps"] for r in rs]
            t = statistics.median(r["cpu_seconds"] for r in rs)
            wall = statistics.median(r["seconds"] for r in rs)
            lines.append(
                f"| {m} | {fmt([x['retain_acc'] for x in u])} | {fmt([x['forget_acc'] for x in u])} | "
                f"{fmt([x['test_acc'] for x in u])} | {fmt([x['retain_acc'] for x in g], 100, 1)} | "
                f"{fmt([x['forget_acc'] for x in g], 100, 1)} | {fmt([x['test_acc'] for x in g], 100, 1)} | "
                f"{fmt([x['mia_auc'] for x in u])} [{fmt([r['oracle']['mia_auc'] for r in rs])}] | "
                f"{fmt([r['js_to_oracle']['forget'] for r in rs], 1, 4)} | "
                f"{statistics.mean(r['relearn_steps'] for r in rs):.0f} [{statistics.mean(r['relearn_steps_oracle'] for r in rs):.0f}] | "
                f"{t:.3f} | {wall:.3f} | {100 * t / rt:.1f} | {rt / t:.1f}× |"
            )
            summary[forget][m] = {
                "forget_acc_max": max(x["forget_acc"] for x in u),
                "retain_gap_min_points": min(100 * x["retain_acc"] for x in g),
                "median_cpu_seconds": t,
                "median_seconds": wall,
                "percent_of_retrain": 100 * t / rt,
            }
        lines.append("")
    if "class:3" in summary:
        lines += [
            "## Acceptance check (class forgetting: FA ≤ 0.05 on every seed, RA within 3 points of the oracle)",
            "",
        ]
        for m in ("ssd", "scrub", "neggrad_plus", "famr", "bad_teacher"):
            if m in summary["class:3"]:
                s = summary["class:3"][m]
                ok = s["forget_acc_max"] <= 0.05 and s["retain_gap_min_points"] >= -3
                lines.append(
                    f"- {m}: worst-seed FA {s['forget_acc_max']:.3f}, worst-seed ΔRA "
                    f"{s['retain_gap_min_points']:.1f} points → {'meets' if ok else 'does NOT meet'} the target"
                )
        lines.append("")
    slow = [
        (f, m, s["percent_of_retrain"])
        for f, d in summary.items()
        for m, s in d.items()
        if m != "retrain" and s["percent_of_retrain"] > 20
    ]
    lines += [
        f"Approximate methods above 20 % of retraining time: "
        f"{', '.join(f'{m} on {f} ({p:.0f} %)' for f, m, p in slow) if slow else 'none'}.",
        "",
        f"Total benchmark wall time {time.perf_counter() - t0:.0f} s.",
        "",
    ]
    if failed:
        lines += ["Runs that failed (not in the tables above):", ""]
        lines += [f"- {f}" for f in failed] + [""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # only this script's section: the file also holds other scripts' tables (forgetting quality,
    # robustness, the MNIST grids), which a plain rewrite used to delete
    write_markdown_section(args.out, lines, MARKER)
    print("\n".join(lines))
    if args.json:
        write_json_atomic(args.json, {"results": results, "summary": summary}, allow_nan=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
