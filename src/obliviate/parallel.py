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

Two ways in: :func:`map_jobs` (``[fn(*job) for job in jobs]``, results in order) and
:func:`open_executor` (``submit`` / ``wait_any``, results as they finish, for callers that
decide what to submit next from what has finished, like the benchmark runner).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

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


def _init_worker(n_threads: int = 1) -> None:
    die_with_parent()  # first (torch's import takes seconds): a killed caller takes its workers
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
    return cf.ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(threads_per_worker(n_workers),),
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
    "Executor",
    "InlineExecutor",
    "LocalExecutor",
    "MAX_IDLE_POOLS",
    "RayExecutor",
    "default_workers",
    "map_jobs",
    "open_executor",
    "probe",
    "shutdown",
    "threads_per_worker",
    "warm_pids",
]
