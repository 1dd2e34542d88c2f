"""The unlearner contract and the forget request.

An unlearner stores hyperparameters in its constructor and implements one method,
``unlearn(model, request) -> new model``; it never mutates the model it is given. It declares

``guarantee``  ``"exact"`` (the result equals retraining without the forget set) or
``"approximate"``;
``needs``  which parts of the request it reads beyond the forget set: ``"retain"`` (the retain
set), ``"train"`` (the original training set) and/or ``"recipe"`` (how the original was trained).

A request missing something an unlearner needs fails with a clear error (:func:`require`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import torch
from torch import Tensor, nn

from obliviate._hyper import describe, get_params
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.training import Recipe

Need = Literal["retain", "train", "recipe"]


@dataclass(frozen=True, eq=False)
class ForgetRequest:
    """What to forget and what the unlearner may use.

    ``forget``: the training rows to forget (with their ids). ``retain``: the training rows to
    keep (training set minus ``forget``). ``train``: the whole original training set.
    ``recipe``: how the original model was trained (for retraining-based methods).
    """

    forget: Dataset
    retain: Dataset | None = None
    train: Dataset | None = None
    recipe: Recipe | None = None

    @property
    def ids(self) -> Tensor:
        return self.forget.ids

    @classmethod
    def from_ids(
        cls, train: Dataset, ids: Tensor | Any, recipe: Recipe | None = None
    ) -> ForgetRequest:
        """Split ``train`` into forget (``ids``) and retain rows.

        Ids never trained on raise; forgetting every training row raises.
        An empty id list is allowed (unlearners treat it as the identity).
        """
        ids_t = torch.unique(torch.as_tensor(ids, dtype=torch.int64).reshape(-1))
        forget = train.select_ids(ids_t)
        if len(forget) == len(train):
            raise ObliviateError(
                f"the request forgets all {len(train)} training samples; nothing would remain to "
                "learn from. Retrain from scratch instead, or forget fewer ids"
            )
        return cls(forget=forget, retain=train.without_ids(ids_t), train=train, recipe=recipe)


class Unlearner(ABC):
    """Abstract base of unlearning methods. Subclasses are final."""

    guarantee: ClassVar[Literal["exact", "approximate"]] = "approximate"
    needs: ClassVar[frozenset[str]] = frozenset()

    @abstractmethod
    def unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        """A new model that has forgotten ``request.forget``; ``model`` is left untouched."""

    def get_params(self) -> dict[str, Any]:
        return get_params(self)

    def clone(self) -> Self:
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        return describe(self)


def require(unlearner: Unlearner, request: ForgetRequest) -> None:
    """Raise a clear error if ``request`` lacks something ``unlearner.needs``."""
    missing = [n for n in sorted(unlearner.needs) if getattr(request, n) is None]
    if missing:
        raise ObliviateError(
            f"{type(unlearner).__name__} needs {', '.join(missing)} in the request "
            f"(ForgetRequest.{missing[0]}); build it with ForgetRequest.from_ids(train, ids, recipe) "
            "or choose a method that needs less"
        )
