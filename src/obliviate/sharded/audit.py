"""Status and verification of a store: what each shard holds and every request's state; re-hash
checkpoint files, check them against the samples table, walk and replay the event chain.
Reads only; changes nothing."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any

import numpy as np

from obliviate.sharded.config import config_hash, slices_of
from obliviate.sharded.ledger import ids_hash
from obliviate.sharded.store import checkpoint_path, sha256_bytes

if TYPE_CHECKING:  # annotations only; sisa imports this module
    from obliviate.sharded.sisa import ShardedStore


def status(store: ShardedStore, *, include_ids: bool = False) -> dict[str, Any]:
    """See :meth:`ShardedStore.status`."""
    ledger, config = store.ledger, store.config
    current = ledger.current_checkpoints()
    samples = ledger.samples(("active", "pending"))
    last = config.n_slices - 1
    shards = []
    for k in range(config.n_shards):
        ck = current.get((k, last))
        entry: dict[str, Any] = {
            "shard": k,
            "checkpoint": None if ck is None else ck["sha256"],
            "n_samples": 0 if ck is None else ck["n_ids"],
            "n_own": int((samples[:, 1] == k).sum()),
            "neighbourhood": list(store.hoods[k]),
        }
        if include_ids:
            entry["ids"] = np.sort(samples[np.isin(samples[:, 1], store.hoods[k]), 0]).tolist()
        shards.append(entry)
    counts = ledger.count_states()
    return {
        "store": str(store.path),
        "model_version": int(ledger.get_meta("version")),
        "n_shards": config.n_shards,
        "n_slices": config.n_slices,
        "graph": config.graph,
        "samples": {s: int(counts.get(s, 0)) for s in ("active", "pending", "deleted")},
        "shards": shards,
        "requests": [
            {"request_id": r["request_id"], "status": r["status"]} for r in ledger.requests()
        ],
    }


def verify(store: ShardedStore) -> dict[str, Any]:
    """See :meth:`ShardedStore.verify`."""
    damage = store.ledger.integrity_problems()
    if damage:  # a damaged file is reported, never read further (reads may fail or mislead)
        return {
            "ok": False,
            "problems": [
                f"the ledger file is damaged (SQLite integrity_check: {m})" for m in damage
            ],
            "n_checkpoint_files": 0,
            "n_events": 0,
            "state": "damaged",
            "unfinished_requests": [],
        }
    try:
        return _verify(store)
    except sqlite3.DatabaseError as exc:
        return {
            "ok": False,
            "problems": [f"the ledger cannot be read: {exc}"],
            "n_checkpoint_files": 0,
            "n_events": 0,
            "state": "damaged",
            "unfinished_requests": [],
        }


def _verify(store: ShardedStore) -> dict[str, Any]:
    ledger, config = store.ledger, store.config
    problems: list[str] = []
    checked = 0
    for shard, slice_, version, sha, cur in ledger.all_checkpoint_hashes():
        path = checkpoint_path(store.path, sha)
        if not path.exists():
            if cur:
                problems.append(f"checkpoint shard {shard} slice {slice_} ({sha[:16]}…) is missing")
            continue
        checked += 1
        if sha256_bytes(path.read_bytes()) != sha:
            problems.append(
                f"checkpoint shard {shard} slice {slice_} version {version}: file {path.name} was altered (sha256 mismatch)"
            )
    state = ledger.get_meta("state")
    current = ledger.current_checkpoints()
    if state != "ready":
        problems.append(
            f"the store is in state {state!r}, not 'ready' (training did not finish); "
            "run `obliviate shard resume --store DIR` to finish it"
        )
    if state == "ready":
        samples = ledger.samples(("active", "pending"))
        for k in range(config.n_shards):
            slices = slices_of(samples, store.hoods[k], config.n_slices)
            for r in range(config.n_slices):
                ck = current.get((k, r))
                ids = np.sort(np.concatenate(slices[: r + 1]))
                if ck is None:
                    problems.append(f"shard {k} slice {r} has no checkpoint")
                elif ck["ids_hash"] != ids_hash(ids):
                    problems.append(
                        f"shard {k} slice {r}: the ids its checkpoint was trained on differ from the samples table"
                    )
    problems += ledger.check_chain()
    events = ledger.events()
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
        if json.loads(events[0][3]).get("config_sha256") != config_hash(config):
            problems.append(
                "the store configuration differs from the one recorded when it was created"
            )
    unfinished = [r["request_id"] for r in ledger.requests(("queued", "running"))]
    return {
        "ok": not problems,
        "problems": problems,
        "n_checkpoint_files": checked,
        "n_events": len(events),
        "state": state,
        "unfinished_requests": unfinished,
    }
