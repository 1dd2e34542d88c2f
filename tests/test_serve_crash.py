"""kill -9 of the server: during a retraining pass, and at random moments while requests pour in.
The queue is the ledger, so after a restart every accepted request ends done exactly once, and the
checkpoints equal a store trained from scratch without the deleted ids."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from obliviate.models import ModelSpec  # noqa: E402
from obliviate.serve.auth import add_key, connect  # noqa: E402
from obliviate.serve.runner import free_port  # noqa: E402
from obliviate.sharded import DataSpec, ShardConfig, ShardedStore  # noqa: E402
from obliviate.sharded.store import FAILPOINT_ENV  # noqa: E402
from obliviate.training import Recipe, TrainConfig  # noqa: E402

DATA = DataSpec(dataset="digits", limit=240)
CONFIG = ShardConfig(
    n_shards=3,
    n_slices=3,
    seed=2,
    recipe=Recipe(
        ModelSpec(hidden=(16,), seed=5), TrainConfig(n_epochs=2, batch_size=16, lr=0.05, seed=5)
    ),
)


def start(store: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "obliviate.cli.main", "serve", "--store", str(store)]
    cmd += ["--port", str(port), "--backend", "inline", "--batch-window", "0.05", "--rate", "0"]
    cmd += ["--log-level", "warning"]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start in 120 s")


def hashes(path: Path) -> dict:
    with ShardedStore(path) as st:
        return {k: v["sha256"] for k, v in st.ledger.current_checkpoints().items()}


def completions(path: Path) -> dict[str, int]:
    """How many retraining passes completed each request (must be exactly one)."""
    db = sqlite3.connect(path / "ledger.sqlite")
    out: dict[str, int] = {}
    for (payload,) in db.execute("SELECT payload FROM events WHERE kind = 'requests_completed'"):
        for rid in json.loads(payload)["requests"]:
            out[rid] = out.get(rid, 0) + 1
    db.close()
    return out


def wait_all_done(client: httpx.Client, rids: list[str], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    left = set(rids)
    while left and time.monotonic() < deadline:
        for rid in sorted(left):
            if client.get(f"/v1/deletions/{rid}").json()["status"] == "done":
                left.discard(rid)
        time.sleep(0.1)
    assert not left, f"{len(left)} request(s) not done: {sorted(left)[:5]}"


@pytest.fixture()
def store(tmp_path):
    path = tmp_path / "store"
    ShardedStore.train(path, data=DATA, config=CONFIG, backend="inline").close()
    db = connect(path / "ledger.sqlite")
    key = add_key(db, "admin")[1]
    db.close()
    with ShardedStore(path) as st:
        rows = st.ledger.samples()
    return path, key, rows


@pytest.mark.slow
@pytest.mark.integration
def test_kill_during_retraining_then_restart_completes_exactly_once(store, tmp_path):
    path, key, rows = store
    # slice-0 samples of two shards: six stages retrain; the server dies after the second write
    ids = [int(rows[(rows[:, 1] == k) & (rows[:, 2] == 0)][0, 0]) for k in (0, 1)]
    port = free_port()
    proc = start(path, port, {FAILPOINT_ENV: "checkpoint_written:2"})
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as c:
        r = c.post("/v1/deletions", json={"ids": ids}, headers={"Idempotency-Key": "k1"})
        assert r.status_code == 202
        rid = r.json()["request_id"]
        assert proc.wait(timeout=120) == -signal.SIGKILL  # killed mid-retraining
    with ShardedStore(path) as st:
        assert st.ledger.request(rid)["status"] == "running"
        assert set(st.ledger.sample_states(ids).values()) == {"pending"}
    proc = start(path, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as c:
            wait_all_done(c, [rid])
            # the retried submission is the same request, not a second one
            again = c.post("/v1/deletions", json={"ids": ids}, headers={"Idempotency-Key": "k1"})
            assert again.json()["request_id"] == rid and again.json()["status"] == "done"
            signed = c.get(f"/v1/deletions/{rid}/receipt").json()
            assert signed["document"]["receipt"]["n_removed"] == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert completions(path) == {rid: 1}
    ShardedStore.train(
        tmp_path / "ref", data=DATA, config=CONFIG, exclude_ids=ids, backend="inline"
    ).close()
    assert hashes(path) == hashes(tmp_path / "ref")
    with ShardedStore(path) as st:
        assert st.verify()["ok"]


@pytest.mark.slow
@pytest.mark.integration
def test_kill_at_random_moments_loses_no_accepted_request(store):
    """Requests carry Idempotency-Keys; one that got no answer is sent again after the restart
    (what a client does), so every request ends accepted exactly once."""
    path, key, rows = store
    ids = rows[:, 0].tolist()
    port = free_port()
    headers = {"Authorization": f"Bearer {key}"}
    todo = list(range(0, 60, 2))  # 30 requests of 3 ids each, overlapping by one
    accepted: dict[int, str] = {}

    def send(c: httpx.Client, i: int) -> None:
        r = c.post(
            "/v1/deletions", json={"ids": ids[i : i + 3]}, headers={"Idempotency-Key": f"r{i}"}
        )
        assert r.status_code == 202, r.text
        rid = r.json()["request_id"]
        assert accepted.setdefault(i, rid) == rid  # a retry returns the same request
        todo.remove(i)

    def pour(stop: threading.Event) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=5) as c:
            while todo and not stop.is_set():
                try:
                    send(c, todo[0])
                except httpx.TransportError:
                    return  # the server died before answering: retried after the restart

    for kill_after in (0.4, 0.9, 1.5):
        proc = start(path, port)
        stop = threading.Event()
        t = threading.Thread(target=pour, args=(stop,))
        t.start()
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        stop.set()
        t.join(30)
    proc = start(path, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as c:
            for i in list(accepted)[:5]:  # retries of answered requests change nothing
                todo.append(i)
                send(c, i)
            while todo:
                send(c, todo[0])
            wait_all_done(c, list(accepted.values()))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert len(accepted) == 30 and len(set(accepted.values())) == 30
    done = completions(path)
    assert set(accepted.values()) == set(done) and set(done.values()) == {1}
    with ShardedStore(path) as st:
        assert st.verify()["ok"]
        assert st.status()["samples"]["pending"] == 0
        assert st.status()["samples"]["deleted"] == 61
