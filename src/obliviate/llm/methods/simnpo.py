"""Simple negative preference optimisation (reference-free, length-normalised NPO)."""

from __future__ import annotations

from typing import final

import torch.nn.functional as F
from torch import Tensor

from obliviate.errors import ObliviateError
from obliviate.llm.methods.base import LLMUnlearner, Step
from obliviate.llm.train import mean_token_nll, sequence_nll


@final
class SimNPO(LLMUnlearner):
    """``L = gamma * (-2/beta) * mean log sigmoid(beta * (NLL(y|x)/|y| - delta))
    + alpha * NLL(retain)``.

    Parameters
    ----------
    beta
        Inverse temperature (OpenUnlearning's default 4.5).
    delta
        Reward margin gamma of the paper (OpenUnlearning's ``delta``, default 0).
    gamma, alpha
        Weights of the forget and retain terms (OpenUnlearning: 0.125 and 1).
    n_epochs, lr, batch_size, seed
        As :class:`GradAscent`.

    Notes
    -----
    As OpenUnlearning's ``SimNPO`` trainer (summed answer NLL divided by the number of answer
    tokens). AdamW without warm-up (deviation).

    References
    ----------
    Fan et al., 2024, "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
    Unlearning", eq. 4.
    """

    def __init__(
        self,
        *,
        beta: float = 4.5,
        delta: float = 0.0,
        gamma: float = 0.125,
        alpha: float = 1.0,
        n_epochs: int = 5,
        lr: float = 5e-5,
        batch_size: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(n_epochs=n_epochs, lr=lr, batch_size=batch_size, seed=seed)
        if beta <= 0 or gamma < 0 or alpha < 0:
            raise ObliviateError(f"beta={beta} must be > 0; gamma={gamma}, alpha={alpha} >= 0")
        self.beta, self.delta, self.gamma, self.alpha = beta, delta, gamma, alpha

    def loss(self, step: Step) -> Tensor:
        total, counts = sequence_nll(step.lm, step.forget, step.model)
        forget = -2.0 / self.beta * F.logsigmoid(self.beta * (total / counts - self.delta)).mean()
        retain = mean_token_nll(step.lm, step.retain, step.model)
        return self.gamma * forget + self.alpha * retain
