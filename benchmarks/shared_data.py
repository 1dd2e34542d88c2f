"""Memory of the warm pool's workers holding a dataset: shared (one mapped copy) against
per-worker copies, side by side.

    python benchmarks/shared_data.py --dataset mnist --data-dir DIR [--workers 2]

For each setting (``OBLIVIATE_SHARED_DATA`` = 1, then 0) a fresh Python process loads the
dataset the way the sharded engine does (:func:`obliviate.sharded.config.load_data`: the owner
first, then each of ``--workers`` warm-pool workers), keeps the pool warm, and reads every
process's ``/proc/PID/smaps_rollup``: Rss (resident pages, shared ones counted in full) and Pss
(each shared page divided among the processes mapping it; the sum of Pss is what the processes
really use). Printed: per setting, the owner's and each worker's Rss/Pss in MB, the workers'
Pss sum, the total Pss of owner + workers, and each worker's seconds to get the data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def hold(spec: object) -> tuple[int, float]:
    """In a worker: get the data as the shard jobs do and touch every page of it."""
    from obliviate.sharded.config import load_data

    t0 = time.perf_counter()
    train, test, _ = load_data(spec)  # type: ignore[arg-type]
    float(train.x.sum()) + float(test.x.sum())
    seconds = time.perf_counter() - t0
    time.sleep(1.0)  # so that each worker takes one job
    return os.getpid(), seconds


def rollup(pid: int) -> dict[str, float]:
    """Rss and Pss (MB) of process ``pid``."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            k, *v = line.split()
            if k in ("Rss:", "Pss:"):
                out[k[:-1]] = int(v[0]) / 1024
    return out


def child(dataset: str, data_dir: str, n: int) -> None:
    import torch

    from obliviate import parallel
    from obliviate.sharded.config import DataSpec, load_data

    torch.set_num_threads(1)
    spec = DataSpec(dataset=dataset, data_dir=data_dir or None)
    t0 = time.perf_counter()
    train, test, _ = load_data(spec)
    owner_s = time.perf_counter() - t0
    jobs = parallel.map_jobs(hold, [spec] * n, backend="local", n_workers=n)
    out = {
        "owner": {"pid": os.getpid(), "seconds": owner_s, **rollup(os.getpid())},
        "workers": [{"pid": p, "seconds": s, **rollup(p)} for p, s in jobs],
        "data_mb": (train.x.nbytes + test.x.nbytes) / 2**20,
    }
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default="")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.dataset, args.data_dir, args.workers)
        return
    print(f"dataset {args.dataset}, {args.workers} workers, load average {os.getloadavg()}")
    for shared in ("1", "0"):
        env = {**os.environ, "OBLIVIATE_SHARED_DATA": shared, "OMP_NUM_THREADS": "1"}
        run = [sys.executable, __file__, "--child", "--dataset", args.dataset]
        run += ["--data-dir", args.data_dir, "--workers", str(args.workers)]
        proc = subprocess.run(run, capture_output=True, text=True, env=env, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        o, ws = r["owner"], r["workers"]
        print(f"\nshared={shared}  (the dataset's x arrays: {r['data_mb']:.0f} MB)")
        print(f"  owner   Rss {o['Rss']:7.1f}  Pss {o['Pss']:7.1f}  load {o['seconds']:.2f} s")
        for w in ws:
            print(f"  worker  Rss {w['Rss']:7.1f}  Pss {w['Pss']:7.1f}  load {w['seconds']:.2f} s")
        pss_w = sum(w["Pss"] for w in ws)
        print(f"  workers' Pss sum {pss_w:.1f} MB; owner + workers {pss_w + o['Pss']:.1f} MB")


if __name__ == "__main__":
    main()
