"""What every obliviate model offers: ``features(x)``, ``classify(h, task)`` and ``forward``.

All models return logits over the full label space ``[B, n_classes]`` and accept an optional
``task`` tensor (ignored by single-head models), so strategies, unlearners and metrics never need
to know which model they hold. ``feature_dim`` is the width of ``features(x)``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from obliviate._rng import seed_global


class Model(nn.Module, ABC):
    """Abstract base of obliviate's models (plain ``torch.nn``)."""

    n_classes: int
    feature_dim: int

    @abstractmethod
    def features(self, x: Tensor) -> Tensor:
        """The penultimate representation ``[B, feature_dim]``."""

    @abstractmethod
    def classify(self, h: Tensor, task: Tensor | None = None) -> Tensor:
        """Logits ``[B, n_classes]`` from features."""

    @abstractmethod
    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the output layer(s) (used by last-layer methods)."""

    def forward(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        return self.classify(self.features(x), task)


def logits(model: nn.Module, x: Tensor, task: Tensor | None = None) -> Tensor:
    """Call a model: ``[B, ...]`` rows in, logits ``[B, n_classes]`` out.

    obliviate's models get ``(x, task)``. A user's module gets ``x`` only, unless ``task`` is
    given and its ``forward`` has a parameter named ``task`` (:func:`takes_task`): then it gets
    ``task=`` (int64 ``[B]``, the task id of each row) as a keyword. On a task-aware stream a
    model that cannot take task ids is refused (see ``continual.loop.check_compatible``)
    instead of silently training single-head.
    """
    if isinstance(model, Model):
        return model(x, task)
    if task is not None and takes_task(model):
        return model(x, task=task)
    return model(x)


def takes_task(model: nn.Module) -> bool:
    """Whether ``model`` receives task ids: an obliviate model, or a module whose ``forward``
    has a parameter named ``task`` (the documented way for a user's multi-head model)."""
    return isinstance(model, Model) or _forward_takes_task(type(model))


_TAKES_TASK: dict[type[nn.Module], bool] = {}


def _forward_takes_task(cls: type[nn.Module]) -> bool:
    if cls not in _TAKES_TASK:  # cached per class: the signature never changes
        try:
            _TAKES_TASK[cls] = "task" in inspect.signature(cls.forward).parameters
        except (TypeError, ValueError):
            _TAKES_TASK[cls] = False
    return _TAKES_TASK[cls]


def seeded_init(seed: int):  # type: ignore[no-untyped-def]
    """Context manager: module construction inside draws its init from ``seed`` only."""
    ctx = torch.random.fork_rng(devices=[])
    return _Seeded(ctx, seed)


class _Seeded:
    def __init__(self, ctx, seed: int) -> None:  # type: ignore[no-untyped-def]
        self.ctx, self.seed = ctx, seed

    def __enter__(self) -> None:
        self.ctx.__enter__()
        seed_global(self.seed)

    def __exit__(self, *exc) -> None:  # type: ignore[no-untyped-def]
        self.ctx.__exit__(*exc)
