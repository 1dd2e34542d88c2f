"""The retain-only oracle: fine-tune the base model on the retained data alone."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import final

from torch import Tensor

from obliviate.errors import ObliviateError
from obliviate.llm.methods.base import LLMUnlearner, Step
from obliviate.llm.models import LM
from obliviate.llm.train import Encoded, fine_tune


@final
class Retrain(LLMUnlearner):
    """Exact unlearning by retraining: the model fine-tuned from ``base`` on ``retain`` only,
    with the target's recipe (``n_epochs``, ``lr``, ``batch_size``, ``seed``). Every other
    method is measured against it (TOFU's "retain model").

    Parameters
    ----------
    n_epochs, lr, batch_size, seed
        Must equal the target fine-tune's recipe for the oracle to be the target without the
        forget set.

    Notes
    -----
    Needs ``base`` (the model before fine-tuning, with the same trainable parameters);
    ``forget`` only decides the empty-request identity (an empty request returns a copy of the
    input, like every unlearner).

    References
    ----------
    Maini et al., 2024 (TOFU), section 2.3 (the retain model); Bourtoule et al., 2021 (SISA).
    """

    guarantee = "exact"

    def __init__(
        self, *, n_epochs: int = 5, lr: float = 1e-4, batch_size: int = 4, seed: int = 0
    ) -> None:
        super().__init__(n_epochs=n_epochs, lr=lr, batch_size=batch_size, seed=seed)

    def loss(self, step: Step) -> Tensor:  # pragma: no cover - unlearn() is overridden
        raise NotImplementedError

    def unlearn(
        self,
        lm: LM,
        forget: Sequence[Encoded],
        retain: Sequence[Encoded] = (),
        *,
        base: LM | None = None,
    ) -> LM:
        if not forget:
            return LM(copy.deepcopy(lm.model), lm.tokenizer, lm.device, lm.prefix)
        if base is None:
            raise ObliviateError("Retrain needs base= (the model before fine-tuning)")
        out = LM(copy.deepcopy(base.model), base.tokenizer, base.device, base.prefix)
        return fine_tune(
            out,
            list(retain),
            n_epochs=self.n_epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=self.seed,
        )
