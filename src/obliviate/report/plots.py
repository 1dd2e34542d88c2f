"""The report's plots: matplotlib figures from result records, each returned as an SVG data URI.

Every function takes the (ok) records of one kind and returns a list of :class:`Plot` (empty
when the data for that plot is absent). Values over seeds are averaged; error bars are the
sample standard deviation.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from obliviate.bench import results as store
from obliviate.metrics.stability import stability_gap

PALETTE = (
    "#4269d0",
    "#efb118",
    "#ff725c",
    "#6cc5b0",
    "#3ca951",
    "#ff8ab7",
    "#a463f2",
    "#97bbf5",
    "#9c6b4e",
    "#9498a0",
)


@dataclass(frozen=True)
class Plot:
    """One figure: its title, a one-paragraph caption and the image (``data:image/svg+xml``)."""

    title: str
    caption: str
    src: str
    kind: str


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "svg.fonttype": "none",
            "font.size": 9,
            "axes.titlesize": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "figure.dpi": 100,
            "svg.hashsalt": "obliviate",  # deterministic ids
        }
    )
    return plt


def _encode(fig: Any) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def _grid(n: int, per_row: int = 4, w: float = 3.0, h: float = 2.7):  # type: ignore[no-untyped-def]
    plt = _plt()
    cols = min(n, per_row)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(w * cols, h * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _params(rec: dict[str, Any]) -> str:
    p = rec.get("run", {}).get("params") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(p.items()))


def method_name(rec: dict[str, Any]) -> str:
    """``strategy(params)`` / ``method(params)`` of a record, without data or seed."""
    run = rec.get("run", {})
    name = run.get("strategy") or run.get("method") or "?"
    params = _params(rec)
    return f"{name}({params})" if params else str(name)


def _groups(
    records: Sequence[dict[str, Any]], *keys: str
) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(tuple(r.get("run", {}).get(k) for k in keys), []).append(r)
    return out


def _by_method(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(method_name(r), []).append(r)
    return out


def _mean_matrix(recs: Sequence[dict[str, Any]]) -> np.ndarray | None:
    mats = []
    for r in recs:
        m = r.get("metrics", {}).get("accuracy_matrix")
        if m:
            mats.append(
                np.array([[np.nan if v is None else v for v in row] for row in m], dtype=float)
            )
    if not mats or len({m.shape for m in mats}) != 1:
        return None
    return np.nanmean(np.stack(mats), axis=0) if len(mats) > 1 else mats[0]


# ---- continual learning ----------------------------------------------------------------------


def accuracy_heatmaps(records: Sequence[dict[str, Any]]) -> list[Plot]:
    """R[i, j] per method (mean over seeds), one figure per dataset/scenario."""
    plots = []
    for (ds, sc), recs in sorted(_groups(records, "dataset", "scenario").items(), key=str):
        means = {m: _mean_matrix(rs) for m, rs in _by_method(recs).items()}
        methods = {m: v for m, v in means.items() if v is not None}
        if not methods:
            continue
        fig, axes = _grid(len(methods), per_row=5, w=2.8, h=2.8)
        for ax, (m, mat) in zip(axes, methods.items(), strict=True):
            ax.grid(False)
            im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
            n = mat.shape[0]
            if n <= 10:
                for i in range(n):
                    for j in range(mat.shape[1]):
                        if not np.isnan(mat[i, j]):
                            ax.text(
                                j,
                                i,
                                f"{mat[i, j]:.2f}",
                                ha="center",
                                va="center",
                                fontsize=6,
                                color="white" if mat[i, j] < 0.6 else "black",
                            )
            ax.set_title(m)
            ax.set_xlabel("evaluated on experience j")
            if ax.get_subplotspec().is_first_col():
                ax.set_ylabel("after learning i")
            ax.set_xticks(range(mat.shape[1]))
            ax.set_yticks(range(n))
        fig.colorbar(im, ax=axes, shrink=0.8, label="accuracy")
        n_seeds = max(len(rs) for rs in _by_method(recs).values())
        plots.append(
            Plot(
                f"Accuracy matrices — {ds} / {sc}",
                f"R[i, j]: accuracy on experience j's test set after learning experience i, mean over "
                f"up to {n_seeds} seeds. Below the diagonal is retention; its fading is forgetting.",
                _encode(fig),
                "heatmap",
            )
        )
    return plots


def experience_accuracy(records: Sequence[dict[str, Any]]) -> list[Plot]:
    """Accuracy of each experience j over the stream (R[i, j] for i >= j), per method."""
    plots = []
    for (ds, sc), recs in sorted(_groups(records, "dataset", "scenario").items(), key=str):
        means = {m: _mean_matrix(rs) for m, rs in _by_method(recs).items()}
        methods = {m: v for m, v in means.items() if v is not None}
        if not methods:
            continue
        fig, axes = _grid(len(methods), per_row=5, w=3.0, h=2.5)
        for ax, (m, mat) in zip(axes, methods.items(), strict=True):
            n = mat.shape[0]
            for j in range(mat.shape[1]):
                xs = np.arange(j, n)
                ax.plot(
                    xs,
                    mat[j:, j],
                    marker="o",
                    ms=3,
                    color=PALETTE[j % len(PALETTE)],
                    label=f"exp {j}",
                )
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(m)
            ax.set_xlabel("experiences learned")
            if ax.get_subplotspec().is_first_col():
                ax.set_ylabel("accuracy")
            ax.set_xticks(range(n))
        axes[0].legend(fontsize=6, loc="lower left")
        plots.append(
            Plot(
                f"Accuracy of each experience over the stream — {ds} / {sc}",
                "Each line follows one experience's test accuracy from the moment it is learned to the "
                "end of the stream (mean over seeds).",
                _encode(fig),
                "experience-lines",
            )
        )
    return plots


def continual_curves(records: Sequence[dict[str, Any]]) -> list[Plot]:
    """Continual-evaluation curves (first seed of each method) with the stability gap marked."""
    plots = []
    with_curves = [r for r in records if (r.get("metrics", {}).get("curves") or {}).get("step")]
    for (ds, sc), recs in sorted(_groups(with_curves, "dataset", "scenario").items(), key=str):
        methods = {
            m: sorted(rs, key=lambda r: r["run"].get("seed", 0))[0]
            for m, rs in _by_method(recs).items()
        }
        fig, axes = _grid(len(methods), per_row=2, w=5.0, h=2.8)
        for ax, (m, rec) in zip(axes, methods.items(), strict=True):
            c = rec["metrics"]["curves"]
            step = np.asarray(c["step"], dtype=float)
            exp = np.asarray(c["experience"], dtype=int)
            acc = np.array(
                [[np.nan if v is None else v for v in row] for row in c["acc"]], dtype=float
            )
            for j in range(acc.shape[1]):
                ax.plot(step, acc[:, j], lw=1.2, color=PALETTE[j % len(PALETTE)], label=f"exp {j}")
            for k in range(1, int(exp.max()) + 1 if exp.size else 0):
                first = np.flatnonzero(exp == k)
                if first.size:
                    ax.axvline(step[first[0]], color="#888", ls=":", lw=0.8)
            matrix = rec["metrics"].get("accuracy_matrix")
            if matrix:
                r = np.array(
                    [[np.nan if v is None else v for v in row] for row in matrix], dtype=float
                )
                gap = stability_gap(acc, exp, r)
                worst: dict[int, dict[str, Any]] = {}
                for p in gap["pairs"]:  # the largest drop at each task switch
                    if p["drop"] > 0.02 and (
                        p["new"] not in worst or p["drop"] > worst[p["new"]]["drop"]
                    ):
                        worst[p["new"]] = p
                for p in worst.values():
                    x = step[p["low_step_index"]]
                    ax.annotate(
                        "",
                        xy=(x, p["low"]),
                        xytext=(x, p["before"]),
                        arrowprops={"arrowstyle": "->", "color": "crimson", "lw": 1.2},
                    )
                    ax.plot([x], [p["low"]], "v", color="crimson", ms=5)
                if worst:
                    ax.plot([], [], "v", color="crimson", label="stability gap")
                md = gap["mean_drop"]
                ax.set_title(f"{m}  (mean gap {md:.2f})" if md == md else m)
            else:
                ax.set_title(m)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("training step")
            if ax.get_subplotspec().is_first_col():
                ax.set_ylabel("accuracy")
        axes[0].legend(fontsize=6, loc="lower left", ncol=2)
        plots.append(
            Plot(
                f"Continual evaluation — {ds} / {sc}",
                "Accuracy of every seen experience, evaluated every few steps (first seed). Dotted "
                "lines are task switches; red arrows mark the stability gap: the largest drop of an "
                "old experience right after a switch (De Lange et al., ICLR 2023).",
                _encode(fig),
                "curves",
            )
        )
    return plots


def _event_counts(rec: dict[str, Any]) -> tuple[list[int], int] | None:
    """(finite per-example counts, number never learned) of a record, if it has them."""
    m = rec.get("metrics", {})
    for key in ("forgetting_counts", "forgetting_events"):
        v = m.get(key)
        if isinstance(v, list) and v and all(x is None or isinstance(x, (int, float)) for x in v):
            finite = [int(x) for x in v if x is not None and math.isfinite(x)]
            return finite, len(v) - len(finite)
    return None


def forgetting_histograms(records: Sequence[dict[str, Any]]) -> list[Plot]:
    """Histogram of per-example forgetting-event counts (Toneva et al.), when runs recorded them."""
    items = [
        (r.get("label", method_name(r)), c) for r in records if (c := _event_counts(r)) is not None
    ]
    if not items:
        return []
    items = sorted(items)[:8]
    fig, axes = _grid(len(items), w=3.2, h=2.5)
    for ax, (label, (counts, never)) in zip(axes, items, strict=True):
        arr = np.asarray(counts, dtype=int)
        top = int(arr.max()) if arr.size else 0
        hist = np.bincount(arr, minlength=top + 1) if arr.size else np.zeros(1, dtype=int)
        xs = np.arange(hist.size)
        ax.bar(xs, hist, color=PALETTE[0], width=0.85, label="forgotten k times")
        ax.bar([hist.size + 0.5], [never], color=PALETTE[2], width=0.85, label="never learned")
        ax.set_xticks([*xs.tolist(), hist.size + 0.5])
        ax.set_xticklabels([*(str(x) for x in xs.tolist()), "never"])
        ax.set_yscale("symlog", linthresh=1)
        ax.set_title(label, fontsize=7)
        ax.set_xlabel("forgetting events per example")
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("examples")
    axes[0].legend(fontsize=6)
    return [
        Plot(
            "Example forgetting events",
            "How often each training example went from correct to incorrect "
            "between presentations (Toneva et al., ICLR 2019); the bar at 0 holds the unforgettable "
            "examples, the red bar those never learned (maximally forgettable).",
            _encode(fig),
            "events",
        )
    ]


# ---- approximate unlearning ------------------------------------------------------------------


def _val(recs: Sequence[dict[str, Any]], path: str) -> tuple[float, float]:
    vals = [v for v in (store.get(r, path) for r in recs) if v is not None]
    if not vals:
        return float("nan"), float("nan")
    arr = np.asarray(vals)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def unlearning_accuracy(records: Sequence[dict[str, Any]]) -> list[Plot]:
    """Forget / retain / test accuracy of each method beside the original and the oracle."""
    plots = []
    for (ds, fg), recs in sorted(_groups(records, "dataset", "forget").items(), key=str):
        methods = _by_method(recs)
        rows = [("original", recs, "original"), ("oracle (retrain)", recs, "oracle")]
        rows += [(m, rs, "unlearned") for m, rs in methods.items()]
        plt = _plt()
        fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 2), 3.0))
        x = np.arange(len(rows))
        for k, (metric, colour) in enumerate(
            (("forget_acc", PALETTE[2]), ("retain_acc", PALETTE[0]), ("test_acc", PALETTE[4]))
        ):
            means, stds = zip(
                *(_val(rs, f"{which}.{metric}") for _, rs, which in rows), strict=True
            )
            ax.bar(
                x + (k - 1) * 0.26,
                means,
                0.26,
                yerr=stds,
                color=colour,
                label=metric.replace("_acc", ""),
                capsize=2,
            )
        oracle_forget = _val(recs, "oracle.forget_acc")[0]
        if oracle_forget == oracle_forget:
            ax.axhline(oracle_forget, color=PALETTE[2], ls="--", lw=0.8, label="oracle forget")
        ax.set_xticks(x)
        ax.set_xticklabels([r[0] for r in rows], rotation=20, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, 1.18))
        plots.append(
            Plot(
                f"Forget / retain / test accuracy — {ds}, forget {fg}",
                "Each method's unlearned model next to the original and the retrained oracle (same seed). "
                "The target is the oracle's bars, not zero.",
                _encode(fig),
                "unlearning-bars",
            )
        )
    return plots


def tradeoff(records: Sequence[dict[str, Any]]) -> list[Plot]:
    """Forgetting (quality, or |forget acc - oracle's|) against utility; marker size = time."""
    plots = []
    for (ds, fg), recs in sorted(_groups(records, "dataset", "forget").items(), key=str):
        methods = _by_method(recs)
        use_quality = all(not math.isnan(_val(rs, "quality.score")[0]) for rs in methods.values())
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        secs = [_val(rs, "seconds")[0] for rs in methods.values()]
        smax = max([s for s in secs if s == s] or [1.0]) or 1.0
        for k, (m, rs) in enumerate(methods.items()):
            if use_quality:
                xv = _val(rs, "quality.score")[0]
            else:
                gaps = [
                    abs(a - b)
                    for r in rs
                    if (a := store.get(r, "unlearned.forget_acc")) is not None
                    and (b := store.get(r, "oracle.forget_acc")) is not None
                ]
                xv = float(np.mean(gaps)) if gaps else float("nan")
            yv = _val(rs, "unlearned.test_acc")[0]
            s = _val(rs, "seconds")[0]
            size = 30 + 400 * (s / smax if s == s else 0.1)
            ax.scatter(
                [xv],
                [yv],
                s=size,
                color=PALETTE[k % len(PALETTE)],
                alpha=0.75,
                edgecolor="k",
                lw=0.5,
            )
            ax.annotate(m, (xv, yv), textcoords="offset points", xytext=(6, 4), fontsize=7)
        oy = _val(recs, "oracle.test_acc")[0]
        if oy == oy:
            ax.scatter(
                [1.0 if use_quality else 0.0],
                [oy],
                marker="*",
                s=160,
                color="k",
                label="oracle",
                zorder=3,
            )
            ax.legend(fontsize=7, loc="best")
        ax.margins(x=0.15, y=0.15)
        ax.set_xlabel(
            "forgetting quality (higher is better)"
            if use_quality
            else "|forget acc − oracle forget acc| (lower is better)"
        )
        ax.set_ylabel("test accuracy (utility)")
        plots.append(
            Plot(
                f"Forgetting vs utility — {ds}, forget {fg}",
                "Each method's forgetting against its test accuracy (mean over seeds); marker area is "
                "proportional to its wall time. The star is the retrained oracle.",
                _encode(fig),
                "tradeoff",
            )
        )
    return plots


def mia(records: Sequence[dict[str, Any]]) -> list[Plot]:
    """Membership-inference AUC of each unlearned model beside the oracle's."""
    plots = []
    for (ds, fg), recs in sorted(_groups(records, "dataset", "forget").items(), key=str):
        methods = _by_method(recs)
        if all(math.isnan(_val(rs, "unlearned.mia_auc")[0]) for rs in methods.values()):
            continue
        plt = _plt()
        fig, ax = plt.subplots(figsize=(max(4.5, 0.8 * len(methods) + 2), 3.0))
        names = list(methods)
        x = np.arange(len(names))
        um = [_val(methods[n], "unlearned.mia_auc") for n in names]
        om = [_val(methods[n], "oracle.mia_auc") for n in names]
        ax.bar(
            x - 0.2,
            [u[0] for u in um],
            0.4,
            yerr=[u[1] for u in um],
            color=PALETTE[0],
            label="unlearned",
            capsize=2,
        )
        ax.bar(
            x + 0.2,
            [o[0] for o in om],
            0.4,
            yerr=[o[1] for o in om],
            color="#999",
            label="oracle",
            capsize=2,
        )
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=20, ha="right")
        ax.set_ylim(0, 1)
        ax.set_ylabel("MIA AUC (forget vs test)")
        ax.legend(fontsize=7)
        plots.append(
            Plot(
                f"Membership inference — {ds}, forget {fg}",
                "AUC of a membership-inference attack telling forget-set samples from test samples; "
                "the target is the oracle's AUC (grey), not 0.5.",
                _encode(fig),
                "mia",
            )
        )
    return plots


# ---- exact (sharded) unlearning -------------------------------------------------------------


def _sharded_lines(
    records: Sequence[dict[str, Any]],
    path: str,
    ylabel: str,
    title: str,
    caption: str,
    kind: str,
    log: bool,
    reference: str | None = None,
) -> list[Plot]:
    plots = []
    for (ds,), recs in sorted(_groups(records, "dataset").items(), key=str):
        lines = _groups(recs, "n_slices", "graph")
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5.0, 3.2))
        drawn = False
        for k, ((r_, g), rs) in enumerate(sorted(lines.items(), key=str)):
            by_s = _groups(rs, "n_shards")
            shards = sorted(s for (s,) in by_s)
            vals = [_val(by_s[(s,)], path) for s in shards]
            if all(math.isnan(v[0]) for v in vals):
                continue
            ax.errorbar(
                shards,
                [v[0] for v in vals],
                yerr=[v[1] for v in vals],
                marker="o",
                capsize=2,
                color=PALETTE[k % len(PALETTE)],
                label=f"R={r_ or 1}, graph={g or 'none'}",
            )
            if reference and not drawn:
                ref = [_val(by_s[(s,)], reference)[0] for s in shards]
                ax.plot(
                    shards,
                    ref,
                    ls="--",
                    color="#777",
                    marker="s",
                    ms=3,
                    label="full retraining (all shards)",
                )
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        if log:
            ax.set_yscale("log")
        all_s = sorted({int(s) for (s,) in _groups(recs, "n_shards") if s is not None})
        if len(all_s) > 2 and all_s[-1] / max(all_s[0], 1) > 8:
            ax.set_xscale("log")
        ax.set_xticks(all_s)
        ax.set_xticklabels([str(s) for s in all_s])
        ax.minorticks_off()
        ax.set_xlabel("shards S")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
        plots.append(Plot(f"{title} — {ds}", caption, _encode(fig), kind))
    return plots


def deletion_cost(records: Sequence[dict[str, Any]]) -> list[Plot]:
    return _sharded_lines(
        records,
        "deletion_seconds",
        "seconds per deletion (mean)",
        "Deletion cost vs shards",
        "Wall time to delete one random training sample exactly (ledger and checkpoints "
        "included), against the number of shards; one line per slice count and shard graph. "
        "The dashed line is the time to train every shard from scratch, i.e. full retraining.",
        "deletion-cost",
        True,
        reference="train_seconds",
    )


def sharded_accuracy(records: Sequence[dict[str, Any]]) -> list[Plot]:
    return _sharded_lines(
        records,
        "test_accuracy",
        "test accuracy (ensemble)",
        "Accuracy vs shards",
        "Test accuracy of the aggregated shard ensemble: more shards make deletion cheaper and "
        "each shard's model weaker.",
        "sharded-accuracy",
        False,
    )


# ---- lifecycle (learn and forget in one stream) -------------------------------------------------


def _lifecycle_name(rec: dict[str, Any]) -> str:
    run = rec.get("run", {})
    path = run.get("path") or "approximate"
    how = f"{run.get('method') or 'neggrad_plus'}" if path == "approximate" else "exact"
    return f"{run.get('strategy', '?')} / {how}"


def _event_values(
    recs: Sequence[dict[str, Any]], key: str
) -> tuple[list[float], list[float]] | None:
    """Mean and std over seeds of ``key`` at every event (NaN where undefined)."""
    series = [r.get("metrics", {}).get("events") or [] for r in recs]
    if not series or len({len(s) for s in series}) != 1 or not series[0]:
        return None
    means, stds = [], []
    for k in range(len(series[0])):
        vals = [float(s[k][key]) for s in series if s[k].get(key) is not None]
        means.append(float(np.mean(vals)) if vals else math.nan)
        stds.append(float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)
    return means, stds


def lifecycle_timeline(records: Sequence[dict[str, Any]]) -> list[Plot]:
    """Events on the x axis; retention (mean test accuracy over the experiences learned so far)
    and forgetting against the lifecycle oracle (forget-set accuracy minus the oracle's) on the
    y axis; one figure per dataset/scenario/schedule, one line per strategy and deletion path."""
    plots = []
    groups = _groups(records, "dataset", "scenario", "schedule", "deletion_rate")
    for (ds, sc, sched, rate), recs in sorted(groups.items(), key=str):
        by: dict[str, list[dict[str, Any]]] = {}
        for r in recs:
            by.setdefault(_lifecycle_name(r), []).append(r)
        first = (recs[0].get("metrics", {}).get("events")) or []
        if not first:
            continue
        labels = [
            f"L{e['experience']}" if e["event"] == "learn" else f"F {e['request']}" for e in first
        ]
        plt = _plt()
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11.0, 3.6), layout="constrained", sharex=True)
        x = np.arange(len(labels))
        drawn = False
        for k, (name, rs) in enumerate(sorted(by.items())):
            ret, oret, gap = (
                _event_values(rs, key)
                for key in ("retention", "oracle_retention", "forget_acc_gap")
            )
            if ret is None or oret is None or gap is None:
                continue
            color = PALETTE[k % len(PALETTE)]
            ax1.errorbar(x, ret[0], yerr=ret[1], marker="o", ms=3, capsize=2, color=color,
                         label=name)  # fmt: skip
            ax1.plot(x, oret[0], ls="--", color=color, alpha=0.7)
            ax2.errorbar(x, gap[0], yerr=gap[1], marker="o", ms=3, capsize=2, color=color,
                         label=name)  # fmt: skip
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        for e, ev in enumerate(first):
            if ev["event"] == "forget":
                for ax in (ax1, ax2):
                    ax.axvline(e, color="#bbb", lw=0.8, zorder=0)
        ax2.axhline(0.0, color="#777", lw=1.0, ls=":")
        ax1.set_ylabel("retention (mean acc, learned exps)")
        ax2.set_ylabel("forget acc − oracle forget acc")
        for ax in (ax1, ax2):
            ax.set_xticks(x)
            ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
        ax1.plot([], [], ls="--", color="#777", label="lifecycle oracle (dashed)")
        ax1.legend(fontsize=6, loc="lower left")
        what = sched or f"generated, rate {rate}"
        plots.append(
            Plot(
                f"Lifecycle timeline — {ds}/{sc}: {what}",
                "Every event of the stream on the x axis (L i: experience i learned; F: a "
                "deletion request, grey lines). Left: retention, the mean test accuracy over the "
                "experiences learned so far (solid), beside the lifecycle oracle's (dashed: the "
                "same stream, seed and strategy learned without the deleted samples from the "
                "start). Right: forgetting against the oracle, accuracy on every sample deleted "
                "so far minus the oracle's accuracy on them (0: indistinguishable from never "
                "having learned them). Mean over seeds, error bars one standard deviation.",
                _encode(fig),
                "lifecycle-timeline",
            )
        )
    return plots


__all__ = [
    "Plot",
    "accuracy_heatmaps",
    "continual_curves",
    "deletion_cost",
    "experience_accuracy",
    "forgetting_histograms",
    "lifecycle_timeline",
    "method_name",
    "mia",
    "sharded_accuracy",
    "tradeoff",
    "unlearning_accuracy",
]
