"""Gradient ascent on the forget set."""

from __future__ import annotations

from typing import final

from torch import Tensor

from obliviate.llm.methods.base import LLMUnlearner, Step
from obliviate.llm.train import mean_token_nll


@final
class GradAscent(LLMUnlearner):
    """Maximise the forget set's NLL: ``L = -NLL(forget)``.

    Parameters
    ----------
    n_epochs, lr, batch_size, seed
        Passes over the forget set, AdamW step size, forget batch size, seed of the order.

    Notes
    -----
    As OpenUnlearning's ``GradAscent`` trainer (token-mean NLL); AdamW with no weight decay and
    no warm-up or schedule (deviation: OpenUnlearning uses the HF Trainer's paged AdamW with a
    linear warm-up).

    References
    ----------
    Jang et al., 2023, "Knowledge Unlearning for Mitigating Privacy Risks in Language Models",
    eq. 1; Maini et al., 2024 (TOFU), section 4.
    """

    needs_retain = False

    def __init__(
        self, *, n_epochs: int = 5, lr: float = 5e-5, batch_size: int = 4, seed: int = 0
    ) -> None:
        super().__init__(n_epochs=n_epochs, lr=lr, batch_size=batch_size, seed=seed)

    def loss(self, step: Step) -> Tensor:
        return -mean_token_nll(step.lm, step.forget, step.model)
