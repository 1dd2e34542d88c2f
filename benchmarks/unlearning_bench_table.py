"""Markdown tables of a forget grid run by ``obliviate bench``: every method against the oracle.

Usage::

    python benchmarks/unlearning_bench_table.py RESULTS_DIR [RESULTS_DIR ...] [--seeds 0,1,2]
        [--wall] [--label DATASET=LABEL ...]

Reads ``RESULTS_DIR/results.jsonl`` or ``results.jsonl.gz`` (several folders: their records
together) (written by ``obliviate bench SPEC --out RESULTS_DIR``) and
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

The ``Oracle (retrained)`` line gives, per seed, the oracle most of that seed's runs were
measured against: runs of one seed can hold different oracle trainings (a second ``obliviate
bench`` call without the first one's model cache retrains them, not bit for bit on a GPU); a
line below it then says which seeds had more than one oracle and how many runs each.
``--label DATASET=LABEL`` (repeatable) names a dataset in the headings, e.g.
``--label "mnist=MNIST (full, H200)"``.

Reading: a torn last line (a crash mid-write) is skipped with a note on stderr, as
:func:`obliviate.bench.results.read` does; a corrupt line elsewhere, an unreadable ``.gz``, a
missing results file or a bad option is a one-line error on stderr (exit 2); no forget record to
tabulate (an empty file, ``--seeds`` naming no recorded seed) is a one-line message (exit 1).
Records of the same run key replace earlier ones, within a file and across folders.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import struct
import sys
import zlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from obliviate.bench import results
from obliviate.errors import ObliviateError


def fmt(vals: Sequence[float | None], scale: float = 1.0, digits: int = 3) -> str:
    """``mean ± std`` (sample std) of ``vals`` times ``scale`` (``None`` left out); one value
    alone; ``-`` none."""
    xs = [v * scale for v in vals if v is not None]
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.{digits}f}"
    return f"{statistics.mean(xs):.{digits}f} ± {statistics.stdev(xs):.{digits}f}"


class BadInput(Exception):
    """Bad input: ``main`` prints the message as one line on stderr and exits 2."""


def _run_problem(rec: dict[str, Any]) -> str | None:
    """What makes a ``forget`` record's ``run`` unusable here (None when it is fine); the rest
    of a record is checked by :func:`obliviate.bench.results.parse`."""
    if rec.get("kind") != "forget":
        return None
    run = rec.get("run")
    if not isinstance(run, dict):
        return "run is not an object"
    missing = [k for k in ("dataset", "forget", "method", "seed") if k not in run]
    if missing:
        return f"run has no {', '.join(missing)}"
    if not all(isinstance(run[k], str) for k in ("dataset", "forget", "method")):
        return "run's dataset, forget and method must be strings"
    if isinstance(run["seed"], bool) or not isinstance(run["seed"], int):
        return f"run's seed must be an integer, got {run['seed']!r}"
    if rec.get("status") == "ok":
        m = rec["metrics"]
        for k in ("unlearned", "oracle"):
            if not isinstance(m.get(k), dict):
                return f"metrics.{k} is not an object"
    return None


def load(path: Path) -> list[dict[str, Any]]:
    """The records of ``results.jsonl`` (or of a gzipped ``results.jsonl.gz``, as the committed
    results under ``benchmarks/results/`` are) (the last record of each run key wins).

    As :func:`obliviate.bench.results.read` (which reads no ``.gz``): a torn last line is
    skipped (with a note on stderr), a complete last record that lacks only its newline
    counts; a corrupt line elsewhere raises :class:`BadInput` naming the file and line, as does
    an unreadable ``.gz``."""
    raw = path.read_bytes()
    if path.suffix == ".gz" and not raw:
        raise BadInput(f"{path}: an empty file, not a gzip file; copy it again")
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BadInput(
                f"{path}: not a complete gzip file ({reason}); copy it again, or zcat what is "
                "left into results.jsonl (its torn last line is then skipped)"
            ) from None

    def torn(line: int, n_bytes: int) -> None:
        print(
            f"note: {path}:{line}: skipped a torn last line ({n_bytes} bytes; a run cut off "
            "mid-write)",
            file=sys.stderr,
        )

    try:
        records = results.parse(raw, str(path), on_torn=torn)
    except ObliviateError as exc:
        raise BadInput(str(exc)) from None
    for rec in records:
        problem = _run_problem(rec)
        if problem:
            raise BadInput(
                f"{path}: record {rec['key']!r} is not a valid forget record ({problem}); "
                "delete its line and run the benchmark again"
            )
    return records


def _f32(x: Any) -> Any:
    """``x`` rounded to float32 (floats only): one oracle's seconds are stored at float32
    precision in some records and at float64 in others (the H200 results of 2026-11-30)."""
    if isinstance(x, float):
        try:
            return struct.unpack("f", struct.pack("f", x))[0]
        except OverflowError:
            return x
    return x


def _oracle_id(m: dict[str, Any]) -> tuple[Any, ...]:
    """What tells one oracle training from another in a record's metrics: its training
    seconds (wall, CPU) and its retain / forget / test accuracy."""
    o = m.get("oracle") or {}
    figures = [m.get("oracle_seconds"), m.get("oracle_cpu_seconds")]
    figures += [o.get(k) for k in ("retain_acc", "forget_acc", "test_acc")]
    return tuple(_f32(x) for x in figures)


def _ratio(num: Any, den: Any) -> float | None:
    """``num / den``; None (shown ``-``) when either is missing or ``den`` is 0."""
    if num is None or not den:
        return None
    return float(num / den)


def _seed_oracles(ok_recs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """Per seed (in order of first appearance), the metrics of the last run measured against
    the oracle most of that seed's runs were measured against (a tie: the one recorded last),
    and a line naming the seeds that had more than one oracle ("" when none had)."""
    by_seed: dict[Any, dict[tuple[Any, ...], list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(ok_recs):
        by_seed[r["run"]["seed"]][_oracle_id(r["metrics"])].append(i)
    chosen: list[dict[str, Any]] = []
    several: list[tuple[Any, str]] = []
    tie = False
    for seed, oracles in by_seed.items():
        runs = sorted(oracles.values(), key=lambda ix: (len(ix), ix[-1]))
        chosen.append(ok_recs[runs[-1][-1]]["metrics"])
        if len(runs) > 1:
            counts = sorted((len(ix) for ix in runs), reverse=True)
            tie = tie or counts[0] == counts[1]
            listed = ", ".join(map(str, counts[:-1])) + f" and {counts[-1]}"
            several.append((seed, f"seed {seed}: {len(runs)} oracles ({listed} runs)"))
    if not several:
        return chosen, ""
    return chosen, (
        "; ".join(text for _, text in sorted(several))
        + "; the line above uses the one most runs were measured against"
        + (" (a tie: the one recorded last)." if tie else ".")
    )


def tables(
    records: list[dict[str, Any]],
    only_seeds: set[int] | None = None,
    *,
    wall: bool = False,
    labels: dict[str, str] | None = None,
) -> str:
    """One Markdown table per (dataset, forget) of the ``forget`` records (of ``only_seeds``
    only, when given). ``wall``: the cost columns in wall seconds (``seconds`` over the
    oracle's ``oracle_seconds``) instead of CPU seconds: on a GPU, where the CPU only queues
    kernels and CPU time says little about the work. ``labels``: dataset name -> its name in
    the headings (default: the name itself)."""
    labels = labels or {}
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
        per_seed, several = _seed_oracles(ok_recs)
        oracle = [m["oracle"] for m in per_seed]
        ocpu = [m.get(ref) for m in per_seed]
        label = labels.get(dataset, dataset)
        out.append(f"### {label} forget `{forget}` ({n_forget} training samples), seeds {seeds}")
        out.append("")
        out.append(
            f"Oracle (retrained): RA {fmt([o['retain_acc'] for o in oracle])}, FA "
            f"{fmt([o['forget_acc'] for o in oracle])}, TA {fmt([o['test_acc'] for o in oracle])},"
            f" MIA {fmt([o['mia_auc'] for o in oracle])}; retraining {fmt(ocpu, digits=1)} {unit} s."
        )
        out.append("")
        if several:
            out.append(several)
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
                lines = str(bad[0].get("error") or "").splitlines()
                first = lines[0][:70].replace("|", "/") if lines else ""
                err = f"{len(bad)}: {first}" if first.strip() else str(len(bad))
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
                fmt([m.get(own) for m in ms], digits=2),
                fmt([_ratio(m.get(own), m.get(ref)) for m in ms], 100.0, 1),
                err,
            ]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return "\n".join(out)


def _results_file(folder: Path) -> Path:
    """``folder``'s ``results.jsonl``, else its ``results.jsonl.gz`` (a note on stderr when it
    has both)."""
    plain, packed = folder / "results.jsonl", folder / "results.jsonl.gz"
    if plain.is_file():
        if packed.exists():
            print(
                f"note: {folder} has both results.jsonl and results.jsonl.gz; reading "
                "results.jsonl",
                file=sys.stderr,
            )
        return plain
    if packed.is_file():
        return packed
    raise BadInput(f"no results.jsonl in {folder}; run obliviate bench first")


def _seeds(text: str) -> set[int] | None:
    """``--seeds``: None for all seeds, else the set of the comma-separated integers."""
    if not text:
        return None
    try:
        return {int(x) for x in text.split(",")}
    except ValueError:
        raise BadInput(
            f"--seeds {text!r}: not a comma-separated list of integers; e.g. --seeds 0 or "
            "--seeds 0,1,2"
        ) from None


def _labels(pairs: list[str], datasets: set[str]) -> dict[str, str]:
    """``--label DATASET=LABEL`` options as a dict; a dataset not in the results is an error."""
    labels = {}
    for pair in pairs:
        name, sep, label = pair.partition("=")
        if not sep or not name or not label:
            raise BadInput(
                f"--label {pair!r}: give DATASET=LABEL, e.g. --label 'mnist=MNIST (full, H200)'"
            )
        if name not in datasets:
            raise BadInput(
                f"--label {pair!r}: no dataset {name!r} in the results; datasets there: "
                f"{', '.join(sorted(datasets)) or 'none'}"
            )
        labels[name] = label
    return labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", type=Path, nargs="+")
    ap.add_argument("--seeds", default="", help="only these seeds, e.g. 0 or 0,1,2 (default: all)")
    ap.add_argument(
        "--wall",
        action="store_true",
        help="cost in wall seconds instead of CPU seconds (GPU runs: the CPU only queues kernels)",
    )
    ap.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="DATASET=LABEL",
        help="name a dataset in the headings, e.g. --label 'mnist=MNIST (full, H200)' "
        "(repeatable; default: the dataset's name)",
    )
    args = ap.parse_args(argv)
    where = ", ".join(map(str, args.results_dir))
    try:
        only = _seeds(args.seeds)
        by_key: dict[str, dict[str, Any]] = {}
        for folder in args.results_dir:
            for rec in load(_results_file(folder)):
                by_key[rec["key"]] = rec  # the same run in two folders: the last one wins
        forget = [r for r in by_key.values() if r.get("kind") == "forget"]
        labels = _labels(args.label, {str(r["run"]["dataset"]) for r in forget})
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not forget:
        print(f"no forget records in {where}; nothing to tabulate", file=sys.stderr)
        return 1
    recorded = sorted({r["run"]["seed"] for r in forget})
    if only is not None and not any(r["run"]["seed"] in only for r in forget):
        print(
            f"no forget records of seed(s) {', '.join(map(str, sorted(only)))} in {where}; "
            f"seeds there: {', '.join(map(str, recorded))}",
            file=sys.stderr,
        )
        return 1
    absent = sorted(set(only) - set(recorded)) if only is not None else []
    if absent:
        print(
            f"note: no forget records of seed(s) {', '.join(map(str, absent))} in {where}",
            file=sys.stderr,
        )
    try:
        text = tables(forget, only, wall=args.wall, labels=labels)
    except (KeyError, TypeError, ValueError) as exc:  # a record without a figure the table needs
        print(
            f"error: a forget record in {where} lacks a figure the table needs "
            f"({type(exc).__name__}: {exc}); delete its line and run the benchmark again",
            file=sys.stderr,
        )
        return 2
    if not text:
        print(
            f"no forget run in {where} finished (all failed); nothing to tabulate", file=sys.stderr
        )
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
