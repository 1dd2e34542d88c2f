"""Run a benchmark grid: skip finished runs, execute the rest on a backend, append each result.

The runner itself knows no method: each run kind is one adapter function below that turns a
resolved grid point (:class:`obliviate.bench.specs.Run`) into a call of the entry point that
owns that kind of experiment and returns its output dict:

``learn``    :func:`obliviate.experiments.run_learn` (continual learning, issue #2/#3);
``forget``   :func:`obliviate.unlearning.run.run_forget` (approximate unlearning, issue #4);
``sharded``  :func:`obliviate.sharded.run_sharded` (exact sharded unlearning, issue #5).

Entry points are imported lazily, inside the worker that runs them.

Crash safety: a result is appended (one line, fsync) as soon as its run finishes, and a run's key
is the hash of its resolved spec; re-running the same spec skips every key already in
``results.jsonl`` with status ``ok``. Killing the runner loses only the runs in flight.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from obliviate.bench import results as store
from obliviate.bench.specs import Run, load_spec
from obliviate.errors import ObliviateError

TRAIN_KEYS = (
    "model",
    "hidden",
    "n_epochs",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "limit",
)


# ---- adapters: one per run kind ------------------------------------------------------------


def _fill(cls: type, values: dict[str, Any], owner: str) -> Any:
    """Construct the dataclass ``cls`` from ``values``; a key it lacks is an error naming it."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(k for k in values if k not in names)
    if unknown:
        raise ObliviateError(
            f"{owner} has no field {unknown[0]!r}; valid: {', '.join(sorted(names))}"
        )
    return cls(**values)


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def run_learn(spec: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """A continual-learning run through :func:`obliviate.experiments.run_learn`."""
    from obliviate.experiments import LearnSpec
    from obliviate.experiments import run_learn as entry

    values = {k: _tuple(v) for k, v in spec.items() if k not in ("kind",)}
    if ctx.get("data_dir") is not None:
        values["data_dir"] = ctx["data_dir"]
    return dict(entry(LearnSpec.from_dict(values)))


def run_forget(spec: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """An approximate-unlearning run through :func:`obliviate.unlearning.run.run_forget`;
    original and oracle models are cached under the results directory's ``cache/``, so they are
    trained once per (dataset, recipe, seed, forget set). Recipe keys of the grid (``model``,
    ``hidden``, ``lr``, ...) override the dataset's default recipe."""
    from obliviate.unlearning.run import ForgetSpec, default_recipe
    from obliviate.unlearning.run import run_forget as entry

    values = {k: v for k, v in spec.items() if k != "kind"}
    model_over = {k: values.pop(k) for k in ("model", "hidden") if k in values}
    train_over = {
        k: values.pop(k)
        for k in ("batch_size", "lr", "optimizer", "momentum", "weight_decay")
        if k in values
    }
    if model_over or train_over:
        from obliviate.training import Recipe

        base = default_recipe(values.get("dataset", "digits"), values.get("seed", 0))
        if "model" in model_over:
            model_over["name"] = model_over.pop("model")
        if "hidden" in model_over:
            model_over["hidden"] = tuple(model_over["hidden"])
        values["recipe"] = Recipe(
            dataclasses.replace(base.model, **model_over),
            dataclasses.replace(base.train, **train_over),
        )
    if ctx.get("data_dir") is not None:
        values["data_dir"] = ctx["data_dir"]
    if ctx.get("cache_dir") is not None:
        values["cache_dir"] = ctx["cache_dir"]
    return dict(entry(_fill(ForgetSpec, values, "ForgetSpec")))


def run_sharded(spec: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """An exact sharded-unlearning run through :func:`obliviate.sharded.run_sharded`."""
    from obliviate.sharded import run_sharded as entry

    values = {k: _tuple(v) for k, v in spec.items() if k != "kind"}
    if ctx.get("data_dir") is not None:
        values["data_dir"] = ctx["data_dir"]
    return dict(entry(values))


def run_events(spec: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    """Example forgetting events (Toneva et al. 2019) through the API behind ``obliviate events``:
    :func:`obliviate.continual.events.record_presentations` and
    :mod:`obliviate.metrics.forgetting_events`. Defaults are that command's (MLP(100), SGD lr
    0.05, batch 32, 20 epochs). ``forgetting_counts`` is per id (``None``: never learned)."""
    import math

    from obliviate.continual.events import record_presentations
    from obliviate.data import load_dataset
    from obliviate.metrics.forgetting_events import forgetting_counts, summary
    from obliviate.models import ModelSpec, build_model
    from obliviate.provenance import provenance
    from obliviate.training import TrainConfig, accuracy

    s = {
        "model": "mlp",
        "hidden": [100],
        "n_epochs": 20,
        "batch_size": 32,
        "lr": 0.05,
        "optimizer": "sgd",
        "momentum": 0.0,
        "weight_decay": 0.0,
        "limit": None,
        **{k: v for k, v in spec.items() if k != "kind"},
    }
    train, test = load_dataset(s["dataset"], data_dir=ctx.get("data_dir"), limit=s["limit"])
    model = build_model(
        ModelSpec(name=s["model"], hidden=tuple(s["hidden"]), seed=s["seed"]),
        train.sample_shape,
        train.n_classes,
    )
    config = TrainConfig(
        n_epochs=s["n_epochs"],
        batch_size=s["batch_size"],
        lr=s["lr"],
        optimizer=s["optimizer"],
        momentum=s["momentum"],
        weight_decay=s["weight_decay"],
        seed=s["seed"],
    )
    t0 = time.perf_counter()
    log = record_presentations(model, train, config)
    seconds = time.perf_counter() - t0
    counts = forgetting_counts(log.correct)
    return {
        "ids": [int(i) for i in log.ids],
        "forgetting_counts": [None if math.isinf(c) else int(c) for c in counts.tolist()],
        "summary": summary(log.correct),
        "test_acc": accuracy(model, test),
        "seconds": seconds,
        "spec": s,
        "provenance": provenance(seed=s["seed"]),
    }


ADAPTERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
    "learn": run_learn,
    "forget": run_forget,
    "sharded": run_sharded,
    "events": run_events,
}


# ---- executing one run (in whichever process the backend picks) -----------------------------


def _utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def execute(run: Run, ctx: dict[str, Any]) -> dict[str, Any]:
    """Run one grid point and return its result record (never raises for a failed run: the
    record says ``status: error`` with the message)."""
    import torch

    from obliviate.provenance import provenance

    torch.set_num_threads(int(ctx.get("threads", 1)))
    started, t0 = _utc(), time.perf_counter()
    record: dict[str, Any] = {
        "key": run.key,
        "kind": run.kind,
        "label": run.label(),
        "run": run.spec,
    }
    try:
        out = ADAPTERS[run.kind](run.spec, ctx)
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
    from obliviate.bench.backends import make_backend

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

    with make_backend(backend, workers=workers, address=address) as be:
        while pending or in_flight:
            capacity = be.capacity - len(in_flight)
            for run in list(pending):
                if capacity <= 0:
                    break
                if ready(run):
                    pending.remove(run)
                    be.submit(run, ctx)
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


__all__ = ["ADAPTERS", "bench", "execute", "plan", "run_grid"]
