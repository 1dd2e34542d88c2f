"""API keys with roles, stored as salted scrypt hashes and compared in constant time; per-key
rate limits (token buckets); status-page sessions.

A key reads ``obv_<key_id>_<secret>``: ``key_id`` (8 hex digits) names the row, ``secret`` is 32
random bytes (URL-safe base64). The store keeps ``scrypt(secret, salt, n=2**14, r=8, p=1)`` and
the salt in the table ``serve_keys`` of the ledger file, never the key; a key is shown once, when
it is created. Roles: ``submit`` (file deletions, read their status and receipts), ``read``
(everything that only reads, predictions, metrics and the status page) and ``admin`` (all).

Verification hashes the presented secret with the row's salt (or a dummy salt for an unknown
``key_id``, so an unknown key costs the same time) and compares with :func:`hmac.compare_digest`.
A verified key is remembered for ``cache_seconds`` (by the sha256 of the presented key) so that a
busy client does not pay scrypt per request; a revoked key is refused within that time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from obliviate.errors import ObliviateError

ROLES = ("submit", "read", "admin")
PERMISSIONS: dict[str, frozenset[str]] = {
    "submit": frozenset({"submit", "status"}),
    "read": frozenset({"status", "read"}),
    "admin": frozenset({"submit", "status", "read", "admin"}),
}
SCHEMA = """
CREATE TABLE IF NOT EXISTS serve_keys (
    key_id TEXT PRIMARY KEY, role TEXT NOT NULL, salt BLOB NOT NULL, hash BLOB NOT NULL,
    label TEXT NOT NULL, created REAL NOT NULL, revoked REAL
);
"""
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_DUMMY_SALT = b"\0" * 16


def _kdf(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the ledger file with the service's tables created."""
    db = sqlite3.connect(path, isolation_level=None, timeout=60.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    return db


def add_key(db: sqlite3.Connection, role: str, label: str = "") -> tuple[str, str]:
    """Create a key with ``role``; return ``(key_id, key)``. The key is not stored anywhere."""
    if role not in ROLES:
        raise ObliviateError(f"role {role!r} is not one of {', '.join(ROLES)}")
    key_id = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_bytes(16)
    db.execute(
        "INSERT INTO serve_keys VALUES (?, ?, ?, ?, ?, ?, NULL)",
        (key_id, role, salt, _kdf(secret, salt), label, time.time()),
    )
    return key_id, f"obv_{key_id}_{secret}"


def revoke_key(db: sqlite3.Connection, key_id: str) -> None:
    cur = db.execute(
        "UPDATE serve_keys SET revoked = ? WHERE key_id = ? AND revoked IS NULL",
        (time.time(), key_id),
    )
    if cur.rowcount == 0:
        raise ObliviateError(f"no active key {key_id!r}; `obliviate serve keys list` shows them")


def list_keys(db: sqlite3.Connection) -> list[dict[str, object]]:
    rows = db.execute(
        "SELECT key_id, role, label, created, revoked FROM serve_keys ORDER BY created"
    ).fetchall()
    return [
        {"key_id": k, "role": r, "label": lab, "created": c, "revoked": rv}
        for k, r, lab, c, rv in rows
    ]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id and role."""

    key_id: str
    role: str

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]


class KeyChecker:
    """Verifies presented keys against ``serve_keys`` (thread-safe; one connection per thread)."""

    def __init__(self, path: Path, cache_seconds: float = 30.0) -> None:
        self.path = path
        self.cache_seconds = cache_seconds
        self._local = threading.local()
        self._cache: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect(self.path)
        return db

    def check(self, presented: str) -> Principal | None:
        """The principal of a valid, unrevoked key; None otherwise."""
        token = hashlib.sha256(presented.encode("utf-8", "replace")).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        parts = presented.split("_", 2)
        key_id, secret = (parts[1], parts[2]) if len(parts) == 3 and parts[0] == "obv" else ("", "")
        row = (
            self._db()
            .execute(
                "SELECT role, salt, hash FROM serve_keys WHERE key_id = ? AND revoked IS NULL",
                (key_id,),
            )
            .fetchone()
        )
        salt, stored = (row[1], row[2]) if row else (_DUMMY_SALT, b"\1" * 32)
        ok = hmac.compare_digest(_kdf(secret or "-", salt), stored)
        if not (ok and row):
            return None
        principal = Principal(key_id=key_id, role=row[0])
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now, principal)
        return principal


class RateLimiter:
    """A token bucket per key: ``rate`` requests per second on average, bursts of ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key_id: str) -> float:
        """0.0 when the request may go ahead; else the seconds to wait before retrying."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / self.rate


class Sessions:
    """Status-page sessions (in memory; a restart logs everyone out) and one-time login tickets."""

    def __init__(self, ttl: float = 8 * 3600.0, ticket_ttl: float = 60.0) -> None:
        self.ttl, self.ticket_ttl = ttl, ticket_ttl
        self._sessions: dict[str, tuple[float, Principal]] = {}
        self._tickets: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def ticket(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tickets[token] = (time.monotonic() + self.ticket_ttl, principal)
        return token

    def redeem(self, ticket: str) -> Principal | None:
        with self._lock:
            hit = self._tickets.pop(ticket, None)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def open(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._sessions = {k: v for k, v in self._sessions.items() if v[0] > now}
            self._sessions[token] = (now + self.ttl, principal)
        return token

    def get(self, token: str) -> Principal | None:
        with self._lock:
            hit = self._sessions.get(token)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]
