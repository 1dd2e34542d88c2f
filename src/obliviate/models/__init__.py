"""Models (plain ``torch.nn``) and the spec that builds them reproducibly."""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral

from obliviate._validation import check_choice
from obliviate.errors import ObliviateError
from obliviate.models.base import Model, logits, seeded_init
from obliviate.models.cnn import CNN
from obliviate.models.mlp import MLP
from obliviate.models.multihead import MultiHead

MODELS = ("mlp", "cnn")


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model: architecture name, widths and the init seed."""

    name: str = "mlp"
    hidden: tuple[int, ...] = (100,)
    seed: int = 0
    channels: tuple[int, int] = field(default=(16, 32))

    def __post_init__(self) -> None:
        check_choice("model", self.name, MODELS)
        bad = [
            w for w in (*self.hidden, *self.channels) if not (isinstance(w, Integral) and w >= 1)
        ]
        if bad:
            raise ObliviateError(
                f"layer widths must be whole numbers >= 1, got {bad[0]!r} (hidden "
                f"{tuple(self.hidden)}, channels {tuple(self.channels)})"
            )


def build_model(
    spec: ModelSpec,
    sample_shape: tuple[int, ...],
    n_classes: int,
    task_classes: tuple[tuple[int, ...], ...] | None = None,
) -> Model:
    """Build the model ``spec`` describes; same spec and shapes -> bitwise the same weights.

    With ``task_classes`` the model is a :class:`MultiHead` over the spec's trunk.
    """
    with seeded_init(spec.seed):
        if spec.name == "mlp":
            n_in = 1
            for s in sample_shape:
                n_in *= s
            trunk: Model = MLP(n_in, n_classes, spec.hidden)
        else:
            hidden = spec.hidden[0] if spec.hidden else 64
            trunk = CNN(sample_shape, n_classes, spec.channels, hidden)
        if task_classes is not None:
            return MultiHead(trunk, task_classes)
        return trunk


def model_for_stream(spec: ModelSpec, stream) -> Model:  # type: ignore[no-untyped-def]
    """The model a stream calls for: multi-head on task-aware streams, single-head otherwise."""
    return build_model(
        spec,
        stream.sample_shape,
        stream.n_classes,
        stream.task_classes if stream.task_aware else None,
    )


__all__ = [
    "CNN",
    "MLP",
    "MODELS",
    "Model",
    "ModelSpec",
    "MultiHead",
    "build_model",
    "logits",
    "model_for_stream",
]
