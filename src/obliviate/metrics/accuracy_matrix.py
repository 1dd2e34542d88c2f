"""Continual-learning metrics as pure functions of the accuracy matrix.

Notation (0-based, as everywhere in obliviate): ``R[i, j]`` is the test accuracy on experience
``j`` after training on experiences ``0..i``; ``T`` is the number of experiences; ``b[j]`` is the
accuracy of the randomly initialised model on experience ``j`` (the forward-transfer reference,
``StreamResult.initial_accuracy``). Papers number tasks from 1; the formulas below are theirs,
shifted by one.

Every function validates its input (a finite square matrix of accuracies in ``[0, 1]``) and
returns plain Python floats or NumPy arrays; none keeps state. A metric that is undefined for a
stream of one experience (BWT, FWT, forgetting) returns ``nan`` there.

References
----------
Lopez-Paz, D. & Ranzato, M. (2017). Gradient Episodic Memory for Continual Learning. NeurIPS.
Chaudhry, A., Dokania, P. K., Ajanthan, T. & Torr, P. H. S. (2018). Riemannian Walk for
Incremental Learning: Understanding Forgetting and Intransigence. ECCV.
Riemer, M. et al. (2019). Learning to Learn without Forgetting by Maximizing Transfer and
Minimizing Interference. ICLR.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from obliviate.errors import ObliviateError

__all__ = [
    "average_accuracy",
    "backward_transfer",
    "forgetting",
    "forgetting_per_experience",
    "forward_transfer",
    "learning_accuracy",
    "summary",
]


def _matrix(accuracy_matrix: Any) -> np.ndarray:
    r = np.asarray(accuracy_matrix, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ObliviateError(
            f"accuracy matrix must be square T x T with T >= 1, got shape {r.shape}; "
            "row i holds the accuracies on every experience after training on experience i"
        )
    if not np.isfinite(r).all():
        raise ObliviateError(
            "accuracy matrix contains NaN or inf (an unfinished run?); metrics need every row"
        )
    if r.min() < 0.0 or r.max() > 1.0:
        raise ObliviateError(
            f"accuracies must lie in [0, 1], got values in [{r.min():g}, {r.max():g}]"
        )
    return r


def _baseline(initial_accuracy: Any, t: int) -> np.ndarray:
    b = np.asarray(initial_accuracy, dtype=np.float64)
    if b.shape != (t,):
        raise ObliviateError(
            f"initial accuracies must have one entry per experience ({t}), got shape {b.shape}"
        )
    if not np.isfinite(b).all() or b.min() < 0.0 or b.max() > 1.0:
        raise ObliviateError("initial accuracies must be finite and lie in [0, 1]")
    return b


def average_accuracy(accuracy_matrix: Any) -> float:
    """ACC: mean accuracy over all experiences after training on the last one.

    ``ACC = 1/T * sum_j R[T-1, j]`` (Lopez-Paz & Ranzato, 2017, Sec. 2, "ACC").
    """
    r = _matrix(accuracy_matrix)
    return float(r[-1].mean())


def backward_transfer(accuracy_matrix: Any) -> float:
    """BWT: how learning later experiences changed accuracy on earlier ones.

    ``BWT = 1/(T-1) * sum_{j<T-1} (R[T-1, j] - R[j, j])`` (Lopez-Paz & Ranzato, 2017, Sec. 2).
    Negative values mean forgetting; in ``[-1, 1]``; ``nan`` for ``T = 1``.
    """
    r = _matrix(accuracy_matrix)
    t = r.shape[0]
    if t < 2:
        return math.nan
    return float(np.mean(r[-1, :-1] - np.diag(r)[:-1]))


def forward_transfer(accuracy_matrix: Any, initial_accuracy: Any) -> float:
    """FWT: how earlier experiences help a not-yet-seen one, against a random-init model.

    ``FWT = 1/(T-1) * sum_{j>=1} (R[j-1, j] - b[j])`` where ``b[j]`` is the accuracy of the
    randomly initialised model on experience ``j`` (Lopez-Paz & Ranzato, 2017, Sec. 2).
    In ``[-1, 1]``; ``nan`` for ``T = 1``.

    Notes
    -----
    On class-incremental streams ``R[j-1, j]`` is near 0 (the classes of ``j`` were never seen),
    so FWT is at most about ``-b[j]`` there; it is informative on domain-incremental streams.
    """
    r = _matrix(accuracy_matrix)
    t = r.shape[0]
    b = _baseline(initial_accuracy, t)
    if t < 2:
        return math.nan
    return float(np.mean(np.diag(r, k=1) - b[1:]))


def forgetting_per_experience(accuracy_matrix: Any) -> np.ndarray:
    """Forgetting of each of the first ``T-1`` experiences at the end of the stream.

    ``f_j = max_{l < T-1} R[l, j] - R[T-1, j]`` for ``j < T-1`` (Chaudhry et al., 2018, the forgetting
    measure ``f_j^k`` with ``k = T``). Entries lie in ``[-1, 1]``; an empty array for ``T = 1``.

    Notes
    -----
    As in the paper the maximum runs over *all* earlier rows ``l < T-1``, including rows before
    experience ``j`` was trained (those matter only when the model already did well on ``j``,
    e.g. on domain-incremental streams). Values are not clipped at 0: a negative ``f_j`` means
    the final model is better on ``j`` than it ever was before.
    """
    r = _matrix(accuracy_matrix)
    if r.shape[0] < 2:
        return np.zeros(0)
    return r[:-1, :-1].max(axis=0) - r[-1, :-1]


def forgetting(accuracy_matrix: Any) -> float:
    """Average forgetting: the mean of :func:`forgetting_per_experience` over the first ``T-1``.

    ``F = 1/(T-1) * sum_{j<T-1} f_j`` (Chaudhry et al., 2018, ``F_k`` with ``k = T``).
    Always ``F >= -BWT``; ``nan`` for ``T = 1``.
    """
    f = forgetting_per_experience(accuracy_matrix)
    return float(f.mean()) if f.size else math.nan


def learning_accuracy(accuracy_matrix: Any) -> float:
    """Learning accuracy (plasticity): mean accuracy on each experience right after learning it.

    ``LA = 1/T * sum_j R[j, j]`` (Riemer et al., 2019, "learning accuracy", LA).
    """
    r = _matrix(accuracy_matrix)
    return float(np.diag(r).mean())


def summary(accuracy_matrix: Any, initial_accuracy: Any) -> dict[str, Any]:
    """All the metrics above in one dict: ``acc``, ``bwt``, ``fwt``, ``forgetting``,
    ``forgetting_per_experience`` (a list) and ``learning_accuracy``."""
    return {
        "acc": average_accuracy(accuracy_matrix),
        "bwt": backward_transfer(accuracy_matrix),
        "fwt": forward_transfer(accuracy_matrix, initial_accuracy),
        "forgetting": forgetting(accuracy_matrix),
        "forgetting_per_experience": forgetting_per_experience(accuracy_matrix).tolist(),
        "learning_accuracy": learning_accuracy(accuracy_matrix),
    }
