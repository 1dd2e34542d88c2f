"""The store's training: create a store on disk, train every shard, plan and run shard jobs,
remove superseded checkpoint files.

Functions take the open :class:`~obliviate.sharded.sisa.ShardedStore`; the class's methods are
the public entry points.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from obliviate.data.datasets import Standardization, loader_standardization
from obliviate.errors import ObliviateError
from obliviate.models import build_model
from obliviate.sharded.backends import run_jobs
from obliviate.sharded.config import (
    DataSpec,
    ShardConfig,
    assign,
    check_fits,
    config_hash,
    load_data,
    shard_model_spec,
    slices_of,
)
from obliviate.sharded.jobs import ShardJob, run_shard_job
from obliviate.sharded.ledger import Ledger, ids_hash
from obliviate.sharded.store import (
    CHECKPOINT_DIR,
    LEDGER_FILE,
    _fsync_dir,
    failpoint,
)

if TYPE_CHECKING:  # annotations only; sisa imports this module
    from obliviate.sharded.sisa import ShardedStore


def is_store(path: Path) -> bool:
    return (path / LEDGER_FILE).is_file()


def create_store(
    path: Path,
    *,
    data: DataSpec,
    config: ShardConfig,
    exclude_ids: np.ndarray | list[int] | None,
) -> None:
    """Write a new store's ledger at ``path`` (state "training"; no shard trained yet).

    The ledger is built under a temporary name and renamed into place once complete, so the
    folder is a store only when the whole ledger is durable.
    """
    if is_store(path):
        raise ObliviateError(
            f"{str(path)!r} is already a shard store; choose a new folder (or delete it first)"
        )
    leftovers = {CHECKPOINT_DIR, ".lock", "ledger.tmp", "ledger.tmp-wal", "ledger.tmp-shm"}
    if path.exists() and (
        not path.is_dir() or any(p.name not in leftovers for p in path.iterdir())
    ):
        raise ObliviateError(
            f"{str(path)!r} exists and is not an empty folder; choose a new folder for the store"
        )
    for name in ("ledger.tmp", "ledger.tmp-wal", "ledger.tmp-shm"):  # an interrupted creation
        (path / name).unlink(missing_ok=True)
    train, _, fingerprint = load_data(data)
    ids = train.ids.numpy()
    excluded = np.unique(np.asarray([] if exclude_ids is None else exclude_ids, dtype=np.int64))
    if excluded.size:
        train.positions(excluded)  # unknown ids raise, naming them
        ids = ids[~np.isin(ids, excluded)]
    if ids.size == 0:
        raise ObliviateError("no training samples left to train the store on")
    ids = np.sort(ids)
    check_fits(ids.size, config.n_shards, config.n_slices, repr(data.dataset))
    # the recipe's model must be buildable for these rows (e.g. a CNN on 1-D rows, or a layer
    # of width 0, is refused here, before the folder becomes a store that cannot be trained)
    try:
        with torch.device("cpu"):  # as the shard jobs build it: initial weights on the CPU
            build_model(
                shard_model_spec(config.recipe.model, 0), train.sample_shape, train.n_classes
            )
    except ObliviateError:
        raise
    except Exception as exc:  # torch's own message, in one line
        raise ObliviateError(
            f"model {config.recipe.model.name!r} cannot be built for rows of shape "
            f"{list(train.sample_shape)}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None
    shard, slice_ = assign(ids, config.n_shards, config.n_slices, config.seed)
    (path / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    _fsync_dir(path)  # the checkpoints folder's entry is durable before files go in it
    ledger = Ledger.create(path / "ledger.tmp")
    with ledger.transaction():
        ledger.set_meta("config", config.to_dict())
        ledger.set_meta("data", asdict(data))
        ledger.set_meta("data_sha256", fingerprint)
        ledger.set_meta("n_classes", int(train.n_classes))
        ledger.set_meta("sample_shape", list(train.sample_shape))
        # the store owns its preprocessing: raw rows given to predict() get exactly this
        ledger.set_meta(
            "preprocessing", {"kind": "standardize", **data_standardization(data).to_dict()}
        )
        ledger.set_meta("excluded", {"n_ids": int(excluded.size), "ids_sha256": ids_hash(excluded)})
        ledger.set_meta("state", "training")
        ledger.set_meta("version", 0)
        ledger.add_samples(ids, shard, slice_)
        ledger.append_event(
            "store_created",
            {
                "config_sha256": config_hash(config),
                "data_sha256": fingerprint,
                "n_samples": int(ids.size),
                "samples_sha256": ids_hash(ids),
                "excluded_sha256": ids_hash(excluded),
            },
        )
    ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ledger.close()
    os.replace(path / "ledger.tmp", path / LEDGER_FILE)  # the store exists once complete
    _fsync_dir(path)  # ...and survives a power loss once train() returns


# ---- preprocessing ---------------------------------------------------------------------------
def data_standardization(spec: DataSpec) -> Standardization:
    """The loader's standardisation of ``spec``'s source (what :func:`load_data` applies)."""
    return loader_standardization(
        spec.dataset, data_dir=spec.data_dir, split_seed=spec.split_seed, limit=spec.limit
    )


def store_standardization(store: ShardedStore) -> Standardization:
    """The standardisation the store's shards were trained behind: saved in the ledger at
    creation (meta ``preprocessing``), or for a store made before it was saved, refitted from
    the store's data source (the same values: the fit is deterministic)."""
    saved = store.ledger.get_meta("preprocessing")
    if saved is None:
        return data_standardization(store.data_spec)
    return Standardization.from_dict(saved)


# ---- plans and jobs --------------------------------------------------------------------------
def shard_job(
    store: ShardedStore,
    samples: np.ndarray,
    shard: int,
    start: int,
    current: dict[tuple[int, int], dict[str, Any]],
    persist: bool = True,
) -> ShardJob:
    """The job re-running stages ``start..`` of ``shard`` on the (id, shard, slice) ``samples``."""
    base = None if start == 0 else current[(shard, start - 1)]["sha256"]
    return ShardJob(
        store=str(store.path),
        data=store.data_spec,
        data_sha=store.ledger.get_meta("data_sha256"),
        recipe=store.config.recipe,
        shard=shard,
        start=start,
        base=base,
        slices=slices_of(samples, store.hoods[shard], store.config.n_slices),
        n_classes=store.n_classes,
        sample_shape=store.sample_shape,
        persist=persist,
        device=store.device,
        precision=store.precision,
    )


def run(store: ShardedStore, jobs: list[ShardJob]) -> list[list[dict[str, Any]]]:
    """Run ``jobs`` on the store's backend, results in job order."""
    return run_jobs(run_shard_job, jobs, store.backend, store.n_workers)


# ---- training and recovery -------------------------------------------------------------------
def train_all(store: ShardedStore) -> None:
    """Train every shard from its initial weights and record the checkpoints (version 0)."""
    ledger = store.ledger
    samples = ledger.samples(("active", "pending"))
    jobs = [shard_job(store, samples, k, 0, {}) for k in range(store.config.n_shards)]
    t0 = time.perf_counter()
    results = [row for rows in run(store, jobs) for row in rows]
    seconds = time.perf_counter() - t0
    failpoint("before_commit")
    with ledger.transaction():
        ledger.put_checkpoints(0, results)
        ledger.set_meta("state", "ready")
        ledger.set_meta("train_run_seconds", seconds)
        ledger.append_event(
            "trained",
            {
                "version": 0,
                "checkpoints": {f"{r['shard']}/{r['slice']}": r["sha256"] for r in results},
            },
        )


def collect_garbage(store: ShardedStore) -> None:
    """Delete checkpoint files no live checkpoint names."""
    keep = store.ledger.current_hashes()
    folder = store.path / CHECKPOINT_DIR
    with os.scandir(folder) as entries:  # a plain listing: cheaper than Path.glob per request
        stale = [e.name for e in entries if e.name.endswith(".pt") and e.name[:-3] not in keep]
    for name in stale:
        (folder / name).unlink(missing_ok=True)
