"""Averaged Gradient Episodic Memory (Chaudhry, Ranzato, Rohrbach & Elhoseiny, 2019)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual._gradients import (
    add_experience_memory,
    flat_grad,
    loss_gradient,
    trainable_params,
    write_flat_grad,
)
from obliviate.continual.base import Batch, Strategy, cross_entropy, deleted_rows, task_key
from obliviate.data.dataset import Dataset, as_id_tensor
from obliviate.data.scenarios import Experience


class AGEM(Strategy):
    """A-GEM: one averaged constraint instead of GEM's one per task.

    At every step a batch is drawn at random from the episodic memory of all past experiences
    and its loss gradient ``g_ref`` is computed. If the current gradient ``g`` would increase
    that loss (``g^T g_ref < 0``) it is projected (eq. 11 of the paper)::

        g~ = g - (g^T g_ref / g_ref^T g_ref) g_ref

    which is the closest gradient to ``g`` with ``g~^T g_ref >= 0`` (the one-constraint GEM QP).

    Parameters
    ----------
    memory_size : int, >= 1
        Samples in the episodic memory in total; each finished experience keeps an equal share.
    sample_size : int, >= 1
        Memory samples in the batch that gives ``g_ref`` (all of them when fewer are stored).
    seed : int
        Seed of the memory's contents and of the reference batches.

    Notes
    -----
    - The memory holds a uniform random sample of each finished experience's training data,
      with equal shares per experience (older shares shrink when a new experience arrives); the
      paper stores a fixed number of samples per task, which needs the number of tasks up front.
    - The memory is written at the end of an experience, so projection starts with the second.
    - One share per distinct task: on a recurring stream a task that comes back presents the
      same samples and keeps the share of its first occurrence (no second copy of its samples;
      :func:`~obliviate.continual.base.task_key`).
    - ``sample_size`` defaults to 64 reference samples (the paper draws 256 on MNIST, where the
      memory is larger); the reference batch is drawn without replacement, seeded per step.
    - ``g`` and ``g_ref`` cover all trainable parameters, heads included.

    References
    ----------
    Chaudhry, A., Ranzato, M., Rohrbach, M. & Elhoseiny, M. (2019). Efficient Lifelong Learning
    with A-GEM. ICLR 2019, Section 4, eqs. (10)-(11).
    """

    needs_task_boundaries: ClassVar[bool] = True
    keeps_memory: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = (
        "memories_",
        "memory_tasks_",
        "n_steps_",
        "n_projections_",
    )
    memories_: list[Dataset] | None = None
    memory_tasks_: list[str] | None = None  # the task of each memory (base.task_key)

    def __init__(self, *, memory_size: int = 200, sample_size: int = 64, seed: int = 0) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="AGEM")
        check_number("sample_size", sample_size, low=1, integer=True, owner="AGEM")
        check_number("seed", seed, integer=True, owner="AGEM")
        self.memory_size = memory_size
        self.sample_size = sample_size
        self.seed = seed

    def memory_used(self) -> int:
        """Samples held in the memory."""
        return sum(len(m) for m in self.memories_ or [])

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64) from every per-experience memory
        (a memory may become empty; it keeps its place, so later quotas are unchanged). No
        gradient is stored: reference gradients are recomputed from the memories at every
        step. See :meth:`~obliviate.continual.base.Strategy.purge`."""
        ids = as_id_tensor(ids)
        if self.memories_ is not None:
            self.memories_ = [m.subset(~deleted_rows(m.ids, ids)) for m in self.memories_]

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return cross_entropy(model, batch)

    def adjust_gradients(self, model: nn.Module) -> None:
        memories: list[Dataset] = [m for m in self.memories_ or [] if len(m)]
        if not memories:
            return
        memory = Dataset.concat(memories)
        gen = generator(self.seed, "agem-reference", self.n_steps_)
        self.n_steps_ += 1
        ref = memory.subset(
            torch.randperm(len(memory), generator=gen, device=gen.device)[: self.sample_size]
        )
        params = [p for _, p in trainable_params(model)]
        g = flat_grad(params)
        g_ref = loss_gradient(model, params, ref.x, ref.y, ref.task)
        projected = agem_project(g, g_ref)
        if projected is not g:
            self.n_projections_ += 1
            write_flat_grad(params, projected)

    def end(self, model: nn.Module, experience: Experience) -> None:
        if self.memories_ is None:
            self.memories_ = []
            self.n_steps_ = 0
            self.n_projections_ = 0
        tasks = self.memory_tasks_ = self.memory_tasks_ or []
        key = task_key(experience)
        if key in tasks:  # a task that recurs keeps its memory: one memory per task
            return
        tasks.append(key)
        gen = generator(self.seed, "agem-memory", len(self.memories_))
        add_experience_memory(self.memories_, experience.train, self.memory_size, gen)


def agem_project(g: Tensor, g_ref: Tensor) -> Tensor:
    """A-GEM (Chaudhry et al., 2019, eq. 11): ``g - (g.g_ref / g_ref.g_ref) g_ref`` if ``g.g_ref < 0``."""
    dot = torch.dot(g, g_ref)
    if dot >= 0:
        return g
    norm = torch.dot(g_ref, g_ref)
    if norm <= 0:
        return g
    return g - (dot / norm) * g_ref
