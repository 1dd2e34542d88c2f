"""Mean ± std over seeds per method, and the difference between two results directories.

A *method* is a run with its seed removed: kind, dataset, scenario / forget request / shard
layout, method name and hyperparameters. Records of one method (its seeds) are summarised
together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from obliviate.bench import results as store
from obliviate.experiments import KINDS
from obliviate.experiments import kind as kind_module


class _Columns(Mapping[str, tuple[tuple[str, str], ...]]):
    """Run kind -> its ``SUMMARY_COLUMNS`` (dotted metric path, column name), read from the
    registry of kinds (:data:`obliviate.experiments.KINDS`) when first asked for."""

    def __getitem__(self, kind: str) -> tuple[tuple[str, str], ...]:
        if kind not in KINDS:
            raise KeyError(kind)
        return tuple(kind_module(kind).SUMMARY_COLUMNS)

    def __iter__(self) -> Iterator[str]:
        return iter(KINDS)

    def __len__(self) -> int:
        return len(KINDS)


METRICS: Mapping[str, tuple[tuple[str, str], ...]] = _Columns()
"""The figures shown per run kind: (dotted metric path, column name)."""


def method_of(record: dict[str, Any]) -> tuple[str, ...]:
    """The method a record belongs to (its run spec without the seed), as a tuple of strings."""
    run = dict(record.get("run", {}))
    run.pop("seed", None)
    kind = str(run.pop("kind", record.get("kind", "?")))
    head = tuple(kind_module(kind).METHOD_KEYS) if kind in KINDS else ()
    parts = [kind] + [str(run.pop(k)) for k in head if k in run]
    params = run.pop("params", {}) or {}
    rest = [f"{k}={v}" for k, v in sorted(params.items())] + [
        f"{k}={v}" for k, v in sorted(run.items())
    ]
    if rest:
        parts.append(" ".join(rest))
    return tuple(parts)


def method_label(method: tuple[str, ...]) -> str:
    kind = method[0]
    if kind == "sharded" and len(method) >= 5:
        extra = f" {method[5]}" if len(method) > 5 else ""
        return f"sharded {method[1]} S={method[2]} R={method[3]} {method[4]}{extra}"
    return " ".join(method)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); NaN for none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def summarize(records: Iterable[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    """``{method: {"n": seeds, "kind": kind, "stats": {column: (mean, std)}}}`` over ok records."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in store.only_ok(records):
        groups.setdefault(method_of(r), []).append(r)
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for method, recs in groups.items():
        kind = method[0]
        stats: dict[str, tuple[float, float]] = {}
        for path, name in METRICS.get(kind, ()):
            vals = [v for v in (store.get(r, path) for r in recs) if v is not None]
            if vals:
                stats[name] = mean_std(vals)
        out[method] = {"n": len(recs), "kind": kind, "stats": stats}
    return out


def fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.3f} ± {std:.3f}"


def compare_rows(
    a: dict[tuple[str, ...], dict[str, Any]], b: dict[tuple[str, ...], dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per (method, metric) present in A or B: A, B, and B - A where both exist."""
    rows = []
    for method in sorted(set(a) | set(b)):
        kind = method[0]
        sa = a.get(method, {}).get("stats", {})
        sb = b.get(method, {}).get("stats", {})
        for _, name in METRICS.get(kind, ()):
            if name not in sa and name not in sb:
                continue
            ma, da = sa.get(name, (float("nan"), float("nan")))
            mb, db = sb.get(name, (float("nan"), float("nan")))
            rows.append(
                {
                    "method": method_label(method),
                    "metric": name,
                    "n_a": a.get(method, {}).get("n", 0),
                    "n_b": b.get(method, {}).get("n", 0),
                    "a": (ma, da),
                    "b": (mb, db),
                    "diff": mb - ma if not (math.isnan(ma) or math.isnan(mb)) else float("nan"),
                }
            )
    return rows


__all__ = ["METRICS", "compare_rows", "fmt", "mean_std", "method_label", "method_of", "summarize"]
