"""Metrics: pure functions of results (accuracy matrices, logits, losses), never stateful classes."""

from obliviate.metrics.accuracy_matrix import (
    average_accuracy,
    backward_transfer,
    forgetting,
    forgetting_per_experience,
    forward_transfer,
    learning_accuracy,
    summary,
)

__all__ = [
    "average_accuracy",
    "backward_transfer",
    "forgetting",
    "forgetting_per_experience",
    "forward_transfer",
    "learning_accuracy",
    "summary",
]
