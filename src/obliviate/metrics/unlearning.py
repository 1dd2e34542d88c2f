"""Unlearning metrics as pure functions: accuracy gaps, output distance to the oracle, and the
NeurIPS-2023 unlearning challenge's forgetting quality.

Forgetting quality (Triantafillou et al., 2024; the challenge's evaluation document and code):
for every forget example, the scores ``log p_y - log sum_{j != y} p_j`` of N unlearned and N
retrained models are compared by threshold attacks; each example gets an epsilon
(:mod:`obliviate.metrics.epsilon`, delta = 1e-5), a bin score ``H = 2 / 2**n`` (bins of width
0.5, 13 bins), and ``F`` is the mean of the bin scores. The final score is
``F * RA_unlearned / RA_oracle * TA_unlearned / TA_oracle`` (mean accuracies over the models).

Deviations from the challenge: the challenge's published code also ran a cross-validated
logistic-regression attack per example besides the thresholds; here the attacks are every
single threshold and every interval threshold (and their complements), computed exactly;
perfect separation gives epsilon = ``cap`` (6.0, the last bin) instead of infinity (same bin,
same score). N is small here (8-64 models instead of 512), and the best attack is chosen on the
same samples it is scored on, as in the challenge, which biases epsilon upwards: two independent
samples of 64 draws from one distribution already give epsilon of about 2 per example (see
``tests/test_unlearning_metrics.py``). :func:`obliviate.experiments.forget.quality` therefore pairs
the models (unlearned model i starts from an original trained with seed i, oracle i is retrained
with seed i), which removes the seed noise both sides share: exact retraining scores F = 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import logsumexp

from obliviate.metrics.epsilon import bin_scores, per_example_epsilon


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
    """Forgetting quality ``F`` from score matrices ``[N_models, N_forget_examples]``.

    Returns ``F``, the per-example ``epsilons`` (list) and their mean ``mean_epsilon``.
    """
    cap = bin_width * (n_bins - 1)
    eps = per_example_epsilon(unlearned_scores, oracle_scores, delta=delta, cap=cap)
    h = bin_scores(eps, bin_width=bin_width, n_bins=n_bins)
    return {
        "F": float(np.mean(h)) if h.size else float("nan"),
        "epsilons": eps.tolist(),
        "mean_epsilon": float(np.mean(eps)) if eps.size else float("nan"),
    }


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
]
