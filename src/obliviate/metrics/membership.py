"""Membership-inference attacks as pure functions of per-sample losses or output probabilities.

Convention: *members* are samples the attacker suspects were trained on (the forget set),
*non-members* are held-out samples (the test set). Every AUC is the probability that a random
member scores higher than a random non-member (ties count half), computed on the scores as given
(no ``max(auc, 1 - auc)`` folding): 0.5 means the attack cannot tell the two sets apart. For an
unlearned model the target is the retrained oracle's AUC, not 0.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata


def _arr(values: Any) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    return a


def auc(member_scores: Any, nonmember_scores: Any) -> float:
    """ROC AUC of "member if score is high": the Mann-Whitney U statistic over ``n_m * n_n``
    (average ranks for ties, so it equals ``sklearn.metrics.roc_auc_score``). NaN if a side is empty."""
    m, n = _arr(member_scores), _arr(nonmember_scores)
    if m.size == 0 or n.size == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([m, n]))
    u = ranks[: m.size].sum() - m.size * (m.size + 1) / 2.0
    return float(u / (m.size * n.size))


def loss_threshold_auc(member_losses: Any, nonmember_losses: Any) -> float:
    """AUC of the loss-threshold attack (Yeom et al., 2018): low loss => member."""
    return auc(-_arr(member_losses), -_arr(nonmember_losses))


def entropy(probs: Any) -> np.ndarray:
    """Shannon entropy (nats) of each row of a probability matrix ``[N, K]``."""
    p = probs.detach().cpu().numpy() if hasattr(probs, "detach") else np.asarray(probs)
    p = np.asarray(p, dtype=np.float64)
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=1)


def entropy_auc(member_probs: Any, nonmember_probs: Any) -> float:
    """AUC of the prediction-entropy attack (Salem et al., 2019; Song & Mittal, 2021):
    low entropy (confident output) => member."""
    return auc(-entropy(member_probs), -entropy(nonmember_probs))


def logistic_attack(
    member_losses: Any, nonmember_losses: Any, *, n_folds: int = 5, seed: int = 0
) -> dict[str, float]:
    """Shadow-free logistic-regression attack on the losses, cross-validated.

    A logistic regression on the feature ``log(loss)`` (class-balanced weights) is fitted on
    ``n_folds - 1`` folds and scored on the held-out fold (stratified folds, shuffled by
    ``seed``); returns the held-out ``auc`` (of the pooled out-of-fold probabilities) and the
    mean held-out balanced ``accuracy``. The attack of the NeurIPS-2023 starting kit, with
    cross-validated AUC added. NaN when a side has fewer than ``n_folds`` samples.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold

    m, n = _arr(member_losses), _arr(nonmember_losses)
    if min(m.size, n.size) < n_folds:
        return {"auc": float("nan"), "accuracy": float("nan")}
    x = np.log(np.clip(np.concatenate([m, n]), 1e-12, None)).reshape(-1, 1)
    y = np.concatenate([np.ones(m.size, dtype=int), np.zeros(n.size, dtype=int)])
    proba = np.empty(y.size)
    accs = []
    for tr, te in StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(x, y):
        clf = LogisticRegression(class_weight="balanced").fit(x[tr], y[tr])
        proba[te] = clf.predict_proba(x[te])[:, 1]
        accs.append(balanced_accuracy_score(y[te], clf.predict(x[te])))
    return {"auc": auc(proba[y == 1], proba[y == 0]), "accuracy": float(np.mean(accs))}


def membership_attacks(
    member_losses: Any,
    nonmember_losses: Any,
    member_probs: Any,
    nonmember_probs: Any,
    *,
    seed: int = 0,
) -> dict[str, float]:
    """All three attacks: ``loss_auc``, ``entropy_auc``, ``logistic_auc``, ``logistic_accuracy``."""
    lr = logistic_attack(member_losses, nonmember_losses, seed=seed)
    return {
        "loss_auc": loss_threshold_auc(member_losses, nonmember_losses),
        "entropy_auc": entropy_auc(member_probs, nonmember_probs),
        "logistic_auc": lr["auc"],
        "logistic_accuracy": lr["accuracy"],
    }


__all__ = [
    "auc",
    "entropy",
    "entropy_auc",
    "logistic_attack",
    "loss_threshold_auc",
    "membership_attacks",
]
