"""Find a classifier's output layer, on obliviate's models and on a user's plain ``nn.Module``.

Unlearners that edit the output layer (Boundary Expand's shadow neuron, Fisher forgetting's
class rows) share :func:`output_layer`; a model without a recognisable output layer is refused
with one clear :class:`~obliviate.errors.ObliviateError`.
"""

from __future__ import annotations

from torch import Tensor, nn

from obliviate.errors import ObliviateError
from obliviate.models.output_layer import find_output_layer

REQUIREMENT = "a final nn.Linear layer with one output per class whose output is the logits"
"""What a method that uses :func:`output_layer` needs of the model, in words (for listings)."""


def output_layer(model: nn.Module, n_classes: int, owner: str, example: Tensor) -> nn.Linear:
    """The ``nn.Linear`` that *produces* the logits, found by tracing one forward pass.

    Every ``nn.Linear`` submodule gets a forward hook; ``model`` runs once on the first two
    ``example`` rows (eval mode, no gradient, every submodule's own mode restored, so BatchNorm
    statistics are untouched); the layer whose output tensor is the very tensor ``forward``
    returns is the output layer (:func:`obliviate.models.output_layer.find_output_layer`). So
    the answer does not depend on the order in which the user registered submodules (a model
    that defines its classifier before its hidden layers gets the classifier, not the last
    ``nn.Linear`` registered). It is ``model.head`` for obliviate's single-head MLP and CNN.

    ``example``: input rows ``[B, ...]`` (``B >= 1``). Raises :class:`ObliviateError` (naming
    ``owner``) when the logits are not an ``nn.Linear``'s output (a multi-head model whose heads
    each cover a few classes, logits post-processed after the last layer, a final convolution)
    or when that layer does not have ``n_classes`` outputs.
    """
    _, layer = find_output_layer(model, example, owner=owner)
    if layer.out_features != n_classes:
        raise ObliviateError(
            f"{owner} needs {REQUIREMENT}; {type(model).__name__}'s logits come from an nn.Linear "
            f"with {layer.out_features} outputs, not {n_classes} (one per class). Use a model "
            "whose logits come from such a layer, or another method"
        )
    return layer


__all__ = ["REQUIREMENT", "output_layer"]
