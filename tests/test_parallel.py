"""The warm local pool (obliviate.parallel): workers reused across calls, their thread count
within the CPUs, results in order and equal to inline, stopped when a call is cut short, and a
clean exit of the process that owns it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from obliviate import parallel

pytestmark = pytest.mark.integration  # worker processes


def test_threads_per_worker_never_oversubscribes():
    for cpus in range(1, 17):
        for n in range(1, cpus + 1):
            t = parallel.threads_per_worker(n, cpus)
            assert t == cpus // n and t >= 1 and n * t <= cpus
    assert parallel.threads_per_worker(4, 2) == 1  # more workers than CPUs: one thread each
    assert parallel.threads_per_worker(1, 8) == 8


def test_the_pool_stays_warm_across_calls_with_its_threads_set():
    jobs = list(range(40))
    first = parallel.map_jobs(parallel.probe, jobs, "local", 2)
    warm = parallel.warm_pids()
    assert len(warm) >= 1 and set(warm) >= {r["pid"] for r in first}
    t0 = time.perf_counter()
    second = parallel.map_jobs(parallel.probe, jobs, "local", 2)
    elapsed = time.perf_counter() - t0
    assert [r["job"] for r in first] == [r["job"] for r in second] == jobs  # in order, chunked
    assert {r["pid"] for r in second} <= set(warm)  # the same processes: no new worker
    assert elapsed < 5  # no forkserver start, no torch import (seconds each)
    expected = parallel.threads_per_worker(2)
    assert {r["threads"] for r in first + second} == {expected}
    assert {r["interop_threads"] for r in first + second} == {1}
    with parallel.open_executor("local", n_workers=2) as ex:  # the executor shares the pool
        for j in range(4):
            ex.submit(parallel.probe, j)
        got = [r for _ in range(4) for r in ex.wait_any()][:4]
    assert {r["pid"] for r in got} <= set(warm) and sorted(r["job"] for r in got) == [0, 1, 2, 3]


def test_results_equal_inline():
    jobs = [-3, 5, -7, 11, 0, -1] * 5
    assert parallel.map_jobs(abs, jobs, "local", 2) == [abs(j) for j in jobs]
    assert parallel.map_jobs(abs, jobs, "inline") == [abs(j) for j in jobs]
    assert parallel.map_jobs(abs, [-2], "local", 2) == [2]  # one job: inline, no pool needed


def test_a_call_cut_short_stops_its_workers_instead_of_keeping_them():
    parallel.map_jobs(parallel.probe, [0, 1], "local", 2)  # a warm pool of 2 exists
    ex = parallel.open_executor("local", n_workers=2)
    ex.submit(time.sleep, 60)
    ex.submit(time.sleep, 60)
    time.sleep(0.5)
    busy = parallel.warm_pids()
    assert busy == []  # the executor holds the pool: nothing idle meanwhile
    t0 = time.perf_counter()
    ex.close()  # jobs in flight: the pool is stopped, not kept
    assert time.perf_counter() - t0 < 10
    assert parallel.warm_pids() == []
    assert parallel.map_jobs(abs, [-1, -2], "local", 2) == [1, 2]  # a fresh pool next time


def test_the_owner_exits_promptly_with_a_warm_pool(tmp_path):
    script = tmp_path / "owner.py"
    script.write_text(
        textwrap.dedent(
            """
            from obliviate import parallel
            if __name__ == "__main__":
                assert parallel.map_jobs(abs, [-1, -2, -3], "local", 2) == [1, 2, 3]
                print(*parallel.warm_pids(), flush=True)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert pids
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


THREAD_SCRIPT = """
import sys, threading, time
from obliviate import parallel
if __name__ == "__main__":
    if sys.argv[1:] == ["unkept"]:  # without the keeper thread (shows what the test catches)
        parallel._ensure_forkserver = lambda: None
    out = []
    t = threading.Thread(target=lambda: out.append(parallel.map_jobs(abs, [-1, -2], "local", 2)))
    t.start()
    t.join()  # the thread that first needed the forkserver is gone
    warm = parallel.warm_pids()
    time.sleep(1.0)  # a parent-death signal would have landed by now
    again = parallel.map_jobs(parallel.probe, [0, 1, 2, 3], "local", 2)
    print(out == [[1, 2]], bool(warm), {r["pid"] for r in again} <= set(warm))
"""


def test_a_pool_started_from_a_short_lived_thread_outlives_it(tmp_path):
    """The parent-death signal follows the thread that forked the forkserver; the module starts
    the forkserver from a thread of its own, so a caller thread's exit kills no warm worker."""
    script = tmp_path / "threaded.py"
    script.write_text(THREAD_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True"]
