"""The exact oracle: retrain from scratch on the retain set with the original recipe and seed."""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import nn

from obliviate.training import model_device
from obliviate.unlearning.base import ForgetRequest, Unlearner


class Retrain(Unlearner):
    """Retraining from scratch without the forget set: exact unlearning by definition.

    A new model is built and trained by ``request.recipe`` (same architecture, init seed, data
    order seed and optimiser) on ``request.retain``; the input model is only copied for the
    empty request. Every approximate method is measured against this model (the "oracle").
    Training goes through :meth:`obliviate.training.Recipe.fit`, the same code that trains the
    original, so retraining here equals any other retraining with the same recipe bitwise.

    Notes
    -----
    Single-head models only (``Recipe.build`` builds no multi-head models).

    References
    ----------
    Cao, Y. & Yang, J. (2015). Towards making systems forget with machine unlearning. IEEE S&P.
    (Retraining as the definition of exact unlearning.)
    """

    guarantee: ClassVar[Literal["exact", "approximate"]] = "exact"
    needs: ClassVar[frozenset[str]] = frozenset({"retain", "recipe"})

    def __init__(self) -> None:
        pass

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        assert request.retain is not None and request.recipe is not None
        n_classes = getattr(model, "n_classes", request.retain.n_classes)
        return request.recipe.fit(request.retain, n_classes=n_classes, device=model_device(model))
