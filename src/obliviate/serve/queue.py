"""The service's intake queue: accepted deletion requests, in the ledger file.

``POST /v1/deletions`` writes one row of ``serve_requests`` in a durable transaction (the
ledger's SQLite file, WAL, ``synchronous=FULL``; concurrent requests share one commit through
:class:`GroupCommitter`) before it answers 202; nothing is held in process memory. The worker
then *forwards* accepted rows to the store (:func:`obliviate.sharded.intake.submit_many`: the
store's requests and the rows marked forwarded commit in one transaction; idempotent by request
id) and runs one retraining pass (:meth:`ShardedStore.process`). A pass killed midway is
completed by :meth:`ShardedStore.recover` at the next start, and rows not yet forwarded are
forwarded then. So no accepted request is lost and none runs twice.

Idempotency: a row stores the caller's key id, its ``Idempotency-Key`` and the sha256 of the
canonical request body; ``UNIQUE (key_id, idem_key)``. The same key with the same body returns
the existing request; with another body the caller gets a conflict.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS serve_requests (
    request_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, idem_key TEXT, body_sha256 TEXT NOT NULL,
    ids TEXT NOT NULL, n_ids INTEGER NOT NULL, unknown_ids TEXT NOT NULL,
    subject_sha256 TEXT, accepted REAL NOT NULL, forwarded REAL, error TEXT,
    UNIQUE (key_id, idem_key)
);
CREATE INDEX IF NOT EXISTS serve_requests_forwarded ON serve_requests(forwarded);
"""


def body_sha256(body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def unknown_sha256(ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(sorted(ids)).encode()).hexdigest()


@dataclass(frozen=True)
class Accepted:
    request_id: str
    replayed: bool


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with another body."""


@dataclass(frozen=True)
class Intake:
    """One request to record: who sent it, its Idempotency-Key, body, known and unknown ids."""

    key_id: str
    idem_key: str | None
    body: dict[str, Any]
    ids: list[int]
    unknown_ids: list[int]
    subject_sha256: str | None


def _insert(db: sqlite3.Connection, item: Intake) -> Accepted:
    """Record ``item`` inside the caller's transaction (or find its Idempotency-Key's request)."""
    digest = body_sha256(item.body)
    if item.idem_key is not None:
        row = db.execute(
            "SELECT request_id, body_sha256 FROM serve_requests WHERE key_id = ? AND idem_key = ?",
            (item.key_id, item.idem_key),
        ).fetchone()
        if row is not None:
            if row[1] != digest:
                raise IdempotencyConflict(row[0])
            return Accepted(row[0], True)
    rid = "del-" + uuid.uuid4().hex
    db.execute(
        "INSERT INTO serve_requests VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
        (
            rid,
            item.key_id,
            item.idem_key,
            digest,
            json.dumps(sorted(item.ids)),
            len(item.ids),
            json.dumps(sorted(item.unknown_ids)),
            item.subject_sha256,
            time.time(),
        ),
    )
    return Accepted(rid, False)


def accept(db: sqlite3.Connection, item: Intake) -> Accepted:
    """Record one request durably, in its own transaction."""
    db.execute("BEGIN IMMEDIATE")
    try:
        got = _insert(db, item)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return got


class GroupCommitter:
    """Records requests from many threads with one transaction (one fsync) per group.

    :meth:`accept` blocks until its request is durable (or refused) and returns as
    :func:`accept` does; requests that arrive while a commit is under way go into the next one.
    Durability is unchanged (nothing is answered before its commit); throughput is no longer
    bounded by one fsync per request."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], max_group: int = 256) -> None:
        self._connect, self.max_group = connect, max_group
        self._queue: SimpleQueue[tuple[Intake, Future[Accepted]] | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="obliviate-intake", daemon=True)
        self._thread.start()

    def accept(self, item: Intake) -> Accepted:
        future: Future[Accepted] = Future()
        self._queue.put((item, future))
        return future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(30)

    def _run(self) -> None:
        db = self._connect()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                group = [first]
                while len(group) < self.max_group and not self._queue.empty():
                    nxt = self._queue.get()
                    if nxt is None:
                        self._queue.put(None)
                        break
                    group.append(nxt)
                self._commit(db, group)
        finally:
            db.close()

    def _commit(self, db: sqlite3.Connection, group: list[tuple[Intake, Future[Accepted]]]) -> None:
        results: list[Accepted | BaseException] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for item, _ in group:
                try:
                    results.append(_insert(db, item))
                except IdempotencyConflict as exc:
                    results.append(exc)
            db.execute("COMMIT")
        except BaseException as exc:  # nothing of the group is recorded
            if db.in_transaction:
                db.execute("ROLLBACK")
            for _, future in group:
                future.set_exception(exc)
            return
        for (_, future), result in zip(group, results, strict=True):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


def unforwarded(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Accepted rows not yet handed to the store, oldest first."""
    cur = db.execute(
        "SELECT request_id, ids, accepted FROM serve_requests WHERE forwarded IS NULL "
        "ORDER BY accepted, request_id"
    )
    return [{"request_id": r, "ids": json.loads(i), "accepted": a} for r, i, a in cur.fetchall()]


def oldest_unforwarded(db: sqlite3.Connection) -> float | None:
    row = db.execute("SELECT MIN(accepted) FROM serve_requests WHERE forwarded IS NULL").fetchone()
    return None if row is None or row[0] is None else float(row[0])


def mark_forwarded(
    db: sqlite3.Connection, request_ids: list[str], *, in_transaction: bool = False
) -> None:
    """Mark rows handed to the store (inside the caller's transaction with ``in_transaction``)."""
    now = time.time()
    if not in_transaction:
        db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "UPDATE serve_requests SET forwarded = ? WHERE request_id = ?",
        [(now, r) for r in request_ids],
    )
    if not in_transaction:
        db.execute("COMMIT")


def set_error(db: sqlite3.Connection, request_ids: list[str], error: str | None) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.executemany(
        "UPDATE serve_requests SET error = ? WHERE request_id = ?",
        [(error, r) for r in request_ids],
    )
    db.execute("COMMIT")


def row(db: sqlite3.Connection, request_id: str) -> dict[str, Any] | None:
    cur = db.execute("SELECT * FROM serve_requests WHERE request_id = ?", (request_id,))
    found = cur.fetchone()
    if found is None:
        return None
    return dict(zip([d[0] for d in cur.description], found, strict=True))


def view(db: sqlite3.Connection, request_id: str) -> dict[str, Any] | None:
    """The request as the API shows it: the intake row joined with the store's request."""
    cur = db.execute(
        "SELECT s.request_id, s.ids, s.n_ids, s.unknown_ids, s.subject_sha256, s.accepted, "
        "s.forwarded, s.error, r.status, r.ids_hash, r.started, r.finished, r.version_before, "
        "r.version_after FROM serve_requests s LEFT JOIN requests r USING (request_id) "
        "WHERE s.request_id = ?",
        (request_id,),
    )
    found = cur.fetchone()
    if found is None:
        return None
    return _started(db, _view(dict(zip([d[0] for d in cur.description], found, strict=True))))


def recent(db: sqlite3.Connection, limit: int = 50) -> list[dict[str, Any]]:
    cur = db.execute(
        "SELECT s.request_id, s.ids, s.n_ids, s.unknown_ids, s.subject_sha256, s.accepted, "
        "s.forwarded, s.error, r.status, r.ids_hash, r.started, r.finished, r.version_before, "
        "r.version_after FROM serve_requests s LEFT JOIN requests r USING (request_id) "
        "ORDER BY s.accepted DESC, s.request_id LIMIT ?",
        (limit,),
    )
    cols = [d[0] for d in cur.description]
    return [_started(db, _view(dict(zip(cols, r, strict=True)))) for r in cur.fetchall()]


def _started(db: sqlite3.Connection, v: dict[str, Any]) -> dict[str, Any]:
    """A running request's start time: the store writes ``started`` only when the pass ends,
    so take the time of its ``requests_started`` event (the pass that set it running)."""
    if v["status"] == "running" and v["timestamps"]["started"] is None:
        row = db.execute(
            "SELECT time FROM events WHERE kind = 'requests_started' AND payload LIKE ? "
            "ORDER BY seq DESC LIMIT 1",
            (f'%"{v["request_id"]}"%',),
        ).fetchone()
        if row is not None:
            v["timestamps"]["started"] = _utc(row[0])
    return v


def counts(db: sqlite3.Connection) -> dict[str, int]:
    """Requests of the service by state (queued, running, done, failed, cancelled)."""
    out = dict.fromkeys(("queued", "running", "done", "failed", "cancelled"), 0)
    for status, error, n in db.execute(
        "SELECT COALESCE(r.status, 'queued'), s.error IS NOT NULL, COUNT(*) FROM serve_requests s "
        "LEFT JOIN requests r USING (request_id) GROUP BY 1, 2"
    ):
        state = "failed" if error and status in ("queued", "running") else status
        out[state] = out.get(state, 0) + int(n)
    return out


def _utc(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _view(r: dict[str, Any]) -> dict[str, Any]:
    status = r["status"] or "queued"
    if r["error"] and status in ("queued", "running"):
        status = "failed"
    unknown = json.loads(r["unknown_ids"])
    ids = json.loads(r["ids"])
    return {
        "request_id": r["request_id"],
        "status": status,
        "n_ids": r["n_ids"],
        "ids_sha256": r["ids_hash"] or _ids_hash(ids),
        "n_unknown_ids": len(unknown),
        "unknown_ids": unknown[:100],
        "subject_sha256": r["subject_sha256"],
        "error": r["error"],
        "timestamps": {
            "accepted": _utc(r["accepted"]),
            "forwarded": _utc(r["forwarded"]),
            "started": _utc(r["started"]),
            "finished": _utc(r["finished"]),
        },
        "model_version_before": r["version_before"],
        "model_version_after": r["version_after"],
    }


def _ids_hash(ids: list[int]) -> str:
    from obliviate.sharded.ledger import ids_hash

    return ids_hash(ids)
