"""Recording many deletion requests in one ledger transaction (the service's queue hand-off).

:func:`submit_many` records each ``(ids, request_id)`` exactly as :meth:`ShardedStore.submit`
does (same checks, same ``request_submitted`` event in the hash chain, idempotent by request id),
but under one store lock and in one transaction, with one fsync for the lot instead of one per
request. ``also`` runs inside that transaction, so a caller's own bookkeeping (the service marks
its intake rows forwarded) commits together with the requests or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from obliviate.errors import ObliviateError
from obliviate.sharded.ledger import Ledger, ids_hash
from obliviate.sharded.store import store_lock

if TYPE_CHECKING:
    from obliviate.sharded import ShardedStore


def submit_many(
    store: ShardedStore,
    requests: list[tuple[list[int], str]],
    *,
    also: Callable[[Ledger], None] | None = None,
) -> int:
    """Record every request as ``queued`` (one transaction); return how many were new.

    A request id already recorded with the same ids is left as it is (a cancelled one is not
    re-opened); with other ids it raises :class:`ObliviateError`, and so do ids the store never
    trained on; nothing is recorded then."""
    ledger = store.ledger
    n_new = 0
    with store_lock(store.path), ledger.transaction():
        for ids, rid in requests:
            want = sorted({int(i) for i in ids})
            if not want:
                raise ObliviateError(f"request {rid!r} names no ids")
            digest = ids_hash(want)
            existing = ledger.request(rid)
            if existing is not None:
                if existing["ids_hash"] != digest:
                    raise ObliviateError(
                        f"request id {rid!r} was already used for a different set of ids"
                    )
                continue
            states = ledger.sample_states(want)
            unknown = [i for i in want if i not in states]
            if unknown:
                raise ObliviateError(
                    f"request {rid!r}: {len(unknown)} id(s) were never trained on in this store: "
                    + ", ".join(map(str, unknown[:10]))
                )
            fresh = [i for i in want if states[i] == "active"]
            ledger.add_request(rid, want, time.time(), "queued")
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
            n_new += 1
        if also is not None:
            also(ledger)
    return n_new
