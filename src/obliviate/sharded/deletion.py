"""Deletion processing: plan which shards a deletion touches, record requests in the ledger,
retrain the affected shards in one pass, commit checkpoints and receipts atomically, roll back
unfinished requests.

Functions take the open :class:`~obliviate.sharded.sisa.ShardedStore` and expect its lock to be
held by the caller; the class's methods are the public entry points.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from obliviate.errors import ObliviateError
from obliviate.sharded.building import run, shard_job
from obliviate.sharded.completion import checkpoints_after, complete
from obliviate.sharded.ledger import ids_hash
from obliviate.sharded.prediction import accuracy_of, shard_models, shard_scores, training_rows
from obliviate.sharded.store import failpoint, read_checkpoint

if TYPE_CHECKING:  # annotations only; sisa imports this module
    from obliviate.sharded.sisa import ShardedStore


def affected(store: ShardedStore, ids: np.ndarray) -> dict[int, int]:
    """Shard -> first slice to retrain, for deleting ``ids`` (ids this store trains on)."""
    rows = store.ledger.rows_of(ids, ("active", "pending"))
    first: dict[int, int] = {}
    for _, j, s in rows.tolist():
        for k in range(store.config.n_shards):
            if j in store.hoods[k]:
                first[k] = min(first.get(k, s), s)
    return dict(sorted(first.items()))


def check_bases(
    store: ShardedStore, ids: list[int] | np.ndarray
) -> dict[tuple[int, int], dict[str, Any]]:
    """Refuse, before anything is recorded, a deletion of ``ids`` that could not complete.

    Reads (and so re-hashes) every checkpoint the deletion would build on and every live
    shard model (the receipt's accuracy figures load them all), and refuses a request that
    would leave no training sample: a request that cannot be carried out must never be
    recorded as running, or it would block every later command. Returns the current
    checkpoints it checked.
    """
    wanted = np.asarray(ids, dtype=np.int64).reshape(-1)
    n_active = store.ledger.count_states().get("active", 0)
    if n_active and len(store.ledger.rows_of(np.unique(wanted), ("active",))) == n_active:
        raise ObliviateError(
            f"the request would delete all {n_active} remaining training samples of the "
            "store, leaving no model; train a new store instead"
        )
    current = store.ledger.current_checkpoints()
    for k, start in affected(store, wanted).items():
        if start > 0:
            read_checkpoint(store.path, current[(k, start - 1)]["sha256"])
    shard_models(store, current)
    return current


def submit(
    store: ShardedStore, ids: list[int] | np.ndarray, request_id: str | None, status: str
) -> dict[str, Any]:
    """Record a request with ``status`` ("queued" or "running"); see :meth:`ShardedStore.submit`."""
    ledger = store.ledger
    want = sorted({int(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist()})
    if not want:
        raise ObliviateError("the deletion request names no ids; give at least one id")
    digest = ids_hash(want)
    rid = request_id or f"ids-{digest[:16]}"
    existing = ledger.request(rid)
    if existing is not None:
        if existing["ids_hash"] != digest:
            raise ObliviateError(
                f"request id {rid!r} was already used for a different set of ids; choose a new request id"
            )
        if existing["status"] != "cancelled":
            return existing
        # a request rolled back by `resume --rollback` and asked for again: re-open it, or a
        # repeated erasure request (same ids, same default id) would silently never happen
        states = ledger.sample_states(want)
        again = [i for i in want if states.get(i) == "active"]
        with ledger.transaction():
            ledger.update_request(rid, status=status, finished=None)
            ledger.set_states(again, "pending", rid)
            ledger.append_event(
                "request_reopened", {"request_id": rid, "ids_sha256": digest, "status": status}
            )
        reopened = ledger.request(rid)
        assert reopened is not None
        return reopened
    states = ledger.sample_states(want)
    unknown = [i for i in want if i not in states]
    if unknown:
        shown = ", ".join(map(str, unknown[:10])) + (
            f" (and {len(unknown) - 10} more)" if len(unknown) > 10 else ""
        )
        raise ObliviateError(f"{len(unknown)} id(s) were never trained on in this store: {shown}")
    fresh = [i for i in want if states[i] == "active"]
    with ledger.transaction():
        ledger.add_request(rid, want, time.time(), status)
        ledger.set_states(fresh, "pending", rid)
        ledger.append_event(
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
    request = ledger.request(rid)
    assert request is not None
    return request


def cancel_pending(store: ShardedStore) -> list[dict[str, Any]]:
    """Mark every queued or running request cancelled, its pending samples active again;
    return the cancelled requests."""
    ledger = store.ledger
    pending = ledger.requests(("queued", "running"))
    with ledger.transaction():
        for req in pending:
            ids = json.loads(req["ids"])
            states = ledger.sample_states(ids)
            back = [i for i in ids if states.get(i) == "pending"]
            ledger.set_states(back, "active", None)
            ledger.update_request(req["request_id"], status="cancelled", finished=time.time())
            ledger.append_event("request_cancelled", {"request_id": req["request_id"]})
    return pending


def process(
    store: ShardedStore,
    check_exactness: bool = False,
    *,
    bases_checked: bool = False,
    current: dict[tuple[int, int], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Complete every queued or running request in one retraining pass; return their receipts.

    ``bases_checked``: the caller has just read (and re-hashed) every checkpoint this pass builds
    on, under the same store lock (:func:`check_bases`), so they are not read a second time here.
    ``current``: the current checkpoints the caller read under the same lock (default: read).
    """
    ledger = store.ledger
    config = store.config
    reqs = ledger.requests(("queued", "running"))
    if not reqs:
        return []
    t_start = time.time()
    version = int(ledger.get_meta("version"))
    current = ledger.current_checkpoints() if current is None else current
    pending = ledger.samples(("pending",))[:, 0]
    plan = affected(store, pending)
    needed = sorted({j for k in plan for j in store.hoods[k]})  # shards whose data the jobs read
    before_rows = ledger.samples(("active", "pending"), shards=needed)
    for k, start in plan.items():  # refuse to build on a damaged checkpoint before any work
        if start > 0 and not bases_checked:
            read_checkpoint(store.path, current[(k, start - 1)]["sha256"])
    queued = [r for r in reqs if r["status"] == "queued"]
    if queued:  # from now on a crash leaves them "running": any next command completes them
        with ledger.transaction():
            for req in queued:
                ledger.update_request(req["request_id"], status="running")
            ledger.append_event("requests_started", {"requests": [r["request_id"] for r in queued]})
    remaining = before_rows[~np.isin(before_rows[:, 0], pending)]
    removed_data = training_rows(store, pending)
    scores_before = shard_scores(store, current, removed_data)
    t0 = time.perf_counter()
    jobs = [shard_job(store, remaining, k, start, current) for k, start in plan.items()]
    results = run(store, jobs)
    retrain_seconds = time.perf_counter() - t0
    new_rows = [row for rows in results for row in rows]
    exactness = None
    if check_exactness and jobs:
        scratch = run(
            store, [shard_job(store, remaining, k, 0, current, persist=False) for k in plan]
        )
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
    after = checkpoints_after(current, new_rows)
    # the receipt's figures: shards the deletion did not retrain keep their scores
    acc_before = accuracy_of(store, scores_before, removed_data)
    acc_after = accuracy_of(
        store,
        shard_scores(store, after, removed_data, scores_before, superseded=current),
        removed_data,
    )
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
        n_slices=config.n_slices,
        times=(t_start, t_end),
        retrain_seconds=retrain_seconds,
        accuracy=(acc_before, acc_after),
        exactness=exactness,
        store_config=store.config_sha256,
    )
    failpoint("after_commit")
    return [receipt_of(store, r["request_id"]) for r in reqs]


def receipt_of(
    store: ShardedStore, request_id: str, *, include_ids: bool = False
) -> dict[str, Any]:
    """See :meth:`ShardedStore.receipt`."""
    req = store.ledger.request(request_id)
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
