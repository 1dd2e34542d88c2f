"""``obliviate report``: one self-contained HTML file from a results directory.

Sections per run kind (continual learning, approximate unlearning, exact sharded unlearning,
lifecycle streams, language models -- the last shown only when the results hold ``llm`` runs;
a registered kind of :data:`obliviate.experiments.KINDS` without a section here gets its summary
table under its own name), each with a mean ± std table over seeds and the plots of :mod:`obliviate.report.plots` embedded
as SVG data URIs; a section without data is replaced by a one-line note. The last table lists
every run with its resolved spec and provenance. Nothing is loaded from the network.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from obliviate import __version__
from obliviate.bench import results as store
from obliviate.bench.summary import METRICS, fmt, method_label, summarize
from obliviate.errors import ObliviateError
from obliviate.experiments import KINDS
from obliviate.io import atomic_write_text
from obliviate.report import llm as L
from obliviate.report import plots as P

SECTIONS: tuple[
    tuple[
        str,
        str,
        tuple[str, ...],
        tuple[Callable[[Sequence[dict[str, Any]]], list[P.Plot]], ...],
        dict[str, str],
    ],
    ...,
] = (
    (
        "learn",
        "Continual learning",
        ("learn", "events"),
        (P.accuracy_heatmaps, P.experience_accuracy, P.continual_curves, P.forgetting_histograms),
        {
            "curves": "No continual-evaluation curves in these runs (set eval_every in the [[learn]] block).",
            "events": "No forgetting-event counts in these runs (add an [[events]] block, or see `obliviate events`).",
        },
    ),
    (
        "forget",
        "Approximate unlearning",
        ("forget",),
        (P.unlearning_accuracy, P.tradeoff, P.mia),
        {"mia": "No membership-inference AUCs in these runs."},
    ),
    (
        "sharded",
        "Exact unlearning (sharded)",
        ("sharded",),
        (P.deletion_cost, P.sharded_accuracy),
        {},
    ),
    (
        "lifecycle",
        "Lifecycle: learning and deletion in one stream",
        ("lifecycle",),
        (P.lifecycle_timeline,),
        {},
    ),
    (
        "llm",
        "Language models: unlearning facts",
        ("llm",),
        (L.llm_tradeoff,),
        {},
    ),
)
TABLES: dict[str, Callable[[Sequence[dict[str, Any]]], dict[str, Any] | None]] = {
    "llm": L.llm_table,
}
"""Kinds whose section has its own table instead of the mean ± std summary."""
_EMPTY = {
    "learn": "No continual-learning or forgetting-event runs in this results directory; section omitted.",
    "forget": "No approximate-unlearning runs in this results directory; section omitted.",
    "sharded": "No sharded (exact unlearning) runs in this results directory; section omitted.",
    "lifecycle": "No lifecycle runs (learning and deletion in one stream) in this results directory; section omitted.",
}


def _summary_table(records: Sequence[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    summ = summarize(records)
    if not summ:
        return None
    cols = [name for _, name in METRICS[kind] if any(name in v["stats"] for v in summ.values())]
    rows = []
    for method in sorted(summ):
        v = summ[method]
        label = method_label(method).removeprefix(f"{kind} ")  # the section names the kind
        rows.append(
            [label, str(v["n"])] + [fmt(*v["stats"][c]) if c in v["stats"] else "-" for c in cols]
        )
    title = {"events": "Example forgetting events, mean ± std over seeds"}.get(
        kind, "Mean ± std over seeds"
    )
    return {"title": title, "header": ["method", "seeds", *cols], "rows": rows, "n_label": 1}


def _figures(rec: dict[str, Any]) -> str:
    if rec.get("status") != "ok":
        return ""
    out = []
    for path, name in METRICS.get(rec.get("kind", ""), ()):
        v = store.get(rec, path)
        if v is not None and not store.is_timing(path):
            out.append(f"{name} {v:.3f}")
    return ", ".join(out)


def _run_row(rec: dict[str, Any]) -> dict[str, Any]:
    detail = {
        "run": rec.get("run"),
        "spec": rec.get("spec"),
        "provenance": rec.get("provenance"),
        "timings": rec.get("timings"),
    }
    secs = (rec.get("timings") or {}).get("seconds")
    return {
        "key": rec.get("key", ""),
        "kind": rec.get("kind", ""),
        "label": rec.get("label", ""),
        "status": rec.get("status", "?"),
        "error": rec.get("error", ""),
        "seconds": f"{secs:.1f}" if isinstance(secs, (int, float)) else "",
        "figures": _figures(rec),
        "commit": str((rec.get("provenance") or {}).get("git_commit") or "")[:12],
        "detail": json.dumps(detail, indent=1, sort_keys=True, default=str),
    }


def build_report(
    records: Sequence[dict[str, Any]], *, source: str = "", title: str | None = None
) -> str:
    """The HTML text of the report for ``records`` (as :func:`obliviate.bench.results.read` gives)."""
    import jinja2

    ok = store.only_ok(records)
    sections: list[dict[str, Any]] = []
    for kind, name, kinds, makers, notes_for in SECTIONS:
        recs = [r for r in ok if r.get("kind") in kinds]
        if not recs and kind not in _EMPTY:  # an optional section: shown only with its runs
            continue
        if not recs:
            sections.append(
                {"id": kind, "title": name, "empty": _EMPTY[kind], "plots": [], "notes": []}
            )
            continue
        plots: list[P.Plot] = []
        for make in makers:
            plots.extend(make(recs))
        drawn = {p.kind for p in plots}
        notes = [text for k, text in notes_for.items() if k not in drawn]
        tables = [
            t
            for k in kinds
            if (
                t := TABLES.get(k, lambda rs, k=k: _summary_table(rs, k))(
                    [r for r in recs if r.get("kind") == k]
                )
            )
        ]
        sections.append(
            {
                "id": kind,
                "title": name,
                "empty": "",
                "plots": plots,
                "notes": notes,
                "summaries": tables,
            }
        )
    covered = {k for _, _, kinds, *_ in SECTIONS for k in kinds}
    for kind in KINDS:  # a registered kind without a section of its own: its summary table
        recs = [r for r in ok if r.get("kind") == kind]
        if kind in covered or not recs:
            continue
        table = _summary_table(recs, kind)
        sections.append(
            {
                "id": kind,
                "title": kind,
                "empty": "",
                "plots": [],
                "notes": [],
                "summaries": [table] if table else [],
            }
        )
    counts = {k: sum(1 for r in ok if r.get("kind") in kinds) for k, _, kinds, *_ in SECTIONS}
    failed = sum(1 for r in records if r.get("status") != "ok")
    cards = [{"value": len(records), "label": "runs"}]
    cards += [
        {"value": counts[k], "label": f"{n.lower()} runs"}
        for k, n, *_ in SECTIONS
        if counts[k] or k in _EMPTY
    ]
    cards.append({"value": failed, "label": "failed runs"})
    commits = sorted(
        {
            str((r.get("provenance") or {}).get("git_commit"))
            for r in records
            if (r.get("provenance") or {}).get("git_commit")
        }
    )
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(
        title=title or "obliviate report",
        source=source,
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        version=__version__,
        n_runs=len(records),
        cards=cards,
        commits=commits,
        sections=sections,
        runs=[
            _run_row(r)
            for r in sorted(records, key=lambda r: (r.get("kind", ""), r.get("label", "")))
        ],
    )


def _no_records(results_dir: Path) -> str:
    """Why ``results_dir`` gave no records: an empty file, or bytes that are no record (not
    UTF-8, not JSON: a damaged file, which a torn-last-line reader otherwise skips silently)."""
    p = results_dir / store.RESULTS if results_dir.is_dir() else results_dir
    try:
        raw = p.read_bytes()
    except OSError:
        raw = b""
    if not raw.strip():
        return f"{results_dir}: the results file holds no runs yet"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return (
            f"{p}: the results file is corrupt (not UTF-8 text); delete it and re-run the benchmark"
        )
    return f"{p}: the results file is corrupt (no complete JSON record); delete it and re-run the benchmark"


def write_report(results_dir: str | Path, out: str | Path, *, title: str | None = None) -> Path:
    """Read ``results_dir`` and write the report to ``out``; returns the path written."""

    records = store.read(results_dir)
    if not records:
        raise ObliviateError(_no_records(Path(results_dir)))
    html = build_report(records, source=str(results_dir), title=title)
    target = Path(out)
    atomic_write_text(target, html)
    target.chmod(0o644)  # a report is for sharing; the temp file was private
    return target


__all__ = ["SECTIONS", "TABLES", "build_report", "write_report"]
