"""Where runs execute: in this process, in a local process pool, or on a Ray cluster.

A backend is a context manager with ``capacity`` (runs it takes at once), ``submit(run, ctx)``
and ``wait_any() -> [record, ...]`` (blocks until at least one submitted run has finished).
Every backend calls the same :func:`obliviate.bench.runner.execute`, with one torch thread per
run, so the same spec gives the same metrics on every backend.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections import deque
from types import TracebackType
from typing import Any

from obliviate.bench.specs import Run
from obliviate.errors import ObliviateError

BACKENDS = ("local", "ray")


class Backend:
    """Interface shared by the backends."""

    capacity: int = 1

    def submit(self, run: Run, ctx: dict[str, Any]) -> None:
        raise NotImplementedError

    def wait_any(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        """Stop any worker still running (Ctrl-C): its run is lost, the others are stored."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class InProcess(Backend):
    """One run at a time, in this process (``--workers 1``)."""

    capacity = 1

    def __init__(self) -> None:
        self._queue: deque[tuple[Run, dict[str, Any]]] = deque()

    def submit(self, run: Run, ctx: dict[str, Any]) -> None:
        self._queue.append((run, ctx))

    def wait_any(self) -> list[dict[str, Any]]:
        from obliviate.bench.runner import execute

        run, ctx = self._queue.popleft()
        return [execute(run, ctx)]


class ProcessPool(Backend):
    """``workers`` spawned processes on this machine."""

    def __init__(self, workers: int) -> None:
        self.capacity = workers
        self._pool = cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn")
        )
        self._futures: set[cf.Future[dict[str, Any]]] = set()

    def submit(self, run: Run, ctx: dict[str, Any]) -> None:
        from obliviate.bench.runner import execute

        self._futures.add(self._pool.submit(execute, run, ctx))

    def wait_any(self) -> list[dict[str, Any]]:
        done, self._futures = cf.wait(self._futures, return_when=cf.FIRST_COMPLETED)
        return [f.result() for f in done]

    def close(self) -> None:
        for f in self._futures:
            f.cancel()
        procs = list(getattr(self._pool, "_processes", {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:  # a run in flight is abandoned, not awaited
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)


class RayBackend(Backend):
    """Runs as Ray tasks: a local Ray instance with ``workers`` CPUs, or the cluster at
    ``address`` (``capacity`` = its CPU count when ``workers`` is not given)."""

    def __init__(self, workers: int | None, address: str | None) -> None:
        try:
            import ray
        except ImportError:
            raise ObliviateError(
                "--backend ray needs the optional 'ray' package: pip install 'obliviate[distributed]'"
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
                ray.init(num_cpus=workers or 1, **kwargs)
        self.capacity = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        from obliviate.bench.runner import execute

        self._remote = ray.remote(num_cpus=1, max_retries=0)(execute)
        self._refs: list[Any] = []

    def submit(self, run: Run, ctx: dict[str, Any]) -> None:
        self._refs.append(self._remote.remote(run, ctx))

    def wait_any(self) -> list[dict[str, Any]]:
        done, self._refs = self._ray.wait(self._refs, num_returns=1)
        return list(self._ray.get(done))

    def close(self) -> None:
        for ref in self._refs:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass
        if self._own:
            self._ray.shutdown()


def make_backend(name: str, *, workers: int | None = 1, address: str | None = None) -> Backend:
    """The backend called ``name`` (``local`` or ``ray``) with ``workers`` parallel runs
    (``None``: 1 locally; on Ray, the cluster's CPU count)."""
    if name not in BACKENDS:
        raise ObliviateError(f"unknown backend {name!r}; valid: {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise ObliviateError(f"--workers must be >= 1, got {workers}")
    if name == "ray":
        return RayBackend(workers, address)
    if address:
        raise ObliviateError("--address applies to --backend ray only")
    return InProcess() if (workers or 1) == 1 else ProcessPool(workers or 1)


__all__ = ["BACKENDS", "Backend", "InProcess", "ProcessPool", "RayBackend", "make_backend"]
