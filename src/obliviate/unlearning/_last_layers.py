"""The "last k layers" of any model, and training only those (shared by CF-k and EU-k).

A *layer* here is a parameterised module: one that owns parameters directly
(``module.parameters(recurse=False)`` is not empty), e.g. ``nn.Linear``, ``nn.Conv2d``,
``nn.BatchNorm2d``. The last ``k`` layers are the last ``k`` such modules in the order the
forward pass runs them (traced once on example rows; for a sequential network this is the
registration order ``model.named_modules()``, for a user model that registers its classifier
first it is not).
Activations, pooling and dropout own no parameters and are not layers.

Also here: :func:`global_rng_from`, which makes layers that draw from torch's global generator
(dropout) draw from a seed, so that a user model with dropout unlearns to the same bits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from obliviate._rng import generator, seed_global
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.models.base import logits
from obliviate.training import (
    TrainConfig,
    batches,
    global_rng_from,
    make_optimizer,
    min_batch_rows,
    train_mode,
)


def parameterised_layers(
    model: nn.Module, example: torch.Tensor | None = None
) -> list[tuple[str, nn.Module]]:
    """Every module of ``model`` that owns parameters directly, in registration order; with
    ``example`` rows, in the order of the forward pass instead: one traced forward on the first
    two rows (eval mode, no gradient, each submodule's mode restored) records when each layer
    first runs; layers the forward never calls come first, in registration order. So a user
    model that registers its classifier before its hidden layers still ends with its
    classifier."""
    layers = [
        (name, m)
        for name, m in model.named_modules()
        if next(m.parameters(recurse=False), None) is not None
    ]
    if example is None or example.shape[0] == 0:
        return layers
    order: dict[int, int] = {}

    def hook(m: nn.Module, _args: object, _out: object) -> None:
        order.setdefault(id(m), len(order))

    handles = [m.register_forward_hook(hook) for _, m in layers]
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            logits(model, example[:2])
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    ranked = sorted(enumerate(layers), key=lambda il: (order.get(id(il[1][1]), -1), il[0]))
    return [layer for _, layer in ranked]


def last_layers(
    model: nn.Module, k: int, owner: str, example: torch.Tensor | None = None
) -> list[tuple[str, nn.Module]]:
    """The last ``k`` parameterised layers of ``model`` (see the module docstring; in forward
    order when ``example`` rows are given, :func:`parameterised_layers`).

    Raises :class:`ObliviateError` when the model has fewer than ``k`` such layers.
    """
    layers = parameterised_layers(model, example)
    if k > len(layers):
        names = ", ".join(name or "<root>" for name, _ in layers)
        raise ObliviateError(
            f"{owner}: k={k} exceeds the {len(layers)} parameterised layer(s) of "
            f"{type(model).__name__} ({names}); choose k <= {len(layers)}"
        )
    return layers[len(layers) - k :]


def reinitialise(layers: list[tuple[str, nn.Module]], seed: int, owner: str) -> None:
    """Re-draw the parameters (and reset the buffers) of ``layers`` by their own
    ``reset_parameters``, from ``seed`` only; the global RNG is left as it was."""
    missing = [name for name, m in layers if not hasattr(m, "reset_parameters")]
    if missing:
        raise ObliviateError(
            f"{owner}: layer(s) {', '.join(missing)} have no reset_parameters() to "
            "re-initialise them; give them one or choose a smaller k"
        )
    g = generator(seed, "last-layers-init")
    with torch.random.fork_rng(devices=[]):
        seed_global(int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)))
        for _, m in layers:
            m.reset_parameters()  # type: ignore[operator]


def train_layers(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    data: Dataset,
    config: TrainConfig,
    key: object,
) -> int:
    """Minimise cross-entropy on ``data`` over the parameters of ``layers`` only, in place.

    Every other parameter and buffer stays bitwise as it was: the other parameters get no
    gradient, and the other modules that hold buffers (batch norm) run in eval mode, so their
    running statistics are not updated. Dropout elsewhere stays active. Returns the step count.
    """
    chosen = {id(m) for _, m in layers}
    params = [p for _, m in layers for p in m.parameters(recurse=False)]
    chosen_params = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in chosen_params)
    opt = make_optimizer(params, config)
    gen = generator(config.seed, key)
    steps = 0
    try:
        train_mode(model)
        for m in model.modules():
            if id(m) not in chosen and next(m.buffers(recurse=False), None) is not None:
                m.eval()
        min_rows = min_batch_rows(model)  # a trained BatchNorm never sees one row
        for _ in range(config.n_epochs):
            for b in batches(data, config.batch_size, gen, min_rows=min_rows):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(logits(model, b.x, b.task), b.y).backward()
                opt.step()
                steps += 1
    finally:
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
    return steps


__all__ = ["global_rng_from", "last_layers", "parameterised_layers", "reinitialise", "train_layers"]


#: The schedule hyperparameters CF-k and EU-k share (constructor names = TrainConfig fields).
SCHEDULE = ("n_epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay", "seed")


def tune_last_layers(
    model: nn.Module,
    retain: Dataset,
    params: dict[str, object],
    *,
    owner: str,
    key: str,
    reinit: bool,
) -> nn.Module:
    """CF-k (``reinit=False``) and EU-k (``reinit=True``), Goel et al. (2022): train the last
    ``params["k"]`` parameterised layers of ``model`` on ``retain`` with the schedule in
    ``params`` (the unlearner's ``get_params()``), after re-initialising them for EU-k; every
    other layer stays bitwise unchanged. In place; returns ``model``."""
    layers = last_layers(model, int(params["k"]), owner, retain.x)  # type: ignore[call-overload]
    config = TrainConfig(**{name: params[name] for name in SCHEDULE})  # type: ignore[arg-type]
    if reinit:
        reinitialise(layers, config.seed, owner)
    if len(retain):
        train_layers(model, layers, retain, config, key=key)
    return model
