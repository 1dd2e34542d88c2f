"""After SIGKILL of a command that runs a process pool, none of its processes is left (workers
and the forkserver die with their parent: obliviate._lifetime)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


def _children() -> dict[int, int]:
    """pid -> parent pid of every live (non-zombie) process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            out[int(entry.name)] = int(fields[1])
    return out


def _descendants(root: int) -> set[int]:
    parents = _children()
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    return pids & set(_children())


SCRIPT = textwrap.dedent(
    """
    import time
    from obliviate.parallel import LocalExecutor
    if __name__ == "__main__":
        with LocalExecutor(2) as ex:
            ex.submit(time.sleep, 120)
            ex.submit(time.sleep, 120)
            print("started", flush=True)
            ex.wait_any()
    """
)


def test_sigkill_of_a_pool_owner_leaves_no_process(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"started"
        deadline = time.monotonic() + 60
        while len(_descendants(proc.pid)) < 3 and time.monotonic() < deadline:  # forkserver + 2
            time.sleep(0.2)
        family = _descendants(proc.pid)
        assert len(family) >= 3, family
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(family) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(family), f"left behind: {sorted(_alive(family))}"
    finally:
        if proc.poll() is None:
            proc.kill()


IDLE_SCRIPT = textwrap.dedent(
    """
    import time
    from obliviate import parallel
    if __name__ == "__main__":
        assert parallel.map_jobs(abs, [-1, -2, -3, -4], "local", 2) == [1, 2, 3, 4]
        print("warm", *parallel.warm_pids(), flush=True)
        time.sleep(120)
    """
)


def test_sigkill_of_the_owner_of_an_idle_warm_pool_leaves_no_process(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(IDLE_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:1] == [b"warm"] and len(line) >= 2  # workers kept warm after the call
        family = _descendants(proc.pid)  # the forkserver and the idle workers
        assert {int(p) for p in line[1:]} <= family
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(family) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(family), f"left behind: {sorted(_alive(family))}"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigkill_of_bench_with_two_workers_leaves_no_process(tmp_path):
    spec = tmp_path / "grid.toml"
    spec.write_text(
        'name = "kill"\nseeds = [0, 1, 2, 3]\n\n[[learn]]\ndatasets = ["digits"]\n'
        'scenarios = ["class-incremental"]\nn_experiences = 5\nstrategies = ["naive", "ewc"]\n'
        "n_epochs = 20\n"
    )
    obliviate = Path(sys.executable).with_name("obliviate")
    cmd = [str(obliviate)] if obliviate.exists() else [sys.executable, "-m", "obliviate.cli.main"]
    proc = subprocess.Popen(
        [*cmd, "bench", str(spec), "--out", str(tmp_path / "out"), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while len(_descendants(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)
        family = _descendants(proc.pid)
        assert len(family) >= 3, family  # forkserver and workers are up
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(family) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(family), f"left behind: {sorted(_alive(family))}"
    finally:
        if proc.poll() is None:
            proc.kill()
