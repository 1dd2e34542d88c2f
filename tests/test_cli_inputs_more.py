"""More bad input refused up front, in one line, exit 2, nothing written (issue 17, a fresh
tester's round on b662295): more shards x slices than training rows (``shard train`` and bench
specs), more than 10 000 seeds in a spec, a bad ``npz:`` dataset in a spec, a damaged ledger in
``shard verify`` / ``status`` / ``predict``, and messages that name the wrong problem (a folder
as id file, a file as store, a results file that is not UTF-8)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from obliviate.bench.specs import MAX_SEEDS
from obliviate.cli.main import main

# ---- D1: S x R slices against N training rows ----------------------------------------------


@pytest.mark.parametrize(
    ("shards", "slices", "extra"),
    [("100000", "1", []), ("2000", "1", ["--backend", "inline"]), ("700", "3", [])],
)
def test_shard_train_with_more_slices_than_rows_is_refused(
    one_line_error, capsys, tmp_path, monkeypatch, shards, slices, extra
):
    monkeypatch.chdir(tmp_path)
    args = ["shard", "train", "--dataset", "digits", "--store", "sh1", "--quiet"]
    args += ["--shards", shards, "--slices", slices, *extra]
    one_line_error(args, f"{shards} x {slices}", "training rows", "<=")
    assert list(tmp_path.iterdir()) == []  # nothing written


def _spec(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.toml"
    p.write_text(text)
    return p


def test_bench_spec_with_more_shards_than_rows_is_refused(
    one_line_error, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    spec = _spec(
        tmp_path,
        '[[sharded]]\ndatasets = ["digits"]\nn_shards = [100000]\nn_slices = [1]\nseeds = [0]\n',
    )
    one_line_error(["bench", str(spec), "--out", "out", "--quiet"], "n_shards", "100000")
    assert not (tmp_path / "out").exists()


# ---- D2: the seed cap in specs ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["top", "block"])
def test_bench_spec_with_too_many_seeds_is_refused(
    one_line_error, capsys, tmp_path, monkeypatch, where
):
    monkeypatch.chdir(tmp_path)
    seeds = "seeds = [" + ",".join(map(str, range(MAX_SEEDS + 1))) + "]\n"
    block = '[[sharded]]\ndatasets = ["digits"]\nn_shards = [2]\n'
    text = seeds + block if where == "top" else block + seeds
    spec = _spec(tmp_path, text)
    one_line_error(["bench", str(spec), "--out", "out", "--quiet"], f"{MAX_SEEDS + 1} seeds")
    assert not (tmp_path / "out").exists()


# ---- D3: npz datasets loaded at spec load ----------------------------------------------------


def test_bench_spec_with_a_bad_npz_dataset_is_refused(
    one_line_error, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "ystr.npz",
        x=rng.random((200, 5)).astype(np.float32),
        y=np.array(["cat", "dog"] * 100),
    )
    spec = _spec(
        tmp_path, '[[sharded]]\ndatasets = ["npz:ystr.npz"]\nn_shards = [2]\nseeds = [0]\n'
    )
    one_line_error(["bench", str(spec), "--out", "out", "--quiet"], "datasets", "labels")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache").exists()


# ---- D7: messages that name the right problem ----------------------------------------------


def test_forget_source_folder_is_named_a_folder(one_line_error, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ids").mkdir()
    one_line_error(
        ["forget", "--dataset", "digits", "--forget", "source:ids", "--quiet"],
        "is a folder",
    )


def test_shard_forget_on_a_file_names_a_file(one_line_error, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "good.npz", x=np.zeros((4, 2)), y=np.zeros(4, dtype=np.int64))
    before = (tmp_path / "good.npz").read_bytes()
    one_line_error(["shard", "forget", "--store", "good.npz", "--ids", "1"], "is a file")
    assert (tmp_path / "good.npz").read_bytes() == before


def test_report_on_a_non_utf8_results_file_names_it_corrupt(
    one_line_error, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "results.jsonl").write_bytes(b"\xff\xfe")
    one_line_error(["report", "res", "--out", "r.html"], "corrupt", "UTF-8")
    assert not (tmp_path / "r.html").exists()


# ---- D4: a damaged ledger ------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    path = root / "good"
    args = ["shard", "train", "--dataset", "digits", "--shards", "3", "--slices", "2"]
    args += ["--store", str(path), "--backend", "inline", "--epochs", "1", "--quiet"]
    assert main(args) == 0
    db = sqlite3.connect(path / "ledger.sqlite")  # all pages in the file itself, none in the WAL
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return path


def _flipped(store: Path, dest: Path, offset: int) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(store, dest)
    p = dest / "ledger.sqlite"
    b = bytearray(p.read_bytes())
    b[offset : offset + 64] = bytes(x ^ 0xFF for x in b[offset : offset + 64])
    p.write_bytes(bytes(b))
    return dest


def _find(store: Path, tmp_path: Path, step: int, want) -> Path:
    """A copy of ``store`` with 64 bytes flipped at the first offset (multiple of ``step``)
    whose damage ``want(ledger_path)`` accepts."""
    size = (store / "ledger.sqlite").stat().st_size
    for offset in range(4096, size - 64, step):
        dest = _flipped(store, tmp_path / "bad", offset)
        if want(dest / "ledger.sqlite"):
            return dest
    raise AssertionError("no offset gives the damage this test needs")


def _integrity(p: Path) -> list[str] | None:
    """integrity_check rows; None when the file cannot be read at all."""
    db = sqlite3.connect(p)
    try:
        return [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError:
        return None
    finally:
        db.close()


def test_verify_reports_a_many_line_integrity_check_in_one_line(capsys, store, tmp_path):
    def multi_line(p: Path) -> bool:
        rows = _integrity(p)
        return bool(rows) and "\n" in rows[0]

    bad = _find(store, tmp_path, 1024, multi_line)
    code = main(["shard", "verify", "--store", str(bad)])
    out, err = capsys.readouterr()
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "problem(s); first:" in lines[0], err
    assert "*** in database" not in lines[0]


def test_status_refuses_and_predict_warns_on_a_readable_but_damaged_ledger(
    one_line_error, capsys, store, tmp_path
):
    def readable_but_damaged(p: Path) -> bool:
        if _integrity(p) == ["ok"]:  # None: integrity_check itself fails, "malformed"
            return False
        from obliviate.sharded import ShardedStore

        try:  # the reads status makes succeed: damage a plain read does not see
            ShardedStore(p.parent, backend="inline").status()
            return True
        except Exception:
            return False

    bad = _find(store, tmp_path, 4096, readable_but_damaged)
    before = (bad / "ledger.sqlite").read_bytes()
    one_line_error(["shard", "status", "--store", str(bad)], "damaged", "shard verify")
    rows = tmp_path / "x.npy"
    np.save(rows, np.zeros((2, 64), dtype=np.float32))
    code = main(["shard", "predict", "--store", str(bad), "--input", str(rows)])
    out, err = capsys.readouterr()
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "damaged" in lines[0], err
    assert (bad / "ledger.sqlite").read_bytes() == before


# ---- third tester round ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_shard_train_limit_below_one_is_refused(
    one_line_error, capsys, tmp_path, monkeypatch, limit
):
    """`shard train --limit 0` ended as an 'unexpected failure' (a torch reshape error)."""
    monkeypatch.chdir(tmp_path)
    args = ["shard", "train", "--dataset", "digits", "--store", "L", "--limit", limit]
    one_line_error(args, "--limit")
    assert list(tmp_path.iterdir()) == []


def test_sharded_data_spec_limit_below_one_is_refused():
    from obliviate.errors import ObliviateError
    from obliviate.sharded.config import DataSpec

    with pytest.raises(ObliviateError, match="limit=0"):
        DataSpec(limit=0)


@pytest.mark.parametrize("command", ["forget", "resume"])
def test_shard_precision_errors_name_the_flag(one_line_error, capsys, tmp_path, command):
    """`shard resume --precision fp8` said `precision='fp8'` where every other command names
    the flag."""
    args = ["shard", command, "--store", str(tmp_path / "none"), "--precision", "fp8"]
    if command == "forget":
        args += ["--ids", "1"]
    one_line_error(args, "--precision fp8")


def test_bench_spec_with_a_repeated_seed_is_refused(one_line_error, capsys, tmp_path, monkeypatch):
    """`seeds = [0, 0]` silently collapsed into one run, while `--seeds 0,0` is refused."""
    monkeypatch.chdir(tmp_path)
    spec = _spec(
        tmp_path, 'seeds = [0, 0]\n[[learn]]\ndatasets = ["digits"]\nstrategies = ["naive"]\n'
    )
    one_line_error(["bench", str(spec), "--out", "o", "--dry-run"], "seed 0 appears twice")
    assert not (tmp_path / "o").exists()


def test_an_astronomical_shard_count_is_refused_before_any_allocation(
    one_line_error, tmp_path, monkeypatch
):
    """`--shards 1000000000000000000000` built the shard graph's per-shard neighbourhoods before
    the rows check and was killed for memory at 23 GB."""
    monkeypatch.chdir(tmp_path)
    args = ["shard", "train", "--store", "s", "--limit", "100", "--shards", str(10**21)]
    one_line_error(args, "at most 1_000_000 shards")
    assert list(tmp_path.iterdir()) == []


def test_out_under_a_file_names_the_file(one_line_error, tmp_path, monkeypatch):
    """`--out afile/x.json` where `afile` is a file said the folder 'does not exist'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    args = ["learn", "--dataset", "digits", "--out", "afile/x.json"]
    one_line_error(args, "is a file, not a folder")
