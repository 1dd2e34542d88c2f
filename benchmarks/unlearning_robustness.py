"""Robustness columns for every registered unlearner, beside the oracle (issue #14, item 4).

Usage::

    python benchmarks/unlearning_robustness.py [--dataset digits] [--seeds 0,1,2]
        [--forget class:3 random:10%] [--methods all] [--out FILE.md] [--json PATH]
        [--cache DIR] [--data-dir DIR] [--limit N] [--config METHOD=NAME ...]

For every forget spec and seed the original and the retrained oracle are trained once (the
dataset's forget recipe, cached under ``--cache``) and every method unlearns the same original
(``run_forget`` with ``robustness=True``). Per method, mean ± std over the seeds, each beside the
oracle's figure under the same procedure:

- FA: forget-set accuracy of the unlearned model;
- FA int8: forget-set accuracy after int8 dynamic quantisation of the linear layers
  (Zhang et al. 2024);
- FA related-FT: forget-set accuracy after 20 Adam steps (lr 1e-3) on 32 samples of the
  remaining classes the original confuses most with the forgotten one (random forgetting:
  32 retain rows) (Hu et al. 2024; Lynch et al. 2024);
- probe: forget-set accuracy of a linear probe on the penultimate features, fitted on the test
  set (Zhang et al. 2024, "Unforgettable Generalization");
- relearn: fine-tuning steps on the forget set until the original's forget accuracy returns
  (cap 200).

``--config scrub=scrub@mnist1d`` runs a method with a named configuration (the table says so).
Writes a Markdown fragment to ``--out`` (stdout when omitted).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from obliviate.experiments.forget import ForgetSpec, prepare, run_forget
from obliviate.io import write_json_atomic
from obliviate.unlearning import UNLEARNERS


def fmt(vals: list[float], digits: int = 2) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def row(method: str, runs: list[dict], config: str | None) -> str:
    rb = [r["robustness"] for r in runs]

    def pair(get_u, get_o, digits: int = 2) -> str:
        return f"{fmt([get_u(x) for x in runs], digits)} ({fmt([get_o(x) for x in runs], digits)})"

    name = method + (f" `{config}`" if config else "")
    return (
        f"| {name} "
        f"| {pair(lambda r: r['unlearned']['forget_acc'], lambda r: r['oracle']['forget_acc'])} "
        f"| {fmt([x['quantization']['unlearned']['after'] for x in rb])} "
        f"({fmt([x['quantization']['oracle']['after'] for x in rb])}) "
        f"| {fmt([x['related_finetune']['unlearned']['after'] for x in rb])} "
        f"({fmt([x['related_finetune']['oracle']['after'] for x in rb])}) "
        f"| {fmt([x['probe']['unlearned'] for x in rb])} ({fmt([x['probe']['oracle'] for x in rb])}) "
        f"| {pair(lambda r: float(r['relearn_steps']), lambda r: float(r['relearn_steps_oracle']), 0)} |"
    )


HEADER = (
    "| method | FA (oracle) | FA int8 (oracle) | FA related-FT (oracle) | probe (oracle) "
    "| relearn steps (oracle) |\n|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--forget", nargs="+", default=["class:3", "random:10%"])
    ap.add_argument("--methods", default="all", help="comma-separated registry keys, or all")
    ap.add_argument("--config", nargs="*", default=[], help="METHOD=NAME named configurations")
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = sorted(UNLEARNERS) if args.methods == "all" else args.methods.split(",")
    configs = dict(c.split("=", 1) for c in args.config)
    lines: list[str] = []
    store: dict[str, dict[str, list[dict]]] = {}
    start = time.perf_counter()
    for forget in args.forget:
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        n_forget = None
        for seed in seeds:
            base = dict(
                dataset=args.dataset,
                forget=forget,
                seed=seed,
                robustness=True,
                cache_dir=args.cache,
                data_dir=args.data_dir,
                limit=args.limit,
            )
            p = prepare(ForgetSpec(method="retrain", **base))
            for m in methods:
                spec = ForgetSpec(method=m, config=configs.get(m), **base)
                try:
                    r = run_forget(spec, prepared=p)
                except Exception as exc:  # noqa: BLE001 - a table row says what failed
                    print(f"{m} {forget} seed {seed}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    continue
                runs[m].append(r)
                n_forget = r["n_forget"]
                print(f"{forget} seed {seed} {m} done", file=sys.stderr, flush=True)
        lines += [
            f"### {args.dataset} forget `{forget}` ({n_forget} training samples), "
            f"seeds {args.seeds}",
            "",
            HEADER,
        ]
        for m in methods:
            if runs[m]:
                lines.append(row(m, runs[m], configs.get(m)))
            else:
                lines.append(f"| {m} | failed on every seed (see the log) | | | | |")
        lines.append("")
        store[forget] = runs
    lines.append(f"({time.perf_counter() - start:.0f} s wall)")
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if args.json:
        write_json_atomic(args.json, store, allow_nan=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
