"""One shard's training stages: the unit of work every backend runs (a picklable
:class:`ShardJob` and the pure function :func:`run_shard_job` of it)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from obliviate._rng import generator
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.models import build_model
from obliviate.models.base import logits
from obliviate.sharded.config import DataSpec, load_data, shard_model_spec
from obliviate.sharded.ledger import ids_hash
from obliviate.sharded.store import (
    CheckpointBatch,
    read_checkpoint,
    serialize_state,
    sha256_bytes,
)
from obliviate.training import (
    Recipe,
    Stepper,
    TrainConfig,
    batches,
    data_to,
    make_optimizer,
    model_device,
    precision,
    train_mode,
)


@dataclass(frozen=True, eq=False)
class ShardJob:
    """Re-run stages ``start..R-1`` of one shard from checkpoint ``base`` (None: initial weights).

    ``slices[r]`` holds the sorted ids of the remaining samples of slice ``r`` over the shard's
    neighbourhood. ``persist=False`` computes checkpoint hashes without writing files.
    """

    store: str
    data: DataSpec
    data_sha: str
    recipe: Recipe
    shard: int
    start: int
    base: str | None
    slices: tuple[np.ndarray, ...]
    n_classes: int
    sample_shape: tuple[int, ...]
    persist: bool = True
    device: str = "cpu"
    """Where the shard trains (``cpu``, ``cuda``, ``cuda:N``, ``mps``); checkpoints are saved
    from the CPU (device-independent) and loaded with ``map_location="cpu"``."""
    precision: str = "fp32"
    """:data:`~obliviate.training.PRECISIONS`; fp32 gives the same bits as before."""


def train_stage(
    model: nn.Module, data: Dataset, n_samples: int, config: TrainConfig, gen: torch.Generator
) -> None:
    """Train ``model`` in place on ``n_samples`` samples drawn epoch by epoch from ``data``, on
    the model's device (``data`` moved there once) at the current precision."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, config)
    stepper = Stepper(opt, model_device(model))
    data = data_to(data, stepper.device)
    train_mode(model)
    left = n_samples
    while left > 0 and len(data) > 0:
        for batch in batches(data, config.batch_size, gen):
            if left <= 0:
                break
            x, y, task = (
                batch.x[:left],
                batch.y[:left],
                None if batch.task is None else batch.task[:left],
            )
            opt.zero_grad(set_to_none=True)
            with stepper.autocast():
                loss = nn.functional.cross_entropy(logits(model, x, task), y)
            stepper.backward(loss)
            stepper.step()
            left -= int(y.shape[0])
    model.eval()


def run_shard_job(job: ShardJob) -> list[dict[str, Any]]:
    """Run one job; return per stage: slice, sha256, ids_hash, n_ids, seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train, _, sha = load_data(job.data)
        if sha != job.data_sha:
            raise ObliviateError(
                f"the training data of dataset {job.data.dataset!r} changed since the store was "
                "trained (fingerprint mismatch); point --data-dir at the original data"
            )
        with torch.device("cpu"):  # the initial weights drawn on the CPU: the same everywhere
            model = build_model(
                shard_model_spec(job.recipe.model, job.shard), job.sample_shape, job.n_classes
            )
        store = Path(job.store)
        if job.base is not None:
            model.load_state_dict(read_checkpoint(store, job.base))  # read onto the CPU
        model.to(job.device)
        train = data_to(train, job.device)  # the rows move to the device once
        out = []
        batch = CheckpointBatch(store)
        cfg = job.recipe.train
        all_ids = np.sort(np.concatenate(job.slices))
        all_pos = train.positions(all_ids).cpu().numpy()  # one lookup for every stage
        for r in range(job.start, len(job.slices)):
            t0 = time.perf_counter()
            ids = np.sort(np.concatenate(job.slices[: r + 1]))
            data = train.subset(all_pos[np.searchsorted(all_ids, ids)])  # rows in id order
            gen = generator(cfg.seed, "sisa-stage", job.shard, r)
            with precision(job.precision):
                train_stage(model, data, cfg.n_epochs * len(job.slices[r]), cfg, gen)
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}  # device-free
            last = r == len(job.slices) - 1  # the shard's final model: the receipt scores it
            digest = (
                batch.add(state, keep=last) if job.persist else sha256_bytes(serialize_state(state))
            )
            out.append(
                {
                    "shard": job.shard,
                    "slice": r,
                    "sha256": digest,
                    "ids_hash": ids_hash(ids),
                    "n_ids": int(ids.size),
                    "seconds": time.perf_counter() - t0,
                }
            )
        if job.persist and out:
            # every stage's file durable and in place (concurrent fsyncs, one folder fsync)
            # before the ledger refers to them
            batch.commit()
        return out
    finally:
        torch.set_num_threads(threads)
