"""Negative preference optimisation."""

from __future__ import annotations

from typing import final

import torch.nn.functional as F
from torch import Tensor

from obliviate.errors import ObliviateError
from obliviate.llm.methods.base import LLMUnlearner, Step, sequence_logp
from obliviate.llm.train import mean_token_nll


@final
class NPO(LLMUnlearner):
    """``L = gamma * (-2/beta) * mean log sigmoid(-beta * (log p(y|x) - log p_ref(y|x)))
    + alpha * NLL(retain)`` over forget pairs ``(x, y)``.

    Parameters
    ----------
    beta
        Inverse temperature beta of NPO (paper and OpenUnlearning default 0.1).
    gamma, alpha
        Weights of the forget and retain terms (OpenUnlearning: 1 and 1).
    n_epochs, lr, batch_size, seed
        As :class:`GradAscent`.

    Notes
    -----
    ``log p`` is the summed log-probability of the answer tokens (OpenUnlearning's
    ``compute_dpo_loss`` with no winning response). The reference is the input model, frozen.
    The retain term is NLL (the paper's NPO+RT). AdamW without warm-up (deviation).

    References
    ----------
    Zhang et al., 2024, "Negative Preference Optimization: From Catastrophic Collapse to
    Effective Unlearning", eq. 3 (and NPO+RT, section 5).
    """

    needs_reference = True

    def __init__(
        self,
        *,
        beta: float = 0.1,
        gamma: float = 1.0,
        alpha: float = 1.0,
        n_epochs: int = 5,
        lr: float = 5e-5,
        batch_size: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(n_epochs=n_epochs, lr=lr, batch_size=batch_size, seed=seed)
        if beta <= 0 or gamma < 0 or alpha < 0:
            raise ObliviateError(f"beta={beta} must be > 0; gamma={gamma}, alpha={alpha} >= 0")
        self.beta, self.gamma, self.alpha = beta, gamma, alpha

    def loss(self, step: Step) -> Tensor:
        ratio = sequence_logp(step, step.forget, step.model) - sequence_logp(
            step, step.forget, step.reference
        )
        forget = -2.0 / self.beta * F.logsigmoid(-self.beta * ratio).mean()
        retain = mean_token_nll(step.lm, step.retain, step.model)
        return self.gamma * forget + self.alpha * retain
