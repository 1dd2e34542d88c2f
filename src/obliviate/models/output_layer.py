"""A user's plain ``nn.Module`` seen as an obliviate :class:`~obliviate.models.base.Model`.

Methods that work on the penultimate representation (iCaRL's herding and nearest-mean rule,
LUCIR's cosine head, CoPE's prototypes, SLDA / REMIND / L2P's frozen encoder, SCAR's and
UPCORE's feature geometry, Newton's last-layer certificate) need three things obliviate's own
models expose: ``features(x)`` (the input of the output layer), ``classify(h)`` (the output
layer) and ``head_parameters()``. A user's model whose ``forward`` takes ``x`` only offers none
of them, but most classifiers end in one ``nn.Linear`` whose output *is* the logits. This module
finds that layer by **tracing one forward pass** (:func:`find_output_layer`) and wraps the model
in :class:`OutputLayerView`, whose ``features(x)`` runs the user's forward with a forward
pre-hook on that layer and returns the layer's input.

How the layer is found: every ``nn.Linear`` submodule gets a forward hook, the model runs once on
two example rows (eval mode, no gradient, each submodule's own mode restored afterwards, so
BatchNorm statistics and Dropout masks are untouched), and the layer whose output tensor *is*
(the same object as) the returned logits is the output layer. So ``logits == layer(features)``
holds exactly, whatever the registration order of the submodules, and a model whose output is
post-processed after its last linear layer (scaled, ``log_softmax``, a tuple, a convolution as
the last layer) is refused with one :class:`~obliviate.errors.ObliviateError` instead of being
cut at the wrong place.

The layer's name is cached per model object (weakly; a deep copy is traced again, which costs
one forward pass on two rows).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn

from obliviate.errors import ObliviateError
from obliviate.models.base import Model, logits

__all__ = ["REQUIREMENT", "OutputLayerView", "feature_model", "find_output_layer"]

REQUIREMENT = "its logits must be the output of an nn.Linear layer (found by tracing a forward)"
"""What a method that uses :func:`find_output_layer` needs of a user's model, in words."""

_NAMES: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def find_output_layer(
    model: nn.Module, example: Tensor | None, *, owner: str, task: Tensor | None = None
) -> tuple[str, nn.Linear]:
    """``(name, layer)``: the ``nn.Linear`` submodule whose output is ``model``'s logits.

    ``example``: at least one input row ``[B, ...]`` (the first two are used); it may be ``None``
    once the model object has been traced. For obliviate's single-head models this is
    ``model.head``. Raises :class:`ObliviateError` naming ``owner`` when no ``nn.Linear``'s
    output is returned unchanged by ``forward`` (see the module docstring) or when the model
    has not been traced and no example is given.
    """
    name = _NAMES.get(model)
    if name is not None:
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            layer = None
        if isinstance(layer, nn.Linear):
            return name, layer
    if example is None or example.shape[0] == 0:
        raise ObliviateError(
            f"{owner}: to find {type(model).__name__}'s output layer, trace it on example rows "
            "first (feature_model(model, x))"
        )
    # (output tensor, layer name): the tensors are kept alive until the comparison, so a freed
    # intermediate's id() cannot be reused by the model's output and match the wrong layer
    produced: list[tuple[Any, str]] = []
    handles = []
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):

            def hook(_m: nn.Module, _args: Any, out: Any, n: str = n) -> None:
                produced.append((out, n))

            handles.append(m.register_forward_hook(hook))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            out = logits(model, example[:2], None if task is None else task[:2])
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    name = (
        next((n for t, n in reversed(produced) if t is out), None)
        if isinstance(out, Tensor)
        else None
    )
    if name is None:
        raise ObliviateError(
            f"{owner} needs a model where {REQUIREMENT}; {type(model).__name__}.forward returns "
            "something else (e.g. logits scaled or log_softmax-ed after the last nn.Linear, a "
            "tuple, or a final convolution). Return the last nn.Linear's output, or use another "
            "method"
        )
    _NAMES[model] = name
    layer = model.get_submodule(name)
    assert isinstance(layer, nn.Linear)
    return name, layer


class OutputLayerView(Model):
    """A user's model cut at its output layer: ``features(x)`` = that layer's input ``[B, d]``,
    ``classify(h)`` = the layer, ``forward(x)`` = the user's forward (exactly its logits).

    The user's module is the submodule ``net`` (so ``state_dict`` keys carry a ``net.`` prefix;
    parameters, buffers and modes are the user's own objects, not copies). ``copy.deepcopy`` of
    the view copies the user's model with its buffers (BatchNorm running statistics included).
    """

    def __init__(self, net: nn.Module, layer_name: str) -> None:
        super().__init__()
        self.net = net
        self.layer_name = layer_name
        layer = self.layer
        self.n_classes = int(layer.out_features)
        self.feature_dim = int(layer.in_features)

    @property
    def layer(self) -> nn.Linear:
        layer = self.net.get_submodule(self.layer_name)
        assert isinstance(layer, nn.Linear)
        return layer

    def features(self, x: Tensor) -> Tensor:
        """The output layer's input ``[B, feature_dim]`` (one forward of the user's model; its
        BatchNorm / Dropout act as the model's current mode says)."""
        box: list[Tensor] = []

        def pre(_m: nn.Module, args: tuple[Any, ...]) -> None:
            box.append(args[0])

        handle = self.layer.register_forward_pre_hook(pre)
        try:
            self.net(x)
        finally:
            handle.remove()
        return box[-1].reshape(x.shape[0], -1)

    def classify(self, h: Tensor, task: Tensor | None = None) -> Tensor:
        return self.layer(h)

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.layer.parameters())

    def forward(self, x: Tensor, task: Tensor | None = None) -> Tensor:
        return logits(self.net, x, task)


def feature_model(
    model: nn.Module, example: Tensor | None = None, *, owner: str = "this method"
) -> Model:
    """``model`` itself when it is an obliviate :class:`Model`, else an :class:`OutputLayerView`
    of it (its output layer found by :func:`find_output_layer` on ``example`` rows).

    Raises :class:`ObliviateError` (naming ``owner``) when the model's logits are not the output
    of an ``nn.Linear``.
    """
    if isinstance(model, Model):
        return model
    if not isinstance(model, nn.Module):
        raise ObliviateError(f"{owner} needs a torch nn.Module; got {type(model).__name__}")
    name, _ = find_output_layer(model, example, owner=owner)
    return OutputLayerView(model, name)
