"""L2 anchor to the previous experience's weights."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._validation import check_number
from obliviate.continual.base import Batch, Strategy, cross_entropy
from obliviate.continual.penalties import quadratic_penalty, snapshot
from obliviate.data.scenarios import Experience


class L2(Strategy):
    """Fine-tuning with a quadratic anchor of uniform importance to the previous weights.

    Experience ``t > 0`` minimises ``L_t + lambda * sum_k (theta_k - theta*_k)^2``, where
    ``theta*`` are the weights at the end of experience ``t - 1``. It is EWC with the Fisher
    replaced by the identity: the baseline Kirkpatrick et al. (2017, Fig. 2) compare EWC
    against, and that SI and MAS improve on by weighting parameters by importance.

    Parameters
    ----------
    reg_strength : float, >= 0
        ``lambda``. 0 gives plain fine-tuning.

    Notes
    -----
    - Only the latest weights are the anchor (one penalty, not one per past experience).
    - All trainable parameters, heads included, are anchored.

    References
    ----------
    Kirkpatrick, J. et al. (2017). Overcoming catastrophic forgetting in neural networks. PNAS
    114(13), the "L2" baseline of Fig. 2.
    """

    needs_task_boundaries: ClassVar[bool] = True
    neutral_params: ClassVar[dict[str, float]] = {"reg_strength": 0.0}
    learned_state: ClassVar[tuple[str, ...]] = ("anchor_",)
    anchor_: dict[str, Tensor] | None = None

    def __init__(self, *, reg_strength: float = 0.1) -> None:
        check_number("reg_strength", reg_strength, low=0, owner="L2")
        self.reg_strength = reg_strength

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        ce = cross_entropy(model, batch)
        if self.anchor_ is None or self.reg_strength == 0:
            return ce
        ones = {n: torch.ones_like(a) for n, a in self.anchor_.items()}
        return ce + self.reg_strength * quadratic_penalty(model, ones, self.anchor_)

    def end(self, model: nn.Module, experience: Experience) -> None:
        self.anchor_ = snapshot(model)
