"""Where independent jobs run: one module, one meaning of ``inline``, ``local`` and ``ray``.

A job is a picklable argument tuple for a module-level function ``fn``; running it must be a pure
function of its arguments (the benchmark grid's runs, the sharded store's shard jobs), so every
backend returns the same results bit for bit. Every job runs with one torch thread.

``inline``  one job after the other in this process.
``local``   a process pool on this machine (``forkserver`` processes that preload ``fn``'s module,
            so torch is imported once); with one worker (or one job) it runs inline instead of
            paying for a pool.
``ray``     ``ray.remote`` tasks (one CPU each, never retried): the running Ray instance, the
            cluster at ``address``, or a local instance with ``n_workers`` CPUs that is shut down
            again when the work is done. Needs the optional extra ``obliviate[distributed]``.

Two ways in: :func:`map_jobs` (``[fn(*job) for job in jobs]``, results in order) and
:func:`open_executor` (``submit`` / ``wait_any``, results as they finish, for callers that
decide what to submit next from what has finished, like the benchmark runner).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from obliviate._lifetime import die_with_parent
from obliviate.errors import ObliviateError

BACKENDS = ("inline", "local", "ray")
"""The backend names (see the module docstring)."""


def default_workers() -> int:
    """The CPUs this process may use (its affinity mask), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # pragma: no cover - not on Linux


def _init_worker() -> None:
    die_with_parent()  # first (torch's import takes seconds): a killed caller takes its workers
    import torch

    torch.set_num_threads(1)


def _call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    _init_worker()
    return fn(*args)


def _check(backend: str, n_workers: int | None) -> None:
    if backend not in BACKENDS:
        raise ObliviateError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if n_workers is not None and n_workers < 1:
        raise ObliviateError(f"--workers must be >= 1, got {n_workers}")


class Executor:
    """Runs submitted jobs; ``capacity`` is how many it runs at once. A context manager: leaving
    it stops whatever is still running (Ctrl-C: the runs in flight are lost, the others kept)."""

    capacity: int = 1

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
    """``n_workers`` forkserver processes on this machine."""

    def __init__(self, n_workers: int) -> None:
        self.capacity = n_workers
        self._pool: cf.ProcessPoolExecutor | None = None
        self._futures: set[cf.Future[Any]] = set()

    def _start(self, fn: Callable[..., Any]) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("forkserver")
            # import torch once (workers fork from the forkserver); the forkserver dies with us
            ctx.set_forkserver_preload([fn.__module__, "obliviate._forkserver_preload"])
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.capacity, mp_context=ctx, initializer=_init_worker
            )
        return self._pool

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._futures.add(self._start(fn).submit(fn, *args))

    def wait_any(self) -> list[Any]:
        done, self._futures = cf.wait(self._futures, return_when=cf.FIRST_COMPLETED)
        return [f.result() for f in done]

    def close(self) -> None:
        if self._pool is None:
            return
        for f in self._futures:
            f.cancel()
        procs = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # a job in flight is abandoned, not awaited
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
        self._pool = None


class RayExecutor(Executor):
    """Ray tasks of one CPU each: the running instance, the cluster at ``address``, or a local
    instance with ``n_workers`` CPUs (``capacity`` = ``n_workers``, else the cluster's CPUs)."""

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
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=n_workers or 1, **kwargs)
        self.capacity = n_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_call)
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
    backend: str = "local", *, n_workers: int | None = 1, address: str | None = None
) -> Executor:
    """The executor of ``backend`` running ``n_workers`` jobs at once (``None``: 1 locally; on
    Ray, the cluster's CPU count). ``address`` (Ray only) joins an existing cluster. Unknown
    names and ``n_workers < 1`` raise :class:`~obliviate.errors.ObliviateError`."""
    _check(backend, n_workers)
    if backend == "ray":
        return RayExecutor(n_workers, address)
    if address:
        raise ObliviateError("--address applies to --backend ray only")
    if backend == "inline" or (n_workers or 1) == 1:
        return InlineExecutor()
    return LocalExecutor(n_workers or 1)


def map_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[Any],
    backend: str = "local",
    n_workers: int | None = None,
) -> list[Any]:
    """``[fn(job) for job in jobs]`` on ``backend``, results in the order of ``jobs``.
    ``n_workers`` defaults to :func:`default_workers` and is capped by the number of jobs."""
    _check(backend, n_workers)
    if not jobs:
        return []
    workers = min(n_workers or default_workers(), len(jobs))
    if backend == "inline" or (backend == "local" and workers <= 1):
        return [fn(job) for job in jobs]
    if backend == "ray":
        ray_ex = RayExecutor(workers)
        try:
            for job in jobs:
                ray_ex.submit(fn, job)
            return ray_ex.gather()
        finally:
            ray_ex.close()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([fn.__module__, "obliviate._forkserver_preload"])
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as p:
        return list(p.map(fn, jobs))


__all__ = [
    "BACKENDS",
    "Executor",
    "InlineExecutor",
    "LocalExecutor",
    "RayExecutor",
    "default_workers",
    "map_jobs",
    "open_executor",
]
