"""Where independent jobs run: one module, one meaning of ``inline``, ``local`` and ``ray``.

A job is a picklable argument tuple for a module-level function ``fn``; running it must be a pure
function of its arguments (the benchmark grid's runs, the sharded store's shard jobs), so every
backend returns the same results bit for bit.

``inline``  one job after the other in this process.
``local``   the warm local pool: long-lived worker processes on this machine, forked from a
            ``forkserver`` that imported torch (and the job's module) once. The pool outlives the
            call that started it: the next grid, shard job batch or forget request of this
            process reuses the same workers, with their imports and per-process caches (the
            sharded engine's datasets, torch's lazy modules) already loaded. One idle pool is
            kept per worker count (at most :data:`MAX_IDLE_POOLS`); a pool is stopped instead
            of kept when a call ends with jobs in flight (Ctrl-C, an error) or a worker died.
            With one worker (or one job) it runs inline instead.
``ray``     ``ray.remote`` tasks (one CPU each, never retried): the running Ray instance, the
            cluster at ``address`` (or ``$RAY_ADDRESS``), or a local instance with ``n_workers``
            CPUs that is shut down again when the work is done. Needs the optional extra
            ``obliviate[distributed]``.

Threads: a worker sets torch's thread count so that workers x threads never exceeds the CPUs
it may use: a local worker gets ``max(1, cpus // n_workers)`` intra-op threads (``cpus``: this
process's affinity mask, :func:`default_workers`), a Ray worker the CPUs Ray assigned to its task
(one), and each one inter-op thread. Jobs whose results must not depend on the backend pin
their own count (the benchmark runs and shard jobs use one thread, as inline does), so the
bitwise contract holds whatever the pool's size. Every worker dies with the process that owns it
(:mod:`obliviate._lifetime`), and :func:`shutdown` (also run at exit) stops the warm pool.

Data shared with the workers: :func:`shared_value` builds a value (a loaded dataset) once per
pool owner and keeps its large arrays in files under the owner's folder (``/dev/shm`` when it
exists), which every process of the owner's tree maps copy-on-write: one copy in memory, in the
OS page cache, however many workers use it; a worker's write stays private to it. The folder is
named by the owner's pid and start time, removed by :func:`shutdown` (at exit), and, when the
owner was killed, by the next process that shares data or starts a pool (:func:`sweep_shared`).

Two ways in: :func:`map_jobs` (``[fn(*job) for job in jobs]``, results in order) and
:func:`open_executor` (``submit`` / ``wait_any``, results as they finish, for callers that
decide what to submit next from what has finished, like the benchmark runner).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import hashlib
import io
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from obliviate._lifetime import die_with_parent
from obliviate.errors import ObliviateError

BACKENDS = ("inline", "local", "ray")
"""The backend names (see the module docstring)."""

PRELOAD = ("obliviate._forkserver_preload", "torch")
"""Modules the forkserver imports before it forks any worker (the lifetime hook first, so a
parent killed during torch's import takes the forkserver along)."""


def default_workers() -> int:
    """The CPUs this process may use (its affinity mask), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # pragma: no cover - not on Linux


def threads_per_worker(n_workers: int, cpus: int | None = None) -> int:
    """Torch intra-op threads for each of ``n_workers`` workers sharing ``cpus`` CPUs (default:
    :func:`default_workers`): ``max(1, cpus // n_workers)``, so workers x threads <= cpus
    whenever ``n_workers <= cpus``."""
    return max(1, (cpus or default_workers()) // max(1, n_workers))


def _set_threads(n_threads: int) -> None:
    import torch

    torch.set_num_threads(n_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already ran in this process
        pass


def _init_worker(n_threads: int = 1, owner: tuple[int, int] | None = None) -> None:
    """A worker's start: die with the owner, set the threads, and share the owner's data
    (``owner``: its pid and start time; ``None``: share nothing, as a Ray worker)."""
    die_with_parent()  # first (torch's import takes seconds): a killed caller takes its workers
    _SHARE["owner"] = owner
    _SHARE["on"] = owner is not None
    _set_threads(n_threads)


def _ray_call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """One Ray task: threads from the CPUs Ray assigned to it, then ``fn(*args)``."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    _init_worker(max(1, int(cpus)))
    return fn(*args)


def _call_chunk(fn: Callable[..., Any], chunk: Sequence[tuple[Any, ...]]) -> list[Any]:
    return [fn(*args) for args in chunk]


def probe(job: Any = None) -> dict[str, Any]:
    """Where a job ran: ``pid`` and torch's ``threads`` / ``interop_threads`` there (``job`` is
    echoed back); for checking a backend's thread policy and warm workers."""
    import torch

    return {
        "job": job,
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
    }


def check_backend(backend: str, n_workers: int | None) -> None:
    """Refuse (one line) an unknown backend or fewer than one worker."""
    if backend not in BACKENDS:
        raise ObliviateError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if n_workers is not None and n_workers < 1:
        raise ObliviateError(f"--workers must be >= 1, got {n_workers}")


# ---- the warm local pool -------------------------------------------------------------------
_LOCK = threading.Lock()
_IDLE: dict[int, cf.ProcessPoolExecutor] = {}  # worker count -> a warm pool nobody is using
MAX_IDLE_POOLS = 2
"""Warm pools kept idle at once, one per worker count (the least recently used goes first)."""


def _broken(pool: cf.ProcessPoolExecutor) -> bool:
    return bool(getattr(pool, "_broken", False)) or bool(getattr(pool, "_shutdown_thread", False))


_KEEPER: list[Any] = []  # [request queue] of the thread that starts the forkserver


def _keeper_loop(requests: Any) -> None:
    from multiprocessing import forkserver

    while True:
        done, error = requests.get()
        try:
            forkserver.ensure_running()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            error.append(exc)
        done.set()


def _ensure_forkserver() -> None:
    """Start the forkserver (if it is not running) from a thread that lives as long as this
    process: the kernel's parent-death signal (:mod:`obliviate._lifetime`) follows the *thread*
    that forked, so a forkserver started by a short-lived caller thread (a request handler, a
    test's server thread) would die with it and take every warm worker along."""
    import queue

    with _LOCK:
        if not _KEEPER:
            requests: queue.Queue[Any] = queue.Queue()
            threading.Thread(
                target=_keeper_loop, args=(requests,), name="obliviate-forkserver", daemon=True
            ).start()
            _KEEPER.append(requests)
    done, error = threading.Event(), list[BaseException]()
    _KEEPER[0].put((done, error))
    done.wait()
    if error:
        raise error[0]


def _new_pool(n_workers: int, preload: Iterable[str]) -> cf.ProcessPoolExecutor:
    ctx = multiprocessing.get_context("forkserver")
    # only the first call of this process sets the list: the forkserver lives until we exit
    ctx.set_forkserver_preload(list(dict.fromkeys([*PRELOAD, *preload])))
    _ensure_forkserver()
    sweep_shared()  # what a killed owner left behind goes before a new pool starts
    return cf.ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(threads_per_worker(n_workers), _owner()),
    )


def _acquire(n_workers: int, preload: Iterable[str]) -> cf.ProcessPoolExecutor:
    """The idle warm pool of ``n_workers`` workers, else a new one. A warm pool started in
    another working directory is not reused: its workers resolve relative paths (a store
    ``store/``) against the folder they were started in."""
    with _LOCK:
        idle = _IDLE.pop(n_workers, None)
    if idle is not None:
        if not _broken(idle) and getattr(idle, "_obliviate_cwd", None) == os.getcwd():
            return idle
        _kill(idle)
    pool = _new_pool(n_workers, preload)
    pool._obliviate_cwd = os.getcwd()  # type: ignore[attr-defined]
    return pool


def _release(pool: cf.ProcessPoolExecutor) -> None:
    """Keep ``pool`` warm for the next caller of its size (stop it if another of that size is
    already kept; stop the least recently used beyond :data:`MAX_IDLE_POOLS`)."""
    stop = []
    with _LOCK:
        n = pool._max_workers  # type: ignore[attr-defined]
        if _broken(pool) or n in _IDLE:
            stop.append(pool)
        else:
            _IDLE[n] = pool
            while len(_IDLE) > MAX_IDLE_POOLS:
                stop.append(_IDLE.pop(next(iter(_IDLE))))
    for p in stop:
        _kill(p)


def _kill(pool: cf.ProcessPoolExecutor) -> None:
    """Stop ``pool`` now: queued jobs are cancelled, running ones abandoned."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)


def shutdown() -> None:
    """Stop the warm local pool (its workers exit; the next ``local`` call starts a new one).
    Registered with :mod:`atexit`; call it to free the workers' memory earlier."""
    with _LOCK:
        pools = list(_IDLE.values())
        _IDLE.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)
    drop_shared()


atexit.register(shutdown)


def warm_pids() -> list[int]:
    """Process ids of the idle warm pool's live workers (empty when there is none)."""
    with _LOCK:
        pools = list(_IDLE.values())
    return sorted(
        p.pid
        for pool in pools
        for p in (getattr(pool, "_processes", None) or {}).values()
        if p.pid is not None and p.is_alive()
    )


# ---- data shared with the workers ----------------------------------------------------------
SHARED_ENV = "OBLIVIATE_SHARED_DATA"
"""Set it to ``0`` to turn :func:`shared_value` off (every process builds its own copy)."""

SHARED_PREFIX = "obliviate-shared-"
"""Name of an owner's folder: ``obliviate-shared-<pid>-<start time>`` under :func:`shared_root`."""

MIN_SHARED_BYTES = 1 << 16
"""Arrays smaller than this travel inside the value's pickle instead of a file of their own."""

_SHARE: dict[str, Any] = {"owner": None, "on": True, "swept": False}
_T = TypeVar("_T")


def shared_root() -> Path:
    """Where owners' folders live: ``/dev/shm`` (memory) when it exists and is writable, else
    the temporary folder (its pages are shared through the page cache all the same)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return Path(tempfile.gettempdir())


def _start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot, ``/proc/PID/stat`` field 22;
    0 where there is no ``/proc``), or ``None`` when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except FileNotFoundError:
        return None
    except OSError:  # pragma: no cover - no /proc: tell a live process from a dead one
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0


def _owner() -> tuple[int, int]:
    """(pid, start time) of the process whose folder this one shares: the pool's owner in a
    worker, this process otherwise (a pid alone could be reused by another process)."""
    owner = _SHARE["owner"]
    if owner is None:
        pid = os.getpid()
        owner = _SHARE["owner"] = (pid, _start_time(pid) or 0)
    return owner


def _owner_folder(owner: tuple[int, int]) -> Path:
    return shared_root() / f"{SHARED_PREFIX}{owner[0]}-{owner[1]}"


def sweep_shared() -> list[Path]:
    """Remove the shared-data folders of owners that no longer run (killed before they could
    clean up), of this user only; return the folders removed. Run by every new pool and by the
    first :func:`shared_value` of a process."""
    _SHARE["swept"] = True
    removed: list[Path] = []
    root = shared_root()
    try:
        entries = [e for e in os.scandir(root) if e.name.startswith(SHARED_PREFIX)]
    except OSError:
        return removed
    for entry in entries:
        try:
            pid, start = (int(v) for v in entry.name[len(SHARED_PREFIX) :].split("-"))
            if entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
        except (ValueError, OSError):
            continue
        if _start_time(pid) != start:  # that owner is gone (or its pid now names another)
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def in_worker() -> bool:
    """Whether this process is a worker of a warm local pool (it shares its owner's data)."""
    owner = _SHARE["owner"]
    return bool(_SHARE["on"]) and owner is not None and owner[0] != os.getpid()


def drop_shared() -> None:
    """Remove this process's shared-data folder if it owns one (workers still mapping its files
    keep their pages until they exit). Run by :func:`shutdown`, so at exit too."""
    owner = _SHARE["owner"]
    if owner is not None and owner[0] == os.getpid():
        shutil.rmtree(_owner_folder(owner), ignore_errors=True)


def shared_value(key: Hashable, build: Callable[[], _T]) -> _T:
    """``build()``, computed once for this process and every worker of its warm local pool.

    The first caller of a ``key`` (``repr(key)`` names it) runs ``build`` and writes the value's
    CPU tensors and numpy arrays of at least :data:`MIN_SHARED_BYTES` to ``.npy`` files (made
    read-only) in the owner's folder, the rest of the value to a pickle; every caller (the
    first included) gets the value back with those arrays mapped copy-on-write from the files
    (``np.load(mmap_mode="c")``): the same bits, one copy in memory for all processes, and a
    write by one process stays in its private copy (the files never change). Callers of one
    key wait for the one that builds it (a file lock). Each process should keep what it gets
    (e.g. in a dict), as a per-process cache would: this function reads the files every time.

    Falls back to ``build()`` alone (nothing shared) in a Ray worker, when ``$OBLIVIATE_SHARED_DATA``
    is ``0``, on a platform without ``fcntl``, or when the folder cannot be written (no room
    for the arrays, an ``OSError``). The files live until the owner's :func:`shutdown` (at
    exit) or, if it was killed, until the next :func:`sweep_shared`.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on Unix
        return build()
    if not _SHARE["on"] or os.environ.get(SHARED_ENV, "1") == "0":
        return build()
    if not _SHARE["swept"]:
        sweep_shared()
    folder = _owner_folder(_owner())
    name = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
    target = folder / name
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        lock = open(folder / f"{name}.lock", "ab")  # noqa: SIM115 - closed by the with below
    except OSError:
        return build()
    built: list[_T] = []
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # ``target`` appears complete (a folder renamed into place) or not at all
        if not target.is_dir():
            built.append(build())  # its own errors propagate, as without sharing
            try:
                if not _write_shared(built[0], target):
                    return built[0]
            except OSError:
                return built[0]
        try:
            return _read_shared(target)
        except OSError:  # the owner removed its folder meanwhile (shutdown)
            return built[0] if built else build()


def _write_shared(value: Any, target: Path) -> bool:
    """Write ``value`` to the folder ``target`` (atomically: a temporary folder renamed);
    False (nothing written) when its arrays would not fit in the free space."""
    import numpy as np

    torch = sys.modules.get("torch")  # no tensor in the value unless torch was imported
    arrays: list[np.ndarray] = []
    seen: dict[int, tuple[str, int]] = {}  # id of an object written -> its persistent id

    class _Pickler(pickle.Pickler):
        def persistent_id(self, obj: Any) -> Any:
            if id(obj) in seen:  # one file per object, however often the value holds it
                return seen[id(obj)]
            arr = None
            if (
                torch is not None
                and type(obj) is torch.Tensor
                and obj.device.type == "cpu"
                and obj.layout == torch.strided
                and obj.is_contiguous()
                and not obj.requires_grad
                and not obj.is_conj()
                and not obj.is_neg()
                and obj.nbytes >= MIN_SHARED_BYTES
            ):
                try:
                    arr = obj.numpy()
                except (TypeError, RuntimeError):  # a dtype numpy lacks (bfloat16)
                    return None
                kind = "tensor"
            elif (
                type(obj) is np.ndarray
                and obj.dtype.kind in "biufc"
                and obj.flags.c_contiguous
                and obj.nbytes >= MIN_SHARED_BYTES
            ):
                arr, kind = obj, "ndarray"
            if arr is None:
                return None
            seen[id(obj)] = (kind, len(arrays))
            arrays.append(arr)
            return seen[id(obj)]

    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    need = sum(a.nbytes for a in arrays) + buf.tell()
    if shutil.disk_usage(target.parent).free < need + need // 10 + (1 << 20):
        return False
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o700)
    try:
        for i, arr in enumerate(arrays):
            np.save(tmp / f"{i}.npy", arr, allow_pickle=False)
            os.chmod(tmp / f"{i}.npy", 0o444)
        (tmp / "value.pkl").write_bytes(buf.getbuffer())
        os.chmod(tmp / "value.pkl", 0o444)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def _read_shared(target: Path) -> Any:
    """The value in ``target``, its arrays mapped copy-on-write from their files."""
    import numpy as np

    loaded: dict[int, Any] = {}

    class _Unpickler(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            kind, i = pid
            if i not in loaded:
                arr = np.load(target / f"{i}.npy", mmap_mode="c", allow_pickle=False)
                arr = arr.view(np.ndarray)  # a plain array; the mapping lives as its base
                if kind == "tensor":
                    import torch

                    arr = torch.from_numpy(arr)
                loaded[i] = arr
            return loaded[i]

    with open(target / "value.pkl", "rb") as f:
        return _Unpickler(f).load()


# ---- executors -----------------------------------------------------------------------------
class Executor:
    """Runs submitted jobs; ``capacity`` is how many it runs at once and ``queue_depth`` how
    many more a caller may submit ahead so that no worker waits for the next job. A context
    manager: leaving it stops whatever is still running (Ctrl-C: the runs in flight are lost,
    the others kept)."""

    capacity: int = 1
    queue_depth: int = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        raise NotImplementedError

    def wait_any(self) -> list[Any]:
        """Block until at least one submitted job has finished; return the results of those."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop any job still running."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class InlineExecutor(Executor):
    """One job at a time, in this process, when :meth:`wait_any` asks for it."""

    capacity = 1

    def __init__(self) -> None:
        self._queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.append((fn, args))

    def wait_any(self) -> list[Any]:
        fn, args = self._queue.popleft()
        return [fn(*args)]


class LocalExecutor(Executor):
    """``n_workers`` processes of the warm local pool (see the module docstring). ``preload``:
    more modules for the forkserver to import before forking (used only when this call starts
    the forkserver: the job's module is always imported by the worker on first use)."""

    def __init__(self, n_workers: int, *, preload: Iterable[str] = ()) -> None:
        self.capacity = n_workers
        self.queue_depth = n_workers
        self._preload = tuple(preload)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._futures: set[cf.Future[Any]] = set()

    def _start(self, fn: Callable[..., Any]) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = _acquire(self.capacity, (*self._preload, fn.__module__))
        return self._pool

    def _submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        try:
            future = self._start(fn).submit(fn, *args)
        except cf.BrokenExecutor:  # a warm worker died while idle: nothing ran, start afresh
            if self._futures:
                raise
            self._pool = None
            future = self._start(fn).submit(fn, *args)
        self._futures.add(future)
        return future

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._submit(fn, *args)

    def map(self, fn: Callable[..., Any], jobs: Sequence[Any]) -> list[Any]:
        """``[fn(job) for job in jobs]`` in order; jobs travel in chunks of
        ``max(1, len(jobs) // (8 * capacity))`` (one message per chunk, not per job)."""
        size = max(1, len(jobs) // (8 * min(self.capacity, len(jobs))))
        chunks = [[(job,) for job in jobs[i : i + size]] for i in range(0, len(jobs), size)]
        futures = [self._submit(_call_chunk, fn, chunk) for chunk in chunks]
        out = [r for f in futures for r in f.result()]
        self._futures.difference_update(futures)
        return out

    def wait_any(self) -> list[Any]:
        done, self._futures = cf.wait(self._futures, return_when=cf.FIRST_COMPLETED)
        return [f.result() for f in done]

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        running = [f for f in self._futures if not f.done()]
        self._futures = set()
        if running:  # stopped mid-way (Ctrl-C, an error): jobs in flight are abandoned
            _kill(pool)
        else:
            _release(pool)


class RayExecutor(Executor):
    """Ray tasks of one CPU each: the running instance, the cluster at ``address`` (default
    ``$RAY_ADDRESS``), or a local instance with ``n_workers`` CPUs (``capacity`` =
    ``n_workers``, else the cluster's CPUs)."""

    def __init__(self, n_workers: int | None, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ObliviateError(
                "backend 'ray' needs the optional 'ray' package: "
                "pip install 'obliviate[distributed]' (or use --backend local)"
            ) from None
        self._ray = ray
        self._own = not ray.is_initialized()
        if self._own:
            import logging

            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": logging.ERROR,
            }
            address = address or os.environ.get("RAY_ADDRESS") or None
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=n_workers or 1, **kwargs)
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.capacity = n_workers or cpus
        # a task submitted ahead waits only where the cluster has no free CPU for it
        self.queue_depth = self.capacity if self.capacity >= cpus else 0
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_ray_call)
        self._refs: list[Any] = []

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._refs.append(self._remote.remote(fn, args))

    def wait_any(self) -> list[Any]:
        done, self._refs = self._ray.wait(self._refs, num_returns=1)
        return list(self._ray.get(done))

    def gather(self) -> list[Any]:
        """Every submitted job's result, in submission order."""
        refs, self._refs = self._refs, []
        return list(self._ray.get(refs))

    def close(self) -> None:
        for ref in self._refs:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
        self._refs = []
        if self._own:
            self._ray.shutdown()


def open_executor(
    backend: str = "local",
    *,
    n_workers: int | None = 1,
    address: str | None = None,
    preload: Iterable[str] = (),
) -> Executor:
    """The executor of ``backend`` running ``n_workers`` jobs at once (``None``: 1 locally; on
    Ray, the cluster's CPU count). ``address`` (Ray only) joins an existing cluster;
    ``preload`` (local only) names modules the forkserver imports once. Unknown names and
    ``n_workers < 1`` raise :class:`~obliviate.errors.ObliviateError`."""
    check_backend(backend, n_workers)
    if backend == "ray":
        return RayExecutor(n_workers, address)
    if address:
        raise ObliviateError("--address applies to --backend ray only")
    if backend == "inline" or (n_workers or 1) == 1:
        return InlineExecutor()
    return LocalExecutor(n_workers or 1, preload=preload)


def map_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[Any],
    backend: str = "local",
    n_workers: int | None = None,
) -> list[Any]:
    """``[fn(job) for job in jobs]`` on ``backend``, results in the order of ``jobs``.
    ``n_workers`` defaults to :func:`default_workers`; the local pool has ``n_workers``
    workers (whatever the number of jobs, so calls with different numbers of jobs share one
    warm pool) and a single job runs inline."""
    check_backend(backend, n_workers)
    if not jobs:
        return []
    workers = n_workers or default_workers()
    if backend == "inline" or (backend == "local" and min(workers, len(jobs)) <= 1):
        return [fn(job) for job in jobs]
    if backend == "ray":
        ray_ex = RayExecutor(min(workers, len(jobs)))
        try:
            for job in jobs:
                ray_ex.submit(fn, job)
            return ray_ex.gather()
        finally:
            ray_ex.close()
    local = LocalExecutor(workers)
    try:
        return local.map(fn, jobs)
    finally:
        local.close()


__all__ = [
    "BACKENDS",
    "PRELOAD",
    "SHARED_ENV",
    "Executor",
    "InlineExecutor",
    "LocalExecutor",
    "MAX_IDLE_POOLS",
    "RayExecutor",
    "default_workers",
    "drop_shared",
    "in_worker",
    "map_jobs",
    "open_executor",
    "probe",
    "shared_root",
    "shared_value",
    "shutdown",
    "sweep_shared",
    "threads_per_worker",
    "warm_pids",
]
