"""Continual-evaluation metrics: min-ACC, WC-ACC, windowed forgetting and the stability gap.

All are pure functions of a run's per-iteration evaluation curves (``acc[e, j]``: accuracy on
experience ``j`` at evaluation ``e``; ``experience[e]``: the experience being trained at ``e``;
NaN for experiences not yet seen) and its accuracy matrix ``R[i, j]`` (after experience ``i``).
:func:`obliviate.continual.loop.train_stream` with ``eval_every=k`` produces both.

References
----------
De Lange, M., van de Ven, G. M. & Tuytelaars, T. (2023). Continual evaluation for lifelong
learning: identifying the stability gap. ICLR 2023. (min-ACC and WC-ACC: Sec. 3.2; windowed
forgetting: Sec. 3.2, "WF^w"; the stability gap: Sec. 4.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _arrays(
    acc: Sequence[Sequence[float]] | np.ndarray, experience: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(acc, dtype=float)
    e = np.asarray(experience, dtype=int)
    if a.ndim != 2 or e.shape != (a.shape[0],):
        raise ValueError(
            f"acc must be [n_evals, n_experiences] and experience [n_evals]; got {a.shape} and {e.shape}"
        )
    return a, e


def min_accuracies(acc, experience, accuracy_matrix) -> np.ndarray:  # type: ignore[no-untyped-def]
    """For each experience ``i`` but the last trained one: its minimum accuracy over every
    evaluation after it was learned (during later experiences and at their ends).

    Returns an array of length ``T - 1`` for ``T`` completed experiences.
    """
    a, e = _arrays(acc, experience)
    r = np.asarray(accuracy_matrix, dtype=float)
    done = int(np.sum(~np.isnan(r).all(axis=1)))
    out = []
    for i in range(done - 1):
        later = a[e > i, i]
        after_rows = r[i + 1 : done, i]
        vals = np.concatenate([later[~np.isnan(later)], after_rows[~np.isnan(after_rows)]])
        out.append(float(vals.min()) if vals.size else float("nan"))
    return np.asarray(out)


def min_acc(acc, experience, accuracy_matrix) -> float:  # type: ignore[no-untyped-def]
    """min-ACC (De Lange et al. 2023, Sec. 3.2): average over previous experiences of their
    minimum accuracy after being learned, at the end of the last completed experience.
    NaN with fewer than two experiences."""
    m = min_accuracies(acc, experience, accuracy_matrix)
    return float(m.mean()) if m.size else float("nan")


def wc_acc(acc, experience, accuracy_matrix) -> float:  # type: ignore[no-untyped-def]
    """WC-ACC (De Lange et al. 2023, Sec. 3.2): ``(1/k) A(E_k, f) + (1 - 1/k) min-ACC`` with
    ``k`` the number of completed experiences and ``A(E_k, f)`` the final accuracy on the last
    one. With one experience it is that accuracy."""
    r = np.asarray(accuracy_matrix, dtype=float)
    k = int(np.sum(~np.isnan(r).all(axis=1)))
    if k == 0:
        return float("nan")
    current = float(r[k - 1, k - 1])
    if k == 1:
        return current
    return current / k + (1 - 1 / k) * min_acc(acc, experience, accuracy_matrix)


def windowed_forgetting(acc, experience, window: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """WF^w per experience (De Lange et al. 2023): the largest accuracy drop ``A(t) - A(t')``
    with ``t < t' <= t + window`` evaluations, over the experience's curve. NaN where unseen."""
    a, _ = _arrays(acc, experience)
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out = np.full(a.shape[1], np.nan)
    for j in range(a.shape[1]):
        col = a[:, j]
        col = col[~np.isnan(col)]
        if col.size < 2:
            continue
        best = 0.0
        for t in range(col.size - 1):
            best = max(best, float(col[t] - col[t + 1 : t + 1 + window].min()))
        out[j] = best
    return out


def stability_gap(acc, experience, accuracy_matrix) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The stability gap of every old experience at every later task switch.

    For experience ``j`` and a later experience ``k``: ``before`` = R[k-1, j] (accuracy just
    before the switch), ``low`` = the minimum of ``j``'s curve while ``k`` trains, ``drop`` =
    before - low (the gap), ``recovery`` = R[k, j] - low (how much came back by the end of k).

    Returns ``{"pairs": [{"old", "new", "before", "low", "drop", "recovery", "low_step_index"}],
    "mean_drop", "mean_recovery", "max_drop"}``; means are NaN without curves.
    """
    a, e = _arrays(acc, experience)
    r = np.asarray(accuracy_matrix, dtype=float)
    pairs = []
    for k in range(1, r.shape[0]):
        if np.isnan(r[k]).all():
            break
        rows = np.flatnonzero(e == k)
        if rows.size == 0:
            continue
        for j in range(k):
            during = a[rows, j]
            low_at = int(np.nanargmin(during))
            low = float(during[low_at])
            pairs.append(
                {
                    "old": j,
                    "new": k,
                    "before": float(r[k - 1, j]),
                    "low": low,
                    "drop": float(r[k - 1, j] - low),
                    "recovery": float(r[k, j] - low),
                    "low_step_index": int(rows[low_at]),
                }
            )
    drops = np.array([p["drop"] for p in pairs], dtype=float)
    recs = np.array([p["recovery"] for p in pairs], dtype=float)
    return {
        "pairs": pairs,
        "mean_drop": float(drops.mean()) if drops.size else float("nan"),
        "mean_recovery": float(recs.mean()) if recs.size else float("nan"),
        "max_drop": float(drops.max()) if drops.size else float("nan"),
    }
