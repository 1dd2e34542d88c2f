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
from obliviate.errors import ObliviateError


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


@torch.no_grad()
def check_model_output(
    model: nn.Module, x: Tensor, n_classes: int, task: Tensor | None = None
) -> None:
    """Refuse, in one line, a model that cannot serve as a classifier of these rows: call it on
    (up to) two rows ``x`` in eval mode (every submodule's mode restored, no gradient, BatchNorm
    statistics untouched) and check that it returns a float logits tensor ``[B, C]`` with
    ``C >= n_classes``, not probabilities (rows in [0, 1] summing to 1: a softmax in ``forward``
    would make every cross-entropy loss here wrong).

    Raises:
        ObliviateError: the call fails (wrong input shape, an extra required argument: the
            error is named), the output is not a tensor (e.g. a dict), has the wrong shape or
            too few classes, or looks like probabilities.
    """
    rows = x[:2]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        out = logits(model, rows, None if task is None else task[:2])
    except Exception as exc:  # the user's forward: any error is theirs to see, in one line
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise ObliviateError(
            f"the model fails on rows of the data (shape {list(rows.shape)}): "
            f"{type(exc).__name__}: {msg}; its forward must take a batch of rows x and return "
            "logits [B, n_classes]"
        ) from None
    finally:
        for m, training in modes:
            m.training = training
    if not isinstance(out, Tensor):
        raise ObliviateError(
            f"the model returns {type(out).__name__}, not a tensor; its forward must return "
            "logits [B, n_classes] (wrap it so that forward(x) returns the logits tensor)"
        )
    if out.dim() != 2 or out.shape[0] != rows.shape[0] or not out.is_floating_point():
        raise ObliviateError(
            f"the model returns a {out.dtype} tensor of shape {list(out.shape)} for "
            f"{rows.shape[0]} rows; expected float logits [{rows.shape[0]}, n_classes]"
        )
    if out.shape[1] < n_classes:
        raise ObliviateError(
            f"the model has {out.shape[1]} outputs but the data has {n_classes} classes; give "
            f"its last layer at least {n_classes} outputs"
        )
    if (
        out.shape[1] > 1
        and bool(((out >= 0) & (out <= 1)).all())
        and bool(
            torch.allclose(
                out.float().sum(dim=1), torch.ones(out.shape[0], device=out.device), atol=1e-4
            )
        )
    ):
        raise ObliviateError(
            "the model's outputs are probabilities (each row in [0, 1], summing to 1): remove "
            "the softmax from forward; obliviate's losses take logits"
        )
