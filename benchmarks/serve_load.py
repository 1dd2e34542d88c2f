"""A bounded load test of the deletion-request service on loopback (127.0.0.1 only).

Trains a small store (digits, 4 shards x 2 slices, 1 epoch), starts ``obliviate serve`` on it in
a subprocess (``--backend inline``, the default: retraining in the server process, one torch
thread; ``local``: in a process pool), then
``--clients`` threads each with one HTTP connection send ``--requests`` deletion requests in
all (``--ids-per-request`` random training ids each, seeded; ids repeat across requests, as real
requests do), each with its own Idempotency-Key. It then waits until every request is done and
fetches every signed receipt. Printed: p50 / p99 submit latency, submissions per second, the time
from the first submission to the last receipt, the number of retraining passes; then the ledger
is checked: every accepted request is done, each completed by exactly one pass, every requested
id is deleted, nothing is pending, and ``verify`` is clean. Exit 1 if a check fails.

Bounded: ``--timeout`` seconds in all (default 600), after which it fails.

Example (the run in the README)::

    python benchmarks/serve_load.py --requests 2000 --clients 16
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HOST = "127.0.0.1"  # loopback only, by design


def start_server(store: Path, port: int, batch_window: float, backend: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "obliviate.cli.main", "serve", "--store", str(store)]
    cmd += ["--host", HOST, "--port", str(port), "--backend", backend]
    cmd += ["--batch-window", str(batch_window), "--rate", "0", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start within 120 s")


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--ids-per-request", type=int, default=1)
    ap.add_argument("--batch-window", type=float, default=1.0)
    ap.add_argument(
        "--backend", default="inline", help="inline (in the server process) or local (a pool)"
    )
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--slices", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--json", type=Path, default=None, help="append the figures to this file")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from obliviate.models import ModelSpec
    from obliviate.serve.auth import add_key, connect
    from obliviate.serve.runner import free_port
    from obliviate.sharded import DataSpec, ShardConfig, ShardedStore
    from obliviate.training import Recipe, TrainConfig

    t_begin = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="obliviate-serve-load-"))
    store = work / "store"
    config = ShardConfig(
        n_shards=args.shards,
        n_slices=args.slices,
        seed=args.seed,
        recipe=Recipe(
            ModelSpec(hidden=(32,), seed=args.seed),
            TrainConfig(n_epochs=1, batch_size=32, lr=0.05, seed=args.seed),
        ),
    )
    with ShardedStore.train(
        store, data=DataSpec(dataset="digits"), config=config, backend="inline"
    ) as st:
        all_ids = st.ledger.samples()[:, 0].tolist()
    db = connect(store / "ledger.sqlite")
    key = add_key(db, "admin", "load test")[1]
    db.close()
    rng = random.Random(args.seed)
    bodies = [sorted(rng.sample(all_ids, args.ids_per_request)) for _ in range(args.requests)]
    port = free_port(HOST)
    proc = start_server(store, port, args.batch_window, args.backend)
    url = f"http://{HOST}:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    accepted: dict[int, str] = {}
    errors: list[str] = []
    lock = threading.Lock()
    next_index = iter(range(args.requests))

    def client() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            for i in next_index:
                t0 = time.perf_counter()
                r = c.post(
                    "/v1/deletions",
                    json={"ids": bodies[i]},
                    headers={"Idempotency-Key": f"load-{i}"},
                )
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 202:
                        latencies.append(dt)
                        accepted[i] = r.json()["request_id"]
                    else:
                        errors.append(f"{r.status_code} {r.text[:200]}")

    def metric(c: httpx.Client, name: str) -> float:
        for line in c.get("/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return float("nan")

    try:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.timeout)
        t_submitted = time.perf_counter()
        with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
            while True:
                if metric(c, "obliviate_queue_length") == 0:
                    break
                if time.monotonic() - t_begin > args.timeout:
                    raise SystemExit(f"timed out after {args.timeout} s waiting for receipts")
                time.sleep(0.2)
            rids = list(accepted.values())
            receipts: dict[str, dict] = {}
            it = iter(rids)

            def fetch() -> None:
                with httpx.Client(base_url=url, headers=headers, timeout=60) as cc:
                    for rid in it:
                        r = cc.get(f"/v1/deletions/{rid}/receipt")
                        if r.status_code == 200:
                            receipts[rid] = r.json()

            fetchers = [threading.Thread(target=fetch) for _ in range(args.clients)]
            for t in fetchers:
                t.start()
            for t in fetchers:
                t.join(args.timeout)
            t_last = time.perf_counter()
            n_passes = metric(c, "obliviate_retraining_seconds_count")
            retrain_sum = metric(c, "obliviate_retraining_seconds_sum")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    # ---- the ledger checks -------------------------------------------------------------------
    problems: list[str] = list(errors[:5])
    if len(accepted) != args.requests:
        problems.append(f"{args.requests - len(accepted)} request(s) not accepted")
    if len(receipts) != len(accepted):
        problems.append(f"{len(accepted) - len(receipts)} receipt(s) missing")
    db = sqlite3.connect(store / "ledger.sqlite")
    completed: dict[str, int] = {}
    for (payload,) in db.execute("SELECT payload FROM events WHERE kind = 'requests_completed'"):
        for rid in json.loads(payload)["requests"]:
            completed[rid] = completed.get(rid, 0) + 1
    twice = [r for r, n in completed.items() if n != 1]
    lost = [r for r in accepted.values() if r not in completed]
    statuses = dict(db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status").fetchall())
    db.close()
    if twice:
        problems.append(f"{len(twice)} request(s) completed more than once")
    if lost:
        problems.append(f"{len(lost)} accepted request(s) never completed")
    wanted = sorted({i for b in bodies for i in b})
    with ShardedStore(store) as st:
        states = st.ledger.sample_states(wanted)
        report = st.verify()
        counts = st.status()["samples"]
    if set(states.values()) != {"deleted"}:
        problems.append("some requested ids are not deleted")
    if counts["pending"]:
        problems.append(f"{counts['pending']} ids still pending")
    if not report["ok"]:
        problems += report["problems"][:5]
    figures = {
        "requests": args.requests,
        "clients": args.clients,
        "ids_per_request": args.ids_per_request,
        "store": f"digits, {args.shards} shards x {args.slices} slices, {len(all_ids)} samples",
        "batch_window_s": args.batch_window,
        "backend": args.backend,
        "submit_p50_ms": round(1000 * statistics.median(latencies), 2) if latencies else None,
        "submit_p99_ms": round(1000 * percentile(latencies, 0.99), 2) if latencies else None,
        "submit_max_ms": round(1000 * max(latencies), 2) if latencies else None,
        "submit_req_per_s": round(len(latencies) / (t_submitted - t0), 1),
        "submit_phase_s": round(t_submitted - t0, 2),
        "time_to_last_receipt_s": round(t_last - t0, 2),
        "retraining_passes": n_passes,
        "retraining_seconds_total": round(retrain_sum, 2),
        "ids_deleted": counts["deleted"],
        "request_statuses": statuses,
        "completed_exactly_once": not twice and not lost,
        "verify_ok": report["ok"],
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "problems": problems,
    }
    print(json.dumps(figures, indent=2))
    if not problems:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"the store is kept for inspection: {store}", file=sys.stderr)
    if args.json is not None:
        with args.json.open("a") as f:
            f.write(json.dumps(figures) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
