"""Dark Experience Replay++ (Buzzega et al., 2020)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from obliviate._rng import generator
from obliviate.continual.base import Batch, Strategy
from obliviate.continual.buffers import ReservoirBuffer
from obliviate.continual.der import buffer_batch, check_replay_params
from obliviate.data.dataset import as_id_tensor
from obliviate.models.base import logits


class DERpp(Strategy):
    """DER++: Dark Experience Replay plus replay of the buffer's labels.

    Each step minimises (eq. 7)::

        CE(f(x), y) + alpha * || f(x') - z' ||_2^2 + beta * CE(f(x''), y'')

    with ``(x', z')`` and ``(x'', y'')`` two minibatches drawn independently from the reservoir
    buffer ``M``, which stores each sample with its label and the logits the model gave it when
    it was inserted (see :class:`~obliviate.continual.der.DER`). No task boundaries needed.

    Parameters
    ----------
    memory_size : int, >= 1
        Buffer capacity ``|M|`` in samples.
    alpha : float, >= 0
        ``alpha``, the weight of the logit-matching term.
    beta : float, >= 0
        ``beta``, the weight of the cross-entropy on replayed labels (``beta = 0`` is DER).
    seed : int
        Seeds the reservoir's choices and the replay minibatches.

    Notes
    -----
    - As :class:`~obliviate.continual.der.DER`: mean squared error over logit entries, replay
      minibatches the size of the incoming batch, no data augmentation.
    - The defaults ``alpha = 0.1``, ``beta = 0.5`` are common settings, not tuned here (the paper
      tunes both per benchmark).

    References
    ----------
    Buzzega, P., Boschini, M., Porrello, A., Abati, D. & Calderara, S. (2020). Dark Experience
    for General Continual Learning: a Strong, Simple Baseline. NeurIPS 2020, eq. (7), Alg. 1.
    """

    keeps_memory: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = ("buffer_", "n_steps_")
    buffer_: ReservoirBuffer | None = None

    def __init__(
        self, *, memory_size: int = 200, alpha: float = 0.1, beta: float = 0.5, seed: int = 0
    ) -> None:
        check_replay_params("DERpp", memory_size, seed, alpha=alpha, beta=beta)
        self.memory_size = memory_size
        self.alpha = alpha
        self.beta = beta
        self.seed = seed

    def memory_used(self) -> int:
        return 0 if self.buffer_ is None else len(self.buffer_)

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64) from the reservoir buffer, stored logits included
        (:meth:`~obliviate.continual.buffers.ReservoirBuffer.purge`); see :meth:`~obliviate.continual.base.Strategy.purge`."""
        ids = as_id_tensor(ids)
        if self.buffer_ is not None:
            self.buffer_.purge(ids)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        if self.buffer_ is None:
            self.buffer_ = ReservoirBuffer(memory_size=self.memory_size, seed=self.seed)
            self.n_steps_ = 0
        out = logits(model, batch.x, batch.task)
        total = nn.functional.cross_entropy(out, batch.y)
        if len(self.buffer_) > 0:
            gen = generator(self.seed, "derpp", self.n_steps_)
            n = batch.x.shape[0]
            x, _, task, z = buffer_batch(self.buffer_, n, gen)
            total = total + self.alpha * nn.functional.mse_loss(logits(model, x, task), z)
            x, y, task, _ = buffer_batch(self.buffer_, n, gen)
            total = total + self.beta * nn.functional.cross_entropy(logits(model, x, task), y)
        self.buffer_.add(batch.x, batch.y, batch.ids, batch.task, extra=out.detach())
        self.n_steps_ += 1
        return total
