"""Populations of small models trained together: N models of one architecture in one pass.

:func:`fit_population` trains the models that N recipes describe (equal but for their seeds)
on one dataset at once, with ``torch.func``: the N models' parameters are stacked
(:func:`torch.func.stack_module_state`, shape ``[N, *p.shape]`` per parameter), one forward and
backward pass of :func:`torch.func.functional_call` under :func:`torch.vmap` serves every model,
and one optimiser steps every stacked tensor. Each model keeps its own recipe: its own init
(``recipe.model.seed``) and its own batch order (``generator(recipe.train.seed, key)``, the
stream :func:`obliviate.training.fit` draws from), with the same optimiser (SGD with momentum
and weight decay, or Adam), learning rate, epochs and batch size. SGD and Adam are elementwise,
so stepping the stacked tensors is stepping each model; the loss summed over the models has
each model's own mean cross-entropy as the gradient of its slice.

The result equals training the models one by one with :func:`obliviate.training.fit` **within
float tolerance, not bitwise**: a batched matrix product rounds differently from N single
ones, and Adam's normalised steps would carry such last-bit differences along. Measured on
torch 2.13 CPU the weights were in fact identical (32 digits MLPs, 5 and 30 epochs of Adam:
largest difference 0.0, ``benchmarks/population.py``); ``tests/test_population.py`` asserts
1e-5, the stated tolerance. Speed: 4.8x one-by-one training for those 32 MLPs on one thread
(``benchmarks/population.py --n-epochs 5``, median of 3, machine loaded). So it serves where
no bitwise contract applies: forgetting-quality populations (:mod:`obliviate.experiments.forget`),
seed sweeps and their retrain oracles. The sharded engine never uses it (its exactness must not
depend on how many shards train together), nor does any cache keyed on a recipe.

Models that draw randomness or keep running state while training (Dropout, BatchNorm, any
module with buffers), custom losses and multi-head models are not vectorised:
:func:`fit_population` trains them one by one with ``fit`` (``fallback=True``, the default) or
raises :class:`~obliviate.errors.ObliviateError` naming the reason (``fallback=False``);
:func:`vectorisable` tells which applies.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from obliviate._rng import generator
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.models.base import Model
from obliviate.training import Recipe, batches, make_optimizer, train_mode

_STATEFUL = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase, nn.AlphaDropout)


def vectorisable(model: nn.Module) -> str | None:
    """``None`` when :func:`fit_population` can train copies of ``model`` together; otherwise
    the reason it cannot (a one-line string): a module drawing randomness while training
    (Dropout), one keeping running statistics (BatchNorm), any buffer, or a multi-head model."""
    for name, m in model.named_modules():
        if isinstance(m, _STATEFUL):
            return f"it has a {type(m).__name__} layer ({name or 'the model'})"
    for name, _ in model.named_buffers():
        return f"it has a buffer ({name})"
    if isinstance(model, Model) and hasattr(model, "heads"):
        return "it is a multi-head model"
    return None


def _same_but_seeds(recipes: Sequence[Recipe]) -> None:
    if not recipes:
        raise ObliviateError("fit_population needs at least one recipe; pass a list of recipes")
    first = recipes[0]
    for i, r in enumerate(recipes):
        if not isinstance(r, Recipe):
            raise ObliviateError(
                f"recipes[{i}] is a {type(r).__name__}, not a Recipe; train a user's model "
                "(FactoryRecipe) one by one with recipe.fit"
            )
        if replace(r.model, seed=0) != replace(first.model, seed=0) or replace(
            r.train, seed=0
        ) != replace(first.train, seed=0):
            raise ObliviateError(
                f"recipes[{i}] differs from recipes[0] in more than its seeds; a population "
                "shares one architecture and one training recipe (only model.seed and "
                "train.seed may differ)"
            )


def fit_population(
    recipes: Sequence[Recipe],
    data: Dataset,
    n_classes: int | None = None,
    *,
    key: object = "fit",
    fallback: bool = True,
) -> list[nn.Module]:
    """Train ``recipes[i].build(...)`` on ``data`` by ``recipes[i].train`` for every i, together.

    ``recipes``: N :class:`~obliviate.training.Recipe` equal but for ``model.seed`` and
    ``train.seed``; ``data``: the training rows (single-task: ``data.task`` is ignored only by
    models that ignore it); ``n_classes``: output width (default ``data.n_classes``); ``key``:
    the data-order key, as in :func:`obliviate.training.fit` (``Recipe.fit`` uses ``"fit"``).

    Returns N models in eval mode, model i equal within float tolerance to
    ``recipes[i].fit(data, n_classes, key=key)`` (see the module docstring). Models that cannot
    be vectorised (:func:`vectorisable`) are trained one by one with ``Recipe.fit`` (bitwise
    equal to it) when ``fallback`` is true; otherwise :class:`ObliviateError` is raised.
    Raises :class:`ObliviateError` when the recipes differ in more than their seeds.
    """
    _same_but_seeds(recipes)
    n_classes = data.n_classes if n_classes is None else n_classes
    models = [r.build(data.sample_shape, n_classes) for r in recipes]
    why = vectorisable(models[0])
    if why is not None or data.task is not None:
        why = why or "the data has task ids"
        if not fallback:
            raise ObliviateError(
                f"cannot train this population together: {why}; pass fallback=True to train "
                "the models one by one"
            )
        return [r.fit(data, n_classes, key=key) for r in recipes]
    config = recipes[0].train
    for m in models:
        train_mode(m)
    params, _ = stack_module_state(models)  # name -> [N, *shape] leaf tensors
    base = copy.deepcopy(models[0]).to("meta")

    def one_loss(p: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(functional_call(base, p, (x,)), y)

    losses = vmap(one_loss)
    stacked = list(params.values())
    opt = make_optimizer(stacked, config)
    gens = [generator(r.train.seed, key) for r in recipes]
    for _ in range(config.n_epochs):
        streams = [batches(data, config.batch_size, g) for g in gens]
        for group in zip(*streams, strict=True):
            x = torch.stack([b.x for b in group])
            y = torch.stack([b.y for b in group])
            opt.zero_grad(set_to_none=True)
            losses(params, x, y).sum().backward()
            opt.step()
    with torch.no_grad():
        for i, m in enumerate(models):
            for name, p in m.named_parameters():
                p.copy_(params[name][i])
    return [m.eval() for m in models]


__all__ = ["fit_population", "vectorisable"]
