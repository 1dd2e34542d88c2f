"""Markdown tables of a forget grid run by ``obliviate bench``: every method against the oracle.

Usage::

    python benchmarks/unlearning_bench_table.py RESULTS_DIR [RESULTS_DIR ...] [--seeds 0,1,2]

Reads ``RESULTS_DIR/results.jsonl`` (several folders: their records together) (written by ``obliviate bench SPEC --out RESULTS_DIR``) and
prints one table per (dataset, forget set): per method, mean ± std over the seeds that finished,
of the unlearned model's retain / forget / test accuracy (RA / FA / TA), the loss-threshold MIA
AUC (forget vs held-out test rows of the same classes) beside the oracle's, the relearn steps
beside the oracle's (capped by the spec's ``relearn_cap``), the NeurIPS-2023 forgetting quality
when the runs computed it (``quality = N`` in the spec), the CPU seconds of ``unlearn`` and its
ratio to retraining's CPU seconds on the same seed (``cpu_seconds / oracle_cpu_seconds``, in %;
``--wall``: wall seconds, ``seconds / oracle_seconds``, for GPU runs).
Runs that failed are counted per method with the first line of their error. The oracle row
(``retrain``) is the reference. A method whose unlearned model collapsed on some seeds (the
result's ``collapsed``: retain accuracy below chance + 0.5 x (oracle's - chance),
:func:`obliviate.unlearning.evaluate.collapse`) is marked ``collapsed k/n``: its forget
accuracy is damage, not forgetting (records written before that field existed show no mark).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any


def fmt(vals: list[float], scale: float = 1.0, digits: int = 3) -> str:
    """``mean ± std`` (sample std) of ``vals`` times ``scale``; one value alone; ``-`` none."""
    vals = [v * scale for v in vals if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def load(path: Path) -> list[dict[str, Any]]:
    """The records of ``results.jsonl`` (or of a gzipped ``results.jsonl.gz``, as the committed
    results under ``benchmarks/results/`` are) (the last record of each run key wins)."""
    by_key: dict[str, dict[str, Any]] = {}
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    for line in text.splitlines():
        if line.strip():
            rec = json.loads(line)
            by_key[rec["key"]] = rec
    return list(by_key.values())


def tables(
    records: list[dict[str, Any]], only_seeds: set[int] | None = None, *, wall: bool = False
) -> str:
    """One Markdown table per (dataset, forget) of the ``forget`` records (of ``only_seeds``
    only, when given). ``wall``: the cost columns in wall seconds (``seconds`` over the
    oracle's ``oracle_seconds``) instead of CPU seconds: on a GPU, where the CPU only queues
    kernels and CPU time says little about the work."""
    own, ref, unit = (
        ("seconds", "oracle_seconds", "wall")
        if wall
        else ("cpu_seconds", "oracle_cpu_seconds", "CPU")
    )
    groups: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for rec in records:
        if rec.get("kind") != "forget":
            continue
        run = rec["run"]
        if only_seeds is not None and run["seed"] not in only_seeds:
            continue
        groups[(run["dataset"], run["forget"])][run["method"]].append(rec)
    out = []
    for (dataset, forget), methods in sorted(groups.items()):
        ok_recs = [r for rs in methods.values() for r in rs if r["status"] == "ok"]
        ok = [r["metrics"] for r in ok_recs]
        if not ok:
            continue
        seeds = sorted({r["run"]["seed"] for rs in methods.values() for r in rs})
        has_q = any("quality" in m for m in ok)
        n_forget = ok[0]["n_forget"]
        per_seed = {r["run"]["seed"]: r["metrics"] for r in ok_recs}
        oracle = [m["oracle"] for m in per_seed.values()]
        ocpu = [m[ref] for m in per_seed.values()]
        out.append(f"### {dataset} forget `{forget}` ({n_forget} training samples), seeds {seeds}")
        out.append("")
        out.append(
            f"Oracle (retrained): RA {fmt([o['retain_acc'] for o in oracle])}, FA "
            f"{fmt([o['forget_acc'] for o in oracle])}, TA {fmt([o['test_acc'] for o in oracle])},"
            f" MIA {fmt([o['mia_auc'] for o in oracle])}; retraining {fmt(ocpu, digits=1)} {unit} s."
        )
        out.append("")
        if any(m.get("collapsed") for m in ok):
            out.append(
                "**collapsed k/n**: on k of n seeds the unlearned model's retain accuracy fell "
                "below chance + 0.5 x (oracle's - chance); its forget accuracy is damage, not "
                "forgetting."
            )
            out.append("")
        head = ["method", "n ok", "RA", "FA", "TA", "MIA [oracle]", "relearn [oracle]"]
        head += ["F (quality)", "F floor"] if has_q else []
        head += [f"{unit} s", f"% of retrain {unit}", "failed"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        order = sorted(methods, key=lambda k: (k != "retrain", k))
        for name in order:
            rs = methods[name]
            ms = [r["metrics"] for r in rs if r["status"] == "ok"]
            bad = [r for r in rs if r["status"] != "ok"]
            err = ""
            if bad:
                first = str(bad[0].get("error", "")).splitlines()[0][:70].replace("|", "/")
                err = f"{len(bad)}: {first}"
            u = [m["unlearned"] for m in ms]
            o = [m["oracle"] for m in ms]
            n_collapsed = sum(bool(m.get("collapsed")) for m in ms)
            mark = f" **collapsed {n_collapsed}/{len(ms)}**" if n_collapsed else ""
            row = [
                f"`{name}`{mark}",
                str(len(ms)),
                fmt([x["retain_acc"] for x in u]),
                fmt([x["forget_acc"] for x in u]),
                fmt([x["test_acc"] for x in u]),
                f"{fmt([x['mia_auc'] for x in u])} [{fmt([x['mia_auc'] for x in o])}]",
                f"{fmt([m['relearn_steps'] for m in ms], digits=0)} "
                f"[{fmt([m['relearn_steps_oracle'] for m in ms], digits=0)}]",
            ]
            if has_q:
                q = [m.get("quality") or {} for m in ms]
                row += [fmt([x.get("score") for x in q]), fmt([x.get("noise_floor") for x in q])]
            row += [
                fmt([m[own] for m in ms], digits=2),
                fmt([m[own] / m[ref] for m in ms], 100.0, 1),
                err,
            ]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", type=Path, nargs="+")
    ap.add_argument("--seeds", default="", help="only these seeds, e.g. 0 or 0,1,2 (default: all)")
    ap.add_argument(
        "--wall",
        action="store_true",
        help="cost in wall seconds instead of CPU seconds (GPU runs: the CPU only queues kernels)",
    )
    args = ap.parse_args(argv)
    records = []
    for folder in args.results_dir:
        path = folder / "results.jsonl"
        if not path.exists() and (folder / "results.jsonl.gz").exists():
            path = folder / "results.jsonl.gz"
        if not path.exists():
            print(f"error: no results.jsonl in {folder}; run obliviate bench first")
            return 2
        records += load(path)
    only = {int(x) for x in args.seeds.split(",")} if args.seeds else None
    print(tables(records, only, wall=args.wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
