"""A damaged or read-only ledger: verify reports damage (never crashes), forget refuses to write
to a damaged ledger, and a read-only store still verifies, reports status and predicts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from obliviate.cli.main import main
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec
from obliviate.sharded import DataSpec, ShardConfig, ShardedStore
from obliviate.sharded.ledger import Ledger, LedgerDamaged
from obliviate.training import Recipe, TrainConfig

DATA = DataSpec(dataset="digits", limit=200)
RECIPE = Recipe(
    ModelSpec(hidden=(8,), seed=0), TrainConfig(n_epochs=1, batch_size=32, lr=0.05, seed=0)
)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("damage") / "base"
    config = ShardConfig(n_shards=2, n_slices=2, graph="none", seed=0, recipe=RECIPE)
    ShardedStore.train(path, data=DATA, config=config, backend="inline").close()
    return path


def _flip(path: Path, n: int = 64) -> None:
    """Flip ``n`` bytes at the start of the ledger's second page (a b-tree page)."""
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")  # the page size, from the SQLite header
    data[page : page + n] = bytes(b ^ 0xFF for b in data[page : page + n])
    path.write_bytes(bytes(data))


def _damaged_copy(base: Path, tmp_path: Path) -> Path:
    store = tmp_path / "store"
    shutil.copytree(base, store)
    _flip(store / "ledger.sqlite")
    return store


def _an_id(base: Path) -> int:
    with ShardedStore(base, backend="inline") as st:
        return int(st.ledger.samples()[0, 0])


def test_verify_reports_a_byte_flipped_ledger(base, tmp_path, capsys):
    store = _damaged_copy(base, tmp_path)
    assert Ledger(store / "ledger.sqlite").integrity_problems()  # SQLite sees the damage
    code = main(["shard", "verify", "--store", str(store)])
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    assert "damaged" in out + err and "Traceback" not in out + err


def test_forget_refuses_to_write_to_a_damaged_ledger(base, tmp_path, capsys):
    some_id = _an_id(base)
    store = _damaged_copy(base, tmp_path)
    before = (store / "ledger.sqlite").read_bytes()
    code = main(["shard", "forget", "--store", str(store), "--ids", str(some_id)])
    err = capsys.readouterr().err
    assert code in (1, 2) and "Traceback" not in err and err.count("\n") == 1, err
    assert (store / "ledger.sqlite").read_bytes() == before  # nothing written
    with pytest.raises(LedgerDamaged):
        with Ledger(store / "ledger.sqlite").transaction():
            pass


def test_read_only_store_verifies_reports_status_and_predicts(base, tmp_path, monkeypatch):
    store = tmp_path / "ro"
    shutil.copytree(base, store)
    x = np.zeros((3, 64), dtype=np.float32)
    with ShardedStore(base, backend="inline") as st:
        expected, status = st.predict(x), st.status()
    # as on a read-only mount (the tests run as root, for whom chmod does not stop writes)
    real_access = os.access
    monkeypatch.setattr(
        "obliviate.sharded.ledger.os.access",
        lambda p, mode: False if str(p).startswith(str(store)) else real_access(p, mode),
    )
    before = {p.name: p.read_bytes() for p in store.rglob("*") if p.is_file()}
    with ShardedStore(store, backend="inline") as st:
        assert st.ledger.read_only
        assert st.verify()["ok"]
        assert {**st.status(), "store": None} == {**status, "store": None}
        assert np.array_equal(st.predict(x).numpy(), expected.numpy())
        with pytest.raises(ObliviateError, match="read-only"):
            st.forget([_an_id(base)])
    assert {p.name: p.read_bytes() for p in store.rglob("*") if p.is_file()} == before


def test_a_request_for_every_id_is_refused_and_the_next_one_succeeds(base, tmp_path):
    shutil.copytree(base, tmp_path / "s")
    with ShardedStore(tmp_path / "s", backend="inline") as st:
        every = st.ledger.samples()[:, 0]
        with pytest.raises(ObliviateError, match="all .* remaining training samples"):
            st.forget(every)
        assert st.status()["samples"]["pending"] == 0
        assert st.ledger.requests(("queued", "running")) == []  # nothing recorded
        receipt = st.forget(every[:2])  # no --rollback needed
        assert receipt["status"] == "done"


def test_a_damaged_checkpoint_of_an_untouched_shard_is_refused_before_recording(base, tmp_path):
    shutil.copytree(base, tmp_path / "s")
    with ShardedStore(tmp_path / "s", backend="inline") as st:
        rows = st.ledger.samples()
        victim = int(rows[rows[:, 1] == 0][0, 0])  # a sample of shard 0 ...
        other = st.ledger.current_checkpoints()[(1, st.config.n_slices - 1)]["sha256"]
    ckpt = next(p for p in (tmp_path / "s").rglob(f"{other}*"))
    ckpt.write_bytes(b"garbage")  # ... and shard 1's live model is unreadable
    with ShardedStore(tmp_path / "s", backend="inline") as st:
        with pytest.raises(ObliviateError):
            st.forget([victim])
        assert st.ledger.requests(("queued", "running")) == []


def test_output_in_a_missing_folder_is_refused_before_the_deletion(base, tmp_path, capsys):
    shutil.copytree(base, tmp_path / "s")
    some_id = _an_id(base)
    out = tmp_path / "missing" / "receipt.json"
    code = main(["shard", "forget", "--store", str(tmp_path / "s"), "--ids", str(some_id),
                 "--out", str(out), "--backend", "inline"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and err.count("\n") == 1
    with ShardedStore(tmp_path / "s", backend="inline") as st:
        assert st.ledger.requests() == []  # nothing deleted, nothing recorded


def test_more_bad_requests_leave_the_store_as_it_was(tmp_path, capsys):
    """Found by a tester: --workers 0 on forget was recorded and then carried out by the next
    forget; a boolean or 2-D id file was deleted as ids 1/0 or flattened; a folder that cannot
    be written for --out let the deletion commit and lost the receipt."""
    import numpy as np

    from obliviate.cli.main import main

    store = str(tmp_path / "s")
    assert main(["shard", "train", "--store", store, "--shards", "2", "--slices", "1",
                 "--epochs", "1", "--hidden", "8", "--backend", "inline"]) == 0  # fmt: skip
    capsys.readouterr()

    def status():
        assert main(["shard", "status", "--store", store, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    before = status()
    bools, flat2d = tmp_path / "b.npy", tmp_path / "m.npy"
    np.save(bools, np.array([True, False]))
    np.save(flat2d, np.array([[0, 1], [2, 3]]))
    forget = ["shard", "forget", "--store", store, "--backend", "inline"]
    for extra in (["--ids", "0", "--workers", "0"], ["--ids-file", str(bools)],
                  ["--ids-file", str(flat2d)], ["--ids", "0", "--out", str(tmp_path / "no" / "r.json")]):  # fmt: skip
        assert main([*forget, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error:"), err
    assert status() == before
    assert main([*forget, "--ids", "1"]) == 0  # the next good request: only id 1 goes
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["n_removed"] == 1
