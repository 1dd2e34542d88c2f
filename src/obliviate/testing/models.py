"""The user-style model the conformance suites also run on.

:class:`UserCNN` is what a user brings: a plain ``nn.Module`` (no obliviate base class, no
``features()``, no ``task`` argument) with a convolution, ``BatchNorm2d``, ``BatchNorm1d`` and
``Dropout``, whose output layer is registered *before* its hidden layers (so a method that took
"the last ``nn.Linear`` registered" as the output layer would pick the wrong one).
"""

from __future__ import annotations

import dataclasses

from torch import Tensor, nn

from obliviate.data.dataset import Dataset

__all__ = ["UserCNN", "as_images"]


class UserCNN(nn.Module):
    """Conv(1->``channels``, 3x3) - BatchNorm2d - ReLU - flatten - Linear(->``hidden``) -
    BatchNorm1d - ReLU - Dropout(``dropout``) - Linear(->``n_classes``).

    Input ``[B, 1, side, side]`` float32; output logits ``[B, n_classes]``.
    """

    def __init__(
        self, *, n_classes: int = 4, side: int = 4, channels: int = 4, hidden: int = 16,
        dropout: float = 0.1,
    ) -> None:  # fmt: skip
        super().__init__()
        self.out = nn.Linear(hidden, n_classes)  # registered first on purpose
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.bn2d = nn.BatchNorm2d(channels)
        self.hidden = nn.Linear(channels * side * side, hidden)
        self.bn1d = nn.BatchNorm1d(hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = nn.functional.relu(self.bn2d(self.conv(x))).flatten(1)
        h = self.drop(nn.functional.relu(self.bn1d(self.hidden(h))))
        return self.out(h)


def as_images(data: Dataset, side: int) -> Dataset:
    """``data`` with each row reshaped to a ``[1, side, side]`` image (``side**2`` features)."""
    return dataclasses.replace(data, x=data.x.reshape(len(data), 1, side, side).contiguous())
