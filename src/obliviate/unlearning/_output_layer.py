"""Find a classifier's output layer, on obliviate's models and on a user's plain ``nn.Module``.

Unlearners that edit the output layer (Boundary Expand's shadow neuron, Fisher forgetting's
class rows) share :func:`output_layer`; a model without a recognisable output layer is refused
with one clear :class:`~obliviate.errors.ObliviateError`.
"""

from __future__ import annotations

from torch import nn

from obliviate.errors import ObliviateError

REQUIREMENT = "a final nn.Linear layer with one output per class (its logits)"
"""What a method that uses :func:`output_layer` needs of the model, in words (for listings)."""


def output_layer(model: nn.Module, n_classes: int, owner: str) -> nn.Linear:
    """The layer that produces the logits: the *last* ``nn.Linear`` (in ``model.modules()``
    order) with ``out_features == n_classes``.

    This is ``model.head`` for obliviate's single-head MLP and CNN, and the last layer of a user's
    ``nn.Sequential(..., nn.Linear(d, n_classes))``. Raises :class:`ObliviateError` (naming
    ``owner``) when the model has no such layer, e.g. a multi-head model whose heads each cover a
    few classes, or a model ending in a convolution.
    """
    found = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == n_classes]
    if not found:
        raise ObliviateError(
            f"{owner} needs {REQUIREMENT}; {type(model).__name__} has no nn.Linear with "
            f"{n_classes} outputs. Use a model whose logits come from such a layer, or another method"
        )
    return found[-1]


__all__ = ["REQUIREMENT", "output_layer"]
