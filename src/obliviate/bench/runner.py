"""Run a benchmark grid: skip finished runs, execute the rest on a backend, append each result.

The runner knows no method and no run kind: a grid point (:class:`obliviate.bench.specs.Run`)
names its kind, and :func:`execute` builds that kind's spec from it
(``Spec.from_dict``, plus the runner's ``data_dir`` and ``cache_dir`` where the spec has those
fields) and calls the kind's ``run`` (:data:`obliviate.experiments.KINDS`). Kind modules are
imported lazily, inside the worker that runs them (the ``local`` pool's forkserver imports the
grid's kind modules once, before it forks the workers). Where runs execute is
:mod:`obliviate.parallel` (``inline``, ``local`` or ``ray``); the local pool stays warm for the
next grid of this process.

Crash safety: a result is appended (one line, fsync) as soon as its run finishes, and a run's key
is the hash of its resolved spec; re-running the same spec skips every key already in
``results.jsonl`` with status ``ok``. Killing the runner loses only the runs in flight.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from obliviate.bench import results as store
from obliviate.bench.specs import Run, load_spec
from obliviate.experiments import KINDS, kind
from obliviate.parallel import open_executor
from obliviate.provenance import provenance

# ---- executing one run (in whichever process the backend picks) -----------------------------


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _ray_node() -> str | None:
    """The Ray node id when this runs as a Ray task (hosts of a cluster may share a name)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return str(ray.get_runtime_context().get_node_id())


def run_point(point: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point through its kind: ``Spec.from_dict(point)`` (with ``ctx``'s
    ``data_dir`` / ``cache_dir`` for specs that have such fields), then the kind's ``run``."""

    mod = kind(point["kind"])
    names = {f.name for f in dataclasses.fields(mod.Spec)}
    values = {k: v for k, v in point.items() if k != "kind"}
    for key in ("data_dir", "cache_dir"):
        if ctx.get(key) is not None and key in names:
            values[key] = ctx[key]
    return dict(mod.run(mod.Spec.from_dict(values)))


def execute(run: Run, ctx: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point and return its result record (never raises for a failed run: the
    record says ``status: error`` with the message)."""
    import torch

    torch.set_num_threads(int(ctx.get("threads", 1)))
    started, t0 = _utc(), time.perf_counter()
    record: dict[str, Any] = {
        "key": run.key,
        "kind": run.kind,
        "label": run.label(),
        "run": run.spec,
    }
    try:
        out = run_point(run.spec, ctx)
        record["status"] = "ok"
        record["spec"] = out.pop("spec", run.spec)
        entry_prov = out.pop("provenance", None)
        record["metrics"] = out
    except Exception as exc:  # a failing run is recorded, the grid goes on
        record["status"] = "error"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc(limit=8)
        entry_prov = None
    record["timings"] = {
        "seconds": time.perf_counter() - t0,
        "started_utc": started,
        "finished_utc": _utc(),
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }
    node = _ray_node()
    if node is not None:
        record["timings"]["node"] = node
    record["provenance"] = entry_prov or provenance(seed=run.spec.get("seed"))
    return record


# ---- the grid --------------------------------------------------------------------------------


def plan(runs: Sequence[Run], done: set[str]) -> list[Run]:
    """The runs still to do, in grid order."""
    return [r for r in runs if r.key not in done]


def run_grid(
    runs: Sequence[Run],
    out: str | Path,
    *,
    backend: str = "local",
    workers: int | None = 1,
    address: str | None = None,
    data_dir: str | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, int]:
    """Run every unfinished run of ``runs`` and append its record to ``out/results.jsonl``.

    Runs of one cache group (unlearning runs sharing an original and oracle) wait until the
    first of their group has finished, so those models are trained once. Returns counts:
    ``total``, ``skipped``, ``ok``, ``error``.
    """

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = store.results_path(out)
    store.repair(path)
    done = store.finished_keys(path)
    todo = plan(runs, done)
    counts = {"total": len(runs), "skipped": len(runs) - len(todo), "ok": 0, "error": 0}
    if on_start:
        on_start(len(todo), counts["skipped"])
    if not todo:
        return counts
    ctx = {"data_dir": data_dir, "cache_dir": str(out / "cache"), "threads": 1}
    (out / "cache").mkdir(exist_ok=True)

    pending = list(todo)
    leaders: dict[str, str] = {}  # group -> key of the run that trains the shared models
    released: set[str] = set()  # groups whose leader finished
    in_flight: set[str] = set()

    def ready(run: Run) -> bool:
        g = run.group
        if g is None or g in released:
            return True
        if g not in leaders:
            leaders[g] = run.key
            return True
        return False

    # the warm pool's forkserver imports the grid's kind modules once, before forking workers
    preload = sorted({KINDS[r.kind] for r in todo if r.kind in KINDS})
    with open_executor(backend, n_workers=workers, address=address, preload=preload) as be:
        while pending or in_flight:
            # a run queued ahead per worker: none waits while this process appends a record
            capacity = be.capacity + be.queue_depth - len(in_flight)
            for run in list(pending):
                if capacity <= 0:
                    break
                if ready(run):
                    pending.remove(run)
                    be.submit(execute, run, ctx)
                    in_flight.add(run.key)
                    capacity -= 1
            for record in be.wait_any():
                in_flight.discard(record["key"])
                store.append(path, record)
                counts["ok" if record["status"] == "ok" else "error"] += 1
                group = next((g for g, k in leaders.items() if k == record["key"]), None)
                if group is not None:
                    released.add(group)
                if on_result:
                    on_result(record)
    return counts


def prepare_out(spec_path: str | Path, out: str | Path) -> None:
    """Keep a copy of the spec beside its results (``spec.toml``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "spec.toml"
    src = Path(spec_path)
    if not target.exists() or target.read_bytes() != src.read_bytes():
        shutil.copyfile(src, target)


def bench(
    spec_path: str | Path,
    out: str | Path,
    *,
    backend: str = "local",
    workers: int | None = 1,
    address: str | None = None,
    **kw: Any,
) -> dict[str, int]:
    """Load a spec file and run its grid into ``out`` (see :func:`run_grid`)."""
    _, runs = load_spec(spec_path)
    prepare_out(spec_path, out)
    return run_grid(runs, out, backend=backend, workers=workers, address=address, **kw)


__all__ = ["bench", "execute", "plan", "run_grid", "run_point"]
