"""Unlearning metrics as pure functions: accuracy gaps, output distance to the oracle, and the
NeurIPS-2023 unlearning challenge's forgetting quality.

Forgetting quality (Triantafillou et al., 2024, "Are we making progress in unlearning?";
the organisers' evaluation document, Aug. 2023, Sec. 4-5; their scoring code,
github.com/google-deepmind/unlearning_evaluation): for every forget example, the scores
``log p_y - log sum_{j != y} p_j`` of N unlearned models (each unlearned from its own
original) and N independently retrained models are compared by threshold attacks; each
example gets an epsilon (:mod:`obliviate.metrics.epsilon`, delta = 1e-5), a bin score
``H = 2 / 2**n`` (bins of width 0.5 over [0, 6.5), 13 bins; an epsilon beyond them, perfect
separation included, scores 0 as in the challenge's code), and ``F`` is the mean of the bin
scores. The final score is ``F * RA_unlearned / RA_oracle * TA_unlearned / TA_oracle`` (mean
accuracies over the models).

Resolution. With N models a side a finite epsilon is at most about ``log(N - 1)``
(:func:`~obliviate.metrics.epsilon.max_finite_epsilon`): 3.43 at N = 32, so only the first 7
bins are reachable and ``H`` takes the values 1, 1/2, ..., 1/64 or 0 (perfect separation);
the challenge's N = 512 reaches bin 13 (6.24). The best attack is chosen on the same samples it
is scored on, as in the challenge, so epsilon is biased upwards at small N: two samples of one
distribution already give epsilon > 0. The noise floor of a given N is therefore the F of
exact unlearning itself (retraining against independent retraining), which
:func:`obliviate.experiments.forget.quality` reports beside every method.

Notes
-----
Deviations from the challenge: the attack family is every single threshold (both directions)
and every interval and its complement, computed exactly (the challenge's code used single and
double thresholds on a 0.01 grid: a subset of these decisions) and no other attack (the
challenge ran no logistic-regression attack either). Its rule that a side with under 1 % of
the other's spread gets epsilon = 50 is not in its written definition and is not applied.
N defaults to 32 per side instead of 512 (CPU budget), which caps finite epsilon at 3.43.
The larger attack family raises the selection bias at small N, so F here runs below the
challenge code's on the same scores (two samples of one Gaussian, N = 32, 146 examples: 0.094
here, 0.196 under the code's rules); :func:`forgetting_quality` therefore also returns
``F_challenge_code``, the same scores under the code's rules
(:func:`~obliviate.metrics.epsilon.challenge_code_epsilons`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import logsumexp

from obliviate.metrics.epsilon import (
    bin_scores,
    challenge_code_epsilons,
    challenge_code_score,
    max_finite_epsilon,
    per_example_epsilon,
)


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def accuracy_gaps(
    model: dict[str, float],
    oracle: dict[str, float],
    keys: tuple[str, ...] = ("retain_acc", "forget_acc", "test_acc"),
) -> dict[str, float]:
    """``model[k] - oracle[k]`` for each key (positive: the model is more accurate than the oracle)."""
    return {k: float(model[k]) - float(oracle[k]) for k in keys}


def js_divergence(p: Any, q: Any) -> float:
    """Mean Jensen-Shannon divergence (nats, in [0, ln 2]) between rows of two probability
    matrices ``[N, K]`` (e.g. softmax outputs of two models on the same samples). NaN if empty."""
    p, q = _np(p), _np(q)
    if p.shape != q.shape:
        raise ValueError(f"p and q must have the same shape, got {p.shape} and {q.shape}")
    if p.shape[0] == 0:
        return float("nan")
    m = 0.5 * (p + q)

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = np.clip(a, 0.0, None)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(
                a > 0,
                a * (np.log(np.clip(a, 1e-300, None)) - np.log(np.clip(b, 1e-300, None))),
                0.0,
            )
        return t.sum(axis=1)

    return float(np.mean(0.5 * kl(p, m) + 0.5 * kl(q, m)))


def confidence_scores(logits: Any, y: Any) -> np.ndarray:
    """``log p_y - log sum_{j != y} p_j`` per row, computed stably from logits ``[N, K]``
    (equals ``z_y - logsumexp_{j != y} z_j``)."""
    z = _np(logits)
    y = np.asarray(_np(y), dtype=np.int64)
    rows = np.arange(z.shape[0])
    zy = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    return zy - logsumexp(others, axis=1)


def forgetting_quality(
    unlearned_scores: Any,
    oracle_scores: Any,
    *,
    delta: float = 1e-5,
    bin_width: float = 0.5,
    n_bins: int = 13,
) -> dict[str, Any]:
    """Forgetting quality ``F`` from score matrices ``[N_u, S]`` (unlearned models) and
    ``[N_r, S]`` (independently retrained models), S forget examples.

    Returns ``F`` (mean bin score, in [0, 1]); ``F_stderr`` (standard error of that mean over
    the S examples: the spread from the choice of examples, not from the models);
    ``epsilons`` (list, per example; ``None`` for perfect separation, epsilon = inf);
    ``mean_epsilon`` (over the finite ones), ``n_separated`` (examples perfectly separated);
    and the resolution at these N: ``max_finite_epsilon`` and ``n_reachable_bins`` (bins a
    finite epsilon can reach), ``H_levels`` (the values a per-example score can take);
    ``F_challenge_code``: F of the same scores under the challenge's scoring code's own rules
    (its threshold grids, its 1 % spread rule, its buckets up to ``ceil(log(N - 1))``:
    :func:`~obliviate.metrics.epsilon.challenge_code_epsilons`), to compare with the
    challenge's figures (NaN unless both sides have the same N > 1).
    """
    eps = per_example_epsilon(unlearned_scores, oracle_scores, delta=delta)
    h = bin_scores(eps, bin_width=bin_width, n_bins=n_bins)
    n_u, n_r = np.shape(unlearned_scores)[0], np.shape(oracle_scores)[0]
    top = max_finite_epsilon(n_u, n_r, delta=delta)
    reach = min(n_bins, int(np.floor(top / bin_width)) + 1)
    finite = eps[np.isfinite(eps)]
    if np.shape(unlearned_scores) == np.shape(oracle_scores) and h.size and n_u > 1:
        code_eps = challenge_code_epsilons(unlearned_scores, oracle_scores, delta=delta)
        f_code = float(np.mean(challenge_code_score(code_eps, n_u)))
    else:
        f_code = float("nan")
    return {
        "F_challenge_code": f_code,
        "F": float(np.mean(h)) if h.size else float("nan"),
        "F_stderr": float(np.std(h, ddof=1) / np.sqrt(h.size)) if h.size > 1 else float("nan"),
        "epsilons": [float(e) if np.isfinite(e) else None for e in eps],
        "mean_epsilon": float(np.mean(finite)) if finite.size else float("nan"),
        "n_separated": int(np.sum(~np.isfinite(eps))),
        "max_finite_epsilon": top,
        "n_reachable_bins": reach,
        "H_levels": [2.0 / 2.0**n for n in range(1, reach + 1)] + [0.0],
    }


def min_quality_models(delta: float = 1e-5) -> int:
    """The smallest N (models a side) at which forgetting quality resolves anything: the
    largest finite epsilon at N a side is ``log(N (1 - delta) - 1)``
    (:func:`~obliviate.metrics.epsilon.max_finite_epsilon`), and an epsilon above 0 (a bin
    beyond the first) is reachable only when that is positive, ``N > 2 / (1 - delta)``: 3 for
    ``delta = 1e-5``. At N = 2 every example scores epsilon 0 or infinity (perfect separation),
    so F is only the share of unseparated examples."""
    if not 0 <= delta < 1:
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")
    return math.floor(2 / (1 - delta)) + 1


def final_score(
    f: float, ra_unlearned: float, ra_oracle: float, ta_unlearned: float, ta_oracle: float
) -> float:
    """The challenge's final score ``F * RA_u / RA_o * TA_u / TA_o``."""
    return (
        float(f) * float(ra_unlearned) / float(ra_oracle) * float(ta_unlearned) / float(ta_oracle)
    )


__all__ = [
    "accuracy_gaps",
    "confidence_scores",
    "final_score",
    "forgetting_quality",
    "js_divergence",
    "min_quality_models",
]
