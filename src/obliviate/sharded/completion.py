"""Commit a completed retraining pass: one transaction that records the new checkpoints, marks the
removed ids deleted, moves the model version, appends the ``requests_completed`` event and stores
one receipt per request (:func:`obliviate.sharded.receipts.build_receipt`).

Shared by the three exact engines (the SISA store, :mod:`obliviate.sharded.deletion`; sharded
continual learning, :mod:`obliviate.sharded.continual`; LLM adapter shards,
:mod:`obliviate.llm.sharded`), so their receipts and ledger rows are assembled one way.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from obliviate.sharded import receipts as rc
from obliviate.sharded.ledger import Ledger, ids_hash

__all__ = ["checkpoints_after", "complete", "pending_owners"]


def checkpoints_after(
    current: dict[tuple[int, int], dict[str, Any]], new_rows: list[dict[str, Any]]
) -> dict[tuple[int, int], dict[str, Any]]:
    """``current`` with the rows a retraining pass wrote in place of those they supersede."""
    after = dict(current)
    for row in new_rows:
        after[(row["shard"], row["slice"])] = {
            "sha256": row["sha256"],
            "ids_hash": row["ids_hash"],
            "n_ids": row["n_ids"],
        }
    return after


def pending_owners(ledger: Ledger, pending: np.ndarray) -> dict[int, str]:
    """Id -> the request that made it pending (``pending``: int64 ids, shape ``(n,)``)."""
    out: dict[int, str] = {}
    ids = pending.tolist()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for i, owner in ledger.db.execute(
            f"SELECT id, request_id FROM samples WHERE id IN ({marks})", chunk
        ):
            out[int(i)] = owner
    return out


def complete(
    ledger: Ledger,
    *,
    requests: list[dict[str, Any]],
    plan: dict[int, int],
    current: dict[tuple[int, int], dict[str, Any]],
    new_rows: list[dict[str, Any]],
    pending: np.ndarray,
    version: int,
    n_shards: int,
    n_slices: int,
    times: tuple[float, float],
    retrain_seconds: float,
    accuracy: tuple[float | None, float | None],
    exactness: dict[str, Any] | None,
    store_config: str,
    event_extra: dict[str, Any] | None = None,
    receipt_extra: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> int:
    """Commit one retraining pass of ``requests`` in one ledger transaction; return the model
    version after it.

    Args:
        ledger: the store's open ledger; the caller holds the store lock.
        requests: the pass's request rows (:meth:`Ledger.requests`), in processing order.
        plan: shard -> first slice (stage) retrained; empty when the pass retrained nothing
            (every id already deleted): then the model version stays where it was.
        current: the checkpoints before the pass, ``(shard, slice) -> row``.
        new_rows: the checkpoint rows the pass wrote (``shard``, ``slice``, ``sha256``,
            ``ids_hash``, ``n_ids``, ...), recorded under the new version.
        pending: int64 ids, shape ``(n,)``, the pass removes (marked deleted).
        version: the model version before the pass.
        n_shards, n_slices: the store's shards and slices (stages) per shard.
        times: ``(started, finished)``, seconds since the epoch.
        retrain_seconds: wall seconds of the retraining itself.
        accuracy: the ensemble's accuracy on the removed samples before and after.
        exactness: the exactness check's result, or None when not run.
        store_config: sha256 of the store's configuration.
        event_extra: keys added to the ``requests_completed`` event's payload.
        receipt_extra: keys added to every receipt.
        meta: ledger meta keys written in the same transaction.

    Returns:
        The model version after the pass: ``version + 1`` when ``plan`` is non-empty, else
        ``version``.
    """
    new_version = version + 1 if plan else version
    after = checkpoints_after(current, new_rows)
    batch = [r["request_id"] for r in requests]
    started, finished = times
    with ledger.transaction():
        if new_rows:
            ledger.put_checkpoints(new_version, new_rows)
        owners = pending_owners(ledger, pending)
        ledger.mark_deleted(pending.tolist())
        for key, value in (meta or {}).items():
            ledger.set_meta(key, value)
        if new_version != version:
            ledger.set_meta("version", new_version)
        event = ledger.append_event(
            "requests_completed",
            {
                "requests": batch,
                "version_before": version,
                "version_after": new_version,
                "removed_sha256": ids_hash(pending),
                "plan": {str(k): v for k, v in plan.items()},
                "checkpoints_after": {f"{r['shard']}/{r['slice']}": r["sha256"] for r in new_rows},
                **(event_extra or {}),
            },
        )
        for req in requests:
            receipt = rc.build_receipt(
                request=req,
                batch=batch,
                plan=plan,
                current=current,
                after=after,
                n_slices=n_slices,
                n_shards=n_shards,
                removed_by_request=owners,
                version_before=version,
                version_after=new_version,
                times=(req["submitted"], started, finished),
                retrain_seconds=retrain_seconds,
                accuracy=accuracy,
                removed_ids=pending,
                exactness=exactness,
                event=event,
                store_config=store_config,
            )
            receipt.update(receipt_extra or {})
            ledger.update_request(
                req["request_id"],
                status="done",
                started=started,
                finished=finished,
                version_before=version,
                version_after=new_version,
                receipt=json.dumps(receipt, sort_keys=True),
            )
    return new_version
