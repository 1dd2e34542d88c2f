"""Per-example privacy degree epsilon from threshold attacks, as in the NeurIPS-2023 unlearning
challenge's evaluation (Triantafillou et al., 2024; the organisers' "Evaluation for the NeurIPS
Machine Unlearning Competition", Aug. 2023, Eq. 1 and Algorithm 1; their scoring code,
github.com/google-deepmind/unlearning_evaluation, ``metric.py``).

For one forget example we hold ``N_u`` scalar scores from independently unlearned models and
``N_r`` from independently retrained models. An attack predicts "unlearned" for scores inside an
interval ``(a, b]`` (or outside it); single thresholds are the intervals that are open on one
side. Each attack has a false-positive rate (retrained called unlearned) and false-negative rate;
an (epsilon, delta)-unlearning algorithm must satisfy ``FPR + e^eps FNR >= 1 - delta`` and
``FNR + e^eps FPR >= 1 - delta``, so each attack lower-bounds epsilon by (Eq. 1)

    eps = max(log(1 - delta - FPR) - log(FNR), log(1 - delta - FNR) - log(FPR)),

and the example's epsilon is the largest bound over all attacks, and at least 0 (the
challenge's code clips at 0). As in Algorithm 1, attacks with exactly one of FPR, FNR equal to
zero are discarded, and an attack with both zero (perfect separation) gives ``eps = inf``.

Resolution: with ``N`` models a side the smallest non-zero rate is ``1/N``, so a finite epsilon
is at most ``log(N (1 - delta) - 1)`` (about ``log(N - 1)``: 3.43 at N = 32, 6.24 at the
challenge's N = 512); anything larger is ``inf`` (:func:`max_finite_epsilon`).

Notes
-----
The attack family here is every single threshold in both directions and every interval and
its complement, computed exactly over the pooled scores. The challenge's code evaluated single
thresholds (positive side: the distribution with the larger median) and intervals around the
peakier distribution on a grid of 0.01; every decision those rules make is one of the cuts
here, so epsilon here is at least the challenge's (equal when its grid resolves the scores).
Its extra rule that a side whose spread is under 1 % of the other's gets epsilon = 50 is not in
the written definition and is not applied.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _mat(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(-1, 1) if a.ndim == 1 else a


def attack_error_rates(unlearned: Any, retrained: Any) -> tuple[np.ndarray, np.ndarray]:
    """FPR and FNR of every interval attack and its complement, per example.

    ``unlearned``: ``[N_u, S]`` scores (one column per example), ``retrained``: ``[N_r, S]``.
    Returns two arrays ``[A, S]`` (A = 2 * number of intervals between distinct score values).
    """
    u, r = _mat(unlearned), _mat(retrained)
    if u.shape[1] != r.shape[1]:
        raise ValueError(
            f"unlearned and retrained need the same examples, got {u.shape} and {r.shape}"
        )
    n_u, n_r, s = u.shape[0], r.shape[0], u.shape[1]
    vals = np.concatenate([u, r], axis=0)
    lab = np.concatenate([np.ones((n_u, s)), np.zeros((n_r, s))], axis=0)
    order = np.argsort(vals, axis=0, kind="stable")
    sv = np.take_along_axis(vals, order, axis=0)
    sl = np.take_along_axis(lab, order, axis=0)
    m = n_u + n_r
    cp = np.vstack([np.zeros((1, s)), np.cumsum(sl, axis=0)])  # unlearned among the first k
    cn = np.arange(m + 1)[:, None] - cp  # retrained among the first k
    # a cut between positions k-1 and k is a valid threshold when the values differ there
    valid = np.ones((m + 1, s), dtype=bool)
    valid[1:m] = sv[1:] > sv[:-1]
    i, j = np.triu_indices(m + 1, k=1)
    ok = valid[i] & valid[j]
    tp = cp[j] - cp[i]
    fp = cn[j] - cn[i]
    fpr = np.where(ok, fp / n_r, np.nan)
    fnr = np.where(ok, (n_u - tp) / n_u, np.nan)
    return np.concatenate([fpr, 1.0 - fpr]), np.concatenate([fnr, 1.0 - fnr])


def epsilon_from_rates(
    fpr: Any, fnr: Any, *, delta: float = 1e-5, cap: float = math.inf
) -> np.ndarray:
    """Per-example epsilon ``[S]`` (float64, >= 0, ``inf`` for perfect separation; values above
    ``cap`` become ``cap``) from attack error rates ``[A, S]`` (NaN entries ignored)."""
    fpr, fnr = _mat(fpr), _mat(fnr)
    with np.errstate(divide="ignore", invalid="ignore"):
        e1 = np.log(1.0 - delta - fpr) - np.log(fnr)
        e2 = np.log(1.0 - delta - fnr) - np.log(fpr)
        eps = np.fmax(e1, e2)
    perfect = (fpr == 0) & (fnr == 0)
    one_zero = ((fpr == 0) ^ (fnr == 0)) | np.isnan(fpr) | np.isnan(fnr)
    eps = np.where(one_zero, np.nan, eps)
    eps = np.where(perfect, np.inf, eps)
    eps = np.where(
        np.isnan(eps) & ~one_zero, np.inf, eps
    )  # both logs undefined: as the reference code
    best = np.nanmax(np.vstack([np.zeros((1, eps.shape[1])), eps]), axis=0)
    return np.minimum(best, cap)


def per_example_epsilon(
    unlearned: Any, retrained: Any, *, delta: float = 1e-5, cap: float = math.inf
) -> np.ndarray:
    """Epsilon of each example (column) from all single- and interval-threshold attacks:
    ``[S]`` float64 in ``[0, inf]`` from scores ``[N_u, S]`` and ``[N_r, S]``."""
    fpr, fnr = attack_error_rates(unlearned, retrained)
    return epsilon_from_rates(fpr, fnr, delta=delta, cap=cap)


def max_finite_epsilon(n_unlearned: int, n_retrained: int, *, delta: float = 1e-5) -> float:
    """The largest finite epsilon any attack can show with ``n_unlearned`` and ``n_retrained``
    models: rates are multiples of ``1/N``, attacks with a zero rate are discarded or give
    ``inf``, so the bound peaks at one error on each side:
    ``max(log(1 - delta - 1/N_r) + log(N_u), log(1 - delta - 1/N_u) + log(N_r))``."""
    a = math.log(max(1 - delta - 1 / n_retrained, 1e-300)) + math.log(n_unlearned)
    b = math.log(max(1 - delta - 1 / n_unlearned, 1e-300)) + math.log(n_retrained)
    return max(a, b, 0.0)


def _interval_counts(sorted_vals: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """How many of ``sorted_vals`` lie in ``[lo, hi]`` (closed), per pair of bounds."""
    right = np.searchsorted(sorted_vals, hi, side="right")
    left = np.searchsorted(sorted_vals, lo, side="left")
    return np.clip(right - left, 0, None)


def challenge_code_epsilons(
    unlearned: Any,
    retrained: Any,
    *,
    delta: float = 1e-5,
    cap: float = 50.0,
    per_unit: int = 100,
    buffer: float = 2.0,
) -> np.ndarray:
    """Per-example epsilon ``[S]`` by the decision rules of the challenge's scoring code
    (github.com/google-deepmind/unlearning_evaluation, ``metric.py``, ``_get_epsilons``),
    re-implemented in float64 with exact counting instead of its float32 GPU tensors.

    Per example: the "positive" side is the distribution with the larger median; if one
    side's range is under 1 % of the other's, epsilon is ``cap`` (50); otherwise the attacks
    are (a) single thresholds ``x >= t`` on a grid of ``per_unit`` points per unit over the
    pooled range and (b) closed intervals ``[l, r]`` predicting the peakier side (smaller
    range, width ``w``), ``r`` on a grid over ``[min + w - buffer, max + buffer]`` of that side
    and ``l`` on ``4 * buffer * per_unit / 2`` points of ``[r - w - buffer, r - w + buffer]``;
    Eq. 1 per attack with the code's discard and perfect-separation rules, clipped at 0; the
    largest over the attacks, clipped to ``[0, cap]``. ``unlearned`` and ``retrained``:
    ``[N, S]`` with the same N (the code's requirement)."""
    u, r = _mat(unlearned), _mat(retrained)
    if u.shape != r.shape:
        raise ValueError(f"the challenge's code needs equal shapes, got {u.shape} and {r.shape}")
    retrain_pos = np.median(r, axis=0) > np.median(u, axis=0)
    pos_all = np.where(retrain_pos, r, u)
    neg_all = np.where(retrain_pos, u, r)
    out = np.zeros(u.shape[1])
    for s in range(u.shape[1]):
        pos, neg = pos_all[:, s], neg_all[:, s]
        pd, nd = np.ptp(pos), np.ptp(neg)
        largest, smallest = max(pd, nd), min(pd, nd)
        if largest > 0 and smallest / largest < 0.01:
            out[s] = cap
            continue
        # (b) intervals around the peakier distribution (positive := the peakier one)
        p2, n2 = (neg, pos) if pd >= nd else (pos, neg)
        lo, hi = p2.min() + smallest - buffer, p2.max() + buffer
        right = np.linspace(lo, hi, int(np.ceil((hi - lo) * per_unit)))
        n_left = int(np.ceil(2 * buffer * per_unit))
        left = (right[:, None] - smallest + np.linspace(-buffer, buffer, n_left)[None, :]).ravel()
        right = np.repeat(right, n_left)
        tp_b = _interval_counts(np.sort(p2), left, right)
        fp_b = _interval_counts(np.sort(n2), left, right)
        # (a) single thresholds x >= t on the pooled range
        both = np.r_[pos, neg]
        t = np.linspace(both.min(), both.max(), int(np.ceil(np.ptp(both) * per_unit)))
        tp_a = pos.size - np.searchsorted(np.sort(pos), t, side="left")
        fp_a = neg.size - np.searchsorted(np.sort(neg), t, side="left")
        # every rate is a count over N, so Eq. 1 runs once per distinct (TP, FP) pair
        n = pos.size + 1
        pairs = np.unique(np.r_[tp_b * n + fp_b, tp_a * n + fp_a])
        tpr, fpr = (pairs // n) / pos.size, (pairs % n) / neg.size
        fnr = 1.0 - tpr
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.fmax(
                np.log(1 - delta - fpr) - np.log(fnr), np.log(1 - delta - fnr) - np.log(fpr)
            )
        e = np.clip(e, 0, None)
        e = np.where(fpr * fnr == 0, np.nan, e)
        e = np.where((fpr == 0) & (fnr == 0), np.inf, e)
        out[s] = np.nanmax(e) if np.any(~np.isnan(e)) else 0.0
    return np.clip(out, 0.0, cap)


def challenge_code_score(epsilons: Any, n_models: int, *, bucket: float = 0.5) -> np.ndarray:
    """Per-example points as the challenge's code gave them: buckets of width ``bucket`` from 0
    while their end is at most ``ceil(log(n_models - 1))``, worth 1, 1/2, 1/4, ...; an epsilon
    past the last bucket earns 0."""
    top = np.ceil(np.log(n_models - 1)) if n_models > 1 else 0.0
    n_buckets = int(np.floor(top / bucket + 1e-9))
    eps = np.asarray(epsilons, dtype=np.float64)
    k = np.floor(eps / bucket)
    return np.where(k < n_buckets, 0.5 ** np.clip(k, 0, 60), 0.0)


def bin_scores(epsilons: Any, *, bin_width: float = 0.5, n_bins: int = 13) -> np.ndarray:
    """The challenge's per-example score ``H = 2 / 2**n``, ``n`` the 1-based index of the bin
    ``[(n - 1) * bin_width, n * bin_width)`` holding epsilon, over ``[0, n_bins * bin_width)``
    (``[0, 6.5)`` by default: the written definition's B = 13 bins of width 0.5). An epsilon
    beyond the last bin, ``inf`` included, scores 0, as in the challenge's scoring code (its
    buckets end at ``ceil(log(N - 1))`` and a larger epsilon earns no points)."""
    eps = np.asarray(epsilons, dtype=np.float64)
    n = np.floor(np.clip(eps, 0.0, None) / bin_width) + 1
    with np.errstate(over="ignore", invalid="ignore"):
        h = 2.0 / 2.0 ** np.where(np.isfinite(n), n, 1)
    return np.where(np.isfinite(eps) & (n <= n_bins), h, 0.0)


__all__ = [
    "attack_error_rates",
    "bin_scores",
    "challenge_code_epsilons",
    "challenge_code_score",
    "epsilon_from_rates",
    "max_finite_epsilon",
    "per_example_epsilon",
]
