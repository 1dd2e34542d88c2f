"""Linear probes of leftover knowledge (Zhang et al., 2024 "Unforgettable Generalization").

A model can look as if it forgot (its head no longer predicts the forgotten labels) while its
representation still separates them. A probe fits a logistic regression on the model's
penultimate features and measures how well those features still predict the true labels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.models.base import Model
from obliviate.models.output_layer import feature_model
from obliviate.training import eval_mode, model_device


@torch.no_grad()
def features_of(model: nn.Module, data: Dataset, batch_size: int = 4096) -> np.ndarray:
    """Penultimate features ``[N, feature_dim]``, in eval mode (each submodule's mode restored):
    ``model.features(x)`` of an obliviate model, the input of a user model's output layer
    otherwise (:mod:`obliviate.models.output_layer`; ObliviateError when its logits are not an
    ``nn.Linear``'s output)."""
    view = feature_model(model, data.x, owner="a linear probe") if len(data) else model
    if not isinstance(view, Model):
        return np.zeros((0, 0))
    with eval_mode(view):
        dev = model_device(view)  # chunks go to the model's device, features come back
        parts = [
            view.features(data.x[i : i + batch_size].to(dev)).cpu()
            for i in range(0, len(data), batch_size)
        ]
    return (
        torch.cat(parts).reshape(len(data), -1).double().cpu().numpy()
        if parts
        else np.zeros((0, 0))
    )


def probe_accuracy(
    model: nn.Module,
    fit_on: Dataset,
    evaluate_on: Dataset,
    *,
    reg_strength: float = 1.0,
    max_iter: int = 2000,
) -> float:
    """Accuracy on ``evaluate_on`` of a logistic-regression probe fitted on ``fit_on``'s features.

    ``fit_on`` = the retain set and ``evaluate_on`` = the forget set asks: do the unlearned
    model's features still place the forgotten samples with their true class? (For class
    forgetting the retain set lacks the class, so fit on held-out rows that contain it.)
    The probe standardises the features and fits an L2-regularised multinomial logistic
    regression (``C = 1 / reg_strength``, lbfgs); it is deterministic.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(fit_on) == 0 or len(evaluate_on) == 0:
        raise ObliviateError("a probe needs non-empty fit_on and evaluate_on datasets")
    if reg_strength <= 0:
        raise ObliviateError(f"probe reg_strength must be > 0, got {reg_strength!r}")
    if len(torch.unique(fit_on.y)) < 2:
        raise ObliviateError("a probe needs at least two classes in fit_on")
    scaler = StandardScaler().fit(features_of(model, fit_on))
    clf = LogisticRegression(C=1.0 / reg_strength, max_iter=max_iter)
    clf.fit(scaler.transform(features_of(model, fit_on)), fit_on.y.cpu().numpy())
    pred = clf.predict(scaler.transform(features_of(model, evaluate_on)))
    return float(np.mean(pred == evaluate_on.y.cpu().numpy()))


__all__ = ["features_of", "probe_accuracy"]
