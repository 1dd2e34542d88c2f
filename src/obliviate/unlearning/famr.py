"""FAMR, Forget-Aligned Model Reconstruction (Sanga, Singh & Dubey, 2025)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from obliviate._validation import check_number, check_schedule
from obliviate.models.base import logits
from obliviate.training import Batch
from obliviate.unlearning._ops import run_steps, trainable
from obliviate.unlearning.base import ForgetRequest, Unlearner


def uniform_cross_entropy(out: Tensor) -> Tensor:
    """Cross-entropy of the softmax of ``out`` against the uniform distribution, batch mean:
    ``-(1/K) sum_k log p_k`` (= ``KL(u || p) + log K``)."""
    return -F.log_softmax(out, dim=1).mean(dim=1).mean()


def anchor_penalty(model: nn.Module, anchor: list[Tensor]) -> Tensor:
    """``sum ||theta - theta_0||^2`` over the model's parameters."""
    return sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True))  # type: ignore[return-value]


class FAMR(Unlearner):
    """Push forget-set predictions to uniform while anchoring the weights to the original ones.

    Minimises ``L(theta) = E_{x in D_f} CE(u, softmax f_theta(x)) + (reg_strength / 2)
    ||theta - theta_0||^2`` by minibatch gradient descent from ``theta_0`` (the original weights),
    where ``u`` is the uniform distribution over the classes. Uses the forget set only.

    Parameters
    ----------
    n_epochs:
        passes over the forget set.
    lr, batch_size, optimizer, momentum:
        the optimiser.
    reg_strength:
        ``lambda`` of the l2 anchor (>= 0; 0 = no anchor).
    seed:
        data order.

    Notes
    -----
    - The objective is the one the FAMR abstract states (uniform-prediction loss on the forget
      set plus an l2 anchor to the original parameters); the optimiser, step count and
      ``lambda`` were not taken from the paper (its body was not available to us) but set on the
      retain/forget sets of a small digits MLP.
    - The anchor term is added to every minibatch loss (its gradient is ``lambda (theta -
      theta_0)``), i.e. plain gradient descent on the full objective.

    References
    ----------
    Sanga, P., Singh, J. & Dubey, A. K. (2025). Train Once, Forget Precisely: Anchored
    Optimization for Efficient Post-Hoc Unlearning. arXiv:2506.14515.
    """

    guarantee: ClassVar[Literal["exact", "approximate"]] = "approximate"
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        n_epochs: int = 5,
        lr: float = 0.01,
        batch_size: int = 32,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        reg_strength: float = 0.1,
        seed: int = 0,
    ) -> None:
        check_schedule(
            "FAMR",
            n_epochs=n_epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer=optimizer,
            momentum=momentum,
            seed=seed,
        )
        check_number("reg_strength", reg_strength, low=0, owner="FAMR")
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.reg_strength = reg_strength
        self.seed = seed

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        out = trainable(model)
        anchor = [p.detach().clone() for p in out.parameters()]

        def loss(m: nn.Module, batch: Batch) -> Tensor:
            value = uniform_cross_entropy(logits(m, batch.x, batch.task))
            if self.reg_strength > 0:
                value = value + 0.5 * self.reg_strength * anchor_penalty(m, anchor)
            return value

        run_steps(
            out,
            request.forget,
            loss,
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            seed=self.seed,
            key="famr",
        )
        return out


__all__ = ["FAMR", "anchor_penalty", "uniform_cross_entropy"]
