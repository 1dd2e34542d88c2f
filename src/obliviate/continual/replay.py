"""Experience replay from a bounded memory of past samples."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_choice, check_number
from obliviate.continual.base import Batch, Strategy, cross_entropy
from obliviate.continual.buffers import ClassBalancedBuffer, ReservoirBuffer
from obliviate.data.dataset import as_id_tensor
from obliviate.data.scenarios import Experience
from obliviate.models.base import logits

BUFFERS = ("reservoir", "class_balanced")


class Replay(Strategy):
    """Experience replay (Ratcliff, 1990; Rolnick et al., 2019; Chaudhry et al., 2019).

    Every step trains on the current minibatch concatenated with a minibatch drawn (without
    replacement, seeded) from a memory of at most ``memory_size`` past samples; the loss is the
    mean cross-entropy over the concatenation (Chaudhry et al., 2019, Algorithm 1, "ER").
    After each experience its training data is offered to the memory.

    Parameters
    ----------
    memory_size : int, >= 1
        Samples the memory holds (``|M|``).
    buffer : {"reservoir", "class_balanced"}
        ``"reservoir"``: reservoir sampling over every sample seen (Vitter, 1985), a uniform
        sample of the stream. ``"class_balanced"``: an equal quota per class seen (remainder to
        the lowest class ids), each class's share a uniform sample of that class.
    replay_batch_size : int >= 1 or None
        Memory samples per step; None uses the current batch's size.
    seed : int
        Seed of the memory's and the replay batches' random choices.

    Notes
    -----
    - The memory is updated at the end of each experience (Avalanche's convention), not after
      every step as in Chaudhry et al.: with several epochs a per-step update would offer the same
      sample several times. Replay therefore starts with the second experience.
    - The memory batch is drawn without replacement; when the memory holds fewer samples than
      ``replay_batch_size`` all of them are used.

    References
    ----------
    Ratcliff, R. (1990). Connectionist models of recognition memory. Psychological Review 97(2).
    Rolnick, D. et al. (2019). Experience replay for continual learning. NeurIPS.
    Chaudhry, A. et al. (2019). On tiny episodic memories in continual learning. arXiv:1902.10486.
    Vitter, J. S. (1985). Random sampling with a reservoir. ACM TOMS 11(1), 37-57.
    """

    needs_task_boundaries: ClassVar[bool] = True
    keeps_memory: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = ("memory_", "n_replayed_")
    memory_: ReservoirBuffer | ClassBalancedBuffer | None = None

    def __init__(
        self,
        *,
        memory_size: int = 200,
        buffer: str = "reservoir",
        replay_batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="Replay")
        check_choice("buffer", buffer, BUFFERS, owner="Replay")
        if replay_batch_size is not None:
            check_number(
                "replay_batch_size", replay_batch_size, low=1, integer=True, owner="Replay"
            )
        check_number("seed", seed, integer=True, owner="Replay")
        self.memory_size = memory_size
        self.buffer = buffer
        self.replay_batch_size = replay_batch_size
        self.seed = seed

    def memory_used(self) -> int:
        return 0 if self.memory_ is None else len(self.memory_)

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64) from the reservoir or class-balanced memory
        (:meth:`~obliviate.continual.buffers.ReservoirBuffer.purge`, :meth:`~obliviate.continual.buffers.ClassBalancedBuffer.purge`); see :meth:`~obliviate.continual.base.Strategy.purge`."""
        ids = as_id_tensor(ids)
        if self.memory_ is not None:
            self.memory_.purge(ids)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        if self.memory_used() == 0:
            return cross_entropy(model, batch)
        n = len(batch.y) if self.replay_batch_size is None else self.replay_batch_size
        gen = generator(self.seed, "replay-batch", self.n_replayed_)
        self.n_replayed_ += 1
        assert self.memory_ is not None  # memory_used() > 0
        stored = self.memory_.filled()
        idx = self.memory_.sample(n, gen)
        x = torch.cat([batch.x, stored["x"][idx]])  # type: ignore[index]
        y = torch.cat([batch.y, stored["y"][idx]])  # type: ignore[index]
        task = None if batch.task is None else torch.cat([batch.task, stored["task"][idx]])  # type: ignore[index]
        return nn.functional.cross_entropy(logits(model, x, task), y)

    def end(self, model: nn.Module, experience: Experience) -> None:
        if self.memory_ is None:
            cls = ReservoirBuffer if self.buffer == "reservoir" else ClassBalancedBuffer
            self.memory_ = cls(memory_size=self.memory_size, seed=self.seed)
            self.n_replayed_ = 0
        data = experience.train
        if isinstance(self.memory_, ReservoirBuffer):
            self.memory_.add(data.x, data.y, data.ids, data.task)
        else:
            self.memory_.add_experience(data.x, data.y, data.ids, data.task)
