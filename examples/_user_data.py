"""The "user's" side shared by the examples: their own CNN and their own arrays with their own ids.

Nothing here imports obliviate: it is what a user already has before they meet the toolkit.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

SMALL = "--small" in sys.argv or os.environ.get("OBLIVIATE_EXAMPLES_SMALL") == "1"
"""CI mode: fewer epochs and rows, so each example runs in seconds."""

torch.set_num_threads(1)  # same bits on every machine (the thread count changes float sums)


class SmallCNN(nn.Module):
    """A user's CNN for 8x8 images: conv + BatchNorm + Dropout; ``forward`` takes ``x`` only."""

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(16 * 4 * 4, 64),
            nn.ReLU(),
        )
        self.head = nn.Linear(64, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def user_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn digits as ``x [N, 1, 8, 8]`` float32, ``y [N]`` and the user's own ids
    ``1000 + 10*k`` (so an id is never a row position)."""
    x, y = load_digits(return_X_y=True)
    if SMALL:
        x, y = x[:900], y[:900]
    ids = 1000 + 10 * np.arange(len(y))
    return x.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0, y, ids
