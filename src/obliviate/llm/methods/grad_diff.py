"""Gradient difference: ascend on the forget set, descend on the retain set."""

from __future__ import annotations

from typing import final

from torch import Tensor

from obliviate.errors import ObliviateError
from obliviate.llm.methods.base import LLMUnlearner, Step
from obliviate.llm.train import mean_token_nll


@final
class GradDiff(LLMUnlearner):
    """``L = -gamma * NLL(forget) + alpha * NLL(retain)``.

    Parameters
    ----------
    gamma, alpha
        Weights of the forget and retain terms (OpenUnlearning's defaults 1 and 1).
    n_epochs, lr, batch_size, seed
        As :class:`GradAscent`.

    Notes
    -----
    OpenUnlearning's ``GradDiff`` with ``retain_loss_type="NLL"`` (the KL variant is not
    offered). AdamW without warm-up (deviation).

    References
    ----------
    Liu et al., 2022, "Continual Learning and Private Unlearning" (CLPU), eq. 3; Maini et al.,
    2024 (TOFU), section 4 ("Gradient Difference").
    """

    def __init__(
        self,
        *,
        gamma: float = 1.0,
        alpha: float = 1.0,
        n_epochs: int = 5,
        lr: float = 5e-5,
        batch_size: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(n_epochs=n_epochs, lr=lr, batch_size=batch_size, seed=seed)
        if gamma < 0 or alpha < 0:
            raise ObliviateError(f"gamma={gamma}, alpha={alpha}: both must be >= 0")
        self.gamma, self.alpha = gamma, alpha

    def loss(self, step: Step) -> Tensor:
        forget = -mean_token_nll(step.lm, step.forget, step.model)
        retain = mean_token_nll(step.lm, step.retain, step.model)
        return self.gamma * forget + self.alpha * retain
