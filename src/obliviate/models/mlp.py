"""Multi-layer perceptron."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from obliviate.models.base import Model


class MLP(Model):
    """Flatten, then ``Linear -> ReLU`` per hidden width, then a linear head.

    ``hidden=()`` gives a linear (softmax-regression) model.
    """

    def __init__(self, in_features: int, n_classes: int, hidden: Sequence[int] = (100,)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)
        self.n_classes, self.feature_dim = n_classes, width

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def classify(self, h: Tensor, task: Tensor | None = None) -> Tensor:
        return self.head(h)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())
