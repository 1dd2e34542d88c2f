"""SISA: exact unlearning by sharded, isolated, sliced and aggregated training (Bourtoule et al.).

The training set is split into ``n_shards`` shards and every shard into ``n_slices`` slices. The
shard and slice of a sample are a seeded function of its id alone (a sha256 of ``(seed, id)``), so
they do not move when other samples are deleted, and a store trained without some ids assigns
the remaining ones exactly as a store that later deletes them. One model per shard trains slice
by slice: stage ``r`` trains on slices ``0..r`` of the shard's neighbourhood (the shard itself
under plain SISA; see :mod:`obliviate.sharded.graph`) and ends with a checkpoint. Prediction
aggregates the shard models: mean of softmax (default) or majority vote.

A deletion finds every shard whose training data held a deleted id and, in each, the first slice
holding one; it restores the checkpoint before that slice (or the seeded initial weights) and
re-runs the later stages without the deleted ids. Unaffected shards are untouched.

Exactness. Stage ``r`` of shard ``k`` is a pure function of (checkpoint ``r-1``, the sorted ids of
the remaining samples of slices ``0..r``, the recipe, ``k`` and ``r``): its data order comes from
``generator(train.seed, "sisa-stage", k, r)`` over the id-sorted rows, it uses a fresh optimiser
(:func:`obliviate.training.make_optimizer`) and :func:`obliviate.training.batches`, and it runs with
one torch thread. So with deterministic CPU kernels, a retrained shard equals, bit for bit, the
shard trained from scratch on its remaining ids: checkpoint files, and their sha256, are equal.

Stage budget. Stage ``r`` processes ``n_epochs * |slice r|`` samples, drawn epoch by epoch from
slices ``0..r`` (the last epoch cut short). Each stage then costs the same, a shard's training
costs ``n_epochs`` passes over its data (as one model trained on that data would), and deleting a
sample from a uniformly drawn slice re-runs on average ``(R+1)/2R`` of a shard's cost: the ideal
speed-up over full retraining is ``S * 2R / (R+1)``.

Notes
-----
- Bourtoule et al. train stage ``r`` for ``e_r`` full epochs over slices ``0..r``; the budget
  above fixes the cost per stage instead (earlier slices are revisited less per stage).
- Shard and slice come from hashing ids rather than a random partition into equal parts, so shard
  sizes are multinomial rather than exactly equal (and stay put under deletion).
- Each shard model has its own initial weights (model seed derived from ``(model.seed, k)``).
- Preprocessing (the loader's standardisation) is fitted once on the source's training split and
  kept fixed; it is part of the data pipeline, not of what is unlearned.
- A shard that has no training data is left out of the aggregate.

Layout: this module holds :class:`ShardedStore`, the public entry point; the work is in
:mod:`~obliviate.sharded.config` (specs, assignment, data), :mod:`~obliviate.sharded.jobs` (one
shard's stages), :mod:`~obliviate.sharded.building` (creation, training, job plans),
:mod:`~obliviate.sharded.deletion` (requests, retraining, receipts),
:mod:`~obliviate.sharded.prediction` and :mod:`~obliviate.sharded.audit` (status, verify).

References
----------
L. Bourtoule, V. Chandrasekaran, C. A. Choquette-Choo, H. Jia, A. Travers, B. Zhang, D. Lie,
N. Papernot. "Machine Unlearning." IEEE S&P 2021.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from obliviate._main_guard import check_main_guard
from obliviate.data.dataset import Dataset, as_id_tensor
from obliviate.data.datasets import Standardization
from obliviate.errors import ObliviateError
from obliviate.parallel import check_backend
from obliviate.sharded import audit, building, deletion, prediction
from obliviate.sharded.config import (
    AGGREGATIONS,
    DataSpec,
    ShardConfig,
    assign,
    config_hash,
    data_fingerprint,
    load_data,
    shard_model_spec,
)
from obliviate.sharded.graph import expected_cost, neighbourhoods
from obliviate.sharded.jobs import ShardJob, run_shard_job, train_stage
from obliviate.sharded.ledger import FORMAT, Ledger, LedgerDamaged, storage_error, storage_failure
from obliviate.sharded.store import (
    LEDGER_FILE,
    checkpoint_memo,
    is_kept,
    remove_temporaries,
    store_lock,
)
from obliviate.training import check_device, check_precision

__all__ = [
    "AGGREGATIONS",
    "DataSpec",
    "ShardConfig",
    "ShardJob",
    "ShardedStore",
    "assign",
    "config_hash",
    "data_fingerprint",
    "load_data",
    "run_shard_job",
    "shard_model_spec",
    "train_stage",
]


class ShardedStore:
    """A trained SISA / shard-graph ensemble on disk, with its ledger.

    Create one with :meth:`train`; open an existing one with ``ShardedStore(path)``. Every
    method that changes the store takes the store's lock and first completes work a killed
    process left behind (:meth:`recover`).

    Attributes: ``path``, ``ledger`` (:class:`~obliviate.sharded.ledger.Ledger`), ``config``
    (:class:`ShardConfig`), ``data_spec`` (:class:`DataSpec`), ``hoods`` (each shard's
    neighbourhood), ``backend`` and ``n_workers`` (where shard jobs run), ``device`` and
    ``precision`` (how shard jobs train: ``device`` is this process's choice, ``precision``
    defaults to the one the store was trained at), ``models_cache`` (loaded shard models by
    ``(shard, checkpoint sha256)``; prediction runs on the CPU), ``sample_shape``,
    ``n_classes`` and ``config_sha256`` (fixed at creation).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        data_dir: str | None = None,
        backend: str = "local",
        n_workers: int | None = None,
        device: str = "cpu",
        precision: str | None = None,
    ) -> None:
        self.device = str(check_device(device))
        if precision is not None:
            check_precision(precision)
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ObliviateError(
                f"{str(self.path)!r} is a file, not a shard store; give the store's folder "
                "(create one with `obliviate shard train --store DIR`)"
            )
        if not self.path.is_dir():
            raise ObliviateError(
                f"{str(self.path)!r} is not a shard store (no such folder); create one with `obliviate shard train --store DIR`"
            )
        if not building.is_store(self.path):
            raise ObliviateError(
                f"{str(self.path)!r} is not a shard store (no {LEDGER_FILE}); create one with `obliviate shard train --store DIR`"
            )
        try:
            self.ledger = Ledger(self.path / LEDGER_FILE)
            fmt = self.ledger.get_meta("format")
        except sqlite3.DatabaseError as exc:
            if storage_failure(exc):
                raise storage_error(self.path / LEDGER_FILE, exc) from None
            raise LedgerDamaged(
                f"{str(self.path)!r} is not a shard store, or its ledger is damaged "
                f"({LEDGER_FILE}: {exc}); nothing was written. Restore the store from a backup"
            ) from None
        if fmt != FORMAT or self.ledger.get_meta("config") is None:
            raise ObliviateError(
                f"{str(self.path)!r} is not a complete shard store (ledger format {fmt!r}); train a new store"
            )
        self.config = ShardConfig.from_dict(self.ledger.get_meta("config"))
        spec = self.ledger.get_meta("data")
        if data_dir is not None:
            spec["data_dir"] = data_dir
        self.data_spec = DataSpec(**spec)
        check_backend(backend, n_workers)  # before any request is recorded
        self.backend, self.n_workers = backend, n_workers
        # the precision the store was trained at, unless given: a retrained shard at another
        # precision would not be the bits a retraining from scratch gives
        self.precision = precision or self.ledger.get_meta("precision", "fp32")
        self.hoods = neighbourhoods(self.config.graph, self.config.n_shards, self.config.seed)
        self.models_cache: dict[tuple[int, str], nn.Module] = {}
        # fixed when the store was created: read once, not per request
        self.sample_shape: tuple[int, ...] = tuple(self.ledger.get_meta("sample_shape"))
        self.n_classes = int(self.ledger.get_meta("n_classes"))
        self.config_sha256 = config_hash(self.config)
        self._standardization: Standardization | None = None

    def close(self) -> None:
        """Close the ledger connection (the store stays on disk)."""
        self.ledger.close()

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- creation ------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        path: str | Path,
        *,
        data: DataSpec,
        config: ShardConfig,
        exclude_ids: np.ndarray | list[int] | None = None,
        backend: str = "local",
        n_workers: int | None = None,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> ShardedStore:
        """Create a store at ``path`` and train every shard; ``exclude_ids`` are left out as if
        they had never existed. Shards train on ``device`` at ``precision`` (checkpoints are
        saved from the CPU, so a store trained on a GPU opens and predicts anywhere; the same
        bits, and so equal checkpoint hashes on a retrain, hold for one device type and
        precision).

        With the default ``local`` backend, worker processes re-import the calling script: call
        this under ``if __name__ == "__main__":`` (a script that does not is refused at once
        with an ObliviateError, before anything is written; ``backend="inline"`` needs no
        guard)."""
        check_device(device), check_precision(precision)  # before anything is written
        check_backend(backend, n_workers)
        if backend == "local":
            check_main_guard("ShardedStore.train")
        path = Path(path)
        building.create_store(path, data=data, config=config, exclude_ids=exclude_ids)
        store = cls(path, backend=backend, n_workers=n_workers, device=device, precision=precision)
        if precision != "fp32":  # fp32 stores (all older ones) carry no entry
            with store.ledger.transaction():
                store.ledger.set_meta("precision", precision)
        with checkpoint_memo():
            store.recover()  # trains every shard
            # the final models the (inline) jobs kept are loaded into the store's model cache,
            # as a first predict or forget would load them, without reading them back
            current = store.ledger.current_checkpoints()
            last = [c["sha256"] for (_, r), c in current.items() if r == config.n_slices - 1]
            if last and all(is_kept(sha) for sha in last):
                prediction.shard_models(store, current)
        return store

    def affected(self, ids: np.ndarray) -> dict[int, int]:
        """Shard -> first slice to retrain, for deleting ``ids`` (ids this store trains on)."""
        return deletion.affected(self, ids)

    # ---- recovery ------------------------------------------------------------------------
    def recover(self) -> list[dict[str, Any]]:
        """Complete whatever a killed process left: an unfinished initial training, or requests
        that were being processed (together with any queued ones). Removes temporary and
        superseded checkpoint files. Returns the receipts of completed requests.

        A read-only store (a mounted backup, a folder without write permission) has nothing to
        lock or clean: with no unfinished work this is a no-op, so status, verify and predict
        work on it; unfinished work there is a one-line error saying how to complete it."""
        if self.ledger.read_only:
            unfinished = self.ledger.get_meta("state") == "training" or self.ledger.requests(
                ("running",)
            )
            if unfinished:
                raise ObliviateError(
                    f"the store {str(self.path)!r} is read-only and has unfinished work; copy it "
                    "to a writable folder and run `obliviate shard resume` there"
                )
            return []
        with store_lock(self.path):
            return self._recover_locked()

    def _recover_locked(self, *, collect: bool = True) -> list[dict[str, Any]]:
        """:meth:`recover`'s work, the lock held by the caller (``collect=False``: the caller
        removes superseded checkpoint files itself before it releases the lock)."""
        remove_temporaries(self.path)
        if self.ledger.get_meta("state") == "training":
            building.train_all(self)
        receipts: list[dict[str, Any]] = []
        if self.ledger.requests(("running",)):
            receipts = deletion.process(self)
        if collect:
            building.collect_garbage(self)
        return receipts

    # ---- deletion ------------------------------------------------------------------------
    def submit(self, ids: list[int] | np.ndarray, request_id: str | None = None) -> dict[str, Any]:
        """Record a deletion request (queued, nothing retrained yet); idempotent by request id.

        Returns the request record. Unknown ids raise; ids already deleted are recorded as such.
        """
        with store_lock(self.path):
            return deletion.submit(self, as_id_tensor(ids).numpy(), request_id, "queued")

    def process(self, *, check_exactness: bool = False) -> list[dict[str, Any]]:
        """Process every queued request in one retraining pass; return their receipts."""
        with store_lock(self.path):
            remove_temporaries(self.path)
            receipts = deletion.process(self, check_exactness=check_exactness)
            building.collect_garbage(self)
            return receipts

    def forget(
        self,
        ids: list[int] | np.ndarray,
        request_id: str | None = None,
        *,
        queue: bool = False,
        check_exactness: bool = False,
        include_ids: bool = False,
    ) -> dict[str, Any]:
        """Delete ``ids`` exactly and return the receipt (with ``queue``: only record the request
        and return its record). The same request id returns the same receipt, work done once.
        With the ``local`` backend, call it under ``if __name__ == "__main__":`` in a script (see
        :meth:`train`)."""
        ids = as_id_tensor(ids).numpy()  # integers only: 1000.7 or "1007" is refused, never cast
        if self.backend == "local" and not queue:
            check_main_guard("ShardedStore.forget")
        if self.ledger.read_only:
            self.recover()  # a one-line error if unfinished work is left
        with store_lock(self.path), checkpoint_memo():
            try:
                if not self.ledger.read_only:  # under the same lock as the request itself
                    self._recover_locked(collect=False)
                # refuse before recording anything if a needed checkpoint is bad (its
                # re-hashed contents are kept for this command: the jobs build on them)
                current = deletion.check_bases(self, ids)
                # "running" from the start: if this process dies, any next command completes it
                request = deletion.submit(self, ids, request_id, "queued" if queue else "running")
                if request["status"] in ("queued", "running") and not queue:
                    queued_before = self.ledger.requests(("queued",))
                    deletion.process(
                        self,
                        check_exactness=check_exactness,
                        bases_checked=not queued_before,
                        current=current,
                    )
                record = self.ledger.request(request["request_id"])
                assert record is not None
            except BaseException:
                if not self.ledger.read_only:  # files a killed process superseded
                    with contextlib.suppress(Exception):
                        building.collect_garbage(self)
                raise
            # superseded checkpoint files (this request's, or a killed process's): once
            building.collect_garbage(self)
        if record["status"] != "done":
            return {
                "request_id": record["request_id"],
                "status": record["status"],
                "ids_sha256": record["ids_hash"],
            }
        return self.receipt(record["request_id"], include_ids=include_ids)

    def cancel_pending(self) -> list[str]:
        """Roll back every unfinished request: its samples become active again."""
        with store_lock(self.path):
            pending = deletion.cancel_pending(self)
            remove_temporaries(self.path)
            building.collect_garbage(self)
            return [r["request_id"] for r in pending]

    def receipt(self, request_id: str, *, include_ids: bool = False) -> dict[str, Any]:
        """The stored receipt of a completed request (``include_ids`` adds the ids themselves)."""
        return deletion.receipt_of(self, request_id, include_ids=include_ids)

    # ---- prediction ----------------------------------------------------------------------
    @property
    def standardization(self) -> Standardization:
        """The preprocessing the store's shards were trained behind (saved in the store; the
        loader's per-feature standardisation of the training split)."""
        if self._standardization is None:
            self._standardization = building.store_standardization(self)
        return self._standardization

    def preprocess(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Raw rows ``[N, ...]`` (as the data source holds them) -> the rows the shard models
        take, float32 of the same shape: :attr:`standardization` applied. Raises
        :class:`ObliviateError` for rows of the wrong width."""
        return self.standardization.apply(
            torch.as_tensor(np.asarray(x, dtype=np.float32), device="cpu")
        )

    def predict_proba(
        self, x: torch.Tensor | np.ndarray, *, preprocessed: bool = False
    ) -> torch.Tensor:
        """Aggregated class scores ``[N, n_classes]`` (mean softmax, or vote fractions).

        ``x``: raw rows ``[N, *sample_shape]`` or ``[N, D]`` as the data source holds them
        (the store applies its own preprocessing, :meth:`preprocess`); ``preprocessed=True``:
        rows already standardised the way the loader does it (``load_dataset``'s output, e.g.
        ``Dataset.x`` of the store's test split). Raises :class:`ObliviateError` for rows of
        the wrong shape or with NaN/inf."""
        rows = x if preprocessed else self.preprocess(x)
        return prediction.predict_proba(self, rows)

    def predict(self, x: torch.Tensor | np.ndarray, *, preprocessed: bool = False) -> torch.Tensor:
        """Predicted labels ``[N]`` int64 (see :meth:`predict_proba` for ``x``)."""
        return self.predict_proba(x, preprocessed=preprocessed).argmax(dim=1)

    def accuracy(self, data: Dataset) -> float | None:
        """Accuracy of the current ensemble on ``data`` (None when ``data`` is empty)."""
        return prediction.accuracy_with(self, self.ledger.current_checkpoints(), data)

    # ---- status and verification ---------------------------------------------------------
    def status(self, *, include_ids: bool = False) -> dict[str, Any]:
        """Each shard's current final checkpoint and sample count, and every request's status."""
        return audit.status(self, include_ids=include_ids)

    def expected_cost(self) -> float:
        """Expected retraining cost of deleting one random sample, as a fraction of full training."""
        rows = self.ledger.samples(("active", "pending"))
        return expected_cost(rows[:, 1], rows[:, 2], self.hoods, self.config.n_slices)

    def verify(self) -> dict[str, Any]:
        """Re-hash every checkpoint file, check every live checkpoint's ids against the samples
        table, walk the event chain and replay it (the live checkpoints must be those its
        training and deletion events produced). Returns ``{"ok", "problems", ...}``; changes
        nothing."""
        return audit.verify(self)
