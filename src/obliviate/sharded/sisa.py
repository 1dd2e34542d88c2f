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

References
----------
L. Bourtoule, V. Chandrasekaran, C. A. Choquette-Choo, H. Jia, A. Travers, B. Zhang, D. Lie,
N. Papernot. "Machine Unlearning." IEEE S&P 2021.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from obliviate._rng import derive_seed, generator
from obliviate._validation import check_choice, check_number
from obliviate.data.dataset import Dataset
from obliviate.data.datasets import load_dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, build_model
from obliviate.models.base import logits
from obliviate.sharded import receipts as rc
from obliviate.sharded.backends import run_jobs
from obliviate.sharded.graph import expected_cost, neighbourhoods
from obliviate.sharded.ledger import FORMAT, Ledger, ids_hash
from obliviate.sharded.store import (
    CHECKPOINT_DIR,
    LEDGER_FILE,
    _fsync_dir,
    checkpoint_path,
    failpoint,
    read_checkpoint,
    remove_temporaries,
    serialize_state,
    sha256_bytes,
    store_lock,
    sync_checkpoints,
    write_checkpoint,
)
from obliviate.training import Recipe, TrainConfig, batches, make_optimizer

AGGREGATIONS = ("softmax", "vote")


# ---- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DataSpec:
    """Where a store's training data comes from (reloaded by every command, fingerprinted)."""

    dataset: str = "digits"
    data_dir: str | None = None
    limit: int | None = None
    split_seed: int = 0


@dataclass(frozen=True)
class ShardConfig:
    """The sharding: ``n_shards`` (S), ``n_slices`` (R), the shard graph, the aggregation rule,
    the assignment ``seed`` and the training recipe every shard uses."""

    n_shards: int = 5
    n_slices: int = 4
    graph: str = "none"
    aggregation: str = "softmax"
    seed: int = 0
    recipe: Recipe = field(default_factory=Recipe)

    def __post_init__(self) -> None:
        check_number("n_shards", self.n_shards, low=1, integer=True)
        check_number("n_slices", self.n_slices, low=1, integer=True)
        check_number("seed", self.seed, integer=True)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        neighbourhoods(self.graph, self.n_shards, self.seed)  # validates the graph spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardConfig:
        r = d["recipe"]
        m = r["model"]
        model = ModelSpec(
            name=m["name"], hidden=tuple(m["hidden"]), seed=m["seed"], channels=tuple(m["channels"])
        )
        recipe = Recipe(model=model, train=TrainConfig(**r["train"]))
        return cls(**{**d, "recipe": recipe})


def config_hash(config: ShardConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()


# ---- data ------------------------------------------------------------------------------------
_DATA: dict[DataSpec, tuple[Dataset, Dataset, str]] = {}


def data_fingerprint(data: Dataset) -> str:
    h = hashlib.sha256()
    for t in (data.ids, data.y, data.x):
        h.update(np.ascontiguousarray(t.numpy()).tobytes())
    return h.hexdigest()


def load_data(spec: DataSpec) -> tuple[Dataset, Dataset, str]:
    """(train, test, fingerprint of train), cached per process."""
    if spec not in _DATA:
        train, test = load_dataset(
            spec.dataset, data_dir=spec.data_dir, limit=spec.limit, split_seed=spec.split_seed
        )
        _DATA[spec] = (train, test, data_fingerprint(train))
    return _DATA[spec]


def assign(
    ids: np.ndarray, n_shards: int, n_slices: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shard and slice of every id: a seeded hash of the id alone."""
    h = np.array([derive_seed(seed, "sisa-assign", int(i)) for i in ids], dtype=np.uint64)
    return (h % np.uint64(n_shards)).astype(np.int64), (
        (h // np.uint64(n_shards)) % np.uint64(n_slices)
    ).astype(np.int64)


def shard_model_spec(spec: ModelSpec, shard: int) -> ModelSpec:
    return replace(spec, seed=derive_seed(spec.seed, "sisa-shard", shard))


# ---- one shard's stages: the unit of work every backend runs ----------------------------------
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


def train_stage(
    model: nn.Module, data: Dataset, n_samples: int, config: TrainConfig, gen: torch.Generator
) -> None:
    """Train ``model`` in place on ``n_samples`` samples drawn epoch by epoch from ``data``."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, config)
    model.train()
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
            nn.functional.cross_entropy(logits(model, x, task), y).backward()
            opt.step()
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
        model = build_model(
            shard_model_spec(job.recipe.model, job.shard), job.sample_shape, job.n_classes
        )
        store = Path(job.store)
        if job.base is not None:
            model.load_state_dict(read_checkpoint(store, job.base))
        out = []
        cfg = job.recipe.train
        all_ids = np.sort(np.concatenate(job.slices))
        all_pos = train.positions(all_ids).numpy()  # one lookup for every stage
        for r in range(job.start, len(job.slices)):
            t0 = time.perf_counter()
            ids = np.sort(np.concatenate(job.slices[: r + 1]))
            data = train.subset(all_pos[np.searchsorted(all_ids, ids)])  # rows in id order
            gen = generator(cfg.seed, "sisa-stage", job.shard, r)
            train_stage(model, data, cfg.n_epochs * len(job.slices[r]), cfg, gen)
            state = model.state_dict()
            digest = (
                write_checkpoint(store, state, sync_dir=False)
                if job.persist
                else sha256_bytes(serialize_state(state))
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
            sync_checkpoints(store)  # the renames are durable before the ledger refers to them
        return out
    finally:
        torch.set_num_threads(threads)


# ---- the store -------------------------------------------------------------------------------
def _is_store(path: Path) -> bool:
    return (path / LEDGER_FILE).is_file()


class ShardedStore:
    """A trained SISA / shard-graph ensemble on disk, with its ledger.

    Create one with :meth:`train`; open an existing one with ``ShardedStore(path)``. Every
    method that changes the store takes the store's lock and first completes work a killed
    process left behind (:meth:`recover`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        data_dir: str | None = None,
        backend: str = "local",
        n_workers: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ObliviateError(
                f"{str(self.path)!r} is not a shard store (no such folder); create one with `obliviate shard train --store DIR`"
            )
        if not _is_store(self.path):
            raise ObliviateError(
                f"{str(self.path)!r} is not a shard store (no {LEDGER_FILE}); create one with `obliviate shard train --store DIR`"
            )
        try:
            self.ledger = Ledger(self.path / LEDGER_FILE)
            fmt = self.ledger.get_meta("format")
        except sqlite3.DatabaseError as exc:
            raise ObliviateError(
                f"{str(self.path)!r} is not a shard store: {LEDGER_FILE} is not a readable ledger ({exc})"
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
        self.backend, self.n_workers = backend, n_workers
        self.hoods = neighbourhoods(self.config.graph, self.config.n_shards, self.config.seed)
        self._models_cache: dict[tuple[int, str], nn.Module] = {}

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
    ) -> ShardedStore:
        """Create a store at ``path`` and train every shard; ``exclude_ids`` are left out as if
        they had never existed."""
        path = Path(path)
        if _is_store(path):
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
            ledger.set_meta(
                "excluded", {"n_ids": int(excluded.size), "ids_sha256": ids_hash(excluded)}
            )
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
        store = cls(path, backend=backend, n_workers=n_workers)
        store.recover()
        return store

    # ---- plans and jobs ------------------------------------------------------------------
    def _slices_of(self, samples: np.ndarray, shard: int) -> tuple[np.ndarray, ...]:
        """Sorted ids per slice over ``shard``'s neighbourhood, from (id, shard, slice) rows."""
        in_hood = np.isin(samples[:, 1], self.hoods[shard])
        rows = samples[in_hood]
        return tuple(np.sort(rows[rows[:, 2] == r, 0]) for r in range(self.config.n_slices))

    def _job(
        self,
        samples: np.ndarray,
        shard: int,
        start: int,
        current: dict[tuple[int, int], dict[str, Any]],
        persist: bool = True,
    ) -> ShardJob:
        base = None if start == 0 else current[(shard, start - 1)]["sha256"]
        return ShardJob(
            store=str(self.path),
            data=self.data_spec,
            data_sha=self.ledger.get_meta("data_sha256"),
            recipe=self.config.recipe,
            shard=shard,
            start=start,
            base=base,
            slices=self._slices_of(samples, shard),
            n_classes=int(self.ledger.get_meta("n_classes")),
            sample_shape=tuple(self.ledger.get_meta("sample_shape")),
            persist=persist,
        )

    def _run(self, jobs: list[ShardJob]) -> list[list[dict[str, Any]]]:
        return run_jobs(run_shard_job, jobs, self.backend, self.n_workers)

    def affected(self, ids: np.ndarray) -> dict[int, int]:
        """Shard -> first slice to retrain, for deleting ``ids`` (ids this store trains on)."""
        rows = self.ledger.rows_of(ids, ("active", "pending"))
        first: dict[int, int] = {}
        for _, j, s in rows.tolist():
            for k in range(self.config.n_shards):
                if j in self.hoods[k]:
                    first[k] = min(first.get(k, s), s)
        return dict(sorted(first.items()))

    # ---- recovery ------------------------------------------------------------------------
    def recover(self) -> list[dict[str, Any]]:
        """Complete whatever a killed process left: an unfinished initial training, or requests
        that were being processed (together with any queued ones). Removes temporary and
        superseded checkpoint files. Returns the receipts of completed requests."""
        with store_lock(self.path):
            remove_temporaries(self.path)
            if self.ledger.get_meta("state") == "training":
                self._train_all()
            receipts: list[dict[str, Any]] = []
            if self.ledger.requests(("running",)):
                receipts = self._process()
            self._collect_garbage()
            return receipts

    def _train_all(self) -> None:
        samples = self.ledger.samples(("active", "pending"))
        jobs = [self._job(samples, k, 0, {}) for k in range(self.config.n_shards)]
        t0 = time.perf_counter()
        results = [row for rows in self._run(jobs) for row in rows]
        seconds = time.perf_counter() - t0
        failpoint("before_commit")
        with self.ledger.transaction():
            self.ledger.put_checkpoints(0, results)
            self.ledger.set_meta("state", "ready")
            self.ledger.set_meta("train_run_seconds", seconds)
            self.ledger.append_event(
                "trained",
                {
                    "version": 0,
                    "checkpoints": {f"{r['shard']}/{r['slice']}": r["sha256"] for r in results},
                },
            )

    def _collect_garbage(self) -> None:
        keep = {c["sha256"] for c in self.ledger.current_checkpoints().values()}
        for f in (self.path / CHECKPOINT_DIR).glob("*.pt"):
            if f.stem not in keep:
                f.unlink(missing_ok=True)

    # ---- deletion ------------------------------------------------------------------------
    def submit(self, ids: list[int] | np.ndarray, request_id: str | None = None) -> dict[str, Any]:
        """Record a deletion request (queued, nothing retrained yet); idempotent by request id.

        Returns the request record. Unknown ids raise; ids already deleted are recorded as such.
        """
        with store_lock(self.path):
            return self._submit(ids, request_id, "queued")

    def _submit(
        self, ids: list[int] | np.ndarray, request_id: str | None, status: str
    ) -> dict[str, Any]:
        want = sorted({int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist()})
        if not want:
            raise ObliviateError("the deletion request names no ids; give at least one id")
        digest = ids_hash(want)
        rid = request_id or f"ids-{digest[:16]}"
        existing = self.ledger.request(rid)
        if existing is not None:
            if existing["ids_hash"] != digest:
                raise ObliviateError(
                    f"request id {rid!r} was already used for a different set of ids; choose a new request id"
                )
            if existing["status"] != "cancelled":
                return existing
            # a request rolled back by `resume --rollback` and asked for again: re-open it, or a
            # repeated erasure request (same ids, same default id) would silently never happen
            states = self.ledger.sample_states(want)
            again = [i for i in want if states.get(i) == "active"]
            with self.ledger.transaction():
                self.ledger.update_request(rid, status=status, finished=None)
                self.ledger.set_states(again, "pending", rid)
                self.ledger.append_event(
                    "request_reopened", {"request_id": rid, "ids_sha256": digest, "status": status}
                )
            reopened = self.ledger.request(rid)
            assert reopened is not None
            return reopened
        states = self.ledger.sample_states(want)
        unknown = [i for i in want if i not in states]
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (
                f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
            )
            raise ObliviateError(
                f"{len(unknown)} id(s) were never trained on in this store: {shown}"
            )
        fresh = [i for i in want if states[i] == "active"]
        with self.ledger.transaction():
            self.ledger.add_request(rid, want, time.time(), status)
            self.ledger.set_states(fresh, "pending", rid)
            self.ledger.append_event(
                "request_submitted",
                {
                    "request_id": rid,
                    "ids_sha256": digest,
                    "n_ids": len(want),
                    "n_new": len(fresh),
                    "n_already_deleted": sum(states[i] == "deleted" for i in want),
                    "n_already_pending": sum(states[i] == "pending" for i in want),
                },
            )
        failpoint("submitted")
        request = self.ledger.request(rid)
        assert request is not None
        return request

    def process(self, *, check_exactness: bool = False) -> list[dict[str, Any]]:
        """Process every queued request in one retraining pass; return their receipts."""
        with store_lock(self.path):
            remove_temporaries(self.path)
            receipts = self._process(check_exactness=check_exactness)
            self._collect_garbage()
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
        and return its record). The same request id returns the same receipt, work done once."""
        self.recover()
        with store_lock(self.path):
            self._check_bases(ids)  # refuse before recording anything if a needed checkpoint is bad
            # "running" from the start: if this process dies, any next command completes it
            request = self._submit(ids, request_id, "queued" if queue else "running")
            if request["status"] in ("queued", "running") and not queue:
                remove_temporaries(self.path)
                self._process(check_exactness=check_exactness)
                self._collect_garbage()
            request = self.ledger.request(request["request_id"])
            assert request is not None
        if request["status"] != "done":
            return {
                "request_id": request["request_id"],
                "status": request["status"],
                "ids_sha256": request["ids_hash"],
            }
        return self.receipt(request["request_id"], include_ids=include_ids)

    def _check_bases(self, ids: list[int] | np.ndarray) -> None:
        current = self.ledger.current_checkpoints()
        for k, start in self.affected(np.asarray(ids, dtype=np.int64).reshape(-1)).items():
            if start > 0:
                read_checkpoint(self.path, current[(k, start - 1)]["sha256"])

    def cancel_pending(self) -> list[str]:
        """Roll back every unfinished request: its samples become active again."""
        with store_lock(self.path):
            pending = self.ledger.requests(("queued", "running"))
            with self.ledger.transaction():
                for req in pending:
                    ids = json.loads(req["ids"])
                    states = self.ledger.sample_states(ids)
                    back = [i for i in ids if states.get(i) == "pending"]
                    self.ledger.set_states(back, "active", None)
                    self.ledger.update_request(
                        req["request_id"], status="cancelled", finished=time.time()
                    )
                    self.ledger.append_event("request_cancelled", {"request_id": req["request_id"]})
            remove_temporaries(self.path)
            self._collect_garbage()
            return [r["request_id"] for r in pending]

    def _process(self, check_exactness: bool = False) -> list[dict[str, Any]]:
        reqs = self.ledger.requests(("queued", "running"))
        if not reqs:
            return []
        t_start = time.time()
        version = int(self.ledger.get_meta("version"))
        current = self.ledger.current_checkpoints()
        pending = self.ledger.samples(("pending",))[:, 0]
        plan = self.affected(pending)
        needed = sorted({j for k in plan for j in self.hoods[k]})  # shards whose data the jobs read
        before_rows = self.ledger.samples(("active", "pending"), shards=needed)
        for k, start in plan.items():  # refuse to build on a damaged checkpoint before any work
            if start > 0:
                read_checkpoint(self.path, current[(k, start - 1)]["sha256"])
        queued = [r for r in reqs if r["status"] == "queued"]
        if queued:  # from now on a crash leaves them "running": any next command completes them
            with self.ledger.transaction():
                for req in queued:
                    self.ledger.update_request(req["request_id"], status="running")
                self.ledger.append_event(
                    "requests_started", {"requests": [r["request_id"] for r in queued]}
                )
        remaining = before_rows[~np.isin(before_rows[:, 0], pending)]
        removed_data = self._rows(pending)
        acc_before = self._accuracy_with(current, removed_data)
        t0 = time.perf_counter()
        jobs = [self._job(remaining, k, start, current) for k, start in plan.items()]
        results = self._run(jobs)
        retrain_seconds = time.perf_counter() - t0
        new_rows = [row for rows in results for row in rows]
        exactness = None
        if check_exactness and jobs:
            scratch = self._run([self._job(remaining, k, 0, current, persist=False) for k in plan])
            shards = [
                {
                    "shard": job.shard,
                    "retrained": res[-1]["sha256"],
                    "from_scratch": ref[-1]["sha256"],
                }
                for job, res, ref in zip(jobs, results, scratch, strict=True)
            ]
            exactness = {
                "checked": True,
                "equal": all(s["retrained"] == s["from_scratch"] for s in shards),
                "shards": shards,
            }
        after = dict(current)
        for row in new_rows:
            after[(row["shard"], row["slice"])] = {
                "sha256": row["sha256"],
                "ids_hash": row["ids_hash"],
                "n_ids": row["n_ids"],
            }
        acc_after = self._accuracy_with(after, removed_data)
        new_version = version + 1 if plan else version
        t_end = time.time()
        failpoint("before_commit")
        with self.ledger.transaction():
            if new_rows:
                self.ledger.put_checkpoints(new_version, new_rows)
            pending_owner = self._pending_owners(pending)
            self.ledger.mark_deleted(pending.tolist())
            self.ledger.set_meta("version", new_version)
            event_payload = {
                "requests": [r["request_id"] for r in reqs],
                "version_before": version,
                "version_after": new_version,
                "removed_sha256": ids_hash(pending),
                "plan": {str(k): v for k, v in plan.items()},
                "checkpoints_after": {f"{r['shard']}/{r['slice']}": r["sha256"] for r in new_rows},
            }
            event = self.ledger.append_event("requests_completed", event_payload)
            for req in reqs:
                receipt = rc.build_receipt(
                    request=req,
                    batch=[r["request_id"] for r in reqs],
                    plan=plan,
                    current=current,
                    after=after,
                    n_slices=self.config.n_slices,
                    n_shards=self.config.n_shards,
                    removed_by_request=pending_owner,
                    version_before=version,
                    version_after=new_version,
                    times=(req["submitted"], t_start, t_end),
                    retrain_seconds=retrain_seconds,
                    accuracy=(acc_before, acc_after),
                    removed_ids=pending,
                    exactness=exactness,
                    event=event,
                    store_config=config_hash(self.config),
                )
                self.ledger.update_request(
                    req["request_id"],
                    status="done",
                    started=t_start,
                    finished=t_end,
                    version_before=version,
                    version_after=new_version,
                    receipt=json.dumps(receipt, sort_keys=True),
                )
        failpoint("after_commit")
        return [self.receipt(r["request_id"]) for r in reqs]

    def _pending_owners(self, pending: np.ndarray) -> dict[int, str]:
        out: dict[int, str] = {}
        ids = pending.tolist()
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for i, owner in self.ledger.db.execute(
                f"SELECT id, request_id FROM samples WHERE id IN ({marks})", chunk
            ):
                out[int(i)] = owner
        return out

    def receipt(self, request_id: str, *, include_ids: bool = False) -> dict[str, Any]:
        """The stored receipt of a completed request (``include_ids`` adds the ids themselves)."""
        req = self.ledger.request(request_id)
        if req is None:
            raise ObliviateError(f"no request {request_id!r} in this store")
        if req["receipt"] is None:
            raise ObliviateError(
                f"request {request_id!r} is {req['status']}; it has no receipt yet (run `obliviate shard resume`)"
            )
        receipt = json.loads(req["receipt"])
        if include_ids:
            receipt["ids"] = json.loads(req["ids"])
        return receipt

    # ---- prediction ----------------------------------------------------------------------
    def _models(self, current: dict[tuple[int, int], dict[str, Any]]) -> list[nn.Module]:
        last = self.config.n_slices - 1
        shape = tuple(self.ledger.get_meta("sample_shape"))
        k_classes = int(self.ledger.get_meta("n_classes"))
        models = []
        for k in range(self.config.n_shards):
            ck = current.get((k, last))
            if ck is None or ck["n_ids"] == 0:
                continue
            key = (k, ck["sha256"])
            if key not in self._models_cache:  # content-addressed: a hash names one set of weights
                model = build_model(shard_model_spec(self.config.recipe.model, k), shape, k_classes)
                model.load_state_dict(read_checkpoint(self.path, ck["sha256"]))
                model.eval()
                if len(self._models_cache) >= 4 * self.config.n_shards:
                    self._models_cache.clear()
                self._models_cache[key] = model
            models.append(self._models_cache[key])
        if not models:
            raise ObliviateError("the store has no trained shard (every shard is empty)")
        return models

    @torch.no_grad()
    def _proba(self, models: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
        outs = [logits(m, x) for m in models]
        if self.config.aggregation == "vote":
            votes = torch.stack([o.argmax(dim=1) for o in outs])
            counts = torch.nn.functional.one_hot(votes, outs[0].shape[1]).sum(dim=0).float()
            return counts / len(models)
        return torch.stack([o.softmax(dim=1) for o in outs]).mean(dim=0)

    def predict_proba(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Aggregated class scores ``[N, n_classes]`` (mean softmax, or vote fractions)."""
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
        shape = tuple(self.ledger.get_meta("sample_shape"))
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
        return self._proba(self._models(self.ledger.current_checkpoints()), xt)

    def predict(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self.predict_proba(x).argmax(dim=1)

    def accuracy(self, data: Dataset) -> float:
        return self._accuracy_with(self.ledger.current_checkpoints(), data)

    def _accuracy_with(
        self, current: dict[tuple[int, int], dict[str, Any]], data: Dataset | None
    ) -> float | None:
        if data is None or len(data) == 0:
            return None
        pred = self._proba(self._models(current), data.x).argmax(dim=1)
        return float((pred == data.y).float().mean())

    def _rows(self, ids: np.ndarray) -> Dataset | None:
        if ids.size == 0:
            return None
        train, _, fingerprint = load_data(self.data_spec)
        if fingerprint != self.ledger.get_meta("data_sha256"):
            raise ObliviateError(
                f"the training data of dataset {self.data_spec.dataset!r} changed since the store was "
                "trained (fingerprint mismatch); point --data-dir at the original data"
            )
        return train.select_ids(np.sort(ids))

    # ---- status and verification ---------------------------------------------------------
    def status(self, *, include_ids: bool = False) -> dict[str, Any]:
        """Each shard's current final checkpoint and sample count, and every request's status."""
        current = self.ledger.current_checkpoints()
        samples = self.ledger.samples(("active", "pending"))
        last = self.config.n_slices - 1
        shards = []
        for k in range(self.config.n_shards):
            ck = current.get((k, last))
            entry: dict[str, Any] = {
                "shard": k,
                "checkpoint": None if ck is None else ck["sha256"],
                "n_samples": 0 if ck is None else ck["n_ids"],
                "n_own": int((samples[:, 1] == k).sum()),
                "neighbourhood": list(self.hoods[k]),
            }
            if include_ids:
                entry["ids"] = np.sort(samples[np.isin(samples[:, 1], self.hoods[k]), 0]).tolist()
            shards.append(entry)
        counts = self.ledger.count_states()
        return {
            "store": str(self.path),
            "model_version": int(self.ledger.get_meta("version")),
            "n_shards": self.config.n_shards,
            "n_slices": self.config.n_slices,
            "graph": self.config.graph,
            "samples": {s: int(counts.get(s, 0)) for s in ("active", "pending", "deleted")},
            "shards": shards,
            "requests": [
                {"request_id": r["request_id"], "status": r["status"]}
                for r in self.ledger.requests()
            ],
        }

    def expected_cost(self) -> float:
        """Expected retraining cost of deleting one random sample, as a fraction of full training."""
        rows = self.ledger.samples(("active", "pending"))
        return expected_cost(rows[:, 1], rows[:, 2], self.hoods, self.config.n_slices)

    def verify(self) -> dict[str, Any]:
        """Re-hash every checkpoint file, check every live checkpoint's ids against the samples
        table, walk the event chain and replay it (the live checkpoints must be those its
        training and deletion events produced). Returns ``{"ok", "problems", ...}``; changes
        nothing."""
        problems: list[str] = []
        checked = 0
        for shard, slice_, version, sha, cur in self.ledger.all_checkpoint_hashes():
            path = checkpoint_path(self.path, sha)
            if not path.exists():
                if cur:
                    problems.append(
                        f"checkpoint shard {shard} slice {slice_} ({sha[:16]}…) is missing"
                    )
                continue
            checked += 1
            if sha256_bytes(path.read_bytes()) != sha:
                problems.append(
                    f"checkpoint shard {shard} slice {slice_} version {version}: file {path.name} was altered (sha256 mismatch)"
                )
        state = self.ledger.get_meta("state")
        current = self.ledger.current_checkpoints()
        if state == "ready":
            samples = self.ledger.samples(("active", "pending"))
            for k in range(self.config.n_shards):
                slices = self._slices_of(samples, k)
                for r in range(self.config.n_slices):
                    ck = current.get((k, r))
                    ids = np.sort(np.concatenate(slices[: r + 1]))
                    if ck is None:
                        problems.append(f"shard {k} slice {r} has no checkpoint")
                    elif ck["ids_hash"] != ids_hash(ids):
                        problems.append(
                            f"shard {k} slice {r}: the ids its checkpoint was trained on differ from the samples table"
                        )
        problems += self.ledger.check_chain()
        events = self.ledger.events()
        # replay the log: the live checkpoints must be the ones its training and deletion events
        # produced, so reverting the tables (and files) to before a deletion does not verify
        recorded: dict[str, str] = {}
        trained = False
        for event in events:
            kind, payload = event[2], json.loads(event[3])
            if kind == "trained":
                recorded, trained = dict(payload["checkpoints"]), True
            elif kind == "requests_completed":
                recorded.update(payload["checkpoints_after"])
        if state == "ready" and trained:
            live = {f"{k}/{r}": c["sha256"] for (k, r), c in current.items()}
            if live != recorded:
                changed = sorted(set(live.items()) ^ set(recorded.items()))
                where = ", ".join(sorted({key for key, _ in changed}))
                problems.append(
                    f"the live checkpoints of {where} are not the ones the event log records "
                    "(the ledger tables were edited or rolled back)"
                )
        if events and events[0][2] == "store_created":
            if json.loads(events[0][3]).get("config_sha256") != config_hash(self.config):
                problems.append(
                    "the store configuration differs from the one recorded when it was created"
                )
        unfinished = [r["request_id"] for r in self.ledger.requests(("queued", "running"))]
        return {
            "ok": not problems,
            "problems": problems,
            "n_checkpoint_files": checked,
            "n_events": len(events),
            "state": state,
            "unfinished_requests": unfinished,
        }
