"""GDumb: greedy sampler and dumb learner (Prabhu, Torr & Dokania, 2020)."""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual.base import Batch, Strategy, deleted_rows
from obliviate.data.dataset import Dataset, as_id_tensor
from obliviate.data.scenarios import Experience
from obliviate.models.base import logits

__all__ = ["GDumb", "greedy_balanced_update"]


def greedy_balanced_update(
    memory_y: Tensor, new_y: Tensor, memory_size: int, gen: torch.Generator
) -> list[tuple[int, int]]:
    """GDumb's greedy class-balancing sampler (Algorithm 1), applied to ``new_y`` in order.

    ``memory_y`` are the labels in memory now (slot ``i`` holds ``memory_y[i]``). A new sample of
    class ``y`` is stored if the memory has room; otherwise, if its class holds fewer than
    ``memory_size / |classes seen|`` samples, it replaces a random sample (drawn from ``gen``)
    of the currently largest class (ties: the lowest class id); otherwise it is dropped.

    Returns ``(slot, new_index)`` assignments in order (a later one can overwrite an earlier
    slot); slots ``>= len(memory_y)`` extend the memory.
    """
    labels = [int(v) for v in memory_y]
    slots: dict[int, list[int]] = {}
    for i, c in enumerate(labels):
        slots.setdefault(c, []).append(i)
    seen = set(slots)
    out: list[tuple[int, int]] = []
    for j, c in enumerate(int(v) for v in new_y):
        seen.add(c)
        mine = slots.setdefault(c, [])
        if len(labels) < memory_size:
            slot = len(labels)
            labels.append(c)
        elif len(mine) < memory_size / len(seen):
            largest = max(sorted(slots), key=lambda k: len(slots[k]))
            pos = int(torch.randint(len(slots[largest]), (1,), generator=gen, device=gen.device))
            slot = slots[largest].pop(pos)
            labels[slot] = c
        else:
            continue
        mine.append(slot)
        out.append((slot, j))
    return out


class GDumb(Strategy):
    """GDumb: keep a greedy class-balanced memory; train from scratch on the memory only.

    As each experience arrives its samples go through the greedy sampler
    (:func:`greedy_balanced_update`, Algorithm 1) in a random order; then the model is reset to
    its initial weights and trained on the memory alone (the "dumb learner"), ignoring all
    earlier training.

    Parameters
    ----------
    memory_size : int, >= 1
        ``k``, the memory capacity in samples.
    seed : int
        Seeds the order in which samples reach the sampler, its replacement choices and the
        order of memory minibatches.

    Notes
    -----
    - **How it fits the hook contract** (no optimiser in the strategy, no change to the loop):
      ``begin`` runs the sampler over the experience and restores the weights the model had when
      the strategy first saw it (its seeded initialisation: "from scratch"); the loop then builds
      its fresh optimiser. Each ``loss`` call ignores the incoming batch except for its size and
      returns the cross-entropy on the next minibatch of the memory (epochs over the memory in a
      seeded random order). So the memory gets as many optimiser steps as the loop runs on the
      experience (``n_epochs * ceil(|experience| / batch_size)``), the learning rate and optimiser
      are the loop's. The paper instead trains on the memory for a fixed number of epochs with
      SGDR and cutmix, at inference time; here training happens once per experience, before the
      evaluation that follows it.
    - The class masking at inference the paper applies when the task's classes are known is not
      applied (the model's own heads do that on task-aware streams).

    References
    ----------
    Prabhu, A., Torr, P. H. S. & Dokania, P. K. (2020). GDumb: A Simple Approach that Questions
    Our Progress in Continual Learning. ECCV 2020, Algorithm 1.
    """

    needs_task_boundaries: ClassVar[bool] = True
    keeps_memory: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = (
        "memory_",
        "initial_state_",
        "key_",
        "n_batches_",
        "order_",
    )
    memory_: Dataset | None = None
    initial_state_: dict[str, Tensor] | None = None

    def __init__(self, *, memory_size: int = 200, seed: int = 0) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="GDumb")
        check_number("seed", seed, integer=True, owner="GDumb")
        self.memory_size = memory_size
        self.seed = seed

    def memory_used(self) -> int:
        return 0 if self.memory_ is None else len(self.memory_)

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64) from the memory; the next experience
        retrains from the initial weights on what remains (GDumb learns from its memory only).
        See :meth:`~obliviate.continual.base.Strategy.purge`."""
        ids = as_id_tensor(ids)
        if self.memory_ is not None:
            self.memory_ = self.memory_.subset(~deleted_rows(self.memory_.ids, ids))

    def begin(self, model: nn.Module, experience: Experience) -> None:
        if self.initial_state_ is None:
            self.initial_state_ = copy.deepcopy(model.state_dict())
        self._update_memory(experience)
        model.load_state_dict(self.initial_state_)
        self.key_ = experience.index
        self.n_batches_ = 0
        self.order_ = torch.empty(0, dtype=torch.int64, device="cpu")  # drawn on the CPU

    def _update_memory(self, experience: Experience) -> None:
        data = experience.train
        data = data.subset(
            torch.randperm(
                len(data),
                generator=generator(self.seed, "gdumb-order", experience.index),
                device="cpu",
            )
        )
        gen = generator(self.seed, "gdumb-sampler", experience.index)
        memory = self.memory_
        old_y = data.y[:0] if memory is None else memory.y
        moves = greedy_balanced_update(old_y, data.y, self.memory_size, gen)
        if not moves:
            return
        size = max(len(old_y), max(slot for slot, _ in moves) + 1)
        dev = data.y.device
        take = torch.full((size,), -1, dtype=torch.int64, device=dev)  # -1: keep the old sample
        for slot, j in moves:
            take[slot] = j
        rows_new = take[take >= 0]
        slots_new = (take >= 0).nonzero().reshape(-1)
        x = data.x.new_empty((size, *data.sample_shape))
        y = torch.empty(size, dtype=torch.int64, device=dev)
        ids = torch.empty(size, dtype=torch.int64, device=dev)
        task = None if data.task is None else torch.empty(size, dtype=torch.int64, device=dev)
        if memory is not None:
            keep = (take[: len(memory)] < 0).nonzero().reshape(-1)
            x[keep], y[keep], ids[keep] = memory.x[keep], memory.y[keep], memory.ids[keep]
            if task is not None and memory.task is not None:
                task[keep] = memory.task[keep]
        x[slots_new], y[slots_new], ids[slots_new] = (
            data.x[rows_new],
            data.y[rows_new],
            data.ids[rows_new],
        )
        if task is not None and data.task is not None:
            task[slots_new] = data.task[rows_new]
        self.memory_ = Dataset(
            x=x, y=y, ids=ids, n_classes=data.n_classes, task=task, name="gdumb-memory"
        )

    def _next_rows(self, n: int) -> Tensor:
        """The next ``n`` memory rows, epoch after epoch, each epoch in a fresh seeded order."""
        assert self.memory_ is not None
        rows = []
        while n > 0:
            if self.order_.numel() == 0:
                gen = generator(self.seed, "gdumb-batches", self.key_, self.n_batches_)
                self.order_ = torch.randperm(len(self.memory_), generator=gen, device=gen.device)
                self.n_batches_ += 1
            rows.append(self.order_[:n])
            n -= rows[-1].numel()
            self.order_ = self.order_[rows[-1].numel() :]
        return torch.cat(rows)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        rows = self._next_rows(min(batch.x.shape[0], self.memory_used()))
        memory = self.memory_
        assert memory is not None
        task = None if memory.task is None else memory.task[rows]
        return nn.functional.cross_entropy(logits(model, memory.x[rows], task), memory.y[rows])

    def end(self, model: nn.Module, experience: Experience) -> None:
        del self.key_, self.n_batches_, self.order_
