"""Small functions every unlearner shares: copy a model, run optimisation steps, losses.

Unlearners share code through these functions, not through base classes. The step routines batch
and optimise through :func:`obliviate.training.batches` and :func:`obliviate.training.make_optimizer`,
so a seed and a key give the same data order (and bits) everywhere.

Typical ``_unlearn`` (the base class has already checked the request, handled the empty one and
handed over a private copy of the model)::

    def _unlearn(self, model, request):
        out = trainable(model)                 # every parameter trainable, eval mode
        run_steps(out, request.retain, cross_entropy, n_epochs=..., batch_size=..., lr=...,
                  seed=self.seed, key="finetune")
        return out
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from obliviate._rng import generator, seed_global
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.training import (
    Batch,
    Stepper,
    TrainConfig,
    batches,
    cross_entropy,
    data_to,
    global_rng_from,
    make_optimizer,
    min_batch_rows,
    model_device,
    predict_logits,
    train_mode,
)

BatchLoss = Callable[[nn.Module, Batch], Tensor]
PairLoss = Callable[[nn.Module, Batch, Batch], Tensor]


# ---- models --------------------------------------------------------------------------------
def trainable(model: nn.Module) -> nn.Module:
    """``model`` itself (in place) in eval mode, ready for an unlearner's updates.

    Parameters the user froze (``requires_grad=False``: a pretrained backbone, an embedding)
    stay frozen: the unlearner changes only what the model's owner lets an optimiser change, as
    :func:`obliviate.training.fit` (and so the retrain oracle) does. obliviate's own models train
    every parameter, so for them this is every parameter.

    Raises:
        ObliviateError: no parameter of ``model`` requires a gradient.
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise ObliviateError(
            f"the {type(model).__name__} model has no trainable parameter (requires_grad is False "
            "everywhere); unfreeze the parameters unlearning may change, e.g. "
            "model.requires_grad_(True)"
        )
    model.eval()
    return model


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` (weights, buffers, which parameters are frozen), in eval mode,
    sharing no storage (see :func:`trainable`)."""
    return trainable(copy.deepcopy(model))


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with gradients off: a fixed teacher or anchor."""
    out = copy.deepcopy(model)
    for p in out.parameters():
        p.requires_grad_(False)
    out.eval()
    return out


def fresh_like(model: nn.Module, seed: int, key: object = "fresh") -> nn.Module:
    """A copy of ``model``'s architecture with every layer re-initialised from ``seed`` (and ``key``).

    Used for "incompetent" randomly initialised teachers; the input model is untouched.
    """
    out = copy.deepcopy(model)
    g = generator(seed, "fresh-init", key)
    with torch.random.fork_rng(devices=[]):
        seed_global(int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)))
        for m in out.modules():
            if m is not out and hasattr(m, "reset_parameters"):
                m.reset_parameters()  # type: ignore[operator]
    out.eval()
    return out


# ---- losses --------------------------------------------------------------------------------


def kl_to_teacher(
    student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0
) -> Tensor:
    """``KL(teacher || student)`` of the temperature-softened outputs, batch mean, times ``T**2``
    (Hinton et al., 2015)."""
    t = float(temperature)
    log_s = F.log_softmax(student_logits / t, dim=1)
    log_t = F.log_softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_s, log_t, reduction="batchmean", log_target=True) * (t * t)


def soft_cross_entropy(student_logits: Tensor, target_probs: Tensor) -> Tensor:
    """Cross-entropy against soft targets ``target_probs`` (rows sum to 1), batch mean."""
    return -(target_probs * F.log_softmax(student_logits, dim=1)).sum(dim=1).mean()


# ---- optimisation --------------------------------------------------------------------------
def _config(
    n_epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str,
    momentum: float,
    weight_decay: float,
    seed: int,
) -> TrainConfig:
    return TrainConfig(
        n_epochs=n_epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=seed,
    )


def cycle(
    data: Dataset, batch_size: int, gen: torch.Generator, *, min_rows: int = 1
) -> Iterator[Batch]:
    """Endless minibatches of ``data``: a fresh random order from ``gen`` every pass."""
    if len(data) == 0:
        raise ObliviateError("cannot draw batches from an empty dataset")
    while True:
        yield from batches(data, batch_size, gen, min_rows=min_rows)


def run_steps(
    model: nn.Module,
    data: Dataset,
    loss_fn: BatchLoss,
    *,
    n_epochs: int = 1,
    batch_size: int = 32,
    lr: float = 0.01,
    seed: int = 0,
    key: object = "unlearn",
    optimizer: str = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    params: list[nn.Parameter] | None = None,
    max_steps: int | None = None,
    after_backward: Callable[[nn.Module], None] | None = None,
) -> int:
    """Minimise ``loss_fn(model, batch)`` over ``n_epochs`` passes of ``data``, in place, on the
    model's device (``data`` moved there once) at :func:`~obliviate.training.current_precision`.

    ``params`` restricts the optimised parameters (default: all that require grad);
    ``max_steps`` stops early; ``after_backward(model)`` may edit gradients (masks) before each
    step. Data order comes from ``generator(seed, key)``. Returns the number of steps taken.
    """
    cfg = _config(n_epochs, batch_size, lr, optimizer, momentum, weight_decay, seed)
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    opt = make_optimizer(params, cfg)
    gen = generator(seed, key)
    steps = 0
    device = model_device(model)
    data = data_to(data, device)
    stepper = Stepper(opt, device)
    train_mode(model)
    min_rows = min_batch_rows(model)
    try:
        with global_rng_from(seed, key):  # dropout masks from the seed too
            for _ in range(n_epochs):
                for batch in batches(data, batch_size, gen, min_rows=min_rows):
                    if max_steps is not None and steps >= max_steps:
                        return steps
                    opt.zero_grad(set_to_none=True)
                    with stepper.autocast():
                        loss = loss_fn(model, batch)
                    stepper.backward(loss)
                    if after_backward is not None:
                        after_backward(model)
                    stepper.step()
                    steps += 1
    finally:
        model.eval()
    return steps


def run_paired_steps(
    model: nn.Module,
    main: Dataset,
    other: Dataset,
    loss_fn: PairLoss,
    *,
    n_epochs: int = 1,
    batch_size: int = 32,
    other_batch_size: int | None = None,
    lr: float = 0.01,
    seed: int = 0,
    key: object = "unlearn",
    optimizer: str = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    params: list[nn.Parameter] | None = None,
    max_steps: int | None = None,
    after_backward: Callable[[nn.Module], None] | None = None,
) -> int:
    """Minimise ``loss_fn(model, main_batch, other_batch)``: ``n_epochs`` passes over ``main``,
    each step paired with the next batch of ``other`` (cycled endlessly, its own seeded order).

    E.g. NegGrad+: ``main`` = retain, ``other`` = forget. Returns the number of steps taken.
    """
    cfg = _config(n_epochs, batch_size, lr, optimizer, momentum, weight_decay, seed)
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    opt = make_optimizer(params, cfg)
    gen = generator(seed, key, "main")
    steps = 0
    device = model_device(model)
    main, other = data_to(main, device), data_to(other, device)
    stepper = Stepper(opt, device)
    train_mode(model)
    min_rows = min_batch_rows(model)
    other_it = cycle(
        other, other_batch_size or batch_size, generator(seed, key, "other"), min_rows=min_rows
    )
    try:
        with global_rng_from(seed, key):  # dropout masks from the seed too
            for _ in range(n_epochs):
                for batch in batches(main, batch_size, gen, min_rows=min_rows):
                    if max_steps is not None and steps >= max_steps:
                        return steps
                    opt.zero_grad(set_to_none=True)
                    with stepper.autocast():
                        loss = loss_fn(model, batch, next(other_it))
                    stepper.backward(loss)
                    if after_backward is not None:
                        after_backward(model)
                    stepper.step()
                    steps += 1
    finally:
        model.eval()
    return steps


@torch.no_grad()
def predict_probs(model: nn.Module, data: Dataset) -> Tensor:
    """Softmax outputs ``[N, n_classes]`` in eval mode (mode restored)."""
    return F.softmax(predict_logits(model, data), dim=1)


__all__ = [
    "clone_model",
    "cross_entropy",
    "cycle",
    "fresh_like",
    "frozen_copy",
    "kl_to_teacher",
    "predict_probs",
    "run_paired_steps",
    "run_steps",
    "soft_cross_entropy",
    "trainable",
]
