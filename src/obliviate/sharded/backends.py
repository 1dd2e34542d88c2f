"""Where shard (re)training runs: in this process, a local process pool, or Ray.

A job is a picklable :class:`~obliviate.sharded.sisa.ShardJob`; running it is a pure function of
the job (it reads the data and one checkpoint, writes checkpoint files, and never touches the
ledger), so every backend returns the same checkpoints bit for bit. Every job runs with one torch
thread, whichever backend runs it.

``inline``  one job after the other in this process.
``local``   a ``ProcessPoolExecutor`` (forkserver context, preloading the job's module so torch
            is imported once); a plan with a single job, or
            ``n_workers=1``, runs inline instead of paying for a pool.
``ray``     ``ray.remote`` tasks; uses a running Ray instance or starts a local one (and shuts
            down what it started). Needs the optional extra ``obliviate[distributed]``.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from obliviate._validation import check_choice
from obliviate.errors import ObliviateError

BACKENDS = ("local", "inline", "ray")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def default_workers() -> int:
    return max(
        1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    )


def run_jobs(
    fn: Callable[[Any], Any],
    jobs: Sequence[Any],
    backend: str = "local",
    n_workers: int | None = None,
) -> list[Any]:
    """``[fn(job) for job in jobs]`` on the chosen backend, results in the order of ``jobs``."""
    check_choice("backend", backend, BACKENDS)
    if not jobs:
        return []
    workers = min(n_workers or default_workers(), len(jobs))
    if backend == "ray":
        return _run_ray(fn, jobs, workers)
    if backend == "inline" or workers <= 1:
        return [fn(job) for job in jobs]
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([fn.__module__])  # import torch once; workers fork from there
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        return list(pool.map(fn, jobs))


def _run_ray(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int) -> list[Any]:
    try:
        import ray
    except ImportError:
        raise ObliviateError(
            "backend 'ray' needs the ray package; install the optional extra: "
            "pip install 'obliviate[distributed]' (or use --backend local)"
        ) from None
    started = False
    if not ray.is_initialized():
        ray.init(
            num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False
        )
        started = True
    try:
        task = ray.remote(num_cpus=1)(_ray_call)
        return list(ray.get([task.remote(fn, job) for job in jobs]))
    finally:
        if started:
            ray.shutdown()


def _ray_call(fn: Callable[[Any], Any], job: Any) -> Any:
    _init_worker()
    return fn(job)
