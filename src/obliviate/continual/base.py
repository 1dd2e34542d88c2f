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
``model_requirement``  what the strategy needs of the model beyond ``forward(x)``, in words
(``None``: any classifier); a model without it is refused with one ObliviateError in ``begin``.
``learned_state``  the names (ending in ``_``) of everything the strategy learns. A name the
strategy tests for on first use gets a class-level ``None`` default (``buffer_: ReservoirBuffer |
None = None``; ``if self.buffer_ is None: ...``) instead of being probed with ``vars(self)`` or
``getattr``; the suite checks that nothing undeclared is recorded.

Deletion (:meth:`Strategy.purge`): when samples are deleted (a Forget event of a lifecycle
stream), the caller calls ``purge(ids, model=model)`` between experiences (after ``end``, before
the next ``begin``). The strategy then removes every stored sample, id and per-sample tensor of
the deleted samples (replay buffers, stored logits, exemplars, per-task memories, quantised
codes, recorded features) and recomputes every statistic it holds that is a function of stored
samples (iCaRL's exemplar class means, SLDA's class means and covariance) from what remains.
Two kinds of state are *not* storage and are left to the unlearner:

- **influence**: everything that training on a sample changed and that cannot be separated
  from the other samples' contribution without retraining — the model's weights, teachers
  (frozen model copies: LwF, iCaRL, BiC), regularisers' importance estimates and anchors
  (EWC's Fisher, SI's path integral, MAS's importances, RWalk's scores, L2's anchor), fitted
  corrections (BiC's bias-correction scalars), CoPE's prototypes (a momentum average of the
  embeddings, which are model outputs), GSS's stored scores of *kept* samples (computed
  against the memory of their time), masks and prompts. Removing a sample's influence is what
  :mod:`obliviate.unlearning` (approximate) or the sharded engine (exact) does;
- **counters**: step counters and random-stream positions (``n_steps_``; a reservoir's count of
  offered samples is *reduced* by the rows removed, see
  :meth:`~obliviate.continual.buffers.ReservoirBuffer.purge`).

A strategy that stores nothing keeps the default, which validates the ids and does nothing.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

import torch
from torch import Tensor, nn

from obliviate._hyper import describe, get_params
from obliviate.data.dataset import as_id_tensor
from obliviate.data.scenarios import Experience
from obliviate.training import Batch, cross_entropy

DataView = Literal["experience", "seen", "all"]

__all__ = ["Batch", "DataView", "Strategy", "cross_entropy", "deleted_rows", "task_key"]


def task_key(experience: Experience) -> str:
    """Which distinct task an experience presents, for strategies that keep one entry per task
    (EWC's penalties, GEM's memories). A recurring stream presents a task several times:
    ``"task <id>"`` on task-aware streams (occurrences keep their task id); otherwise
    ``"data <sha256>"`` of the training set's ids, labels and features (float32 bytes), which a
    task's occurrences share and distinct tasks never do (a domain-incremental stream's copies
    share ids, not features)."""
    if experience.task_id is not None:
        return f"task {int(experience.task_id)}"
    h = hashlib.sha256()
    data = experience.train
    for t in (data.ids, data.y, data.x):
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return f"data {h.hexdigest()}"


def deleted_rows(stored_ids: Tensor, ids: Tensor) -> Tensor:
    """Bool mask ``[N]``: which of ``stored_ids`` (int64 ``[N]``) are among ``ids`` (int64
    ``[K]``, as given to :meth:`Strategy.purge`). An id stored several times (a sample offered
    once per epoch) is matched at every row."""
    if stored_ids.numel() == 0 or ids.numel() == 0:
        return torch.zeros(stored_ids.shape, dtype=torch.bool, device=stored_ids.device)
    return torch.isin(stored_ids, ids.to(stored_ids.device))


class Strategy(ABC):
    """Abstract base of continual-learning strategies. Subclasses are final."""

    needs_task_boundaries: ClassVar[bool] = False
    needs_task_ids: ClassVar[bool] = False
    data_view: ClassVar[DataView] = "experience"
    neutral_params: ClassVar[Mapping[str, Any]] = {}
    keeps_memory: ClassVar[bool] = False
    freezes_parameters: ClassVar[bool] = False
    learned_state: ClassVar[tuple[str, ...]] = ()
    model_requirement: ClassVar[str | None] = None
    """What the strategy needs of the model beyond ``forward(x)``, in words (shown by ``obliviate
    list``); ``None``: any classifier. A model without it is refused with an ObliviateError."""

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

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove every stored trace of the samples ``ids`` (a Forget event).

        ``ids``: sample ids, anything :func:`~obliviate.data.dataset.as_id_tensor` accepts
        (normally a 1-D int64 tensor ``[K]``); ids the strategy never stored are ignored.
        ``model``: the model the strategy trains; strategies that keep a statistic of stored
        samples *inside* the model (iCaRL's nearest-mean classifier, SLDA's LDA layer) rewrite
        it there, and raise :class:`~obliviate.errors.ObliviateError` when a purge changes that
        statistic and no model is given. Called between experiences (after ``end``, before the
        next ``begin``). Deterministic: the same state and ids give the same bits.

        What is removed and what is left (influence and counters, the unlearner's job) is
        defined in the module docstring (:mod:`obliviate.continual.base`). Default (a strategy
        that stores no sample): validate ``ids``, nothing else. Raises ``ObliviateError`` for
        ids that are not integers.
        """
        as_id_tensor(ids)

    # ---- hyperparameters, scikit-learn style -----------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, read back from attributes of the same name."""
        return get_params(self)

    def clone(self) -> Self:
        """A fresh, untrained strategy with the same hyperparameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        return describe(self)
