"""Per-example privacy degree epsilon from threshold attacks, as in the NeurIPS-2023 unlearning
challenge's evaluation (Triantafillou et al., 2024).

For one forget example we hold ``N_u`` scalar scores from independently unlearned models and
``N_r`` from independently retrained models. An attack predicts "unlearned" for scores inside an
interval ``(a, b]`` (or outside it); single thresholds are the intervals that are open on one
side. Each attack has a false-positive rate (retrained called unlearned) and false-negative rate;
an (epsilon, delta)-unlearning algorithm must satisfy ``FPR + e^eps FNR >= 1 - delta`` and
``FNR + e^eps FPR >= 1 - delta``, so each attack lower-bounds epsilon by

    eps = max(log(1 - delta - FPR) - log(FNR), log(1 - delta - FNR) - log(FPR)),

and the example's epsilon is the largest bound over all attacks (and 0). As in the challenge's
code, attacks with exactly one of FPR, FNR equal to zero are discarded, and an attack with both
zero (perfect separation) gives an unbounded epsilon, capped here at ``cap``.
"""

from __future__ import annotations

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


def epsilon_from_rates(fpr: Any, fnr: Any, *, delta: float = 1e-5, cap: float = 6.0) -> np.ndarray:
    """Per-example epsilon ``[S]`` from attack error rates ``[A, S]`` (NaN entries ignored)."""
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
    unlearned: Any, retrained: Any, *, delta: float = 1e-5, cap: float = 6.0
) -> np.ndarray:
    """Epsilon of each example (column) from all single- and interval-threshold attacks."""
    fpr, fnr = attack_error_rates(unlearned, retrained)
    return epsilon_from_rates(fpr, fnr, delta=delta, cap=cap)


def bin_scores(epsilons: Any, *, bin_width: float = 0.5, n_bins: int = 13) -> np.ndarray:
    """The challenge's per-example score ``H = 2 / 2**n``, ``n`` the 1-based index of the bin
    ``[k * bin_width, (k + 1) * bin_width)`` holding epsilon (the last bin is open-ended)."""
    edges = np.arange(n_bins) * bin_width
    n = np.digitize(np.asarray(epsilons, dtype=np.float64), edges)
    return 2.0 / 2.0**n


__all__ = ["attack_error_rates", "bin_scores", "epsilon_from_rates", "per_example_epsilon"]
