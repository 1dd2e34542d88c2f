"""The documented sharded Python API, as a user's script meets it (issue #10, fault 8): a script
without a ``__main__`` guard fails at once with one line; the library's default recipe is the
CLI's (same words, same model); a store owns its preprocessing (``predict`` takes raw rows)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from obliviate._main_guard import check_main_guard
from obliviate.cli.main import main
from obliviate.data import load_dataset, loader_standardization
from obliviate.errors import ObliviateError
from obliviate.sharded import DataSpec, ShardConfig, ShardedStore
from obliviate.sharded.config import default_recipe


def mnist_like_npz(path, n=200, seed=0):
    """Raw 28x28 "pixels" 0..255 (float32) whose border is 0 in every training row, as in MNIST,
    and a test set with some border pixels lit (where the loader's scale is 1, not ~0)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = np.zeros((n, 1, 28, 28), dtype=np.float32)
    for c in range(4):
        rows = y == c
        x[rows, 0, 4 + 5 * c : 9 + 5 * c, 4:24] = rng.uniform(100, 255, (rows.sum(), 5, 20))
    x[:, :, 4:24, 4:24] += rng.uniform(0, 40, (n, 1, 20, 20)).astype(np.float32)
    y_test = np.arange(40) % 4
    x_test = x[:40].copy() + rng.uniform(0, 30, (40, 1, 28, 28)).astype(np.float32)
    x_test[:5, 0, 0, :3] = 255.0  # a border pixel that is constant (0) in training
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, ids=1000 + 10 * np.arange(n))
    return f"npz:{path}"


def test_library_default_recipe_is_the_clis(tmp_path, capsys):
    args = ["--dataset", "digits", "--limit", "300", "--shards", "2", "--slices", "2"]
    cli = ["shard", "train", "--store", str(tmp_path / "cli"), *args, "--seed", "1"]
    assert main([*cli, "--backend", "inline", "--json"]) == 0
    capsys.readouterr()
    config = ShardConfig(n_shards=2, n_slices=2, seed=1)  # the same words, library defaults
    assert config.recipe == default_recipe(1)
    assert config.recipe.train.n_epochs == 10 and config.recipe.train.lr == 0.05
    data = DataSpec("digits", limit=300)
    lib = ShardedStore.train(tmp_path / "lib", data=data, config=config, backend="inline")
    with ShardedStore(tmp_path / "cli", backend="inline") as cli_store:
        assert cli_store.config == lib.config
        a, b = cli_store.status(), lib.status()
        assert [s["checkpoint"] for s in a["shards"]] == [s["checkpoint"] for s in b["shards"]]
        _, test = load_dataset("digits", limit=300)
        assert cli_store.accuracy(test) == lib.accuracy(test) > 0.6  # 300 rows, 2 shards
    lib.close()


def test_a_store_owns_its_preprocessing(tmp_path):
    dataset = mnist_like_npz(tmp_path / "mnist_like.npz")
    data = DataSpec(dataset)
    config = ShardConfig(n_shards=2, n_slices=1, recipe=default_recipe(0, n_epochs=3))
    with ShardedStore.train(tmp_path / "s", data=data, config=config, backend="inline") as store:
        raw_train, raw_test = load_dataset(dataset, standardized=False)
        _, test = load_dataset(dataset)  # the loader's standardised rows
        std = store.standardization
        assert torch.equal(std.mean, loader_standardization(dataset).mean)
        assert float(std.scale[0]) == 1.0  # a constant border pixel keeps scale 1
        assert torch.equal(store.preprocess(raw_test.x), test.x)
        raw = store.predict(raw_test.x)  # raw pixels, as the user has them
        assert torch.equal(raw, store.predict(test.x, preprocessed=True))
        assert torch.equal(raw, store.predict(raw_test.x.numpy().reshape(40, -1)))
        acc = float((raw == raw_test.y).float().mean())
        assert acc == pytest.approx(store.accuracy(test)) and acc > 0.5
        # the mistake the issue describes: standardised rows passed as raw are standardised twice
        twice = store.predict(test.x)
        assert not torch.equal(twice, raw) or acc == 1.0
    with ShardedStore(tmp_path / "s", backend="inline") as reopened:  # saved in the store
        assert reopened.ledger.get_meta("preprocessing")["kind"] == "standardize"
        assert torch.equal(reopened.predict(raw_test.x), raw)


def test_cli_predict_takes_raw_rows_or_preprocessed_ones(tmp_path, capsys):
    store = tmp_path / "s"
    args = ["--dataset", "digits", "--limit", "200", "--shards", "2", "--slices", "1"]
    train = ["shard", "train", "--store", str(store), *args, "--epochs", "2"]
    assert main([*train, "--backend", "inline", "--json"]) == 0
    raw_train, raw_test = load_dataset("digits", limit=200, standardized=False)
    _, test = load_dataset("digits", limit=200)
    np.save(tmp_path / "raw.npy", raw_test.x.numpy())
    np.save(tmp_path / "std.npy", test.x.numpy())
    capsys.readouterr()
    assert (
        main(["shard", "predict", "--store", str(store), "--input", str(tmp_path / "raw.npy")]) == 0
    )
    from_raw = json.loads(capsys.readouterr().out)
    std = ["shard", "predict", "--store", str(store), "--input", str(tmp_path / "std.npy")]
    assert main([*std, "--preprocessed"]) == 0
    assert json.loads(capsys.readouterr().out) == from_raw


UNGUARDED = """
import sys
from obliviate.sharded import DataSpec, ShardConfig, ShardedStore
store = ShardedStore.train(sys.argv[1], data=DataSpec("digits", limit=100),
                           config=ShardConfig(n_shards=2, n_slices=1))
"""


def test_a_script_without_a_main_guard_fails_fast_before_writing(tmp_path):
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(UNGUARDED))
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert '__name__ == "__main__"' in last and "user_script.py" in last
    assert "BrokenProcessPool" not in run.stderr
    assert not (tmp_path / "store").exists()  # nothing half-built


def test_the_guard_check_passes_inside_functions_and_guarded_blocks(tmp_path):
    check_main_guard("x")  # called from a test function: nothing re-runs it
    script = tmp_path / "guarded.py"
    script.write_text(
        "from obliviate._main_guard import check_main_guard\n"
        "if __name__ == '__main__':\n"
        "    check_main_guard('ShardedStore.train')\n"
        "    print('ok')\n"
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


@pytest.mark.parametrize("bad", [[1000.7], ["1007"], ["abc"], [2**70], [True], np.array([1.5])])
def test_store_forget_refuses_ids_that_are_not_integers(tmp_path, bad):
    """``np.asarray(ids, dtype=np.int64)`` turned 1000.7 into 1000 and "1007" into 1007 and
    deleted those samples; the store now takes ids through the one strict id gate."""
    config = ShardConfig(n_shards=2, n_slices=1, recipe=default_recipe(0, n_epochs=1))
    with ShardedStore.train(
        tmp_path / "s", data=DataSpec("digits", limit=200), config=config, backend="inline"
    ) as store:
        before = store.status()
        with pytest.raises(ObliviateError, match="integer|whole number"):
            store.forget(bad)
        with pytest.raises(ObliviateError, match="integer|whole number"):
            store.submit(bad)
        assert store.status() == before  # nothing recorded


def test_predicting_zero_rows_gives_zero_scores(tmp_path):
    config = ShardConfig(n_shards=2, n_slices=1, recipe=default_recipe(0, n_epochs=1))
    with ShardedStore.train(
        tmp_path / "s", data=DataSpec("digits", limit=200), config=config, backend="inline"
    ) as store:
        assert tuple(store.predict_proba(np.zeros((0, 64))).shape) == (0, 10)
        assert store.predict(np.zeros((0, 64))).numel() == 0
