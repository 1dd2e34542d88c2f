"""Gradient-based Sample Selection, GSS-Greedy (Aljundi, Lin, Goujaud & Bengio, 2019)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual.base import Batch, Strategy, deleted_rows
from obliviate.continual.der import check_replay_params
from obliviate.continual.penalties import per_sample_grads
from obliviate.data.dataset import as_id_tensor
from obliviate.models.base import logits

__all__ = ["GSS", "gradient_scores"]


def gradient_scores(g: Tensor, memory_g: Tensor) -> Tensor:
    """GSS-Greedy's score of each new sample (Aljundi et al., 2019, Algorithm 2).

    ``g``: flat per-sample gradients of the new samples ``[B, P]``; ``memory_g``: those of ``n``
    memory samples ``[n, P]`` (float). Returns ``c_b = max_i cos(g_b, G_i) + 1`` in ``[0, 2]``,
    shape ``[B]``: high when the new sample's gradient points like one already stored
    (redundant), low when it points against all of them (diverse). A zero gradient has cosine 0.
    """
    a = nn.functional.normalize(g, dim=1)
    b = nn.functional.normalize(memory_g, dim=1)
    return (a @ b.T).max(dim=1).values + 1


class GSS(Strategy):
    """GSS-Greedy: keep a memory whose samples' gradients point in diverse directions.

    Every incoming sample ``(x, y)`` gets a score ``c`` (:func:`gradient_scores`): one plus the
    largest cosine similarity between its loss gradient and those of ``n_candidates`` random
    memory samples. While the memory has room the sample is stored with its score. Once full,
    a sample with ``c < 1`` (its gradient opposes every candidate's) competes for a slot: a
    stored sample ``i`` is drawn with probability ``C_i / sum_j C_j`` and replaced, with its score
    set to ``c``, with probability ``C_i / (C_i + c)`` (Algorithm 2). Training replays a random
    memory batch with every incoming batch: the loss is the mean cross-entropy over the
    concatenation (as :class:`~obliviate.continual.replay.Replay`). No task boundaries needed.

    Parameters
    ----------
    memory_size : int, >= 1
        Memory capacity ``M`` in samples.
    n_candidates : int, >= 1
        ``n``, random memory samples whose gradients score each incoming batch (default 10).
    replay_batch_size : int >= 1 or None
        Memory samples replayed per step; None uses the incoming batch's size.
    seed : int
        Seeds the candidate draws, the replacement draws and the replay batches.

    Notes
    -----
    - The incoming batch is scored as a whole against one draw of ``n_candidates`` memory
      samples made before any of its samples is inserted; its samples are then inserted one by
      one (the paper receives one sample, or a batch, at a time).
    - Gradients are those of each sample's cross-entropy over all trainable parameters,
      computed in eval mode (dropout off, batch norm on its running statistics, which eval mode
      leaves untouched) with one vectorised backward pass
      (:func:`~obliviate.continual.penalties.per_sample_grads`).
    - Samples stored while the memory is still empty get score 1 (cosine 0, nothing to compare
      with).
    - The paper's Algorithm 2 is followed, not the authors' code, which compares against the
      mean gradients of ``n`` random memory *minibatches*, first gates the whole batch by its
      mean gradient's similarity, starts stored scores at 0.1 and takes separate SGD steps on
      the incoming and the replayed batch.
    - With several epochs a sample is offered once per epoch (the paper has one epoch).

    References
    ----------
    Aljundi, R., Lin, M., Goujaud, B. & Bengio, Y. (2019). Gradient based sample selection for
    online continual learning. NeurIPS 2019, the GSS-Greedy algorithm (Algorithm 2).
    """

    keeps_memory: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = ("memory_", "n_steps_")
    memory_: dict[str, Tensor] | None = None

    def __init__(
        self,
        *,
        memory_size: int = 200,
        n_candidates: int = 10,
        replay_batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        check_replay_params("GSS", memory_size, seed)
        check_number("n_candidates", n_candidates, low=1, integer=True, owner="GSS")
        if replay_batch_size is not None:
            check_number("replay_batch_size", replay_batch_size, low=1, integer=True, owner="GSS")
        self.memory_size = memory_size
        self.n_candidates = n_candidates
        self.replay_batch_size = replay_batch_size
        self.seed = seed

    def memory_used(self) -> int:
        return int(self.memory_["y"].numel()) if self.memory_ else 0

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64) from the memory, with their stored
        gradient scores. The scores of kept samples were computed against the memory of their
        time (possibly holding deleted samples): influence, like the weights, left to the
        unlearner. See :meth:`~obliviate.continual.base.Strategy.purge`."""
        ids = as_id_tensor(ids)
        if self.memory_:
            keep = ~deleted_rows(self.memory_["ids"], ids)
            self.memory_ = {k: v[keep].clone() for k, v in self.memory_.items()}

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        if self.memory_ is None:
            self.memory_ = {}
            self.n_steps_ = 0
        gen = generator(self.seed, "gss", self.n_steps_)
        self.n_steps_ += 1
        x, y, task = batch.x, batch.y, batch.task
        n_stored = self.memory_used()
        if n_stored:
            n = x.shape[0] if self.replay_batch_size is None else self.replay_batch_size
            idx = torch.randperm(n_stored, generator=gen, device=gen.device)[:n]
            x = torch.cat([x, self.memory_["x"][idx]])
            y = torch.cat([y, self.memory_["y"][idx]])
            task = None if task is None else torch.cat([task, self.memory_["task"][idx]])
        total = nn.functional.cross_entropy(logits(model, x, task), y)
        self._select(model, batch, gen)
        return total

    def _flat_grads(self, model: nn.Module, x: Tensor, y: Tensor, task: Tensor | None) -> Tensor:
        modes = [m.training for m in model.modules()]
        model.eval()
        try:
            grads = per_sample_grads(model, x, y, task)
        finally:
            for m, mode in zip(model.modules(), modes, strict=True):
                m.training = mode
        return torch.cat([g.reshape(x.shape[0], -1) for g in grads.values()], dim=1)

    @torch.no_grad()
    def _select(self, model: nn.Module, batch: Batch, gen: torch.Generator) -> None:
        """Offer the incoming batch to the memory (Algorithm 2, one sample at a time)."""
        mem = self.memory_
        assert mem is not None  # created in loss
        n_stored = self.memory_used()
        task = torch.full_like(batch.y, -1) if batch.task is None else batch.task
        if n_stored:
            cand = torch.randperm(n_stored, generator=gen, device=gen.device)[: self.n_candidates]
            ctask = None if batch.task is None else mem["task"][cand]
            with torch.enable_grad():
                g = self._flat_grads(model, batch.x, batch.y, batch.task)
                mg = self._flat_grads(model, mem["x"][cand], mem["y"][cand], ctask)
            scores = gradient_scores(g, mg)
        else:
            scores = torch.ones(batch.y.shape[0], device=batch.y.device)
        draws = torch.rand(batch.y.shape[0], generator=gen, device=gen.device)
        new = {"x": batch.x, "y": batch.y, "ids": batch.ids, "task": task}
        for k in range(batch.y.shape[0]):
            c = scores[k]
            if self.memory_used() < self.memory_size:
                row = {key: v[k : k + 1].detach().clone() for key, v in new.items()}
                row["score"] = c.reshape(1).clone()
                for key, v in row.items():
                    mem[key] = v if key not in mem else torch.cat([mem[key], v])
                continue
            if c >= 1:
                continue
            weights = (
                mem["score"]
                if bool(mem["score"].sum() > 0)
                else torch.ones_like(c).expand(self.memory_size)
            )
            i = int(torch.multinomial(weights.cpu(), 1, generator=gen))  # the CPU generator
            if draws[k] < mem["score"][i] / (mem["score"][i] + c):
                for key, v in new.items():
                    mem[key][i] = v[k]
                mem["score"][i] = c
