"""Robustness columns for every registered unlearner, beside the oracle (issue #14, item 4).

Usage::

    python benchmarks/unlearning_robustness.py [--dataset digits] [--seeds 0,1,2]
        [--forget class:3 random:10%] [--methods all] [--out FILE.md] [--json PATH]
        [--cache DIR] [--data-dir DIR] [--limit N] [--config METHOD=NAME ...]
        [--model cnn] [--hidden 64] [--optimizer adam] [--lr 1e-3] [--batch-size 128]
        [--n-epochs 30] [--label NAME]
    python benchmarks/unlearning_robustness.py --from-json A.json B.json [--label NAME]

MNIST rows on the subset and recipe of the MNIST unlearning tables
(``benchmarks/specs/unlearning_mnist.toml``)::

    python benchmarks/make_subset.py mnist --data-dir DIR --n-train 1000 --n-test 1000 \
        --out runs/mnist_1k.npz
    python benchmarks/unlearning_robustness.py --dataset npz:runs/mnist_1k.npz \
        --label "MNIST (1000/1000 rows)" --model cnn --hidden 64 --optimizer adam --lr 1e-3 \
        --batch-size 128 --n-epochs 30 --seeds 0,1,2 --forget class:3 random:10% --cache DIR

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

``--model`` ... ``--n-epochs`` set the recipe of the original and the oracle (unset: the
dataset's forget recipe). The last column, s/run, is the wall seconds of one run (unlearning plus
every evaluation and attack, mean over seeds); the fragment ends with the total wall time and the
load average at start and end. ``--config scrub=scrub@mnist1d`` runs a method with a named
configuration (the table says so). Writes a Markdown fragment to ``--out`` (stdout when omitted)
and, with ``--json``, every run so far after each run (an interrupted grid keeps what it did);
``--from-json`` merges such files (e.g. one process per seed) into the tables and runs nothing; a
row run on fewer seeds than its table names its own.
"""

from __future__ import annotations

import argparse
import json
import os
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


def row(method: str, runs: list[dict], config: str | None, walls: list[float]) -> str:
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
        f"| {pair(lambda r: float(r['relearn_steps']), lambda r: float(r['relearn_steps_oracle']), 0)} "
        f"| {statistics.mean(walls):.0f} |"
    )


HEADER = (
    "| method | FA (oracle) | FA int8 (oracle) | FA related-FT (oracle) | probe (oracle) "
    "| relearn steps (oracle) | s/run |\n|---|---|---|---|---|---|---|"
)


def seeds_of(runs: list[dict]) -> list[int]:
    return sorted({int(r["spec"]["seed"]) for r in runs})


def render(
    store: dict[str, dict[str, list[dict]]], methods: list[str], configs: dict, label: str
) -> list[str]:
    """Markdown tables, one per forget spec, from stored runs (a method run on fewer seeds
    than the table's says which)."""
    lines: list[str] = []
    for forget, runs in store.items():
        done = [r for m in methods for r in runs.get(m, [])]
        seeds = seeds_of(done)
        n_forget = done[0]["n_forget"] if done else None
        lines += [
            f"### {label} forget `{forget}` ({n_forget} training samples), "
            f"seeds {','.join(map(str, seeds))}",
            "",
            HEADER,
        ]
        for m in methods:
            mine = runs.get(m, [])
            if mine:
                walls = [r.get("run_wall_seconds", float("nan")) for r in mine]
                text = row(m, mine, configs.get(m), walls)
                if seeds_of(mine) != seeds:
                    own = ",".join(map(str, seeds_of(mine)))
                    text = text.replace(f"| {m} ", f"| {m} (seeds {own}) ", 1)
                lines.append(text)
            else:
                lines.append(f"| {m} | failed or not run on every seed (see the log) | | | | | |")
        lines.append("")
    return lines


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
    ap.add_argument("--model", default=None, help="recipe model (unset: the forget recipe's)")
    ap.add_argument("--hidden", type=int, nargs="+", default=None, help="hidden widths")
    ap.add_argument("--optimizer", default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--n-epochs", type=int, default=None)
    ap.add_argument("--label", default=None, help="dataset name in the headings")
    ap.add_argument(
        "--from-json",
        nargs="+",
        default=None,
        help="render the tables from --json files of earlier runs (merged) and run nothing",
    )
    args = ap.parse_args(argv)
    label = args.label or args.dataset
    recipe = {
        "model": args.model,
        "hidden": tuple(args.hidden) if args.hidden else None,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "n_epochs": args.n_epochs,
    }
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = sorted(UNLEARNERS) if args.methods == "all" else args.methods.split(",")
    configs = dict(c.split("=", 1) for c in args.config)
    store: dict[str, dict[str, list[dict]]] = {}
    start, load_start = time.perf_counter(), os.getloadavg()
    if args.from_json:
        for path in args.from_json:
            for forget, runs in json.loads(Path(path).read_text(encoding="utf-8")).items():
                for m, rs in runs.items():
                    store.setdefault(forget, {}).setdefault(m, []).extend(rs)
        if args.methods == "all":
            methods = sorted({m for runs in store.values() for m in runs})
    for forget in [] if args.from_json else args.forget:
        runs: dict[str, list[dict]] = {m: [] for m in methods}
        store[forget] = runs
        for seed in seeds:
            base = dict(
                dataset=args.dataset,
                forget=forget,
                seed=seed,
                robustness=True,
                cache_dir=args.cache,
                data_dir=args.data_dir,
                limit=args.limit,
                **recipe,
            )
            p = prepare(ForgetSpec(method="retrain", **base))
            for m in methods:
                spec = ForgetSpec(method=m, config=configs.get(m), **base)
                t0 = time.perf_counter()
                try:
                    r = run_forget(spec, prepared=p)
                except Exception as exc:  # noqa: BLE001 - a table row says what failed
                    print(f"{m} {forget} seed {seed}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    continue
                r["run_wall_seconds"] = time.perf_counter() - t0
                runs[m].append(r)
                print(
                    f"{forget} seed {seed} {m} done ({r['run_wall_seconds']:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                if args.json:  # after every run, so an interrupted grid keeps what it did
                    write_json_atomic(args.json, store, allow_nan=True)
    lines = render(store, methods, configs, label)
    if not args.from_json:
        load_end = os.getloadavg()
        lines.append(
            f"({time.perf_counter() - start:.0f} s wall; load average (1 min) "
            f"{load_start[0]:.1f} at start, {load_end[0]:.1f} at end)"
        )
    text = "\n".join(lines) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
