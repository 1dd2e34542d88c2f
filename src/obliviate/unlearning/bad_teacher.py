"""Bad teaching (Chundawat et al., AAAI 2023): a competent and an incompetent teacher."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from obliviate._validation import check_number, check_schedule
from obliviate.data.dataset import Dataset
from obliviate.models.base import logits
from obliviate.training import Batch
from obliviate.unlearning._ops import fresh_like, frozen_copy, run_steps, trainable
from obliviate.unlearning.base import ForgetRequest, Unlearner
from obliviate.unlearning.random_label import retain_sample


def bad_teacher_loss(
    student: Tensor, competent: Tensor, incompetent: Tensor, is_forget: Tensor, temperature: float
) -> Tensor:
    """``KL(t || s)`` with ``t = softmax(incompetent / T)`` on forget rows and
    ``softmax(competent / T)`` on retain rows (Chundawat et al., eq. 3), batch mean times ``T**2``."""
    t = float(temperature)
    target = torch.where(
        is_forget[:, None], F.softmax(incompetent / t, dim=1), F.softmax(competent / t, dim=1)
    )
    log_s = F.log_softmax(student / t, dim=1)
    return F.kl_div(log_s, target, reduction="batchmean") * (t * t)


class BadTeacher(Unlearner):
    """Distil the model from two teachers: the original on retain rows, a random one on forget rows.

    The student starts as the original model. Each training row is labelled forget/retain; the
    student matches (KL divergence of temperature-softened outputs) the *competent* teacher (the
    original model, frozen) on retain rows and the *incompetent* teacher (the same architecture,
    randomly initialised from ``seed``) on forget rows. One pass over the forget set plus a
    ``retain_fraction`` of the retain set.

    Parameters
    ----------
    n_epochs:
        passes over the mixed data (the paper: 1).
    lr, batch_size, optimizer:
        the student's optimiser (the paper: Adam).
    temperature:
        ``T`` of the softened outputs (the paper's code: 1).
    retain_fraction:
        fraction of the retain set used (the paper: 30 %).
    seed:
        draws the incompetent teacher, the retain sample and the data order.

    Notes
    -----
    - The KL is averaged over rows (``batchmean``) and scaled by ``T**2``; the reference code
      averages over rows *and* classes, which only rescales the learning rate by ``1/K``.
    - ``lr``, ``batch_size`` and ``n_epochs`` differ from the paper's (1e-4, 256, 1 epoch on
      CIFAR ResNets); they were set on the retain/forget sets of a small digits MLP, where the
      paper's values take only a handful of steps and change nothing.

    References
    ----------
    Chundawat, V. S., Tarun, A. K., Mandal, M. & Kankanhalli, M. (2023). Can Bad Teaching Induce
    Forgetting? Unlearning in Deep Networks Using an Incompetent Teacher. AAAI 2023.
    """

    guarantee: ClassVar[Literal["exact", "approximate"]] = "approximate"
    needs: ClassVar[frozenset[str]] = frozenset({"retain"})

    def __init__(
        self,
        *,
        n_epochs: int = 3,
        lr: float = 1e-3,
        batch_size: int = 32,
        optimizer: str = "adam",
        temperature: float = 1.0,
        retain_fraction: float = 0.3,
        seed: int = 0,
    ) -> None:
        check_schedule(
            "BadTeacher",
            n_epochs=n_epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer=optimizer,
            seed=seed,
        )
        check_number("temperature", temperature, low=0, low_open=True, owner="BadTeacher")
        check_number("retain_fraction", retain_fraction, low=0, high=1, owner="BadTeacher")
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.temperature = temperature
        self.retain_fraction = retain_fraction
        self.seed = seed

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        out = trainable(model)
        assert request.retain is not None
        competent = frozen_copy(model)
        incompetent = fresh_like(model, self.seed, "bad_teacher")
        for p in incompetent.parameters():
            p.requires_grad_(False)
        forget_ids = request.forget.ids
        parts = [
            request.forget,
            retain_sample(request.retain, self.retain_fraction, self.seed, "retain"),
        ]
        data = Dataset.concat([p for p in parts if len(p)])

        def loss(student: nn.Module, batch: Batch) -> Tensor:
            with torch.no_grad():
                good = logits(competent, batch.x, batch.task)
                bad = logits(incompetent, batch.x, batch.task)
            is_forget = torch.isin(batch.ids, forget_ids)
            return bad_teacher_loss(
                logits(student, batch.x, batch.task), good, bad, is_forget, self.temperature
            )

        run_steps(
            out,
            data,
            loss,
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            seed=self.seed,
            key="bad_teacher",
        )
        return out
