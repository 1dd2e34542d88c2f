"""Direct preference optimisation towards refusals ("I don't know") on the forget set."""

from __future__ import annotations

from typing import final

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from obliviate._rng import derive_seed
from obliviate.errors import ObliviateError
from obliviate.llm.data import REFUSALS
from obliviate.llm.methods.base import LLMUnlearner, Step, sequence_logp
from obliviate.llm.train import Encoded, mean_token_nll


@final
class IdkDPO(LLMUnlearner):
    """DPO with a refusal as the preferred and the true answer as the rejected response:
    ``L = gamma * (-2/beta) * mean log sigmoid(beta * ((log p(w) - log p_ref(w)) -
    (log p(l) - log p_ref(l)))) + alpha * NLL(retain)``.

    Parameters
    ----------
    beta
        DPO inverse temperature (OpenUnlearning's default 0.1).
    gamma, alpha
        Weights of the preference and retain terms (OpenUnlearning: 1 and 1).
    n_epochs, lr, batch_size, seed
        As :class:`GradAscent`; ``seed`` also picks each forget question's refusal.

    Notes
    -----
    Refusals are drawn (seeded) from :data:`obliviate.llm.data.REFUSALS` (4 strings; TOFU ships
    100 "idk" variants). ``log p`` sums the answer tokens' log-probabilities; the reference is the
    input model. The ``-2/beta`` scale follows OpenUnlearning's ``compute_dpo_loss``. AdamW
    without warm-up (deviation).

    References
    ----------
    Rafailov et al., 2023, "Direct Preference Optimization", eq. 7; Maini et al., 2024 (TOFU),
    section 4 ("Preference Optimization").
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

    def _refusal(self, step: Step, item_id: int) -> tuple[int, ...]:
        """Token ids of the refusal answer (plus eos) chosen for this forget item."""
        rng = np.random.default_rng(derive_seed(self.seed, "idk", item_id))
        text = " " + REFUSALS[int(rng.integers(len(REFUSALS)))]
        ids = step.lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        return (*[int(t) for t in ids], step.lm.eos_id)

    def loss(self, step: Step) -> Tensor:
        wins = [
            Encoded(
                id=e.id, ids=e.ids[: e.n_prompt] + self._refusal(step, e.id), n_prompt=e.n_prompt
            )
            for e in step.forget
        ]
        w = sequence_logp(step, wins, step.model) - sequence_logp(step, wins, step.reference)
        lose = sequence_logp(step, step.forget, step.model) - sequence_logp(
            step, step.forget, step.reference
        )
        forget = -2.0 / self.beta * F.logsigmoid(self.beta * (w - lose)).mean()
        retain = mean_token_nll(step.lm, step.retain, step.model)
        return self.gamma * forget + self.alpha * retain
