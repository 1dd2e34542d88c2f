"""Sharded continual learning: exact deletion inside a stream (SISA applied to continual learning).

Every shard learns the stream continually, experience after experience, with one continual
strategy (naive, replay, DER++, EWC, ... any registered one whose ``data_view`` is
``"experience"``), and sees only its own ids of each experience: the shard and slice of an id are a
seeded hash of the id alone (:func:`obliviate.sharded.config.assign`, as the SISA store). Within
experience ``i``, stage ``(i, r)`` trains on slices ``0..r`` of the shard's part of the experience;
``begin`` is called before stage ``(i, 0)``, ``end`` after stage ``(i, R-1)``. After every stage the
shard's model *and* its strategy's learned state (buffers, stored logits, Fisher, counters; see
:mod:`obliviate.sharded.snapshot`) are written as one content-addressed checkpoint whose sha256
the ledger records. The training rows of every experience are stored too (one content-addressed
file per experience), so a deletion can replay the stream without the caller.

A deletion finds, for every shard holding a deleted id, the first stage that saw one, restores
the checkpoint before it (or the shard's seeded initial model and a fresh strategy) and replays
the shard's remaining stages without the deleted ids; other shards are untouched. The
experience files are rewritten without the ids, and the superseded checkpoints (whose buffers may
hold the deleted samples) and files are removed. Requests, receipts, the hash-chained event log
and crash safety are those of ``obliviate shard`` (:mod:`obliviate.sharded.ledger`,
:mod:`obliviate.sharded.receipts`): a request is recorded as running before any work, every
result is committed in one transaction, and any next command completes a request a killed
process left.

Exactness. Stage ``(i, r)`` of shard ``k`` is a pure function of the previous checkpoint's bytes
(every stage starts from decoded bytes, in learning and in deletion alike), the id-sorted rows of
the shard's part of experience ``i``, the recipe, and ``(k, i, r)``: its data order comes from
``generator(train.seed, "sharded-continual", k, i, r)``, global randomness from
``global_rng_from(train.seed, "sharded-continual", k, i, r)``, it gets a fresh optimiser, and it
runs on one torch thread. So after a deletion every shard's checkpoints equal, sha256 for sha256,
those of a store that learned the same experiences without the deleted ids from the start.

Prediction aggregates the shards' final models as the SISA store does (mean softmax or vote);
shards that have seen no data yet are left out.

Notes
-----
- Slices (``n_slices`` = R > 1) cut each experience's share of a shard into R stages; stage
  ``(i, r)`` processes ``n_epochs * |slice r|`` samples drawn epoch by epoch from slices ``0..r``
  (the SISA stage budget, see :mod:`obliviate.sharded.sisa`), and a deletion in slice ``r`` rolls
  back to stage ``(i, r-1)`` (to the end of experience ``i-1`` when it leaves the shard no rows
  in experience ``i``, whose ``begin`` the stream without the ids never calls). That checkpoint is taken after ``begin`` saw the whole experience,
  so slices are refused for strategies whose ``begin`` reads the training rows
  (:data:`BEGIN_READS_DATA`). With R = 1 (default) a stage is one experience trained for
  ``n_epochs`` epochs, as in :func:`obliviate.continual.loop.train_stream`, except for the seeds.
- Every stage gets a fresh optimiser (as the continual loop per experience, and SISA per stage).
- A shard with no rows in an experience skips it (no ``begin``, ``end`` or steps): its checkpoint
  for those stages is the previous one. An experience may be empty (every shard skips it), so a
  deletion that empties an experience equals a stream whose experience was empty from the start.
- Ids must be unique across the stream; an id once deleted cannot be learned again.
- Strategies whose ``data_view`` is ``"seen"`` or ``"all"`` (cumulative, joint) are refused.
- Shard graphs (SAFE) are not supported here: each shard learns only its own ids.
- Shards train one after another in this process by default (``backend="inline"``); with
  ``"local"`` (a process pool) or ``"ray"`` they train in parallel, with the same bits (each stage
  job is a pure function of its inputs, :func:`run_stage_job`).

References
----------
L. Bourtoule et al. "Machine Unlearning." IEEE S&P 2021 (SISA).
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from obliviate._rng import generator
from obliviate.continual import STRATEGIES, make_strategy
from obliviate.continual.base import Strategy
from obliviate.data.dataset import Dataset, as_id_tensor
from obliviate.data.splits import Experience, Stream
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, build_model
from obliviate.models.base import logits
from obliviate.sharded import deletion
from obliviate.sharded.backends import BACKENDS, run_jobs
from obliviate.sharded.completion import checkpoints_after, complete
from obliviate.sharded.config import ShardConfig, assign, config_hash, shard_model_spec
from obliviate.sharded.ledger import Ledger, LedgerDamaged, ids_hash
from obliviate.sharded.snapshot import decode, encode
from obliviate.sharded.store import (
    CHECKPOINT_DIR,
    LEDGER_FILE,
    _fsync_dir,
    checkpoint_path,
    failpoint,
    remove_temporaries,
    serialize_state,
    sha256_bytes,
    store_lock,
    sync_checkpoints,
)
from obliviate.training import (
    Batch,
    Recipe,
    TrainConfig,
    batches,
    check_finite,
    global_rng_from,
    make_optimizer,
    min_batch_rows,
    train_mode,
)

FORMAT = "obliviate-sharded-continual/1"
#: Strategies whose ``begin`` reads the experience's training rows: no slices (n_slices > 1).
BEGIN_READS_DATA = frozenset({"gdumb"})

__all__ = ["BEGIN_READS_DATA", "FORMAT", "ShardedContinual", "StageJob", "run_stage_job"]


def check_unique_ids(stream: Stream, what: str = "sharded continual learning") -> None:
    """Refuse, before anything is trained or created, a stream that presents an id in more than
    one experience (domain-incremental and recurring streams repeat every id): exact deletion
    needs each sample to enter once, so that "the stream without these ids" is defined.

    Raises:
        ObliviateError: names the first experience that repeats ids and the scenario kinds
            that do, and the approximate path as the alternative.
    """
    seen: set[int] = set()
    for exp in stream.experiences:
        ids = exp.train.ids.tolist()
        again = [i for i in ids if i in seen]
        if again or len(set(ids)) != len(ids):
            raise ObliviateError(
                f"{what} needs every sample id in one experience only, but experience "
                f"{exp.index} repeats {len(again) or len(ids) - len(set(ids))} id(s) "
                f"(e.g. {(again or ids)[0]}); domain-incremental and recurring scenarios "
                "present the same samples again: use a class- or task-incremental scenario, or "
                "the approximate path"
            )
        seen.update(ids)


def default_stream_recipe(seed: int = 0) -> Recipe:
    """The recipe of ``obliviate shard stream learn`` without recipe options: an MLP(100), SGD
    lr 0.05, batch 32, 5 epochs per experience (and slice stage), ``seed`` as the model's and
    the schedule's seed. (``Recipe()``, one epoch at lr 0.01, trained shards to chance.)"""
    return Recipe(
        ModelSpec(hidden=(100,), seed=seed),
        TrainConfig(n_epochs=5, batch_size=32, lr=0.05, seed=seed),
    )


class ShardedContinual:
    """A sharded continual learner on disk: S shards, each learning the stream with a continual
    strategy, checkpointed per experience and slice, with exact deletion.

    Create one with :meth:`create`; open an existing one with ``ShardedContinual(path)``
    (``backend``: ``"inline"``, default, ``"local"`` or ``"ray"``: where shards train;
    ``n_workers``: parallel workers, default all cores). Then
    :meth:`learn` experiences one by one, :meth:`forget` ids (returns a receipt), and
    :meth:`predict` / :meth:`predict_proba` / :meth:`accuracy`. Every method that changes the store
    takes its lock and first completes a deletion a killed process left (:meth:`recover`).

    Attributes: ``path``, ``ledger``, ``config`` (:class:`~obliviate.sharded.config.ShardConfig`;
    ``graph`` is always ``"none"``), ``strategy_name``, ``strategy_params``, ``n_classes``,
    ``sample_shape``, ``task_classes`` (None: one head).
    """

    def __init__(
        self, path: str | Path, *, backend: str = "inline", n_workers: int | None = None
    ) -> None:
        self.path = Path(path)
        if backend not in BACKENDS:
            raise ObliviateError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        self.backend, self.n_workers = backend, n_workers
        if not (self.path / LEDGER_FILE).is_file():
            raise ObliviateError(
                f"{str(self.path)!r} is not a sharded continual store (no {LEDGER_FILE}); "
                "create one with ShardedContinual.create(path, ...) or "
                "`obliviate shard stream learn --store DIR`"
            )
        try:
            self.ledger = Ledger(self.path / LEDGER_FILE)
            fmt = self.ledger.get_meta("format")
        except sqlite3.DatabaseError as exc:
            raise LedgerDamaged(
                f"{str(self.path)!r}: its ledger is damaged ({LEDGER_FILE}: {exc}); nothing was "
                "written. Restore the store from a backup"
            ) from None
        if fmt != FORMAT:
            raise ObliviateError(
                f"{str(self.path)!r} is not a sharded continual store (ledger format {fmt!r}); "
                "a SISA store opens with ShardedStore"
            )
        self.config = ShardConfig.from_dict(self.ledger.get_meta("config"))
        spec = self.ledger.get_meta("strategy")
        self.strategy_name: str = spec["name"]
        self.strategy_params: dict[str, Any] = spec["params"]
        self.n_classes = int(self.ledger.get_meta("n_classes"))
        self.sample_shape = tuple(int(d) for d in self.ledger.get_meta("sample_shape"))
        heads = self.ledger.get_meta("task_classes")
        self.task_classes: tuple[tuple[int, ...], ...] | None = (
            None if heads is None else tuple(tuple(int(c) for c in t) for t in heads)
        )
        self._models: dict[tuple[int, str], nn.Module] = {}

    def close(self) -> None:
        """Close the ledger connection (the store stays on disk)."""
        self.ledger.close()

    def __enter__(self) -> ShardedContinual:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- creation ------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        n_shards: int,
        strategy: str | Strategy,
        n_classes: int,
        sample_shape: tuple[int, ...],
        strategy_params: dict[str, Any] | None = None,
        recipe: Recipe | None = None,
        n_slices: int = 1,
        seed: int = 0,
        aggregation: str = "softmax",
        metadata: dict[str, Any] | None = None,
        task_classes: tuple[tuple[int, ...], ...] | None = None,
        backend: str = "inline",
        n_workers: int | None = None,
    ) -> ShardedContinual:
        """Create an empty store at ``path`` (a new or empty folder).

        ``strategy``: a registry key (with ``strategy_params``) or an unfitted strategy instance
        (its constructor arguments are recorded). ``recipe``: model and training settings of every
        shard (each shard's model seed is derived from ``recipe.model.seed`` and the shard).
        None: :func:`default_stream_recipe` of ``seed``, what ``obliviate shard stream learn``
        trains with no recipe options, so the library and the CLI give the same store.
        ``n_shards`` (S >= 1), ``n_slices`` (R >= 1, slices per experience), ``seed`` (the
        assignment of ids to shards and slices), ``aggregation`` (``"softmax"`` or ``"vote"``).
        ``n_classes`` and ``sample_shape`` describe the stream's label space and rows.
        ``task_classes``: the classes of each task, for a multi-head model (task-aware streams:
        ``stream.task_classes``); None: one head. ``metadata``: any JSON object the caller wants kept with the store (e.g. how to rebuild
        the stream), read back as :attr:`metadata`. ``backend`` and ``n_workers``: where shards
        train (as ``ShardedContinual(path, backend=..., n_workers=...)``).

        Raises :class:`ObliviateError` for an unknown strategy, one that cannot run here (data
        view other than ``"experience"``; ``begin`` reading data with ``n_slices > 1``), or a
        folder that exists and is not empty.
        """
        path = Path(path)
        name, params = _strategy_spec(strategy, strategy_params)
        try:
            json.dumps(metadata or {})
        except (TypeError, ValueError):
            raise ObliviateError(
                "metadata must be a JSON object (str keys, plain values)"
            ) from None
        make_strategy(name, **params)  # validates the hyperparameters
        strategy_cls = type(make_strategy(name, **params))
        if strategy_cls.data_view != "experience":
            raise ObliviateError(
                f"strategy {name!r} trains on data_view={strategy_cls.data_view!r}; sharded "
                "continual learning feeds each shard its part of the current experience only; "
                "choose a strategy with data_view 'experience' (naive, replay, derpp, ewc, ...)"
            )
        if n_slices > 1 and name in BEGIN_READS_DATA:
            raise ObliviateError(
                f"strategy {name!r} reads the experience's rows in begin(), so a checkpoint "
                f"inside an experience has seen them all; use n_slices=1 with {name!r}"
            )
        config = ShardConfig(
            n_shards=n_shards,
            n_slices=n_slices,
            seed=seed,
            aggregation=aggregation,
            recipe=recipe if recipe is not None else default_stream_recipe(seed),
        )
        shape = tuple(int(d) for d in sample_shape)
        if int(n_classes) < 2:
            raise ObliviateError(f"n_classes={n_classes}; a classifier needs at least 2 classes")
        heads = None if task_classes is None else [[int(c) for c in t] for t in task_classes]
        build_model(
            shard_model_spec(config.recipe.model, 0),
            shape,
            int(n_classes),
            None if heads is None else tuple(tuple(t) for t in heads),
        )
        if (path / LEDGER_FILE).exists():
            raise ObliviateError(f"{str(path)!r} is already a store; choose a new folder")
        leftovers = {CHECKPOINT_DIR, ".lock", "ledger.tmp", "ledger.tmp-wal", "ledger.tmp-shm"}
        if path.exists() and (
            not path.is_dir() or any(p.name not in leftovers for p in path.iterdir())
        ):
            raise ObliviateError(
                f"{str(path)!r} exists and is not an empty folder; choose a new folder for the store"
            )
        for tmp in ("ledger.tmp", "ledger.tmp-wal", "ledger.tmp-shm"):
            (path / tmp).unlink(missing_ok=True)
        (path / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        _fsync_dir(path)
        ledger = Ledger.create(path / "ledger.tmp")
        with ledger.transaction():
            ledger.set_meta("format", FORMAT)
            ledger.set_meta("config", config.to_dict())
            ledger.set_meta("strategy", {"name": name, "params": params})
            ledger.set_meta("n_classes", int(n_classes))
            ledger.set_meta("sample_shape", list(shape))
            ledger.set_meta("experiences", [])
            ledger.set_meta("metadata", metadata or {})
            ledger.set_meta("task_classes", heads)
            ledger.set_meta("state", "ready")
            ledger.set_meta("version", 0)
            ledger.append_event(
                "store_created",
                {
                    "config_sha256": config_hash(config),
                    "strategy": {"name": name, "params": params},
                    "engine": "sharded-continual",
                },
            )
        ledger.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        ledger.close()
        os.replace(path / "ledger.tmp", path / LEDGER_FILE)
        _fsync_dir(path)
        return cls(path, backend=backend, n_workers=n_workers)

    @classmethod
    def for_stream(cls, path: str | Path, stream: Stream, **kwargs: Any) -> ShardedContinual:
        """:meth:`create` with ``n_classes``, ``sample_shape`` and (task-aware streams)
        ``task_classes`` taken from ``stream``; ``kwargs`` are :meth:`create`'s others."""
        check_unique_ids(stream)  # before the store exists
        return cls.create(
            path,
            n_classes=stream.n_classes,
            sample_shape=stream.sample_shape,
            task_classes=stream.task_classes if stream.task_aware else None,
            **kwargs,
        )

    def build_shard_model(self, k: int) -> nn.Module:
        """Shard ``k``'s initial model (its seed derived from the recipe's and ``k``)."""
        return build_model(
            shard_model_spec(self.config.recipe.model, k),
            self.sample_shape,
            self.n_classes,
            self.task_classes,
        )

    # ---- layout helpers --------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, Any]:
        """The JSON object given to :meth:`create` (``{}`` when none)."""
        return dict(self.ledger.get_meta("metadata", {}))

    @property
    def n_slices(self) -> int:
        return self.config.n_slices

    def experiences(self) -> list[dict[str, Any]]:
        """The learned experiences in order: ``index``, ``classes``, ``task_id``, ``n_rows``,
        ``data_sha256`` (the stored rows, deleted ids removed)."""
        return list(self.ledger.get_meta("experiences"))

    @property
    def n_stages(self) -> int:
        return len(self.experiences()) * self.n_slices

    def checkpoint_hashes(self) -> dict[tuple[int, int, int], str]:
        """``(shard, experience position, slice) -> sha256`` of every live checkpoint."""
        R = self.n_slices
        return {
            (k, s // R, s % R): c["sha256"]
            for (k, s), c in sorted(self.ledger.current_checkpoints().items())
        }

    def learned_ids(self, states: tuple[str, ...] = ("active",)) -> np.ndarray:
        """Sorted int64 ids learned and not deleted (``states`` to ask for others)."""
        return self.ledger.samples(states)[:, 0]

    # ---- learning ------------------------------------------------------------------------
    def learn(self, experience: Experience) -> dict[str, Any]:
        """Learn one experience on every shard (each on its own ids); return the ledger event's
        payload (``experience``, ``index``, ``n_rows``, ``data_sha256``, ``checkpoints``).

        Raises :class:`ObliviateError`, before anything is recorded, when the rows do not fit
        the store (shape, labels), an id is repeated, was learned before or was deleted, or the
        strategy needs task ids the experience lacks."""
        self.recover()
        with store_lock(self.path), _one_thread():
            data = self._check_experience(experience)
            position = len(self.experiences())
            blob = serialize_state(_rows_of(data))
            data_sha = _write_blob(self.path, blob)
            meta = {
                "index": int(experience.index),
                "classes": [int(c) for c in experience.classes],
                "task_id": None if experience.task_id is None else int(experience.task_id),
                "n_rows": len(data),
                "data_sha256": data_sha,
            }
            metas = [*self.experiences(), meta]
            datasets = {position: data}
            current = self.ledger.current_checkpoints()
            first = position * self.n_slices
            t0 = time.perf_counter()
            plan = {k: first for k in range(self.config.n_shards)}
            per_shard = self._run_shards(plan, current, metas, datasets, persist=True)
            rows = [row for shard_rows in per_shard for row in shard_rows]
            seconds = time.perf_counter() - t0
            sync_checkpoints(self.path)
            ids = data.ids.numpy()
            shard, slice_ = assign(ids, self.config.n_shards, self.n_slices, self.config.seed)
            version = int(self.ledger.get_meta("version")) + 1
            payload = {
                "experience": position,
                "index": meta["index"],
                "n_rows": meta["n_rows"],
                "data_sha256": data_sha,
                "ids_sha256": ids_hash(ids),
                "seconds": round(seconds, 6),
                "checkpoints": {f"{r['shard']}/{r['slice']}": r["sha256"] for r in rows},
            }
            failpoint("before_commit")
            with self.ledger.transaction():
                self.ledger.add_samples(ids, shard, position * self.n_slices + slice_)
                self.ledger.put_checkpoints(version, rows)
                self.ledger.set_meta("experiences", metas)
                self.ledger.set_meta("version", version)
                self.ledger.append_event("experience_learned", payload)
            self._collect_garbage()
            return payload

    def _check_experience(self, experience: Experience) -> Dataset:
        train = experience.train
        if tuple(train.sample_shape) != self.sample_shape:
            raise ObliviateError(
                f"experience {experience.index} has rows of shape {tuple(train.sample_shape)}; "
                f"this store learns rows of shape {self.sample_shape}"
            )
        y = train.y
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise ObliviateError(
                f"experience {experience.index} has labels outside 0..{self.n_classes - 1}; "
                "create the store with the stream's n_classes"
            )
        if (self._strategy_class().needs_task_ids) and train.task is None:
            raise ObliviateError(
                f"strategy {self.strategy_name!r} needs task ids, but experience "
                f"{experience.index} has none; use a task-incremental stream"
            )
        ids = train.ids.numpy()
        if np.unique(ids).size != ids.size:
            raise ObliviateError(
                f"experience {experience.index} repeats ids; every row needs its own id"
            )
        states = self.ledger.sample_states(ids)
        if states:
            again = sorted(states)[:10]
            raise ObliviateError(
                f"{len(states)} id(s) of experience {experience.index} were learned before "
                f"(e.g. {', '.join(map(str, again))}); ids must be unique across the stream and "
                "a deleted id cannot be learned again; drop them (train.without_ids(...))"
            )
        order = torch.argsort(train.ids)
        return _named(train.subset(order), self.n_classes)

    def _strategy_class(self) -> type[Strategy]:
        return type(make_strategy(self.strategy_name, **self.strategy_params))

    # ---- one shard's stages -----------------------------------------------------------------
    def _run_shards(
        self,
        plan: dict[int, int],
        bases: dict[tuple[int, int], dict[str, Any]],
        metas: list[dict[str, Any]],
        datasets: dict[int, Dataset],
        *,
        persist: bool,
    ) -> list[list[dict[str, Any]]]:
        """Run stages ``plan[k]..`` of every shard ``k`` in ``plan`` from the checkpoints
        ``bases[(k, plan[k] - 1)]`` (stage 0: the initial model and a fresh strategy) on
        ``datasets[j]`` (experience ``j``'s remaining rows, id order), on the store's backend;
        one list of ledger rows per shard, in ``plan`` order."""
        R = self.n_slices
        jobs = []
        for k, start in plan.items():
            first = start // R
            jobs.append(
                StageJob(
                    store=str(self.path),
                    config=self.config,
                    strategy=(self.strategy_name, self.strategy_params),
                    n_classes=self.n_classes,
                    sample_shape=self.sample_shape,
                    task_classes=self.task_classes,
                    shard=k,
                    start=start,
                    base=None if start == 0 else bases[(k, start - 1)]["sha256"],
                    seen=np.zeros(0, dtype=np.int64) if start == 0 else self._ids_before(k, start),
                    metas=tuple(metas),
                    parts={
                        j: _shard_part(datasets[j], k, self.config)
                        for j in range(first, len(metas))
                    },
                    persist=persist,
                )
            )
        return run_jobs(run_stage_job, jobs, self.backend, self.n_workers)

    def _ids_before(self, k: int, stage: int) -> np.ndarray:
        rows = self.ledger.samples(("active", "pending"), shards=[k])
        return np.sort(rows[rows[:, 2] < stage, 0])

    # ---- deletion --------------------------------------------------------------------------
    def forget(
        self,
        ids: list[int] | np.ndarray,
        request_id: str | None = None,
        *,
        check_exactness: bool = False,
        include_ids: bool = False,
    ) -> dict[str, Any]:
        """Delete ``ids`` exactly and return the receipt (see :mod:`obliviate.sharded.receipts`;
        ``retrained[].slices`` are stage numbers ``experience * n_slices + slice``, and
        ``rolled_back_to`` maps each retrained shard to the ``experience`` and ``slice`` its
        replay starts at). The same request id returns the same receipt, work done once.

        ``check_exactness`` also replays every retrained shard from its initial model without
        the ids and compares every stage's checkpoint sha256 (reported under
        ``verification.exactness``). Ids never learned, an empty request, or a request that
        would delete every remaining sample are refused before anything is recorded."""
        self.recover()
        with store_lock(self.path), _one_thread():
            want = np.unique(as_id_tensor(ids).numpy())  # integers only, never cast
            self._check_request(want)
            request = deletion.submit(self._as_store(), want, request_id, "running")
            if request["status"] == "running":
                remove_temporaries(self.path)
                self._process(check_exactness=check_exactness)
                self._collect_garbage()
            record = self.ledger.request(request["request_id"])
            assert record is not None
        return deletion.receipt_of(self._as_store(), record["request_id"], include_ids=include_ids)

    def _check_request(self, want: np.ndarray) -> None:
        if want.size == 0:
            raise ObliviateError("the deletion request names no ids; give at least one id")
        states = self.ledger.sample_states(want)
        unknown = [int(i) for i in want if int(i) not in states]
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (
                f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
            )
            raise ObliviateError(
                f"{len(unknown)} id(s) were never learned by this store: {shown}; "
                "name ids of learned experiences"
            )
        active = self.ledger.samples(("active",))[:, 0]
        if len(active) and np.isin(active, want).all():
            raise ObliviateError(
                f"the request would delete all {len(active)} remaining samples, leaving no "
                "model; create a new store instead"
            )
        current = self.ledger.current_checkpoints()
        rows = self.ledger.rows_of(want, ("active", "pending"))
        R = self.n_slices
        for k, start in _plan(rows).items():  # re-hash what the replay may build on
            for base in {start - 1, (start // R) * R - 1}:
                if base >= 0:
                    _read_blob(self.path, current[(k, base)]["sha256"])
        for meta in self.experiences():
            _read_blob(self.path, meta["data_sha256"])

    def _as_store(self) -> Any:
        return self  # the request helpers of obliviate.sharded.deletion read only ``.ledger``

    def _process(self, *, check_exactness: bool = False) -> list[dict[str, Any]]:
        """Complete every running request in one replay pass (lock held)."""
        ledger, config, R = self.ledger, self.config, self.n_slices
        reqs = ledger.requests(("queued", "running"))
        if not reqs:
            return []
        t_start = time.time()
        version = int(ledger.get_meta("version"))
        current = ledger.current_checkpoints()
        pending_rows = ledger.samples(("pending",))
        pending = pending_rows[:, 0]
        plan = _plan(pending_rows)
        metas = self.experiences()
        old = {
            j: _load_rows(self.path, m["data_sha256"], self.n_classes) for j, m in enumerate(metas)
        }
        removed = [d.subset(torch.as_tensor(np.isin(d.ids.numpy(), pending))) for d in old.values()]
        removed_data = Dataset.concat(removed) if removed else None
        datasets = {
            j: d.subset(torch.as_tensor(~np.isin(d.ids.numpy(), pending))) for j, d in old.items()
        }
        datasets = {j: _named(d, self.n_classes) for j, d in datasets.items()}
        for k, start in plan.items():
            # ``begin`` ran at stage (i, 0) because the shard had rows in experience i; if the
            # deletion leaves it none, the stream without the ids never calls it: replay all of i
            i = start // R
            if start % R and len(_shard_part(datasets[i], k, config)[0]) == 0:
                plan[k] = i * R
        queued = [r for r in reqs if r["status"] == "queued"]
        if queued:
            with ledger.transaction():
                for req in queued:
                    ledger.update_request(req["request_id"], status="running")
                ledger.append_event(
                    "requests_started", {"requests": [r["request_id"] for r in queued]}
                )
        acc_before = self._accuracy_with(current, removed_data)
        t0 = time.perf_counter()
        per_shard = self._run_shards(plan, current, metas, datasets, persist=True)
        new_rows = [row for shard_rows in per_shard for row in shard_rows]
        retrain_seconds = time.perf_counter() - t0
        new_metas = []
        for j, meta in enumerate(metas):
            if len(datasets[j]) != len(old[j]):
                sha = _write_blob(self.path, serialize_state(_rows_of(datasets[j])))
                meta = {**meta, "n_rows": len(datasets[j]), "data_sha256": sha}
            new_metas.append(meta)
        sync_checkpoints(self.path)
        exactness = None
        if check_exactness and plan:
            shards = []
            scratch = {k: 0 for k in plan}
            refs = self._run_shards(scratch, current, metas, datasets, persist=False)
            for (k, start), ref in zip(plan.items(), refs, strict=True):
                got = [r["sha256"] for r in new_rows if r["shard"] == k]
                kept = [current[(k, s)]["sha256"] for s in range(start)]
                shards.append(
                    {
                        "shard": k,
                        "equal_stages": sum(
                            a == b["sha256"] for a, b in zip(kept + got, ref, strict=True)
                        ),
                        "n_stages": len(ref),
                        "retrained": got[-1],
                        "from_scratch": ref[-1]["sha256"],
                    }
                )
            exactness = {
                "checked": True,
                "equal": all(s["equal_stages"] == s["n_stages"] for s in shards),
                "shards": shards,
            }
        after = checkpoints_after(current, new_rows)
        acc_after = self._accuracy_with(after, removed_data)
        t_end = time.time()
        failpoint("before_commit")
        complete(
            ledger,
            requests=reqs,
            plan=plan,
            current=current,
            new_rows=new_rows,
            pending=pending,
            version=version,
            n_shards=config.n_shards,
            n_slices=len(metas) * R,
            times=(t_start, t_end),
            retrain_seconds=retrain_seconds,
            accuracy=(acc_before, acc_after),
            exactness=exactness,
            store_config=config_hash(config),
            event_extra={"data_after": [m["data_sha256"] for m in new_metas]},
            receipt_extra={
                "engine": "sharded-continual",
                "rolled_back_to": {
                    str(k): {"experience": s // R, "slice": s % R} for k, s in plan.items()
                },
            },
            meta={"experiences": new_metas},
        )
        failpoint("after_commit")
        return [deletion.receipt_of(self._as_store(), r["request_id"]) for r in reqs]

    def receipt(self, request_id: str, *, include_ids: bool = False) -> dict[str, Any]:
        """The stored receipt of a completed request (``include_ids`` adds the ids)."""
        return deletion.receipt_of(self._as_store(), request_id, include_ids=include_ids)

    # ---- recovery --------------------------------------------------------------------------
    def recover(self) -> list[dict[str, Any]]:
        """Complete whatever a killed process left: a deletion that was running is replayed and
        committed (an interrupted :meth:`learn` recorded nothing and is simply gone). Removes
        temporary and unreferenced files. Returns the receipts of completed requests."""
        with store_lock(self.path), _one_thread():
            remove_temporaries(self.path)
            receipts: list[dict[str, Any]] = []
            if self.ledger.requests(("running", "queued")):
                receipts = self._process()
            self._collect_garbage()
            return receipts

    def _collect_garbage(self) -> None:
        keep = {c["sha256"] for c in self.ledger.current_checkpoints().values()}
        keep |= {m["data_sha256"] for m in self.experiences()}
        for f in (self.path / CHECKPOINT_DIR).glob("*.pt"):
            if f.stem not in keep:
                f.unlink(missing_ok=True)

    # ---- prediction ----------------------------------------------------------------------
    def _final_models(self, current: dict[tuple[int, int], dict[str, Any]]) -> list[nn.Module]:
        last = self.n_stages - 1
        models = []
        for k in range(self.config.n_shards):
            ck = current.get((k, last))
            if ck is None or ck["n_ids"] == 0:
                continue
            key = (k, ck["sha256"])
            if key not in self._models:
                model = self.build_shard_model(k)
                decode(_read_blob(self.path, ck["sha256"]), model)
                model.eval()
                if len(self._models) >= 4 * self.config.n_shards:
                    self._models.clear()
                self._models[key] = model
            models.append(self._models[key])
        if not models:
            raise ObliviateError("the store has learned nothing yet; call learn(experience) first")
        return models

    @torch.no_grad()
    def _proba_with(
        self,
        current: dict[tuple[int, int], dict[str, Any]],
        x: torch.Tensor,
        task: torch.Tensor | None,
    ) -> torch.Tensor:
        outs = [logits(m, x, task) for m in self._final_models(current)]
        if self.config.aggregation == "vote":
            votes = torch.stack([o.argmax(dim=1) for o in outs])
            counts = nn.functional.one_hot(votes, outs[0].shape[1]).sum(dim=0).float()
            return counts / len(outs)
        return torch.stack([o.softmax(dim=1) for o in outs]).mean(dim=0)

    def predict_proba(
        self, x: torch.Tensor | np.ndarray, task: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """Aggregated class scores, float32 ``[N, n_classes]`` (mean of the shards' softmax, or
        vote fractions), for rows ``x`` (float32 ``[N, *sample_shape]`` or flattened); ``task``:
        int64 ``[N]`` task ids for multi-head models. Raises :class:`ObliviateError` for rows of
        the wrong shape, NaN/inf, or a store that has learned nothing."""
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
        shape = self.sample_shape
        if tuple(xt.shape[1:]) != shape and xt.reshape(xt.shape[0], -1).shape[1] == int(
            np.prod(shape)
        ):
            xt = xt.reshape(xt.shape[0], *shape)
        if tuple(xt.shape[1:]) != shape:
            raise ObliviateError(
                f"input rows have shape {tuple(xt.shape[1:])}; this store expects {shape}"
            )
        if not torch.isfinite(xt).all():
            raise ObliviateError("input contains NaN or inf")
        tt = None if task is None else torch.as_tensor(np.asarray(task, dtype=np.int64))
        return self._proba_with(self.ledger.current_checkpoints(), xt, tt)

    def predict(
        self, x: torch.Tensor | np.ndarray, task: torch.Tensor | np.ndarray | None = None
    ) -> torch.Tensor:
        """Predicted classes, int64 ``[N]`` (argmax of :meth:`predict_proba`)."""
        return self.predict_proba(x, task).argmax(dim=1)

    def accuracy(self, data: Dataset) -> float | None:
        """Accuracy of the aggregate on ``data`` (None when ``data`` is empty)."""
        return self._accuracy_with(self.ledger.current_checkpoints(), data)

    def _accuracy_with(
        self, current: dict[tuple[int, int], dict[str, Any]], data: Dataset | None
    ) -> float | None:
        if data is None or len(data) == 0:
            return None
        pred = self._proba_with(current, data.x, data.task).argmax(dim=1)
        return float((pred == data.y).float().mean())

    # ---- status and verification ---------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The store at a glance: shards (final checkpoint, ids seen), experiences, sample
        counts by state, model version and every request's status."""
        current = self.ledger.current_checkpoints()
        last = self.n_stages - 1
        counts = self.ledger.count_states()
        return {
            "store": str(self.path),
            "engine": "sharded-continual",
            "strategy": {"name": self.strategy_name, "params": self.strategy_params},
            "model_version": int(self.ledger.get_meta("version")),
            "n_shards": self.config.n_shards,
            "n_slices": self.n_slices,
            "n_experiences": len(self.experiences()),
            "experiences": self.experiences(),
            "samples": {s: int(counts.get(s, 0)) for s in ("active", "pending", "deleted")},
            "shards": [
                {
                    "shard": k,
                    "checkpoint": current.get((k, last), {}).get("sha256"),
                    "n_samples": current.get((k, last), {}).get("n_ids", 0),
                }
                for k in range(self.config.n_shards)
            ],
            "requests": [
                {"request_id": r["request_id"], "status": r["status"]}
                for r in self.ledger.requests()
            ],
        }

    def verify(self) -> dict[str, Any]:
        """Check the store without changing it: SQLite integrity, every live checkpoint and
        experience file re-hashed, every stage's ids against the samples table, every
        experience file's ids against it, the event chain, and a replay of the events (the live
        checkpoints and files must be those the events recorded). Returns ``{"ok", "problems",
        "n_files", "n_events", "unfinished_requests"}``."""
        damage = self.ledger.integrity_problems()
        if damage:
            return {
                "ok": False,
                "problems": [f"the ledger file is damaged (SQLite: {m})" for m in damage],
                "n_files": 0,
                "n_events": 0,
                "unfinished_requests": [],
            }
        problems: list[str] = []
        current = self.ledger.current_checkpoints()
        metas = self.experiences()
        n_files = 0
        for (k, s), live_ck in sorted(current.items()):
            n_files += 1
            problems += _file_problem(
                self.path, live_ck["sha256"], f"checkpoint shard {k} stage {s}"
            )
        samples = self.ledger.samples(("active", "pending"))
        R = self.n_slices
        for j, meta in enumerate(metas):
            n_files += 1
            bad = _file_problem(self.path, meta["data_sha256"], f"experience {j}'s rows")
            problems += bad
            if not bad:
                rows = _load_rows(self.path, meta["data_sha256"], self.n_classes)
                mine = samples[samples[:, 2] // R == j, 0]
                if ids_hash(rows.ids.numpy()) != ids_hash(mine):
                    problems.append(f"experience {j}'s stored rows differ from the samples table")
        for k in range(self.config.n_shards):
            own = samples[samples[:, 1] == k]
            for s in range(len(metas) * R):
                ck = current.get((k, s))
                if ck is None:
                    problems.append(f"shard {k} stage {s} has no checkpoint")
                elif ck["ids_hash"] != ids_hash(own[own[:, 2] <= s, 0]):
                    problems.append(
                        f"shard {k} stage {s}: the ids its checkpoint saw differ from the "
                        "samples table"
                    )
        problems += self.ledger.check_chain()
        events = self.ledger.events()
        recorded: dict[str, str] = {}
        data: list[str] = []
        for event in events:
            kind, payload = event[2], json.loads(event[3])
            if kind == "experience_learned":
                recorded.update(payload["checkpoints"])
                data.append(payload["data_sha256"])
            elif kind == "requests_completed":
                recorded.update(payload["checkpoints_after"])
                data = list(payload["data_after"])
        live = {f"{k}/{s}": c["sha256"] for (k, s), c in current.items()}
        if live != recorded:
            problems.append(
                "the live checkpoints are not the ones the event log records (the ledger "
                "tables were edited or rolled back)"
            )
        if data != [m["data_sha256"] for m in metas]:
            problems.append("the experience files are not the ones the event log records")
        if events and json.loads(events[0][3]).get("config_sha256") != config_hash(self.config):
            problems.append("the store configuration differs from the one recorded at creation")
        unfinished = [r["request_id"] for r in self.ledger.requests(("queued", "running"))]
        return {
            "ok": not problems,
            "problems": problems,
            "n_files": n_files,
            "n_events": len(events),
            "unfinished_requests": unfinished,
        }


# ---- one shard's stages: the unit of work every backend runs ------------------------------
@dataclass(frozen=True, eq=False)
class StageJob:
    """Re-run stages ``start..`` of shard ``shard`` from checkpoint ``base`` (None: the initial
    model and a fresh strategy). ``parts[j]``: the shard's remaining rows of experience ``j``
    (id order) and their slices; ``seen``: ids the shard saw before ``start``. Picklable;
    ``persist=False`` computes the checkpoint hashes without writing files."""

    store: str
    config: ShardConfig
    strategy: tuple[str, dict[str, Any]]
    n_classes: int
    sample_shape: tuple[int, ...]
    task_classes: tuple[tuple[int, ...], ...] | None
    shard: int
    start: int
    base: str | None
    seen: np.ndarray
    metas: tuple[dict[str, Any], ...]
    parts: dict[int, tuple[Dataset, np.ndarray]]
    persist: bool = True


def run_stage_job(job: StageJob) -> list[dict[str, Any]]:
    """Run one :class:`StageJob` (one torch thread); return one ledger row per stage: shard,
    slice (the stage number), sha256, ids_hash and n_ids (ids seen so far), seconds."""
    with _one_thread():
        k, R, cfg = job.shard, job.config.n_slices, job.config.recipe.train
        store = Path(job.store)
        model = build_model(
            shard_model_spec(job.config.recipe.model, k),
            job.sample_shape,
            job.n_classes,
            job.task_classes,
        )
        if job.base is None:
            blob = encode(model, make_strategy(job.strategy[0], **job.strategy[1]))
        else:
            blob = _read_blob(store, job.base)
        seen = job.seen
        out = []
        for s in range(job.start, len(job.metas) * R):
            t0 = time.perf_counter()
            j, r = divmod(s, R)
            meta = job.metas[j]
            part, slc = job.parts[j]
            if len(part):
                strategy = cast(Strategy, decode(blob, model)[0])
                exp = Experience(
                    index=meta["index"],
                    train=part,
                    test=part.subset(torch.zeros(0, dtype=torch.int64)),
                    classes=tuple(meta["classes"]),
                    task_id=meta["task_id"],
                )
                if r == 0:
                    strategy.begin(model, exp)
                data = part.subset(torch.as_tensor(np.nonzero(slc <= r)[0]))
                budget = None if R == 1 else cfg.n_epochs * int((slc == r).sum())
                _train_stage(model, strategy, data, budget, cfg, (k, j, r), meta["index"])
                if r == R - 1:
                    strategy.end(model, exp)
                    check_finite(strategy, model)
                blob = encode(model, strategy)
                seen = np.union1d(seen, part.ids.numpy()[slc == r])
            digest = _write_blob(store, blob, sync_dir=False) if job.persist else sha256_bytes(blob)
            out.append(
                {
                    "shard": k,
                    "slice": s,
                    "sha256": digest,
                    "ids_hash": ids_hash(seen),
                    "n_ids": int(seen.size),
                    "seconds": time.perf_counter() - t0,
                }
            )
        if job.persist and out:
            sync_checkpoints(store)  # the renames are durable before the ledger refers to them
        return out


# ---- helpers -------------------------------------------------------------------------------
def _strategy_spec(
    strategy: str | Strategy, params: dict[str, Any] | None
) -> tuple[str, dict[str, Any]]:
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ObliviateError(
                f"unknown strategy {strategy!r}; valid: {', '.join(sorted(STRATEGIES))}"
            )
        return strategy, dict(params or {})
    if params:
        raise ObliviateError("give strategy_params only with a strategy name, not an instance")
    path = f"{type(strategy).__module__}:{type(strategy).__qualname__}"
    names = [n for n, p in STRATEGIES.items() if p == path]
    if not names:
        raise ObliviateError(
            f"{type(strategy).__name__} is not a registered strategy; a store must rebuild it "
            "by name (obliviate.continual.STRATEGIES)"
        )
    return names[0], json.loads(json.dumps(strategy.get_params()))


def _plan(rows: np.ndarray) -> dict[int, int]:
    """Shard -> first stage holding one of the (id, shard, stage) ``rows``."""
    first: dict[int, int] = {}
    for _, k, s in rows.tolist():
        first[k] = min(first.get(k, s), s)
    return dict(sorted(first.items()))


def _shard_part(data: Dataset, k: int, config: ShardConfig) -> tuple[Dataset, np.ndarray]:
    """Shard ``k``'s rows of ``data`` (id order kept) and the slice of each."""
    ids = data.ids.numpy()
    shard, slice_ = assign(ids, config.n_shards, config.n_slices, config.seed)
    mask = shard == k
    return data.subset(torch.as_tensor(np.nonzero(mask)[0])), slice_[mask]


def _train_stage(
    model: nn.Module,
    strategy: Strategy,
    data: Dataset,
    budget: int | None,
    cfg: Any,
    keys: tuple[int, int, int],
    experience: int,
) -> None:
    """Train on ``data``: ``n_epochs`` epochs (``budget`` None) or ``budget`` samples drawn
    epoch by epoch; the continual loop's step (loss, backward, adjust_gradients, step)."""
    if len(data) == 0 or budget == 0:
        return
    gen = generator(cfg.seed, "sharded-continual", *keys)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    if not model.training:
        train_mode(model)
    min_rows = min_batch_rows(model)
    left = budget
    with global_rng_from(cfg.seed, "sharded-continual", *keys):
        epoch = 0
        while (epoch < cfg.n_epochs) if budget is None else (left is not None and left > 0):
            epoch += 1
            for batch in batches(
                data, cfg.batch_size, gen, experience=experience, min_rows=min_rows
            ):
                if left is not None:
                    if left <= 0:
                        break
                    if len(batch.y) > left:
                        batch = _head(batch, left)
                    left -= len(batch.y)
                if not model.training:
                    train_mode(model)
                opt.zero_grad(set_to_none=True)
                strategy.loss(model, batch).backward()
                strategy.adjust_gradients(model)
                opt.step()


def _head(batch: Batch, n: int) -> Batch:
    task = None if batch.task is None else batch.task[:n]
    return Batch(batch.x[:n], batch.y[:n], batch.ids[:n], task, batch.experience)


def _rows_of(data: Dataset) -> dict[str, torch.Tensor]:
    rows = {"x": data.x, "y": data.y, "ids": data.ids}
    if data.task is not None:
        rows["task"] = data.task
    return rows


def _named(data: Dataset, n_classes: int) -> Dataset:
    return Dataset(
        x=data.x.contiguous(),
        y=data.y.contiguous(),
        ids=data.ids.contiguous(),
        n_classes=n_classes,
        task=None if data.task is None else data.task.contiguous(),
        name="sharded-continual",
    )


def _load_rows(store: Path, sha: str, n_classes: int) -> Dataset:
    rows = torch.load(io.BytesIO(_read_blob(store, sha)), weights_only=True, map_location="cpu")
    return _named(
        Dataset(
            x=rows["x"], y=rows["y"], ids=rows["ids"], n_classes=n_classes, task=rows.get("task")
        ),
        n_classes,
    )


def _write_blob(store: Path, data: bytes, *, sync_dir: bool = True) -> str:
    """Write ``data`` atomically under its sha256 (temp file, fsync, rename); return the hash."""
    sha = sha256_bytes(data)
    final = checkpoint_path(store, sha)
    if final.exists() and sha256_bytes(final.read_bytes()) == sha:
        return sha
    tmp = final.with_name(f".tmp-{os.getpid()}-{sha[:16]}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    failpoint("checkpoint_tmp")
    os.replace(tmp, final)
    if sync_dir:
        _fsync_dir(final.parent)
    failpoint("checkpoint_written")
    return sha


def _read_blob(store: Path, sha: str) -> bytes:
    path = checkpoint_path(store, sha)
    if not path.exists():
        raise ObliviateError(
            f"checkpoint {sha[:16]}… is missing from {path.parent}; the store is damaged "
            "(ShardedContinual.verify lists what it finds); rebuild it from the stream"
        )
    data = path.read_bytes()
    if sha256_bytes(data) != sha:
        raise ObliviateError(
            f"checkpoint {path.name} is corrupted (its sha256 no longer matches its name); "
            "refusing to build on it; rebuild the store from the stream"
        )
    return data


def _file_problem(store: Path, sha: str, what: str) -> list[str]:
    path = checkpoint_path(store, sha)
    if not path.exists():
        return [f"{what} ({sha[:16]}…) is missing"]
    if sha256_bytes(path.read_bytes()) != sha:
        return [f"{what}: file {path.name} was altered (sha256 mismatch)"]
    return []


@contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
