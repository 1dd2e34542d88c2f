"""The runner: resume, crash-safe results, a killed real subprocess, backends agreeing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from obliviate import ObliviateError
from obliviate.bench import results as store
from obliviate.bench import runner
from obliviate.bench.specs import load_spec, parse_spec

SPEC = """\
name = "tiny"
seeds = [0, 1, 2]

[[learn]]
datasets = ["synthetic"]
scenarios = ["class-incremental"]
strategies = ["naive"]
n_experiences = 2
n_epochs = {epochs}
"""


def spec_file(tmp_path: Path, epochs: int = 1, seeds: str = "[0, 1, 2]") -> Path:
    p = tmp_path / "spec.toml"
    p.write_text(SPEC.format(epochs=epochs).replace("[0, 1, 2]", seeds))
    return p


def test_resume_skips_finished_runs(tmp_path):
    out = tmp_path / "out"
    counts = runner.bench(spec_file(tmp_path), out)
    assert counts == {"total": 3, "skipped": 0, "ok": 3, "error": 0}
    first = store.read(out)
    assert len(first) == 3 and all(r["status"] == "ok" for r in first)
    rec = first[0]
    assert {"key", "run", "spec", "metrics", "timings", "provenance"} <= set(rec)
    assert rec["metrics"]["accuracy_matrix"] and "acc" in rec["metrics"]
    assert "git_commit" in rec["provenance"] and rec["provenance"]["seed"] == rec["run"]["seed"]
    assert (out / "spec.toml").exists()
    # same spec again: nothing runs, nothing is appended
    assert runner.bench(spec_file(tmp_path), out)["skipped"] == 3
    assert len((out / "results.jsonl").read_text().splitlines()) == 3
    # one more seed: only the new run executes
    counts = runner.bench(spec_file(tmp_path, seeds="[0, 1, 2, 3]"), out)
    assert counts == {"total": 4, "skipped": 3, "ok": 1, "error": 0}
    assert len((out / "results.jsonl").read_text().splitlines()) == 4


def test_truncated_last_line_is_ignored_and_repaired(tmp_path):
    out = tmp_path / "out"
    _, runs = load_spec(spec_file(tmp_path, seeds="[0, 1]"))
    runner.run_grid(runs[:1], out)
    path = store.results_path(out)
    full = path.read_text()
    # a crash in mid-write: half of a second record, no newline
    with open(path, "a") as fh:
        fh.write(full[: len(full) // 2])
    assert len(store.read(out)) == 1  # the torn line is ignored on read
    counts = runner.run_grid(runs, out)
    assert counts["skipped"] == 1 and counts["ok"] == 1
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["status"] == "ok" for line in lines)


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(
        '{"key": "a", "status": "ok", "metrics": {}}\n{"key": broken\n{"key": "b", "status": "ok", "metrics": {}}\n'
    )
    with pytest.raises(ObliviateError, match=r"results.jsonl:2: corrupt result line"):
        store.read(tmp_path)


def test_failed_run_is_recorded_and_retried(tmp_path, monkeypatch):
    out = tmp_path / "out"
    _, runs = load_spec(spec_file(tmp_path, seeds="[0]"))

    def boom(spec):
        raise RuntimeError("disk on fire")

    import obliviate.experiments.learn as learn_kind

    monkeypatch.setattr(learn_kind, "run", boom)
    counts = runner.run_grid(runs, out)
    assert counts["error"] == 1
    (rec,) = store.read(out)
    assert rec["status"] == "error" and "disk on fire" in rec["error"]
    monkeypatch.undo()
    assert runner.run_grid(runs, out)["ok"] == 1
    (rec,) = store.read(out)  # the later record of the key wins
    assert rec["status"] == "ok"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "obliviate.cli.main", *args]


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and len(path.read_bytes().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"runner exited early: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        time.sleep(0.05)
    raise AssertionError("runner produced no result in time")


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_kill_and_rerun_completes_without_redoing(tmp_path, sig):
    n_runs = 4
    spec = spec_file(tmp_path, epochs=30, seeds=str(list(range(n_runs))))
    out = tmp_path / "out"
    path = store.results_path(out)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        _cli("bench", str(spec), "--out", str(out), "--quiet"),
        env=env,
        stderr=subprocess.PIPE,
        # a test run started in the background of a non-interactive shell inherits SIGINT
        # ignored (POSIX), and Python then keeps ignoring it: give the child the default
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _wait_for_lines(path, 1, proc)
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == (-signal.SIGKILL if sig == signal.SIGKILL else 130)
    before = {r["key"]: r for r in store.read(out)}
    assert 1 <= len(before) < n_runs, "the kill should land mid-grid"
    if sig == signal.SIGKILL:  # simulate the worst case: the kill tore a line in mid-write
        with open(path, "ab") as fh:
            fh.write(b'{"key":"torn","status":"o')
    done = subprocess.run(
        _cli("bench", str(spec), "--out", str(out), "--quiet"),
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    after = store.read(out)
    assert len(after) == n_runs and all(r["status"] == "ok" for r in after)
    lines = path.read_bytes().splitlines()
    assert len(lines) == n_runs  # no run twice, no torn line left
    for key, rec in before.items():  # finished runs were not redone
        assert next(r for r in after if r["key"] == key)["timings"] == rec["timings"]


def test_unknown_backend_and_workers():
    from obliviate.parallel import map_jobs, open_executor

    with pytest.raises(ObliviateError, match="unknown backend 'slurm'"):
        open_executor("slurm")
    with pytest.raises(ObliviateError, match="--workers must be >= 1"):
        open_executor("local", n_workers=0)
    with pytest.raises(ObliviateError, match="unknown backend 'slurm'"):
        map_jobs(abs, [1], "slurm")


def _metrics_by_key(out: Path) -> dict[str, object]:
    return {r["key"]: store.strip_timings(r["metrics"]) for r in store.read(out)}


@pytest.mark.slow
@pytest.mark.integration
def test_process_pool_gives_identical_metrics(tmp_path):
    _, runs = parse_spec(SPEC.format(epochs=1), "s.toml")
    runner.run_grid(runs, tmp_path / "a", workers=1)
    runner.run_grid(runs, tmp_path / "b", workers=2)
    a, b = _metrics_by_key(tmp_path / "a"), _metrics_by_key(tmp_path / "b")
    assert a == b and len(a) == 3


@pytest.mark.integration
def test_ray_gives_identical_metrics(tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip(
            "ray is not installed (optional extra: pip install 'obliviate[distributed]'); local-vs-Ray check skipped"
        )
    _, runs = parse_spec(SPEC.format(epochs=1), "s.toml")
    runner.run_grid(runs, tmp_path / "local", workers=1)
    runner.run_grid(runs, tmp_path / "ray", backend="ray", workers=2)
    a, b = _metrics_by_key(tmp_path / "local"), _metrics_by_key(tmp_path / "ray")
    assert a == b and len(a) == 3


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path):
    """--dry-run counted such a record as finished while the run cut it and ran it again."""
    out = tmp_path / "out"
    _, runs = load_spec(spec_file(tmp_path, seeds="[0, 1]"))
    runner.run_grid(runs[:1], out)
    path = store.results_path(out)
    path.write_text(path.read_text().rstrip("\n"))
    assert len(store.read(out)) == 1
    counts = runner.run_grid(runs, out)
    assert counts["skipped"] == 1 and counts["ok"] == 1  # not run twice
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and path.read_text().endswith("\n")


def test_a_record_without_metrics_is_a_one_line_error_in_report(tmp_path, capsys):
    from obliviate.cli.main import main

    rec = {"key": "a", "status": "ok", "metrics": None, "run": {"kind": "learn"}}
    (tmp_path / "results.jsonl").write_text(json.dumps(rec) + "\n")
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "results.jsonl:1: not a valid result record" in err and err.count("\n") == 1
    assert not (tmp_path / "r.html").exists()
