"""Experience replay with asymmetric cross-entropy, ER-ACE (Caccia et al., 2022)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual.base import Batch, Strategy
from obliviate.continual.buffers import ReservoirBuffer
from obliviate.continual.der import check_replay_params
from obliviate.data.dataset import as_id_tensor
from obliviate.models.base import logits

__all__ = ["ERACE", "asymmetric_cross_entropy"]


def asymmetric_cross_entropy(out: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy over only the classes present in the batch (ER-ACE's incoming-batch loss).

    ``out``: logits ``[B, C]`` (float); ``y``: labels ``[B]`` (int64). Every column whose class
    does not occur in ``y`` is masked to the dtype's lowest value before the softmax, so the
    loss neither pushes those logits down nor depends on them (Caccia et al., 2022,
    ``L_CE^{C_curr}``; section and equation numbers not verified, see ERACE's References).
    Returns the batch mean, a scalar.
    """
    present = torch.zeros(out.shape[1], dtype=torch.bool, device=out.device)
    present[y] = True
    masked = out.masked_fill(~present, torch.finfo(out.dtype).min)
    return nn.functional.cross_entropy(masked, y)


class ERACE(Strategy):
    """ER-ACE: experience replay whose incoming-batch loss ignores absent classes.

    Each step minimises (Caccia et al., 2022, the ER-ACE loss)::

        L_CE^{C_in}(f(X_in), Y_in) + L_CE(f(X_bf), Y_bf)

    where ``L_CE^{C_in}`` is the cross-entropy computed over the logits of only the classes
    ``C_in`` present in the incoming batch (:func:`asymmetric_cross_entropy`), and the replay
    term is the ordinary cross-entropy over all classes on a batch ``(X_bf, Y_bf)`` drawn from a
    reservoir memory. New classes' samples thus no longer push the old classes' logits down
    (the "abrupt representation change" at a task switch), while replayed samples still
    separate old from new classes. The memory takes every incoming batch (reservoir sampling,
    Vitter 1985), so no task boundaries are needed.

    Parameters
    ----------
    memory_size : int, >= 1
        Memory capacity ``|M|`` in samples.
    replay_batch_size : int >= 1 or None
        Size of ``(X_bf, Y_bf)``; None uses the incoming batch's size (equal sizes, as in the
        paper's online setting).
    seed : int
        Seeds the reservoir's choices and the replay batches.

    Notes
    -----
    - The mask applies from the first batch on, as the paper writes the loss (the authors' and
      Mammoth's code switch it on only from the second task; on the first task the two differ
      only on batches that miss some of the task's classes).
    - The incoming batch is offered to the reservoir after its loss is computed (as DER does);
      the paper's online setting has one epoch, here a sample may be offered once per epoch.
    - No data augmentation.

    References
    ----------
    Caccia, L., Aljundi, R., Asadi, N., Tuytelaars, T., Pineau, J. & Belilovsky, E. (2022).
    New Insights on Reducing Abrupt Representation Change in Online Continual Learning.
    ICLR 2022. arXiv:2104.05025. Checked against the abstract only (an asymmetric update rule
    that pushes new classes to adapt to the older ones). Section and equation numbers not
    verified against the paper (no readable copy of its full text here); the loss follows
    Mammoth's code, as Notes say.
    """

    keeps_memory: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = ("buffer_", "n_steps_")
    buffer_: ReservoirBuffer | None = None

    def __init__(
        self, *, memory_size: int = 200, replay_batch_size: int | None = None, seed: int = 0
    ) -> None:
        check_replay_params("ERACE", memory_size, seed)
        if replay_batch_size is not None:
            check_number("replay_batch_size", replay_batch_size, low=1, integer=True, owner="ERACE")
        self.memory_size = memory_size
        self.replay_batch_size = replay_batch_size
        self.seed = seed

    def memory_used(self) -> int:
        return 0 if self.buffer_ is None else len(self.buffer_)

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64) from the reservoir buffer
        (:meth:`~obliviate.continual.buffers.ReservoirBuffer.purge`); see :meth:`~obliviate.continual.base.Strategy.purge`."""
        ids = as_id_tensor(ids)
        if self.buffer_ is not None:
            self.buffer_.purge(ids)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        if self.buffer_ is None:
            self.buffer_ = ReservoirBuffer(memory_size=self.memory_size, seed=self.seed)
            self.n_steps_ = 0
        total = asymmetric_cross_entropy(logits(model, batch.x, batch.task), batch.y)
        if len(self.buffer_) > 0:
            n = batch.x.shape[0] if self.replay_batch_size is None else self.replay_batch_size
            stored = self.buffer_.filled()
            idx = self.buffer_.sample(n, generator(self.seed, "erace", self.n_steps_))
            task = None if batch.task is None else stored["task"][idx]  # type: ignore[index]
            out = logits(model, stored["x"][idx], task)  # type: ignore[index]
            total = total + nn.functional.cross_entropy(out, stored["y"][idx])  # type: ignore[index]
        self.buffer_.add(batch.x, batch.y, batch.ids, batch.task)
        self.n_steps_ += 1
        return total
