"""Sequential vs the warm local pool vs Ray, 1 and 2 workers, side by side in one run.

    python benchmarks/perf_ray.py [--runs 8] [--epochs 10] [--repeats 3] [--address ADDR] [--no-ray]

The grid is ``--runs`` continual-learning runs (digits, class-incremental, 5 experiences, EWC,
one seed each) at ``--epochs`` epochs per experience. Each repeat runs the grid once on every
configuration, in turn (so a change of the machine's load hits them alike): sequential (inline,
one process), the local pool with 1 and 2 workers, and Ray with 1 and 2 workers. Printed per
configuration: wall time (mean and min-max over the repeats), the ratio sequential / this
(mean and min-max, ratios taken within a repeat), and the overhead per run: (wall x workers -
the runs' own seconds inside their workers) / runs. Also printed: the CPUs, the load average
before and after, and whether every configuration's metrics equal the sequential ones (timings
aside). Goal (issue 16): local pool and Ray >= 1.8x with 2 workers on 2 idle cores, >= 1.0x
on a loaded machine.

One-off costs are excluded, as a long-lived process pays them once: a warm-up grid runs on each
backend first (the local pool's forkserver importing torch, Ray's start-up, each worker's first
imports). The local pool is warm across grids (:mod:`obliviate.parallel`); its 1-worker
configuration is timed on a real 1-process pool (``obliviate bench --workers 1`` runs inline).
Ray needs the optional ``ray`` package (``pip install 'obliviate[distributed]'``); ``--no-ray``
skips it. About a minute on 2 cores at the defaults.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SPEC = """\
seeds = {seeds}
[[learn]]
datasets = ["digits"]
scenarios = ["class-incremental"]
strategies = ["ewc"]
n_experiences = 5
n_epochs = {epochs}
"""


def _spread(xs: list[float], fmt: str) -> str:
    return f"{statistics.mean(xs):{fmt}} ({min(xs):{fmt}}-{max(xs):{fmt}})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ray", action="store_true", help="time sequential and local pool only")
    ap.add_argument(
        "--address", default=None, help="an existing Ray cluster (default: start a local one)"
    )
    args = ap.parse_args()

    import torch

    from obliviate import parallel
    from obliviate.bench import results as store
    from obliviate.bench import runner
    from obliviate.bench.specs import parse_spec

    torch.set_num_threads(1)
    cpus = parallel.default_workers()
    load_before = os.getloadavg()
    _, runs = parse_spec(SPEC.format(seeds=list(range(args.runs)), epochs=args.epochs), "perf")
    _, warm = parse_spec(SPEC.format(seeds=[100, 101, 102, 103], epochs=1), "warm-up")

    def pool_of(n: int) -> Callable[..., Any]:
        def open_pool(backend: str, **kw: Any) -> parallel.Executor:
            return parallel.LocalExecutor(n, preload=kw.get("preload", ()))

        return open_pool

    configs: list[tuple[str, int, dict[str, Any]]] = [("sequential", 1, {"workers": 1})]
    configs += [(f"local pool, {n}", n, {"workers": n, "pool": n}) for n in (1, 2)]
    ray = None
    if not args.no_ray:
        import ray

        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if args.address:
            ray.init(address=args.address, **kwargs)
        else:
            ray.init(num_cpus=2, **kwargs)
        configs += [(f"ray, {n}", n, {"workers": n, "backend": "ray"}) for n in (1, 2)]

    walls: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    overhead: dict[str, list[float]] = {name: [] for name, _, _ in configs}
    same: dict[str, bool] = {name: True for name, _, _ in configs}
    original = runner.open_executor
    with tempfile.TemporaryDirectory() as tmp:

        def grid(name: str, kw: dict[str, Any], todo: Any, out: Path) -> float:
            runner.open_executor = pool_of(kw["pool"]) if "pool" in kw else original
            try:
                t0 = time.perf_counter()
                runner.run_grid(
                    todo, out, backend=kw.get("backend", "local"), workers=kw["workers"]
                )
                return time.perf_counter() - t0
            finally:
                runner.open_executor = original

        try:
            for i, (name, _, kw) in enumerate(configs):  # warm-up: one-off costs
                grid(name, kw, warm, Path(tmp) / f"warm-{i}")
            expected = None
            for rep in range(args.repeats):
                for i, (name, n, kw) in enumerate(configs):
                    out = Path(tmp) / f"r{rep}-{i}"
                    wall = grid(name, kw, runs, out)
                    recs = store.read(out)
                    inside = sum(r["timings"]["seconds"] for r in recs)
                    walls[name].append(wall)
                    overhead[name].append((wall * n - inside) / args.runs)
                    metrics = {r["key"]: store.strip_timings(r["metrics"]) for r in recs}
                    expected = expected if expected is not None else metrics
                    same[name] &= metrics == expected and len(metrics) == args.runs
        finally:
            if ray is not None:
                ray.shutdown()
    load_after = os.getloadavg()
    seq = walls["sequential"]
    print(
        f"grid: {args.runs} runs (digits, class-incremental, ewc, {args.epochs} epochs/experience),"
        f" {args.repeats} repeats; {cpus} CPUs (affinity); load average (1/5/15 min) "
        f"{'/'.join(f'{x:.1f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.1f}' for x in load_after)} after"
    )
    print(
        f"{'configuration':<16} {'wall s, mean (min-max)':<24} {'x sequential':<22} "
        f"{'overhead/run s':<22} identical"
    )
    for name, _, _ in configs:
        ratios = [s / w for s, w in zip(seq, walls[name], strict=True)]
        print(
            f"{name:<16} {_spread(walls[name], '.2f'):<24} {_spread(ratios, '.2f'):<22} "
            f"{_spread(overhead[name], '.3f'):<22} {same[name]}"
        )
    print("goal: local pool, 2 and ray, 2 >= 1.8x on 2 idle cores; >= 1.0x when loaded")


if __name__ == "__main__":
    main()
