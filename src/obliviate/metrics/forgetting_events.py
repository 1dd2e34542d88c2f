"""Example forgetting events (Toneva et al., ICLR 2019), as pure functions.

Input: a boolean matrix ``correct[n_examples, n_presentations]`` — whether each training
example was classified correctly each time it was presented in a minibatch (before that step's
update). :func:`obliviate.continual.events.record_presentations` produces it.

A *forgetting event* is a transition correct -> incorrect between consecutive presentations; a
*learning event* incorrect -> correct. An example is *unforgettable* when it was learned (correct
at some presentation) and never forgotten. Examples never learned count as maximally forgettable
(an infinite count), as in the paper's ranking.

References
----------
Toneva, M., Sordoni, A., Combes, R. T. d., Trischler, A., Bengio, Y. & Gordon, G. J. (2019).
An empirical study of example forgetting during deep neural network learning. ICLR 2019
(Sec. 2: definitions; Sec. 5: removing unforgettable examples).
"""

from __future__ import annotations

import numpy as np


def _matrix(correct) -> np.ndarray:  # type: ignore[no-untyped-def]
    c = np.asarray(correct, dtype=bool)
    if c.ndim != 2:
        raise ValueError(f"correct must be [n_examples, n_presentations], got shape {c.shape}")
    return c


def forgetting_counts(correct) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Forgetting events per example; ``inf`` for examples never learned."""
    c = _matrix(correct)
    counts = (c[:, :-1] & ~c[:, 1:]).sum(axis=1).astype(float)
    counts[~c.any(axis=1)] = np.inf
    return counts


def learning_counts(correct) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Learning events per example (incorrect -> correct, plus correct at the first presentation)."""
    c = _matrix(correct)
    first = c[:, 0].astype(int) if c.shape[1] else np.zeros(c.shape[0], dtype=int)
    return (~c[:, :-1] & c[:, 1:]).sum(axis=1) + first


def unforgettable(correct) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Boolean mask: learned at some presentation and never forgotten."""
    return forgetting_counts(correct) == 0


def forgettability_order(counts: np.ndarray, seed: int = 0) -> np.ndarray:
    """Example positions sorted from least to most forgettable (ties broken by a seeded shuffle)."""
    counts = np.asarray(counts, dtype=float)
    tie = np.random.default_rng(seed).permutation(counts.size)
    return np.lexsort((tie, counts))


def summary(correct) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Counts of unforgettable, forgotten-at-least-once and never-learned examples."""
    counts = forgetting_counts(correct)
    n = counts.size
    return {
        "n_examples": float(n),
        "unforgettable": float(np.sum(counts == 0)),
        "forgotten_at_least_once": float(np.sum(np.isfinite(counts) & (counts > 0))),
        "never_learned": float(np.sum(np.isinf(counts))),
        "mean_finite_count": float(counts[np.isfinite(counts)].mean())
        if np.isfinite(counts).any()
        else float("nan"),
    }
