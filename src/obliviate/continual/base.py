"""The continual-learning strategy contract.

A strategy stores hyperparameters in its constructor (keyword-only, validated) and nothing else;
whatever it learns ends in ``_``. The training loop (:mod:`obliviate.continual.loop`) calls four
hooks, of which only :meth:`Strategy.loss` is required:

``begin(model, experience)``  before the first step of an experience;
``loss(model, batch) -> Tensor``  the scalar to minimise for one batch;
``adjust_gradients(model)``  after ``backward()``, before the optimiser step (projection, masks);
``end(model, experience)``  after the last step of an experience (importance estimates, buffers).

A strategy never holds the optimiser or the loop, and the loop never knows which strategy it runs.
Capabilities are declared as class attributes, never probed:

``needs_task_boundaries``  the strategy uses ``begin``/``end`` and cannot run on a task-free stream;
``needs_task_ids``  the strategy needs task ids (task-aware streams only);
``data_view``  which training data the loop feeds: ``"experience"`` (the current one), ``"seen"``
(everything seen so far, e.g. cumulative) or ``"all"`` (the whole stream at once, e.g. joint).

Declarations the conformance suite (:mod:`obliviate.testing`) reads (all defaulted):

``neutral_params``  hyperparameters under which the strategy must equal naive fine-tuning
bitwise (e.g. ``{"reg_strength": 0.0}``); empty for strategies that are not regularisers. With
its *default* hyperparameters such a strategy must differ from naive fine-tuning.
``keeps_memory``  the strategy stores training samples, bounded by its ``memory_size``
hyperparameter (samples); it then overrides :meth:`Strategy.memory_used`.
``freezes_parameters``  the strategy deliberately changes ``requires_grad`` in ``begin`` and
restores it in ``end`` (the suite then checks restoration over the whole experience instead of
after every hook).
``learned_state``  the names (ending in ``_``) of everything the strategy learns. A name the
strategy tests for on first use gets a class-level ``None`` default (``buffer_: ReservoirBuffer |
None = None``; ``if self.buffer_ is None: ...``) instead of being probed with ``vars(self)`` or
``getattr``; the suite checks that nothing undeclared is recorded.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

from torch import Tensor, nn

from obliviate._hyper import describe, get_params
from obliviate.data.scenarios import Experience
from obliviate.training import Batch, cross_entropy

DataView = Literal["experience", "seen", "all"]

__all__ = ["Batch", "DataView", "Strategy", "cross_entropy"]


class Strategy(ABC):
    """Abstract base of continual-learning strategies. Subclasses are final."""

    needs_task_boundaries: ClassVar[bool] = False
    needs_task_ids: ClassVar[bool] = False
    data_view: ClassVar[DataView] = "experience"
    neutral_params: ClassVar[Mapping[str, Any]] = {}
    keeps_memory: ClassVar[bool] = False
    freezes_parameters: ClassVar[bool] = False
    learned_state: ClassVar[tuple[str, ...]] = ()

    def begin(self, model: nn.Module, experience: Experience) -> None:  # noqa: B027
        """Called before the first step on ``experience``. Default: nothing."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The scalar loss for one batch (the loop calls ``backward`` on it)."""

    def adjust_gradients(self, model: nn.Module) -> None:  # noqa: B027
        """Called after ``backward`` and before the optimiser step. Default: nothing."""

    def end(self, model: nn.Module, experience: Experience) -> None:  # noqa: B027
        """Called after the last step on ``experience``. Default: nothing."""

    def memory_used(self) -> int:
        """Samples currently stored (0 without a memory; override when ``keeps_memory``)."""
        return 0

    # ---- hyperparameters, scikit-learn style -----------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, read back from attributes of the same name."""
        return get_params(self)

    def clone(self) -> Self:
        """A fresh, untrained strategy with the same hyperparameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        return describe(self)
