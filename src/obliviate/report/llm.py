"""The report's language-model section (run kind ``llm``): methods beside the fine-tuned target
and the retain-only oracle, and forget quality against model utility.

Each ``llm`` record (:mod:`obliviate.experiments.llm`) holds the unlearned model's figures under
``metrics.metrics`` and, measured in the same run, the target's (``metrics.target``) and the
oracle's (``metrics.retrain``). The target and the oracle do not depend on the method, so their
rows take one record per (model, seed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from obliviate.bench import results as store
from obliviate.bench.summary import fmt, mean_std
from obliviate.report.plots import PALETTE, Plot, _encode, _plt, method_name

COLUMNS: tuple[tuple[str, str], ...] = (
    ("forget_Q_A_Prob", "forget prob"),
    ("forget_value_accuracy", "forget value acc"),
    ("forget_quality", "forget quality"),
    ("forget_quality_same_wording", "FQ same wording"),
    ("privleak", "privleak"),
    ("extraction_strength", "extraction"),
    ("retain_Q_A_Prob", "retain prob"),
    ("retain_value_accuracy", "retain value acc"),
    ("model_utility", "model utility"),
)
"""(key in a model's figures, column name) of the LLM table, in order."""

FQ_FLOOR = 1e-12
"""Forget quality (a KS p-value) below this is drawn at this value on the log axis."""


def _model(rec: dict[str, Any]) -> str:
    # the resolved spec names the model even when the spec block left it at its default
    return str((rec.get("spec") or {}).get("model") or rec.get("run", {}).get("model", "?"))


def _seed(rec: dict[str, Any]) -> Any:
    return rec.get("run", {}).get("seed")


def _rows_of(recs: Sequence[dict[str, Any]], part: str, label: str) -> list[str]:
    vals = [
        fmt(*mean_std([v for r in recs if (v := store.get(r, f"{part}.{key}")) is not None]))
        for key, _ in COLUMNS
    ]
    return [label, str(len(recs)), *vals]


def _per_seed(recs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[Any, dict[str, Any]] = {}
    for r in recs:
        seen.setdefault(_seed(r), r)
    return list(seen.values())


def llm_table(records: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """One table: per model, the target and the oracle, then every method; mean ± std over
    seeds (sample std). ``None`` without records."""
    if not records:
        return None
    rows: list[list[str]] = []
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_model.setdefault(_model(r), []).append(r)
    for model in sorted(by_model):
        recs = by_model[model]
        once = _per_seed(recs)
        rows.append(_rows_of(once, "target", f"target (fine-tuned) — {model}"))
        rows.append(_rows_of(once, "retrain", f"retain oracle — {model}"))
        methods: dict[str, list[dict[str, Any]]] = {}
        for r in recs:
            if r.get("run", {}).get("method") != "retrain":
                methods.setdefault(method_name(r), []).append(r)
        for name in sorted(methods):
            rows.append(_rows_of(methods[name], "metrics", f"{name} — {model}"))
    return {
        "title": "Methods beside the target and the retain oracle, mean ± std over seeds",
        "header": ["model", "seeds", *(name for _, name in COLUMNS)],
        "rows": rows,
        "n_label": 1,
    }


def _mean(recs: Sequence[dict[str, Any]], path: str) -> float:
    vals = [v for r in recs if (v := store.get(r, path)) is not None]
    return float(np.mean(vals)) if vals else float("nan")


def llm_tradeoff(records: Sequence[dict[str, Any]]) -> list[Plot]:
    """Per model: forget quality (log scale) against model utility, and the forget set's
    answer probability against the retain set's; one point per method (mean over seeds), the
    target and the oracle as black markers."""
    plots: list[Plot] = []
    by_model: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_model.setdefault(_model(r), []).append(r)
    for model in sorted(by_model):
        recs = by_model[model]
        once = _per_seed(recs)
        methods: dict[str, list[dict[str, Any]]] = {}
        for r in recs:
            if r.get("run", {}).get("method") != "retrain":
                methods.setdefault(method_name(r), []).append(r)
        plt = _plt()
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
        points = [
            (name, "metrics", rs, PALETTE[k % len(PALETTE)], "o")
            for k, (name, rs) in enumerate(sorted(methods.items()))
        ]
        points += [("target", "target", once, "k", "X"), ("oracle", "retrain", once, "k", "*")]
        for name, part, rs, color, marker in points:
            fq = _mean(rs, f"{part}.forget_quality")
            mu = _mean(rs, f"{part}.model_utility")
            fp = _mean(rs, f"{part}.forget_Q_A_Prob")
            rp = _mean(rs, f"{part}.retain_Q_A_Prob")
            size = 140 if marker == "*" else 60
            if not (math.isnan(fq) or math.isnan(mu)):
                left.scatter(
                    [max(fq, FQ_FLOOR)],
                    [mu],
                    s=size,
                    color=color,
                    marker=marker,
                    edgecolor="k",
                    lw=0.5,
                    alpha=0.8,
                    zorder=3,
                )
                left.annotate(
                    name,
                    (max(fq, FQ_FLOOR), mu),
                    textcoords="offset points",
                    xytext=(6, 4),
                    fontsize=7,
                )
            if not (math.isnan(fp) or math.isnan(rp)):
                right.scatter(
                    [fp],
                    [rp],
                    s=size,
                    color=color,
                    marker=marker,
                    edgecolor="k",
                    lw=0.5,
                    alpha=0.8,
                    zorder=3,
                )
                right.annotate(
                    name, (fp, rp), textcoords="offset points", xytext=(6, 4), fontsize=7
                )
        left.set_xscale("log")
        left.set_xlabel("forget quality (KS p-value vs oracle; higher is better)")
        left.set_ylabel("model utility (harmonic mean)")
        right.set_xlabel("forget answer probability (lower forgets more)")
        right.set_ylabel("retain answer probability (higher keeps more)")
        for ax in (left, right):
            ax.margins(x=0.15, y=0.15)
        n_seeds = len(once)
        plots.append(
            Plot(
                f"Forget quality vs model utility — {model}",
                "Left: OpenUnlearning's forget quality (the KS test's p-value of the forget "
                "set's truth ratios against the retain oracle's; log scale, values below "
                f"{FQ_FLOOR:g} drawn at it; with few forget items it takes only a few values) "
                "against model utility (harmonic mean of the retain and world figures). Right: "
                "the forget set's answer probability against the retain set's. Points are means "
                f"over {n_seeds} seed(s); X is the fine-tuned target, the star the retain oracle.",
                _encode(fig),
                "llm-tradeoff",
            )
        )
    return plots


__all__ = ["COLUMNS", "FQ_FLOOR", "llm_table", "llm_tradeoff"]
