"""The ledger of a shard store: one SQLite file in WAL mode.

Tables
------
``meta``         key -> JSON value: the store's configuration, the data fingerprint, the state.
``samples``      id -> shard, slice, state (``active``, ``pending`` = a deletion is requested,
                 ``deleted``) and the request that deleted it.
``checkpoints``  (shard, slice, version) -> sha256 of the file, sha256 of the sorted ids it was
                 trained on, their number, training seconds; ``current`` marks the live one.
``requests``     request id -> sha256 of the sorted ids, the ids, status (``queued``,
                 ``running``, ``done``, ``cancelled``), times, model version before/after, receipt.
``events``       append-only log; every event stores the hash of the previous one and its own
                 hash over (seq, time, kind, payload, previous hash). Triggers refuse UPDATE and
                 DELETE on it.

Every change of state happens inside one transaction (``BEGIN IMMEDIATE`` .. ``COMMIT``), and
``synchronous=FULL`` makes a commit durable, so a process killed at any instant leaves either the
X
``PRAGMA integrity_check``: a damaged file (flipped bytes, a torn copy) is never written to
(:class:`LedgerDamaged`). A ledger whose file or folder is not writable (a read-only backup) is
opened read-only (SQLite ``mode=ro``, ``immutable=1``): reads work, writes are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from obliviate.errors import ObliviateError

GENESIS = "0" * 64
FORMAT = "obliviate-shard-store/1"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE samples (
    id INTEGER PRIMARY KEY, shard INTEGER NOT NULL, slice INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'pending', 'deleted')), request_id TEXT
);
CREATE INDEX samples_state ON samples(state);
CREATE INDEX samples_shard ON samples(shard);
CREATE TABLE checkpoints (
    shard INTEGER NOT NULL, slice INTEGER NOT NULL, version INTEGER NOT NULL,
    sha256 TEXT NOT NULL, ids_hash TEXT NOT NULL, n_ids INTEGER NOT NULL,
    seconds REAL NOT NULL, created REAL NOT NULL, current INTEGER NOT NULL,
    PRIMARY KEY (shard, slice, version)
);
CREATE TABLE requests (
    request_id TEXT PRIMARY KEY, ids_hash TEXT NOT NULL, ids TEXT NOT NULL, n_ids INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'cancelled')),
    submitted REAL NOT NULL, started REAL, finished REAL,
    version_before INTEGER, version_after INTEGER, receipt TEXT
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
    prev TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'the event log is append-only'); END;
"""


def ids_hash(ids: Iterable[int] | np.ndarray) -> str:
    """sha256 of the sorted ids as little-endian int64: the fingerprint of a set of samples."""
    arr = np.sort(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype="<i8"))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def event_hash(seq: int, when: float, kind: str, payload: str, prev: str) -> str:
    text = json.dumps([seq, repr(when), kind, payload, prev], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def storage_failure(exc: sqlite3.Error) -> bool:
    """Whether SQLite's error is the storage failing (disk full, an I/O error, a file it may not
    open or lock) rather than the file being damaged (SQLITE_CORRUPT, SQLITE_NOTADB): the first
    calls for freeing space or fixing permissions and a retry, never for restoring a backup."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name:
        return name.startswith(("SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN"))
    text = str(exc).lower()
    return any(k in text for k in ("disk i/o error", "disk is full", "unable to open"))


def storage_error(path: Path, exc: sqlite3.Error) -> ObliviateError:
    """The one-line error for :func:`storage_failure` ``exc`` on the ledger at ``path``."""
    return ObliviateError(
        f"cannot use the ledger {str(path)!r} (SQLite: {exc}): the disk is full or the file "
        "cannot be written or opened; nothing was changed. Free space (or fix the folder's "
        "permissions) and run the command again; `obliviate shard resume` completes unfinished work"
    )


class LedgerDamaged(ObliviateError):
    """The ledger file fails SQLite's integrity check; nothing is written to it."""


def _writable(path: Path) -> bool:
    folder = path.parent
    return os.access(folder, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def _damaged(path: Path, problems: list[str]) -> str:
    """The one-line message of a damaged ledger."""
    more = f" and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
    return (
        f"the ledger {str(path)!r} is damaged (SQLite: {problems[0]}{more}); nothing was "
        "written. Restore the store from a backup; `obliviate shard verify --store DIR` lists "
        "what it finds"
    )


class Ledger:
    """Thin typed access to the ledger file. Use :meth:`transaction` around every change.

    ``read_only``: ``None`` (default) opens read-only exactly when the file or its folder is not
    writable; ``True`` forces it (nothing may write meanwhile: the file is opened immutable).
    """

    def __init__(self, path: Path, *, read_only: bool | None = None) -> None:
        self.path = path
        self.read_only = (not _writable(Path(path))) if read_only is None else read_only
        if self.read_only:
            uri = f"{Path(path).resolve().as_uri()}?mode=ro&immutable=1"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60.0)
        else:
            self.db = sqlite3.connect(path, isolation_level=None, timeout=60.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self._checked = False

    def integrity_problems(self, *, quick: bool = False) -> list[str]:
        """SQLite's ``integrity_check`` (or the faster ``quick_check``): ``[]`` when sound, else
        its messages (a file too damaged to read gives the error text)."""
        pragma = "quick_check" if quick else "integrity_check"
        try:
            rows = self.db.execute(f"PRAGMA {pragma}").fetchall()
        except sqlite3.DatabaseError as exc:
            if storage_failure(exc):
                raise storage_error(self.path, exc) from None
            return [f"the ledger cannot be read: {exc}"]
        messages = [str(r[0]) for r in rows]
        if messages == ["ok"]:
            return []
        # SQLite packs several problems into one row, newline-separated, under a
        # "*** in database main ***" heading: one problem per entry, headings dropped
        problems = [
            line.strip()
            for m in messages
            for line in m.splitlines()
            if line.strip() and not line.startswith("*** in database")
        ]
        return problems or [" ".join(" ".join(messages).split())]

    def check_intact(self, *, quick: bool = True) -> None:
        """Raise :class:`LedgerDamaged` (one line: the first problem and how many more) when
        SQLite's ``quick_check`` (``quick=False``: ``integrity_check``) finds damage; the
        readers that show a store (``shard status``) call it, so a damaged ledger is never
        shown as sound."""
        problems = self.integrity_problems(quick=quick)
        if problems:
            raise LedgerDamaged(_damaged(self.path, problems))

    @classmethod
    def create(cls, path: Path) -> Ledger:
        ledger = cls(path)
        fmt = json.dumps(FORMAT).replace("'", "''")
        ledger.db.executescript(
            f"BEGIN; {SCHEMA} INSERT INTO meta VALUES ('format', '{fmt}'); COMMIT;"
        )
        return ledger

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.read_only:
            raise ObliviateError(
                f"the ledger {str(self.path)!r} is read-only (a backup or a read-only mount); "
                "copy the store to a writable folder to change it"
            )
        if not self._checked:
            problems = self.integrity_problems()
            if problems:
                raise LedgerDamaged(_damaged(self.path, problems))
            self._checked = True
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ---- meta -----------------------------------------------------------------------------
    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value, sort_keys=True)),
        )

    # ---- samples --------------------------------------------------------------------------
    def add_samples(self, ids: np.ndarray, shard: np.ndarray, slice_: np.ndarray) -> None:
        self.db.executemany(
            "INSERT INTO samples(id, shard, slice, state) VALUES (?, ?, ?, 'active')",
            zip(ids.tolist(), shard.tolist(), slice_.tolist(), strict=True),
        )

    def samples(
        self, states: tuple[str, ...] = ("active", "pending"), shards: list[int] | None = None
    ) -> np.ndarray:
        """``[N, 3]`` int64 array of (id, shard, slice) for samples in ``states`` (and ``shards``,
        when given), sorted by id."""
        marks = ",".join("?" * len(states))
        sql = f"SELECT id, shard, slice FROM samples WHERE state IN ({marks})"
        args: list[object] = list(states)
        if shards is not None:
            sql += f" AND shard IN ({','.join('?' * len(shards))})"
            args += [int(k) for k in shards]
        rows = self.db.execute(sql + " ORDER BY id", args).fetchall()
        return np.asarray(rows, dtype=np.int64).reshape(-1, 3)

    def rows_of(self, ids: Iterable[int], states: tuple[str, ...]) -> np.ndarray:
        """(id, shard, slice) rows of these ids when in ``states``."""
        ids = [int(i) for i in ids]
        marks = ",".join("?" * len(states))
        out: list[tuple[int, int, int]] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            out += self.db.execute(
                f"SELECT id, shard, slice FROM samples WHERE id IN ({','.join('?' * len(chunk))}) AND state IN ({marks})",
                (*chunk, *states),
            ).fetchall()
        return np.asarray(out, dtype=np.int64).reshape(-1, 3)

    def sample_states(self, ids: Iterable[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for i, state in self.db.execute(
                f"SELECT id, state FROM samples WHERE id IN ({marks})", chunk
            ):
                out[int(i)] = state
        return out

    def set_states(self, ids: Iterable[int], state: str, request_id: str | None) -> None:
        self.db.executemany(
            "UPDATE samples SET state = ?, request_id = ? WHERE id = ?",
            ((state, request_id, int(i)) for i in ids),
        )

    def mark_deleted(self, ids: Iterable[int]) -> None:
        self.db.executemany(
            "UPDATE samples SET state = 'deleted' WHERE id = ?", ((int(i),) for i in ids)
        )

    def count_states(self) -> dict[str, int]:
        return dict(
            self.db.execute("SELECT state, COUNT(*) FROM samples GROUP BY state").fetchall()
        )

    # ---- checkpoints ----------------------------------------------------------------------
    def current_checkpoints(self) -> dict[tuple[int, int], dict[str, Any]]:
        rows = self.db.execute(
            "SELECT shard, slice, version, sha256, ids_hash, n_ids FROM checkpoints WHERE current = 1"
        ).fetchall()
        return {
            (s, r): {"version": v, "sha256": h, "ids_hash": ih, "n_ids": n}
            for s, r, v, h, ih, n in rows
        }

    def current_hashes(self) -> set[str]:
        """sha256 of every current checkpoint."""
        return {h for (h,) in self.db.execute("SELECT sha256 FROM checkpoints WHERE current = 1")}

    def all_checkpoint_hashes(self) -> list[tuple[int, int, int, str, int]]:
        return self.db.execute(
            "SELECT shard, slice, version, sha256, current FROM checkpoints ORDER BY shard, slice, version"
        ).fetchall()

    def put_checkpoints(self, version: int, rows: Iterable[dict[str, Any]]) -> None:
        """Make ``rows`` (shard, slice, sha256, ids_hash, n_ids, seconds) the current checkpoints."""
        now = time.time()
        for row in rows:
            self.db.execute(
                "UPDATE checkpoints SET current = 0 WHERE shard = ? AND slice = ? AND current = 1",
                (row["shard"], row["slice"]),
            )
            self.db.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                (
                    row["shard"],
                    row["slice"],
                    version,
                    row["sha256"],
                    row["ids_hash"],
                    row["n_ids"],
                    row["seconds"],
                    now,
                ),
            )

    # ---- requests -------------------------------------------------------------------------
    def request(self, request_id: str) -> dict[str, Any] | None:
        cur = self.db.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,))
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def requests(self, statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM requests"
        args: tuple[str, ...] = ()
        if statuses:
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args = statuses
        cur = self.db.execute(sql + " ORDER BY submitted, request_id", args)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def add_request(
        self, request_id: str, ids: list[int], submitted: float, status: str = "queued"
    ) -> None:
        self.db.execute(
            "INSERT INTO requests(request_id, ids_hash, ids, n_ids, status, submitted) VALUES (?, ?, ?, ?, ?, ?)",
            (request_id, ids_hash(ids), json.dumps(sorted(ids)), len(ids), status, submitted),
        )

    def update_request(self, request_id: str, **fields: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(
            f"UPDATE requests SET {sets} WHERE request_id = ?", (*fields.values(), request_id)
        )

    # ---- events ---------------------------------------------------------------------------
    def last_event(self) -> tuple[int, str]:
        row = self.db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), row[1])

    def append_event(self, kind: str, payload: dict[str, Any]) -> str:
        """Append an event chained to the previous one; return its hash (call inside a transaction)."""
        seq, prev = self.last_event()
        seq += 1
        when = time.time()
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        digest = event_hash(seq, when, kind, text, prev)
        self.db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", (seq, when, kind, text, prev, digest)
        )
        return digest

    def events(self) -> list[tuple[int, float, str, str, str, str]]:
        return self.db.execute(
            "SELECT seq, time, kind, payload, prev, hash FROM events ORDER BY seq"
        ).fetchall()

    def check_chain(self) -> list[str]:
        """Problems in the event chain (empty when every link and hash checks out)."""
        problems: list[str] = []
        prev, expect = GENESIS, 1
        for seq, when, kind, payload, prev_stored, digest in self.events():
            if seq != expect:
                problems.append(f"event log: expected event {expect}, found {seq} (events removed)")
            if prev_stored != prev:
                problems.append(f"event {seq} ({kind}): its previous-hash link is broken")
            if event_hash(seq, when, kind, payload, prev_stored) != digest:
                problems.append(
                    f"event {seq} ({kind}): its content does not match its hash (altered)"
                )
            prev, expect = digest, seq + 1
        return problems
