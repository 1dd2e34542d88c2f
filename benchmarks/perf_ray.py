"""Local vs Ray: the same grid run sequentially in one process and on Ray with 2 workers.

    python benchmarks/perf_ray.py [--runs 8] [--epochs 10] [--workers 2] [--address ADDR]

The grid is ``--runs`` continual-learning runs (digits, class-incremental, 5 experiences, EWC,
one seed each) at ``--epochs`` epochs per experience. Prints the wall time of each backend, the
speed-up (goal >= 1.8x on 2 workers) and whether every run's metrics are identical (timings
aside); a local process pool of the same size is timed for reference (its worker start-up,
importing torch, is included: the pool lives for one grid). Ray's start-up and each worker's first import of torch are excluded: a warm-up grid runs
on the same Ray instance first (they are a one-off cost per cluster, not per run). Needs the
optional ``ray`` package (``pip install 'obliviate[distributed]'``) and two idle cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

SPEC = """\
seeds = {seeds}
[[learn]]
datasets = ["digits"]
scenarios = ["class-incremental"]
strategies = ["ewc"]
n_experiences = 5
n_epochs = {epochs}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--address", default=None, help="an existing Ray cluster (default: start a local one)"
    )
    args = ap.parse_args()

    import ray
    import torch

    from obliviate.bench import results as store
    from obliviate.bench.runner import run_grid
    from obliviate.bench.specs import parse_spec

    torch.set_num_threads(1)
    _, runs = parse_spec(SPEC.format(seeds=list(range(args.runs)), epochs=args.epochs), "perf_ray")
    _, warm = parse_spec(
        SPEC.format(seeds=list(range(100, 100 + 2 * args.workers)), epochs=1), "warm-up"
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_grid(warm[:1], Path(tmp) / "warm-local")  # imports and data caches of this process
        t0 = time.perf_counter()
        run_grid(runs, Path(tmp) / "local", workers=1)
        local = time.perf_counter() - t0

        run_grid(
            warm, Path(tmp) / "warm-pool", workers=args.workers
        )  # not reused: spawn cost included below
        t0 = time.perf_counter()
        run_grid(runs, Path(tmp) / "pool", workers=args.workers)
        pool = time.perf_counter() - t0

        kwargs = {"include_dashboard": False, "log_to_driver": False}
        if args.address:
            ray.init(address=args.address, **kwargs)
        else:
            ray.init(num_cpus=args.workers, **kwargs)
        try:
            run_grid(warm, Path(tmp) / "warm-ray", backend="ray", workers=args.workers)
            t0 = time.perf_counter()
            run_grid(runs, Path(tmp) / "ray", backend="ray", workers=args.workers)
            distributed = time.perf_counter() - t0
        finally:
            ray.shutdown()
        a = {r["key"]: store.strip_timings(r["metrics"]) for r in store.read(Path(tmp) / "local")}
        b = {r["key"]: store.strip_timings(r["metrics"]) for r in store.read(Path(tmp) / "ray")}
        per_run = {
            name: sum(r["timings"]["seconds"] for r in store.read(Path(tmp) / name)) / args.runs
            for name in ("local", "pool", "ray")
        }
    print(
        f"grid: {args.runs} runs (digits, class-incremental, ewc, {args.epochs} epochs/experience); "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"local, 1 process     {local:7.1f} s   ({per_run['local']:.2f} s per run inside its worker)"
    )
    print(
        f"local, {args.workers} processes  {pool:7.1f} s   ({per_run['pool']:.2f} s per run; process pool, "
        "workers spawned per grid)"
    )
    print(
        f"ray, {args.workers} workers        {distributed:7.1f} s   ({per_run['ray']:.2f} s per run)"
    )
    print(f"speed-up             {local / distributed:7.2f}x   (goal >= 1.8x on 2 workers)")
    print(f"identical metrics    {a == b} ({len(a)} runs)")


if __name__ == "__main__":
    main()
