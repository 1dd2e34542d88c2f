"""The files of a shard store: content-addressed checkpoints, written atomically, and a lock.

A store is a folder::

    DIR/ledger.sqlite          the ledger (see ledger.py)
    DIR/checkpoints/<sha256>.pt one file per checkpoint, named by the sha256 of its bytes
    DIR/.lock                   taken (flock) by every command that changes the store

A checkpoint is a plain ``{name: tensor}`` dict serialised with ``torch.save`` into memory (so
the bytes, and hence the hash, depend only on the weights), written to a temporary file, fsynced,
renamed into place, and the folder fsynced: a reader sees the whole file or none. It is loaded
with ``torch.load(weights_only=True)`` (no pickled code runs) after its bytes are re-hashed.

Failpoints: for crash tests, ``OBLIVIATE_SHARD_FAILPOINT=NAME:N`` makes the process SIGKILL
itself the ``N``-th time it reaches the point ``NAME`` (see :data:`FAILPOINTS`).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import torch

from obliviate.errors import ObliviateError

LEDGER_FILE = "ledger.sqlite"
CHECKPOINT_DIR = "checkpoints"
FAILPOINT_ENV = "OBLIVIATE_SHARD_FAILPOINT"
FAILPOINTS = (
    "submitted",  # a forget request is recorded, nothing retrained yet
    "checkpoint_tmp",  # a checkpoint's temporary file is written, not yet renamed
    "checkpoint_written",  # a checkpoint file is in place, the ledger does not know it yet
    "before_commit",  # all retraining done, the ledger transaction not yet committed
    "after_commit",  # committed, superseded checkpoint files not yet removed
)

_hits: dict[str, int] = {}


class _Kept(threading.local):
    memo: dict[str, dict[str, torch.Tensor]] | None = None


_kept = _Kept()
"""Per thread: checkpoints read (re-hashed) or written inside :func:`checkpoint_memo`."""


def kept_checkpoints() -> dict[str, dict[str, torch.Tensor]] | None:
    """This thread's kept checkpoints (None outside :func:`checkpoint_memo`)."""
    return _kept.memo


@contextmanager
def checkpoint_memo() -> Iterator[None]:
    """Within one command under the store lock: a checkpoint read (and re-hashed) once, or
    written by an inline shard job with ``keep=True``, is not read back from disk again.

    The lock is held for the whole scope, so no other process changes the files in it; the
    entries are content-addressed (a sha256 names one set of bytes) and are dropped when the
    scope ends, so the next command re-reads and re-hashes every checkpoint it builds on.
    Worker processes (``local``/``ray`` backends) have no scope and read from disk; the scope
    is per thread (a service's threads each hold their own store).
    """
    outer = _kept.memo
    if outer is None:
        _kept.memo = {}
    try:
        yield
    finally:
        _kept.memo = outer


def failpoint(name: str) -> None:
    """SIGKILL this process when ``$OBLIVIATE_SHARD_FAILPOINT`` is ``name:N`` and this is hit N."""
    spec = os.environ.get(FAILPOINT_ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checkpoint_path(store: Path, sha: str) -> Path:
    return store / CHECKPOINT_DIR / f"{sha}.pt"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_kept(sha: str) -> bool:
    """Whether checkpoint ``sha`` is held by the current :func:`checkpoint_memo` scope."""
    return _kept.memo is not None and sha in _kept.memo


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain dict, sorted keys, contiguous CPU copies of the tensors."""
    return {k: state[k].detach().to("cpu").contiguous().clone() for k in sorted(state)}


def _to_bytes(plain: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save(plain, buf)
    return buf.getvalue()


def serialize_state(state: dict[str, torch.Tensor]) -> bytes:
    """Deterministic bytes of a state dict (plain dict, sorted keys, contiguous CPU tensors)."""
    return _to_bytes(_plain(state))


@contextmanager
def _removed_on_error(tmp: Path) -> Iterator[None]:
    """Delete the half-written ``tmp`` when writing it fails (a full disk: ENOSPC/EFBIG), so the
    failure does not also leave its bytes behind; the error goes on."""
    try:
        yield
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def write_checkpoint(store: Path, state: dict[str, torch.Tensor], *, sync_dir: bool = True) -> str:
    """Write a checkpoint atomically (temp file, fsync, rename, fsync folder); return its sha256.

    ``sync_dir=False`` leaves the folder fsync to the caller (:func:`sync_checkpoints`), who must
    do it before the ledger refers to the file."""
    data = serialize_state(state)
    sha = sha256_bytes(data)
    final = checkpoint_path(store, sha)
    if final.exists() and sha256_bytes(final.read_bytes()) == sha:
        return sha  # content-addressed: the same weights are already stored
    tmp = final.with_name(f".tmp-{os.getpid()}-{sha[:16]}")
    with _removed_on_error(tmp), open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    failpoint("checkpoint_tmp")
    os.replace(tmp, final)
    if sync_dir:
        _fsync_dir(final.parent)
    failpoint("checkpoint_written")
    return sha


_pool: tuple[int, ThreadPoolExecutor] | None = None


def _fsync_pool() -> ThreadPoolExecutor:
    """This process's threads for concurrent fsyncs (made once, not per batch; a forked child
    makes its own)."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsync"))
    return _pool[1]


class CheckpointBatch:
    """Checkpoints written as a group: :meth:`add` writes each one's temporary file at once (no
    fsync: the bytes, and the hash, are taken when it is called), :meth:`commit` fsyncs every
    temporary file concurrently, renames each into place and fsyncs the folder once.

    The guarantee is :func:`write_checkpoint`'s — a file's bytes are durable before its rename, the
    renames durable before :meth:`commit` returns (so before the ledger may refer to them) — at a
    fraction of the wall time: on ext4 one fsync costs a journal commit (about 6-8 ms each on the
    development machine), and concurrent fsyncs share commits (5 checkpoints: 45 ms one after the
    other, about 14 ms together; ``benchmarks/sharded_deletion.py --breakdown``). A crash before
    :meth:`commit` leaves only ``.tmp-*`` files, which :func:`remove_temporaries` deletes.
    """

    def __init__(self, store: Path) -> None:
        self.store = store
        self.pending: list[tuple[Path, Path]] = []  # (temporary, final)

    def add(self, state: dict[str, torch.Tensor], *, keep: bool = False) -> str:
        """Write ``state``'s temporary file (not yet durable); return its sha256. ``keep``:
        inside :func:`checkpoint_memo`, later reads of this checkpoint in the same command
        get the tensors that were serialised, not the file read back."""
        plain = _plain(state)
        data = _to_bytes(plain)
        sha = sha256_bytes(data)
        if keep and _kept.memo is not None:
            _kept.memo[sha] = plain
        final = checkpoint_path(self.store, sha)
        if any(f == final for _, f in self.pending) or (
            final.exists() and sha256_bytes(final.read_bytes()) == sha
        ):
            return sha  # content-addressed: the same weights are already stored or queued
        tmp = final.with_name(f".tmp-{os.getpid()}-{sha[:16]}")
        with _removed_on_error(tmp), open(tmp, "wb") as f:
            f.write(data)
        failpoint("checkpoint_tmp")
        self.pending.append((tmp, final))
        return sha

    def commit(self) -> None:
        """Make every added checkpoint durable and in place (see the class docstring)."""
        if not self.pending:
            return

        def sync(path: Path) -> None:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

        if len(self.pending) == 1:
            sync(self.pending[0][0])
        else:
            list(_fsync_pool().map(sync, [tmp for tmp, _ in self.pending]))
        for tmp, final in self.pending:
            os.replace(tmp, final)
            failpoint("checkpoint_written")
        _fsync_dir(self.store / CHECKPOINT_DIR)
        self.pending = []


def sync_checkpoints(store: Path) -> None:
    """Make the renames of checkpoint files durable (fsync the checkpoint folder)."""
    _fsync_dir(store / CHECKPOINT_DIR)


def read_checkpoint(store: Path, sha: str) -> dict[str, torch.Tensor]:
    """Load a checkpoint after re-hashing its bytes; a missing or altered file is an error.

    Inside :func:`checkpoint_memo` a checkpoint already read or kept in this command is not
    read again (a new dict of the same tensors: load it with ``load_state_dict``, which
    copies, never change the tensors in place)."""
    memo = _kept.memo
    if memo is not None and sha in memo:
        return dict(memo[sha])
    path = checkpoint_path(store, sha)
    if not path.exists():
        raise ObliviateError(
            f"checkpoint {sha[:16]}… is missing from {path.parent}; the store is damaged, "
            "run `obliviate shard verify` and retrain the store"
        )
    data = path.read_bytes()
    if sha256_bytes(data) != sha:
        raise ObliviateError(
            f"checkpoint {path.name} is corrupted (its sha256 no longer matches its name); refusing "
            "to build on it. Run `obliviate shard verify --store DIR`; retrain the store from its data"
        )
    state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    if not isinstance(state, dict):
        raise ObliviateError(f"checkpoint {path.name} does not hold a state dict")
    if memo is not None:
        memo[sha] = state
        return dict(state)
    return state


def remove_temporaries(store: Path) -> int:
    """Delete half-written temporary files left by a killed process; return how many."""
    n = 0
    for tmp in (store / CHECKPOINT_DIR).glob(".tmp-*"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


@contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """Exclusive lock on the store for the duration (released by the kernel if we die)."""
    fd = os.open(store / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
