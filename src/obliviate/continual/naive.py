"""Naive fine-tuning: the lower bound of continual learning."""

from __future__ import annotations

from torch import Tensor, nn

from obliviate.continual.base import Batch, Strategy, cross_entropy


class Naive(Strategy):
    """Plain fine-tuning on each experience in turn, with no protection against forgetting.

    It is the baseline that exhibits catastrophic forgetting (McCloskey & Cohen, 1989).

    References
    ----------
    McCloskey, M. & Cohen, N. J. (1989). Catastrophic interference in connectionist networks.
    """

    def __init__(self) -> None:
        pass

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return cross_entropy(model, batch)
