"""Data shared with the warm pool's workers (obliviate.parallel.shared_value): the same bits as
building it, one copy mapped by every process, a write staying private, and no folder left
behind by an owner that exits or is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from obliviate import parallel
from obliviate.data.datasets import load_dataset

KEY = ("test_parallel_shared", "digits")


def _digits() -> tuple:
    return load_dataset("digits")


def _files(key: object) -> list[Path]:
    folder = parallel._owner_folder(parallel._owner())
    return sorted(p for p in folder.glob("*/*.npy"))


def _mapping_of(path: str) -> dict[str, int]:
    """Rss and Pss (kB) of this process's mappings of ``path`` (/proc/self/smaps)."""
    out = {"Rss": 0, "Pss": 0}
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            inside = head[-1] == path
        elif inside and head and head[0].rstrip(":") in out:
            out[head[0].rstrip(":")] += int(head[1])
    return out


def _worker_reads(key: object) -> dict:
    """In a worker: the shared value's checksum, then a write that must stay private."""
    train, test = parallel.shared_value(key, _digits)
    before = float(train.x.double().sum())
    train.x.add_(1.0)  # in place, on the mapped rows
    again, _ = parallel.shared_value(key, _digits)  # a fresh mapping of the same files
    return {
        "pid": os.getpid(),
        "folder": str(parallel._owner_folder(parallel._owner())),
        "before": before,
        "after_write": float(train.x.double().sum()),
        "fresh": float(again.x.double().sum()),
    }


def test_the_value_is_the_built_one_bit_for_bit():
    shared = parallel.shared_value(KEY, _digits)
    for got, want in zip(shared, _digits(), strict=True):
        assert torch.equal(got.x, want.x) and got.x.dtype == want.x.dtype
        assert torch.equal(got.y, want.y) and torch.equal(got.ids, want.ids)
        assert (got.n_classes, got.name, got.x.shape) == (want.n_classes, want.name, want.x.shape)
    files = _files(KEY)
    assert files and all(p.stat().st_mode & 0o222 == 0 for p in files)  # read-only files
    calls = []
    parallel.shared_value(KEY, lambda: calls.append(1))  # built already: not built again
    assert calls == []


def test_workers_map_the_owners_files_and_a_write_stays_private():
    shared = parallel.shared_value(KEY, _digits)  # the owner builds it; the workers map it
    want = float(shared[0].x.double().sum())
    snapshot = {p: p.read_bytes() for p in _files(KEY)}
    out = parallel.map_jobs(_worker_reads, [KEY] * 4, backend="local", n_workers=2)
    assert {o["folder"] for o in out} == {str(parallel._owner_folder(parallel._owner()))}
    for o in out:
        assert o["before"] == want and o["fresh"] == want  # nobody saw another's write
        assert o["after_write"] != want
    assert float(shared[0].x.double().sum()) == want
    assert {p: p.read_bytes() for p in _files(KEY)} == snapshot  # the files never changed


def test_shared_off_builds_in_each_process(monkeypatch):
    monkeypatch.setenv(parallel.SHARED_ENV, "0")
    calls = []
    parallel.shared_value(("off", 1), lambda: calls.append(1) or 7)
    parallel.shared_value(("off", 1), lambda: calls.append(1) or 7)
    assert calls == [1, 1]


OWNER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from obliviate import parallel
    if {pool}:
        sys.path.insert(0, {tests!r})
        from test_parallel_shared import KEY, _worker_reads
        out = parallel.map_jobs(_worker_reads, [KEY] * 2, backend="local", n_workers=2)
        print(out[0]["folder"], flush=True)
    else:
        parallel.shared_value("x", lambda: np.arange(1 << 16))
        print(parallel._owner_folder(parallel._owner()), flush=True)
    if {linger}:
        time.sleep(600)
    """
)


def _owner(*, pool: bool, linger: bool) -> subprocess.Popen:
    code = OWNER.format(tests=str(Path(__file__).parent), pool=pool, linger=linger)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env
    )


def test_an_owner_that_exits_removes_its_folder():
    proc = _owner(pool=False, linger=False)
    folder = Path(proc.stdout.readline().strip())
    assert proc.wait(timeout=120) == 0
    assert folder.name.startswith(parallel.SHARED_PREFIX) and not folder.exists()


@pytest.mark.parametrize("pool", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_a_killed_owners_folder_goes_at_the_next_start(pool):
    """SIGKILL leaves the folder (written by the owner, or by its pool's workers, which die
    with it); the next pool or first share of any process removes it."""
    proc = _owner(pool=pool, linger=True)
    folder = Path(proc.stdout.readline().strip())
    assert folder.is_dir() and any(folder.glob("*/*.npy"))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    time.sleep(0.2)
    assert folder.is_dir()  # nobody could clean up ...
    assert folder in parallel.sweep_shared()  # ... until the next pool or first share
    assert not folder.exists()
    mine = parallel._owner_folder(parallel._owner())
    parallel.shared_value(("alive", 1), lambda: np.arange(1 << 16))
    assert mine not in parallel.sweep_shared() and mine.is_dir()  # a live owner's stays


def _mnist_sized() -> np.ndarray:
    return np.random.default_rng(0).random((60000, 784), dtype=np.float32)


def _map_and_measure(key: object) -> dict:
    x = parallel.shared_value(key, _mnist_sized)
    checksum = float(x.sum(dtype=np.float64))  # touches every page
    files = sorted(parallel._owner_folder(parallel._owner()).glob("*/*.npy"))
    path = next(str(p) for p in files if p.stat().st_size > x.nbytes)
    return {"checksum": checksum, **_mapping_of(path), "pid": os.getpid()}


@pytest.mark.slow
def test_mnist_sized_arrays_are_mapped_once_for_all_workers():
    key = ("test_parallel_shared", "mnist-sized")
    x = parallel.shared_value(key, _mnist_sized)
    want = float(x.sum(dtype=np.float64))
    out = parallel.map_jobs(_map_and_measure, [key] * 2, backend="local", n_workers=2)
    size_kb = x.nbytes // 1024
    assert len({o["pid"] for o in out}) == 2
    for o in out:
        assert o["checksum"] == want
        assert o["Rss"] >= 0.95 * size_kb  # every page mapped ...
        assert o["Pss"] <= 0.55 * size_kb  # ... and shared with the owner and the other worker


def _learn_load(dataset: str) -> dict:
    from obliviate.experiments.learn import LearnSpec, _load

    train, test = _load(LearnSpec(dataset=dataset))
    folder = str(parallel._owner_folder(parallel._owner()))
    return {
        "mapped": folder in Path("/proc/self/maps").read_text(),
        "x": train.x.clone(),
        "ids": test.ids.clone(),
    }


def test_learn_runs_in_workers_map_the_shared_dataset():
    """A bench grid's learn runs (in pool workers) get the dataset mapped from the shared
    files, the same bits as loading it inline (which writes nothing)."""
    train, test = load_dataset("digits")
    inline = _learn_load("digits")
    assert not parallel.in_worker() and torch.equal(inline["x"], train.x)
    out = parallel.map_jobs(_learn_load, ["digits"] * 2, backend="local", n_workers=2)
    for o in out:
        assert o["mapped"]
        assert torch.equal(o["x"], train.x) and torch.equal(o["ids"], test.ids)
