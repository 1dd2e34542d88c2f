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
from obliviate.metrics.epsilon import bin_scores, per_example_epsilon
from obliviate.metrics.membership import (
    auc,
    entropy_auc,
    logistic_attack,
    loss_threshold_auc,
    membership_attacks,
)
from obliviate.metrics.unlearning import (
    accuracy_gaps,
    confidence_scores,
    final_score,
    forgetting_quality,
    js_divergence,
)

__all__ = [
    "average_accuracy",
    "backward_transfer",
    "forgetting",
    "forgetting_per_experience",
    "forward_transfer",
    "learning_accuracy",
    "summary",
    "accuracy_gaps",
    "auc",
    "bin_scores",
    "confidence_scores",
    "entropy_auc",
    "final_score",
    "forgetting_quality",
    "js_divergence",
    "logistic_attack",
    "loss_threshold_auc",
    "membership_attacks",
    "per_example_epsilon",
]
