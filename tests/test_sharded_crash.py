"""Crash safety: a deletion killed with SIGKILL at any point leaves a consistent store, and the next
command completes it (or rolls it back); the result equals the uninterrupted deletion."""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from obliviate.models import ModelSpec
from obliviate.sharded import DataSpec, ShardConfig, ShardedStore
from obliviate.sharded.store import FAILPOINT_ENV, FAILPOINTS
from obliviate.training import Recipe, TrainConfig

pytestmark = pytest.mark.integration  # forked children and CLI processes killed with SIGKILL

DATA = DataSpec(dataset="digits", limit=240)
CONFIG = ShardConfig(
    n_shards=3,
    n_slices=3,
    seed=2,
    recipe=Recipe(
        ModelSpec(hidden=(16,), seed=5), TrainConfig(n_epochs=2, batch_size=16, lr=0.05, seed=5)
    ),
)


def hashes(store: ShardedStore) -> dict[tuple[int, int], str]:
    return {k: v["sha256"] for k, v in store.ledger.current_checkpoints().items()}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(base store path, ids to delete, checkpoint hashes after an uninterrupted deletion)."""
    root = tmp_path_factory.mktemp("crash")
    with ShardedStore.train(root / "base", data=DATA, config=CONFIG, backend="inline") as base:
        rows = base.ledger.samples()
        # slice-0 samples of two shards: six stages are retrained, six checkpoints written
        ids = [int(rows[(rows[:, 1] == k) & (rows[:, 2] == 0)][0, 0]) for k in (0, 1)]
    shutil.copytree(root / "base", root / "ref")
    with ShardedStore(root / "ref", backend="inline") as ref:
        ref.forget(ids, request_id="r1")
        expected = hashes(ref)
    return root / "base", ids, expected


def _forget_and_die(path: str, ids: list[int], point: str) -> None:
    os.environ[FAILPOINT_ENV] = point
    ShardedStore(path, backend="inline").forget(ids, request_id="r1")
    os._exit(0)  # not reached when the failpoint fires


def check_after_kill(path: Path, ids: list[int], expected: dict, *, rollback: bool = False) -> None:
    with ShardedStore(path, backend="inline") as store:
        report = (
            store.verify()
        )  # consistent before any repair: live checkpoints intact, chain whole
        assert report["ok"], report["problems"]
        counts = store.status()["samples"]
        assert sum(counts.values()) == 240 and counts["deleted"] in (0, len(ids))
        assert counts["pending"] + counts["deleted"] in (
            0,
            len(ids),
        )  # never lost, never counted twice
        if rollback:
            store.cancel_pending()
            assert store.status()["samples"] == {"active": 240, "pending": 0, "deleted": 0}
            return
        store.recover()  # what any next command does first
        store.process()  # what `shard resume` adds: queued requests too
        assert hashes(store) == expected
        assert store.status()["samples"] == {"active": 238, "pending": 0, "deleted": 2}
        assert [r["status"] for r in store.status()["requests"]] == ["done"]
        receipt = store.receipt("r1")
        assert receipt["n_removed"] == 2
        assert store.forget(ids, request_id="r1") == receipt  # idempotent after the crash too
        assert store.verify()["ok"]
        files = {f.stem for f in (path / "checkpoints").glob("*")}
        assert files == set(expected.values())  # no temporaries, no superseded checkpoints


def kill_points(n: int, seed: int) -> list[str]:
    """``n`` distinct failpoints (cycling through all of them), each at a random hit count."""
    rng = random.Random(seed)
    names = [
        p for _ in range(-(-n // len(FAILPOINTS))) for p in rng.sample(FAILPOINTS, len(FAILPOINTS))
    ][:n]
    return [f"{p}:{rng.randint(1, 6) if p.startswith('checkpoint') else 1}" for p in names]


def _kill_in_forked_child(base: Path, tmp: Path, ids: list[int], point: str) -> Path:
    path = tmp / point.replace(":", "-")
    shutil.copytree(base, path)
    child = multiprocessing.get_context("fork").Process(
        target=_forget_and_die, args=(str(path), ids, point)
    )
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL, (
        f"the child was not killed at {point} (exit {child.exitcode})"
    )
    return path


@pytest.mark.parametrize("point", kill_points(3, seed=2026))
def test_sigkill_at_a_random_point_then_resume(setup, tmp_path, point):
    base, ids, expected = setup
    check_after_kill(_kill_in_forked_child(base, tmp_path, ids, point), ids, expected)


def test_sigkill_then_rollback(setup, tmp_path):
    base, ids, expected = setup
    path = _kill_in_forked_child(base, tmp_path, ids, "checkpoint_written:2")
    with ShardedStore(base) as b:
        original = hashes(b)
    check_after_kill(path, ids, expected, rollback=True)
    with ShardedStore(path) as store:
        assert hashes(store) == original and store.verify()["ok"]
        assert [r["status"] for r in store.status()["requests"]] == ["cancelled"]
        # the same erasure asked again (same ids, same request id) is carried out, not refused
        receipt = store.forget(ids, request_id="r1")
        assert receipt["n_removed"] == 2 and hashes(store) == expected
        assert store.status()["samples"] == {"active": 238, "pending": 0, "deleted": 2}
        assert store.verify()["ok"]


def _cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "obliviate.cli.main", "shard", *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_cli_process_killed_mid_retraining(setup, tmp_path):
    base, ids, expected = setup
    path = tmp_path / "cli"
    shutil.copytree(base, path)
    proc = _cli(
        "forget",
        "--store",
        str(path),
        "--ids",
        ",".join(map(str, ids)),
        "--request-id",
        "r1",
        "--backend",
        "inline",
        env={FAILPOINT_ENV: "checkpoint_written:4"},
    )
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    check_after_kill(path, ids, expected)


@pytest.mark.slow
@pytest.mark.parametrize("point", kill_points(10, seed=1))
def test_sigkill_at_every_point(setup, tmp_path, point):
    base, ids, expected = setup
    check_after_kill(_kill_in_forked_child(base, tmp_path, ids, point), ids, expected)


@pytest.mark.slow
def test_sigkill_at_random_times(tmp_path):
    """Real CLI processes killed after a random delay, over a store whose retraining takes a while."""
    slow = ShardConfig(
        n_shards=2,
        n_slices=4,
        seed=3,
        recipe=Recipe(ModelSpec(hidden=(64,)), TrainConfig(n_epochs=40)),
    )
    with ShardedStore.train(tmp_path / "base", data=DATA, config=slow, backend="inline") as base:
        rows = base.ledger.samples()
        ids = [int(rows[(rows[:, 1] == k) & (rows[:, 2] == 0)][0, 0]) for k in (0, 1)]
    shutil.copytree(tmp_path / "base", tmp_path / "ref")
    t0 = time.perf_counter()
    proc = _cli(
        "forget",
        "--store",
        str(tmp_path / "ref"),
        "--ids",
        ",".join(map(str, ids)),
        "--request-id",
        "r1",
        "--backend",
        "inline",
    )
    proc.communicate(timeout=600)
    span = time.perf_counter() - t0
    with ShardedStore(tmp_path / "ref") as ref:
        expected = hashes(ref)
    rng = random.Random(7)
    for n in range(5):
        path = tmp_path / f"kill{n}"
        shutil.copytree(tmp_path / "base", path)
        proc = _cli(
            "forget",
            "--store",
            str(path),
            "--ids",
            ",".join(map(str, ids)),
            "--request-id",
            "r1",
            "--backend",
            "inline",
        )
        time.sleep(rng.uniform(0.3, 1.0) * span)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        with ShardedStore(path, backend="inline") as store:
            assert store.verify()["ok"]
            store.recover()
            store.process()
            assert hashes(store) == expected
