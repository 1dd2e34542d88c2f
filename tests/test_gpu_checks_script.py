"""benchmarks/gpu_checks.sh: bad arguments, exit statuses, and stopping everything on a signal.

The script's jobs are stood in for by a fake PYTHON (a bash script) so that these tests need no
data, no GPU and seconds each: the script's own steps (``-c``, the spec rewrite) run the real
interpreter, and each job exits with a chosen status, sleeps, or starts a process tree like the
bench's (a child, a grandchild, one in its own session, one that ignores SIGTERM). One test
rehearses the real pipeline (SMOKE=1) when the local data in .devdata/ is there.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_checks.sh"
JOBS = [
    "device_check",
    "bench_mnist",
    "bench_fmnist",
    "replicate_ewc_s0",
    "replicate_si_s0",
    "replicate_agem_s0",
]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not sys.platform.startswith("linux")
        or not Path("/proc/self/environ").exists()
        or any(shutil.which(c) is None for c in ("bash", "timeout", "ps", "setsid")),
        reason="needs Linux with /proc, bash, timeout, ps and setsid",
    ),
]

FAKE_PYTHON = r"""#!/usr/bin/env bash
# stands in for python in benchmarks/gpu_checks.sh
real=@REAL@
case "${1:-}" in
    -c) exec "$real" "$@" ;;
    -) if [ $# -eq 1 ]; then cat > /dev/null; echo "fake header"; exit 0; fi
       exec "$real" "$@" ;;
esac
case "$*" in
    *device_check.py*) what=${FAKE_DEVICE_CHECK:-0} ;;
    *obliviate.cli.main*) what=${FAKE_BENCH:-0} ;;
    *replicate_cl.py*) what=${FAKE_REPLICATE:-0} ;;
    *) echo "fake python: unexpected arguments $*" >&2; exit 99 ;;
esac
nap='import time; time.sleep(600)'
case $what in
    sleep) exec "$real" -c "$nap" "$FAKE_TAG" ;;
    tree)
        "$real" -c "$nap" "$FAKE_TAG" child &
        bash -c '"$0" -c "$1" "$2" grandchild & wait' "$real" "$nap" "$FAKE_TAG" &
        setsid "$real" -c "$nap" "$FAKE_TAG" own-session &
        "$real" -c 'import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(os.path.join(sys.argv[1], str(os.getpid())), "w").close()
time.sleep(600)' "$FAKE_READY" "$FAKE_TAG" &
        echo up
        wait ;;
    *) exit "$what" ;;
esac
"""


def _fake_env(tmp_path: Path, **fake: str) -> dict[str, str]:
    fake_py = tmp_path / "bin" / "fakepython"
    fake_py.parent.mkdir(exist_ok=True)
    fake_py.write_text(FAKE_PYTHON.replace("@REAL@", sys.executable))
    fake_py.chmod(0o755)
    (tmp_path / "ready").mkdir(exist_ok=True)
    env = dict(os.environ)
    env.update(
        PYTHON=str(fake_py),
        DEVICE="cpu",
        MPS="0",
        SMOKE="1",
        BENCH_WORKERS="1",
        REPLICATE_SEEDS="0",
        MNIST_DIR=str(tmp_path / "no-mnist"),
        FMNIST_DIR=str(tmp_path / "no-fmnist"),
        FAKE_TAG=str(tmp_path),
        FAKE_READY=str(tmp_path / "ready"),
        GPU_CHECKS_TEST=uuid.uuid4().hex,
    )
    env.update(fake)
    return env


def _default_signals() -> None:
    # bash cannot trap a signal that was ignored when it started (a caller started with `&` from
    # a script ignores SIGINT, nohup SIGHUP): the script gets them as a terminal would send them
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
        preexec_fn=_default_signals,
    )


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _ours(tag: str, path: str) -> list[int]:
    """Processes carrying the test's tag in their environment or the path in their command line."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            environ = (proc / "environ").read_bytes()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if f"GPU_CHECKS_TEST={tag}".encode() in environ.split(b"\0") or path.encode() in cmdline:
            found.append(int(proc.name))
    return found


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _wait_for(what: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if what():
            return True
        time.sleep(0.2)
    return False


def _assert_nothing_left(tag: str, path: str) -> None:
    # what the script killed may take a moment to be reaped by its new parent
    if not _wait_for(lambda: not _ours(tag, path), 5):
        left = _ours(tag, path)
        _kill_all(left)
        pytest.fail(f"processes left running after the script ended: {left}")


# --- bad arguments: exit 2, one line, nothing written ---------------------------------------


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_out_that_cannot_be_a_folder_exits_2_and_writes_nothing(tmp_path, where):
    env = _fake_env(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "a file" else tmp_path / "f" / "sub" / "out"
    # the old script went on with an empty OUT and wrote these into the root folder
    in_root = [f"/{n}" for n in ("driver.log", "specs", *(f"{j}.log" for j in JOBS))]
    in_root = [p for p in in_root if not os.path.exists(p)]
    before = _tree(tmp_path)
    r = _run([str(out), "40"], env, cwd)
    assert r.returncode == 2, r.stderr + r.stdout
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "OUT" in lines[0] and str(out) in lines[0] and "not a file" in lines[0]
    assert _tree(tmp_path) == before
    assert [p for p in in_root if os.path.exists(p)] == []


@pytest.mark.parametrize("deadline", ["abc", "30s", "5.5", "0", "-10", "", " 5", "1e3", "0x10"])
def test_bad_deadline_exits_2_before_any_work(tmp_path, deadline):
    env = _fake_env(tmp_path)
    before = _tree(tmp_path)
    r = _run([str(tmp_path / "out"), deadline], env, tmp_path)
    assert r.returncode == 2, r.stderr + r.stdout
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "DEADLINE_S" in lines[0] and f"'{deadline}'" in lines[0]
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("args", [[], [""], ["OUT", "40", "extra"]])
def test_wrong_number_of_arguments_exits_2(tmp_path, args):
    env = _fake_env(tmp_path)
    before = _tree(tmp_path)
    r = _run(args, env, tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "usage:" in r.stderr
    assert _tree(tmp_path) == before


# --- exit statuses and the summary ----------------------------------------------------------


def _log(out: Path) -> str:
    return (out / "driver.log").read_text()


def test_all_jobs_finished_exits_0(tmp_path):
    out = tmp_path / "out"
    r = _run([str(out), "09"], _fake_env(tmp_path), tmp_path)  # 09: decimal, not octal
    log = _log(out)
    assert r.returncode == 0, log + r.stderr
    assert "jobs: " + ", ".join(f"{j} ok" for j in JOBS) in log
    assert log.rstrip().endswith("done")


def test_a_failed_job_exits_1_and_the_deadline_is_reported(tmp_path):
    out = tmp_path / "out"
    env = _fake_env(tmp_path, FAKE_DEVICE_CHECK="1", FAKE_REPLICATE="sleep")
    r = _run([str(out), "9"], env, tmp_path)
    log = _log(out)
    assert r.returncode == 1, log + r.stderr
    assert "end device_check rc=1" in log and "end replicate_si_s0 rc=124" in log
    assert (
        "jobs: device_check failed rc=1, bench_mnist ok, bench_fmnist ok, "
        "replicate_ewc_s0 stopped at the deadline (not finished), "
        "replicate_si_s0 stopped at the deadline (not finished), "
        "replicate_agem_s0 stopped at the deadline (not finished)"
    ) in log
    assert "done: 1 job(s) failed" in log


def test_stopped_at_the_deadline_is_not_a_failure_and_leaves_nothing_running(tmp_path):
    # at the deadline timeout stops its own process group only: the bench's stand-in leaves a
    # process that ignores SIGTERM and one in its own session, which the script stops at the end
    out = tmp_path / "out"
    env = _fake_env(tmp_path, FAKE_BENCH="tree")
    tag = env["GPU_CHECKS_TEST"]
    try:
        r = _run([str(out), "8"], env, tmp_path)
        log = _log(out)
        assert r.returncode == 0, log + r.stderr
        assert "bench_mnist stopped at the deadline (not finished)" in log
        assert "processes the jobs left running:" in log
        assert log.rstrip().endswith("done")
        _assert_nothing_left(tag, str(tmp_path))
    finally:
        _kill_all(_ours(tag, str(tmp_path)))


def test_jobs_without_time_left_are_skipped_and_logged(tmp_path):
    out = tmp_path / "out"
    r = _run([str(out), "5"], _fake_env(tmp_path), tmp_path)
    log = _log(out)
    assert r.returncode == 0, log + r.stderr
    for job in JOBS:
        assert f"skip {job}: no time left" in log
        assert f"{job} skipped: no time left (not finished)" in log
    assert "start " not in log
    assert "unbound variable" not in r.stderr  # no job ran: empty arrays under set -u


def test_a_closed_stdout_costs_neither_the_log_nor_the_exit_status(tmp_path):
    # `gpu_checks.sh OUT N | head -1`: stdout closes after the first line
    out = tmp_path / "out"
    proc = subprocess.Popen(
        ["bash", str(SCRIPT), str(out), "09"],
        env=_fake_env(tmp_path),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_signals,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    log = _log(out)
    assert proc.returncode == 0, log + err
    assert "jobs: " + ", ".join(f"{j} ok" for j in JOBS) in log
    assert log.rstrip().endswith("done")


# --- a signal stops everything --------------------------------------------------------------


def _clean_up(proc, tag, path):
    """Whatever a failed signal test left: the script's whole session, then every process of
    the run (found by its tag and path)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _kill_all(_ours(tag, path))


def _start(out, deadline, env, cwd):
    """The script in its own session (so a signal can go to its whole process group), with the
    default signal handlers whatever the test run inherited."""
    return subprocess.Popen(
        ["bash", str(SCRIPT), str(out), deadline],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_default_signals,
    )


@pytest.mark.parametrize(
    ("sig", "to_group", "status"),
    [(signal.SIGTERM, False, 143), (signal.SIGHUP, False, 129), (signal.SIGINT, True, 130)],
    ids=["TERM", "HUP", "Ctrl-C"],
)
def test_a_signal_stops_every_process_of_every_job(tmp_path, sig, to_group, status):
    out = tmp_path / "out"
    env = _fake_env(tmp_path, FAKE_DEVICE_CHECK="tree", FAKE_BENCH="tree", FAKE_REPLICATE="tree")
    tag = env["GPU_CHECKS_TEST"]
    proc = _start(out, "120", env, tmp_path)
    try:
        ready = tmp_path / "ready"
        assert _wait_for(lambda: len(list(ready.iterdir())) == len(JOBS), 60), _log(out)
        if to_group:  # as a terminal's Ctrl-C: the whole foreground process group
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        log = _log(out)
        assert proc.returncode == status, log + err
        name = sig.name
        assert f"caught {name}: stopping every job" in log
        assert f"stopped by {name}; exit {status}" in log
        assert "done" not in log
        _assert_nothing_left(tag, str(tmp_path))
    finally:
        _clean_up(proc, tag, str(tmp_path))


DATA = REPO / ".devdata"


@pytest.mark.skipif(
    not (DATA / "mnist").is_dir() or not (DATA / "fashion-mnist").is_dir(),
    reason="the rehearsal needs MNIST and Fashion-MNIST in .devdata/",
)
def test_term_a_few_seconds_into_a_rehearsal_leaves_nothing_running(tmp_path):
    out = tmp_path / "out"
    tag = uuid.uuid4().hex
    env = dict(os.environ)
    env.update(
        SMOKE="1",
        DEVICE="cpu",
        MPS="0",
        PYTHON=sys.executable,
        MNIST_DIR=str(DATA / "mnist"),
        FMNIST_DIR=str(DATA / "fashion-mnist"),
        BENCH_WORKERS="2",
        REPLICATE_SEEDS="0",
        GPU_CHECKS_TEST=tag,
    )
    proc = _start(out, "60", env, tmp_path)
    try:
        log_file = out / "driver.log"

        def started() -> bool:
            return log_file.exists() and "start replicate_agem_s0" in log_file.read_text()

        assert _wait_for(started, 60)
        time.sleep(3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        log = log_file.read_text()
        assert proc.returncode == 143, log + err
        assert "stopped by SIGTERM; exit 143" in log
        _assert_nothing_left(tag, str(out))
    finally:
        _clean_up(proc, tag, str(out))


def test_help_prints_the_header_and_an_option_is_not_taken_for_out(tmp_path):
    r = _run(["--help"], _fake_env(tmp_path), tmp_path)
    assert r.returncode == 0 and "Exit status" in r.stdout
    r = _run(["-x"], _fake_env(tmp_path), tmp_path)
    assert r.returncode == 2 and "unknown option '-x'" in r.stderr
    assert not (tmp_path / "-x").exists() and not (tmp_path / "--help").exists()
