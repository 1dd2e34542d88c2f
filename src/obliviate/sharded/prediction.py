"""Prediction from a store: load the shard models of a set of checkpoints (cached by content
hash) and aggregate them (mean of softmax, or vote fractions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.models import build_model
from obliviate.models.base import logits
from obliviate.sharded.config import load_data, shard_model_spec
from obliviate.sharded.store import read_checkpoint

if TYPE_CHECKING:  # annotations only; sisa imports this module
    from obliviate.sharded.sisa import ShardedStore

Checkpoints = dict[tuple[int, int], dict[str, Any]]


def shard_models(
    store: ShardedStore, current: Checkpoints, superseded: Checkpoints | None = None
) -> list[nn.Module]:
    """The final-slice model of every non-empty shard among the checkpoints ``current``.

    ``superseded``: checkpoints ``current`` replaces (a deletion's "before"); a shard whose new
    model is not cached takes over the cached module of its superseded one (dropped from the
    cache) and loads the new weights into it, instead of building a module: the same bits
    (``load_state_dict`` overwrites every parameter and buffer of the shard's architecture).
    """
    config = store.config
    cache = store.models_cache
    last = config.n_slices - 1
    models = []
    for k in range(config.n_shards):
        ck = current.get((k, last))
        if ck is None or ck["n_ids"] == 0:
            continue
        key = (k, ck["sha256"])
        if key not in cache:  # content-addressed: a hash names one set of weights
            old = None if superseded is None else superseded.get((k, last))
            model = None if old is None else cache.pop((k, old["sha256"]), None)
            if model is None:
                with torch.device("cpu"):  # prediction runs on the CPU
                    model = build_model(
                        shard_model_spec(config.recipe.model, k),
                        store.sample_shape,
                        store.n_classes,
                    )
            model.load_state_dict(read_checkpoint(store.path, ck["sha256"]))
            model.eval()
            if len(cache) >= 4 * config.n_shards:
                cache.clear()
            cache[key] = model
        models.append(cache[key])
    if not models:
        raise ObliviateError("the store has no trained shard (every shard is empty)")
    return models


@torch.no_grad()
def aggregate(aggregation: str, models: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Class scores ``[N, n_classes]``: mean softmax, or (``"vote"``) vote fractions."""
    outs = [logits(m, x) for m in models]
    if aggregation == "vote":
        votes = torch.stack([o.argmax(dim=1) for o in outs])
        counts = torch.nn.functional.one_hot(votes, outs[0].shape[1]).sum(dim=0).float()
        return counts / len(models)
    return torch.stack([o.softmax(dim=1) for o in outs]).mean(dim=0)


def predict_proba(store: ShardedStore, x: torch.Tensor | np.ndarray) -> torch.Tensor:
    """See :meth:`ShardedStore.predict_proba`."""
    try:
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device="cpu")
    except (TypeError, ValueError) as exc:
        raise ObliviateError(f"input rows must be numbers: {exc}") from None
    shape = store.sample_shape
    if xt.dim() == 0:
        raise ObliviateError("input must be rows [N, ...], got a single number")
    if xt.shape[0] == 0:  # no rows: no scores (reshape(0, -1) cannot infer a width)
        return torch.zeros(0, store.n_classes)
    if tuple(xt.shape[1:]) != shape and xt.reshape(xt.shape[0], -1).shape[1] == int(np.prod(shape)):
        xt = xt.reshape(xt.shape[0], *shape)
    if tuple(xt.shape[1:]) != shape:
        raise ObliviateError(
            f"input rows have shape {tuple(xt.shape[1:])}; this store expects {shape}"
        )
    if not torch.isfinite(xt).all():
        raise ObliviateError("input contains NaN or inf")
    models = shard_models(store, store.ledger.current_checkpoints())
    return aggregate(store.config.aggregation, models, xt)


ShardScores = dict[tuple[int, str], torch.Tensor]


@torch.no_grad()
def shard_scores(
    store: ShardedStore,
    current: Checkpoints,
    data: Dataset | None,
    known: ShardScores | None = None,
    superseded: Checkpoints | None = None,
) -> ShardScores:
    """(shard, checkpoint sha256) -> that shard model's ``[N, n_classes]`` scores on ``data.x`` (softmax,
    or one-hot votes), for the final-slice models of ``current``; scores already in ``known``
    (same checkpoint, same data) are reused, not recomputed (``superseded``: see
    :func:`shard_models`). Empty when ``data`` is None/empty."""
    if data is None or len(data) == 0:
        return {}
    config = store.config
    last = config.n_slices - 1
    keys = [
        (k, ck["sha256"])
        for k in range(config.n_shards)
        if (ck := current.get((k, last))) is not None and ck["n_ids"] > 0
    ]
    models = shard_models(store, current, superseded)  # raises on a store without a shard
    out: ShardScores = {}
    for key, model in zip(keys, models, strict=True):
        if known is not None and key in known:
            out[key] = known[key]
            continue
        o = logits(model, data.x)
        if config.aggregation == "vote":
            out[key] = torch.nn.functional.one_hot(o.argmax(dim=1), o.shape[1]).float()
        else:
            out[key] = o.softmax(dim=1)
    return out


def accuracy_of(store: ShardedStore, scores: ShardScores, data: Dataset | None) -> float | None:
    """Ensemble accuracy from per-shard scores (:func:`shard_scores`); None when no data.
    Equal to :func:`accuracy_with` on the same checkpoints (mean of the shards' softmax, or
    vote fractions, then argmax)."""
    if data is None or len(data) == 0:
        return None
    mean = torch.stack(list(scores.values())).mean(dim=0)
    return float((mean.argmax(dim=1) == data.y).float().mean())


def accuracy_with(store: ShardedStore, current: Checkpoints, data: Dataset | None) -> float | None:
    """Accuracy of the ensemble of checkpoints ``current`` on ``data`` (None when no data)."""
    if data is None or len(data) == 0:
        return None
    models = shard_models(store, current)
    pred = aggregate(store.config.aggregation, models, data.x).argmax(dim=1)
    return float((pred == data.y).float().mean())


def training_rows(store: ShardedStore, ids: np.ndarray) -> Dataset | None:
    """The store's training rows of ``ids`` in id order (None when ``ids`` is empty)."""
    if ids.size == 0:
        return None
    train, _, fingerprint = load_data(store.data_spec)
    if fingerprint != store.ledger.get_meta("data_sha256"):
        raise ObliviateError(
            f"the training data of dataset {store.data_spec.dataset!r} changed since the store was "
            "trained (fingerprint mismatch); point --data-dir at the original data"
        )
    return train.select_ids(np.sort(ids))
