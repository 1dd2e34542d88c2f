"""The unlearner contract and the forget request.

An unlearner stores hyperparameters in its constructor and implements one abstract method,
``_unlearn(model, request) -> model``. The public :meth:`Unlearner.unlearn` is concrete and final
(scikit-learn's ``fit`` / ``_fit`` pattern); it

1. clears the declared learned state (every name in ``learned_state`` is set to ``None``), so
   figures of a previous call never survive into this one;
2. checks the request (:func:`check_request`: what the unlearner ``needs`` is present, forget ids
   were trained on and are not also in the retain set);
3. returns an independent deep copy of the model for an empty forget set (the identity);
4. otherwise calls ``_unlearn`` on a deep copy of the model, which the method may modify in place
   and return (or return another model).

So "never mutates its input", "the empty request is the identity" and "no stale figures" hold by
construction. An unlearner declares

``guarantee``  ``"exact"`` (the result equals retraining without the forget set) or
``"approximate"``;
``needs``  which parts of the request it reads beyond the forget set: ``"retain"`` (the retain
set), ``"train"`` (the original training set) and/or ``"recipe"`` (how the original was trained);
``learned_state``  the names (ending in ``_``) of the figures ``_unlearn`` records on the
instance (e.g. Newton's ``certificate_``); read them with :meth:`Unlearner.learned`.

A request missing something an unlearner needs fails with a clear error (:func:`require`).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, final

import torch
from torch import Tensor, nn

from obliviate._hyper import describe, get_params
from obliviate.data.dataset import Dataset
from obliviate.data.forget_sets import request_ids
from obliviate.errors import ObliviateError
from obliviate.training import FactoryRecipe, Recipe, check_finite, data_to, model_device

Need = Literal["retain", "train", "recipe"]


@dataclass(frozen=True, eq=False)
class ForgetRequest:
    """What to forget and what the unlearner may use.

    ``forget``: the training rows to forget (with their ids). ``retain``: the training rows to
    keep (training set minus ``forget``). ``train``: the whole original training set.
    ``recipe``: how the original model was trained (for retraining-based methods).
    ``validation``: held-out rows the original never trained on, outside every reported
    split, for methods that calibrate on them (SCRUB+R's rewind reference); ``None``: none.
    """

    forget: Dataset
    retain: Dataset | None = None
    train: Dataset | None = None
    recipe: Recipe | FactoryRecipe | None = None
    validation: Dataset | None = None

    @property
    def ids(self) -> Tensor:
        return self.forget.ids

    def to(self, device: torch.device | str) -> ForgetRequest:
        """The request with every dataset on ``device`` (the same object when already there;
        :func:`~obliviate.training.data_to`)."""
        device = torch.device(device)
        parts = (self.forget, self.retain, self.train, self.validation)
        if all(d is None or d.x.device == device for d in parts):
            return self
        return ForgetRequest(
            forget=data_to(self.forget, device),
            retain=None if self.retain is None else data_to(self.retain, device),
            train=None if self.train is None else data_to(self.train, device),
            recipe=self.recipe,
            validation=None if self.validation is None else data_to(self.validation, device),
        )

    @classmethod
    def from_ids(
        cls, train: Dataset, ids: Tensor | Any, recipe: Recipe | FactoryRecipe | None = None
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


def build_request(
    train: Dataset,
    spec: str | Tensor,
    *,
    seed: int = 0,
    recipe: Recipe | FactoryRecipe | None = None,
) -> ForgetRequest:
    """A validated :class:`ForgetRequest` for ``spec``: a forget-set text spec
    (:mod:`obliviate.data.forget_sets`, e.g. ``"class:3"``, ``"random:5%"``) or ids.

    Ids never trained on raise; forgetting every training sample raises; an empty forget set
    warns (:class:`~obliviate.data.forget_sets.EmptyForgetSetWarning`) and yields a request
    unlearners treat as the identity.
    """
    return ForgetRequest.from_ids(train, request_ids(train, spec, seed=seed), recipe)


class Unlearner(ABC):
    """Abstract base of unlearning methods. Subclasses are final and implement :meth:`_unlearn`."""

    guarantee: ClassVar[Literal["exact", "approximate"]] = "approximate"
    needs: ClassVar[frozenset[str]] = frozenset()
    learned_state: ClassVar[tuple[str, ...]] = ()
    model_requirement: ClassVar[str | None] = None
    """What the method needs of the model beyond ``forward(x)``, in words (e.g. a final linear
    output layer); ``None``: any classifier. A model without it is refused with an ObliviateError."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        bad = [n for n in cls.learned_state if not n.endswith("_") or n.startswith("_")]
        if bad:
            raise TypeError(f"{cls.__name__}.learned_state names must end in '_': {bad}")

    @final
    def unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        """A new model that has forgotten ``request.forget``; ``model`` is left untouched.

        Clears the declared ``learned_state``, checks the request (:func:`check_request`; raises
        :class:`ObliviateError`), returns a deep copy of ``model`` when ``request.forget`` is
        empty, and otherwise ``self._unlearn(copy.deepcopy(model), request)`` with the request's
        data moved to the model's device (the result lives there too; trainers run at
        :func:`~obliviate.training.current_precision`).
        """
        for name in self.learned_state:
            setattr(self, name, None)
        check_request(self, request)
        if len(request.forget) == 0:
            return copy.deepcopy(model)
        request = request.to(model_device(model))  # the method sees data where the model is
        try:
            out = self._unlearn(copy.deepcopy(model), request)
        except ValueError as exc:  # torch's BatchNorm on a batch of one row, made actionable
            if "Expected more than 1 value per channel" not in str(exc):
                raise
            raise ObliviateError(
                f"{type(self).__name__} trains on batches of one row here (forget set of "
                f"{len(request.forget)}), which the model's BatchNorm cannot normalise in "
                "training mode; forget at least 2 samples, or put the BatchNorm layers in eval "
                "mode (model.apply on nn.BatchNorm*: .eval()) before unlearning"
            ) from None
        check_finite(self, out, request.forget)  # a diverged method stops with a clear error
        return out

    @abstractmethod
    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        """Forget ``request.forget`` (non-empty, checked). ``model`` is a private deep copy of the
        caller's model: modify it in place and return it, or return another model."""

    def learned(self) -> dict[str, Any]:
        """The declared learned state: ``{name: value}`` for every name in ``learned_state``
        (``None`` before the first call to :meth:`unlearn`, or when the last call set none)."""
        return {name: vars(self).get(name) for name in self.learned_state}

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


def check_request(unlearner: Unlearner, request: ForgetRequest) -> None:
    """Raise :class:`ObliviateError` when ``request`` lacks what ``unlearner.needs``, names forget
    ids that are not in ``request.train`` (never trained on), or ids that are also in
    ``request.retain``."""
    require(unlearner, request)
    if not len(request.forget):
        return
    if request.train is not None:
        request.train.positions(request.forget.ids)  # raises naming ids never trained on
    if request.retain is not None and len(request.retain):
        both = torch.isin(request.forget.ids, request.retain.ids)
        if bool(both.any()):
            shown = ", ".join(str(int(i)) for i in request.forget.ids[both][:10])
            raise ObliviateError(
                f"{int(both.sum())} id(s) are in both the forget and the retain set: {shown}; "
                "build the request with ForgetRequest.from_ids(train, ids)"
            )
