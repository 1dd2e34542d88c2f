"""A full disk during `shard train`, `shard forget` and `events --out` (issue 17): exit code 2,
one line naming what could not be written and the fix, no traceback, and nothing half-written --
the store verifies, the next request succeeds without `--rollback`, and no partial result file
is left.

The full disk is simulated without root: the command runs in a child process with
``RLIMIT_FSIZE`` lowered and SIGXFSZ ignored, so a write past the limit fails with ``EFBIG``
("File too large"), as a write to a full disk fails with ``ENOSPC``; SQLite reports either as
a disk I/O error. The limit applies to every file the command writes (result, checkpoints,
ledger), so it sits between the sizes that must succeed and those that must fail. Each case
starts a Python process (torch imports: several seconds on a loaded machine), so only the
`events` case is in the default run; the store cases are in the slow set (`make test-all`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("resource")

from obliviate.cli.main import main  # noqa: E402

RUNNER = """\
import resource, signal, sys

if __name__ == "__main__":  # the local backend's workers re-import this file
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from obliviate.cli.main import main

    sys.exit(main(sys.argv[2:]))
"""

#: 2 shards x 2 slices of a wide MLP: each checkpoint is ~600 kB, the ledger ~60 kB
STORE_ARGS = ["--shards", "2", "--slices", "2", "--epochs", "1", "--hidden", "2000"]
STORE_ARGS += ["--limit", "400", "--backend", "inline"]


def limited(tmp_path: Path, limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``obliviate ARGS`` in a child whose files may not grow past ``limit`` bytes."""
    runner = tmp_path / "limited_obliviate.py"
    runner.write_text(RUNNER)
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run(
        [sys.executable, str(runner), str(limit), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def status(store: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["shard", "status", "--store", str(store), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def verify_ok(store: Path, capsys) -> None:
    capsys.readouterr()
    code = main(["shard", "verify", "--store", str(store)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"], report


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("disk-full") / "store"
    assert main(["shard", "train", "--store", str(path), *STORE_ARGS]) == 0
    return path


def _two_ids(store: Path) -> list[int]:
    from obliviate.sharded import ShardedStore

    with ShardedStore(store, backend="inline") as st:
        return [int(i) for i in st.status(include_ids=True)["shards"][0]["ids"][:2]]


def test_events_out_on_a_full_disk_leaves_no_file(tmp_path):
    args = ["events", "--epochs", "1", "--limit", "300", "--hidden", "8", "--out", "counts.csv"]
    proc = limited(tmp_path, 1_000, *args)  # the CSV needs ~2.5 kB
    one_line_error(proc, "cannot write", "counts.csv", "disk is full")
    left = sorted(p.name for p in tmp_path.iterdir() if p.name != "limited_obliviate.py")
    assert left == [], left  # neither the file nor a temporary file


@pytest.mark.slow
def test_shard_forget_on_a_full_disk_then_the_next_request_succeeds(store, tmp_path, capsys):
    ids = _two_ids(store)
    full, clean = tmp_path / "full", tmp_path / "clean"
    shutil.copytree(store, full)
    shutil.copytree(store, clean)
    text = ",".join(map(str, ids))
    # the ledger (~60 kB) may grow, a new checkpoint (~600 kB) cannot be written
    proc = limited(tmp_path, 300_000, "shard", "forget", "--store", "full", "--ids", text,
                   "--backend", "inline")  # fmt: skip
    one_line_error(proc, "cannot write", "in store full", "disk is full")
    assert not list((full / "checkpoints").glob(".tmp-*"))  # no half-written checkpoint
    # the same request again, with space: it succeeds without --rollback
    capsys.readouterr()
    args = ["shard", "forget", "--ids", text, "--backend", "inline", "--store"]
    assert main([*args, str(full)]) == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["status"] == "done"
    assert main([*args, str(clean)]) == 0
    verify_ok(full, capsys)
    after, reference = status(full, capsys), status(clean, capsys)
    assert [s["checkpoint"] for s in after["shards"]] == [
        s["checkpoint"] for s in reference["shards"]
    ]  # bit for bit the store of a deletion that never met a full disk
    assert after["samples"] == reference["samples"]


@pytest.mark.slow
def test_shard_forget_when_the_ledger_cannot_grow_changes_nothing(store, tmp_path, capsys):
    full = tmp_path / "full"
    shutil.copytree(store, full)
    checkpoints = {p.name: p.read_bytes() for p in (full / "checkpoints").iterdir()}
    text = ",".join(map(str, _two_ids(store)))
    proc = limited(tmp_path, 4_000, "shard", "forget", "--store", "full", "--ids", text,
                   "--backend", "inline")  # fmt: skip
    one_line_error(proc)
    verify_ok(full, capsys)
    after, before = status(full, capsys), status(store, capsys)
    for key in ("samples", "requests", "model_version"):
        assert after[key] == before[key], key  # no request recorded, no id deleted
    assert {p.name: p.read_bytes() for p in (full / "checkpoints").iterdir()} == checkpoints


@pytest.mark.slow
def test_a_full_disk_is_not_reported_as_a_damaged_ledger(store, tmp_path):
    shutil.copytree(store, tmp_path / "full")
    text = ",".join(map(str, _two_ids(store)))
    proc = limited(tmp_path, 4_000, "shard", "forget", "--store", "full", "--ids", text,
                   "--backend", "inline")  # fmt: skip
    line = one_line_error(proc)
    assert "damaged" not in line and "backup" not in line, line


@pytest.mark.slow
def test_shard_train_on_a_full_disk_is_resumable(tmp_path, capsys):
    proc = limited(tmp_path, 300_000, "shard", "train", "--store", "st", *STORE_ARGS)
    one_line_error(proc, "cannot write", "disk is full", "shard resume")
    assert not list((tmp_path / "st" / "checkpoints").glob(".tmp-*"))
    # with space again, the documented recovery completes the training ...
    assert main(["shard", "resume", "--store", str(tmp_path / "st"), "--backend", "inline"]) == 0
    verify_ok(tmp_path / "st", capsys)
    # ... into the store a training that never met a full disk builds, bit for bit
    assert main(["shard", "train", "--store", str(tmp_path / "clean"), *STORE_ARGS]) == 0
    resumed, clean = status(tmp_path / "st", capsys), status(tmp_path / "clean", capsys)
    assert [s["checkpoint"] for s in resumed["shards"]] == [
        s["checkpoint"] for s in clean["shards"]
    ]
