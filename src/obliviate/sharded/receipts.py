"""Deletion receipts: what one completed request removed, what was retrained, and the proof.

A receipt is a JSON object stored in the ledger with its request; asking again for the same
request id returns it unchanged. Keys:

``request_id``, ``status``           the request and ``"done"``.
``ids_sha256``, ``n_ids``             sha256 of the request's sorted ids (little-endian int64) and
                                      their number; the ids themselves only on demand
                                      (``include_ids``, added outside the stored receipt).
``n_removed``                         ids this request moved from trained to deleted;
``n_already_deleted``                 ids deleted by an earlier request (not an error);
``n_removed_in_batch``                ids removed by the whole retraining pass.
``batch``                             request ids processed in the same pass.
``retrained``                         per affected shard: ``shard``, ``slices`` re-run, and the
                                      ``checkpoints_before`` / ``checkpoints_after`` of those slices.
``unaffected_shards``                 shards left untouched.
``model_version_before/after``        the store's model version (one step per retraining pass).
``model_sha256_before/after``         sha256 over the shards' final checkpoint hashes.
``timings``                           submitted / started / finished (UTC), retraining seconds,
                                      seconds from start to commit.
``verification``                      ensemble accuracy on the removed samples before and after,
                                      and the exactness check (retrained shard == shard trained from
                                      scratch on its remaining ids, by checkpoint sha256) when run.
``ledger_event``, ``store_config_sha256``  the hash of the completion event in the ledger's chain
                                      and of the store's configuration.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import numpy as np

RECEIPT_VERSION = 1


def _utc(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def model_hash(current: dict[tuple[int, int], dict[str, Any]], n_shards: int, n_slices: int) -> str:
    """sha256 over the shards' final checkpoint hashes, in shard order: the model's identity."""
    finals = [current.get((k, n_slices - 1), {}).get("sha256", "") for k in range(n_shards)]
    return hashlib.sha256(json.dumps(finals).encode()).hexdigest()


def build_receipt(
    *,
    request: dict[str, Any],
    batch: list[str],
    plan: dict[int, int],
    current: dict[tuple[int, int], dict[str, Any]],
    after: dict[tuple[int, int], dict[str, Any]],
    n_shards: int,
    n_slices: int,
    removed_by_request: dict[int, str],
    version_before: int,
    version_after: int,
    times: tuple[float, float, float],
    retrain_seconds: float,
    accuracy: tuple[float | None, float | None],
    removed_ids: np.ndarray,
    exactness: dict[str, Any] | None,
    event: str,
    store_config: str,
) -> dict[str, Any]:
    """The receipt of one request of a completed retraining pass (see the module docstring)."""
    ids = json.loads(request["ids"])
    rid = request["request_id"]
    n_removed = sum(1 for owner in removed_by_request.values() if owner == rid)
    retrained = [
        {
            "shard": k,
            "slices": list(range(start, n_slices)),
            "checkpoints_before": [current[(k, r)]["sha256"] for r in range(start, n_slices)],
            "checkpoints_after": [after[(k, r)]["sha256"] for r in range(start, n_slices)],
        }
        for k, start in plan.items()
    ]
    submitted, started, finished = times
    return {
        "receipt_version": RECEIPT_VERSION,
        "request_id": rid,
        "status": "done",
        "ids_sha256": request["ids_hash"],
        "n_ids": len(ids),
        "n_removed": n_removed,
        "n_already_deleted": len(ids)
        - n_removed
        - _pending_elsewhere(ids, removed_by_request, rid),
        "n_removed_in_batch": int(removed_ids.size),
        "batch": batch,
        "retrained": retrained,
        "unaffected_shards": [k for k in range(n_shards) if k not in plan],
        "model_version_before": version_before,
        "model_version_after": version_after,
        "model_sha256_before": model_hash(current, n_shards, n_slices),
        "model_sha256_after": model_hash(after, n_shards, n_slices),
        "timings": {
            "submitted": _utc(submitted),
            "started": _utc(started),
            "finished": _utc(finished),
            "retrain_seconds": round(retrain_seconds, 6),
            "total_seconds": round(finished - started, 6),
        },
        "verification": {
            "removed_accuracy_before": accuracy[0],
            "removed_accuracy_after": accuracy[1],
            "exactness": exactness,
        },
        "ledger_event": event,
        "store_config_sha256": store_config,
    }


def _pending_elsewhere(ids: list[int], removed_by_request: dict[int, str], rid: str) -> int:
    """Ids of this request removed in this pass on behalf of another request of the batch."""
    return sum(1 for i in ids if removed_by_request.get(i, rid) != rid)
