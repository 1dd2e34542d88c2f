"""A small convolutional network for 8x8 and 28x28 single-channel images."""

from __future__ import annotations

from torch import Tensor, nn

from obliviate.errors import ObliviateError
from obliviate.models.base import Model


class CNN(Model):
    """Two ``conv3x3 -> ReLU -> maxpool2`` blocks, a hidden linear layer, a linear head.

    Works for any ``[C, H, W]`` input with ``H, W >= 4``; 8x8 inputs end at 2x2, 28x28 at 7x7.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        n_classes: int,
        channels: tuple[int, int] = (16, 32),
        hidden: int = 64,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3:
            raise ObliviateError(
                f"model 'cnn' needs image inputs [C, H, W], but the data's samples have shape "
                f"{tuple(in_shape)}; use --model mlp for flat features"
            )
        c, h, w = in_shape
        self.body = nn.Sequential(
            nn.Conv2d(c, channels[0], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(channels[1] * (h // 4) * (w // 4), hidden),
            nn.ReLU(),
        )
        self.head = nn.Linear(hidden, n_classes)
        self.n_classes, self.feature_dim = n_classes, hidden

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def classify(self, h: Tensor, task: Tensor | None = None) -> Tensor:
        return self.head(h)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())
