"""Bad input at every boundary (data files, id files, forget specs, models) is one line
``error: ...`` on stderr with exit code 2: no traceback, no result written. Property tests
generate damaged npz files and id files; the named cases are the ones a new user hit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from obliviate.cli.main import main
from obliviate.data.datasets import load_dataset
from obliviate.data.forget_sets import parse_ids, read_id_file
from obliviate.errors import ObliviateError

CASES_RUN: list[str] = []


def _one_line_exit_2(capsys, args: list[str]) -> str:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, (args, code, err)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err + out
    CASES_RUN.append(" ".join(args))
    return err


# ---- named cases ------------------------------------------------------------------------------
def _save(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_string_labels(tmp_path, capsys, rng):
    spec = _save(tmp_path / "s.npz", x=rng.normal(size=(200, 5)), y=np.array(["cat", "dog"] * 100))
    err = _one_line_exit_2(capsys, ["learn", "--dataset", spec])
    assert "labels must be integers" in err and "np.unique" in err


def test_object_labels(tmp_path, capsys, rng):
    path = tmp_path / "o.npz"
    np.savez(path, x=rng.normal(size=(10, 2)), y=np.array([1, "a"] * 5, dtype=object))
    err = _one_line_exit_2(capsys, ["learn", "--dataset", f"npz:{path}"])
    assert "not a readable .npz" in err and "object" in err


def test_too_few_rows_for_the_test_split(tmp_path, capsys, rng):
    spec = _save(tmp_path / "t.npz", x=rng.normal(size=(20, 5)), y=np.repeat(np.arange(10), 2))
    assert "empty part" in _one_line_exit_2(capsys, ["learn", "--dataset", spec])


def test_x_test_with_other_features(tmp_path, capsys, rng):
    spec = _save(
        tmp_path / "m.npz",
        x=rng.normal(size=(100, 20)),
        y=np.arange(100) % 5,
        x_test=rng.normal(size=(30, 21)),
        y_test=np.arange(30) % 5,
    )
    assert "must match" in _one_line_exit_2(capsys, ["learn", "--dataset", spec])


def test_text_file_named_npz(tmp_path, capsys):
    (tmp_path / "t.npz").write_text("hello")
    err = _one_line_exit_2(capsys, ["learn", "--dataset", f"npz:{tmp_path / 't.npz'}"])
    assert "is not an npz archive" in err and "numpy.savez" in err


def test_cnn_on_flat_features(capsys):
    err = _one_line_exit_2(capsys, ["learn", "--dataset", "synthetic", "--model", "cnn"])
    assert "--model mlp" in err


def test_23_digit_id(capsys):
    err = _one_line_exit_2(
        capsys, ["forget", "--dataset", "digits", "--forget", "ids:12345678901234567890123"]
    )
    assert "int64" in err


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        (np.array([3.7, 10.0]), ".npy", "not a whole number"),
        (np.array([1, "a"], dtype=object), ".npy", "not a readable .npy"),
        ("3\n4.5\n", ".txt", "not an integer id"),
        ("[1, 2.5]", ".json", "not an integer id"),
        ("[1, 2", ".json", "not valid JSON"),
        ("99999999999999999999999", ".txt", "int64"),
    ],
)
def test_bad_id_files(tmp_path, content, suffix, message):
    path = tmp_path / f"ids{suffix}"
    if isinstance(content, np.ndarray):
        np.save(path, content, allow_pickle=True)
    else:
        path.write_text(content)
    with pytest.raises(ObliviateError, match=message):
        read_id_file(path)


def test_id_files_read_the_same_in_every_format(tmp_path):
    ids = [1000, 1010, 5, 2**40]
    (tmp_path / "a.txt").write_text("1000, 1010 # two\n5\n" + str(2**40) + "\n")
    (tmp_path / "a.json").write_text(json.dumps(ids))
    np.save(tmp_path / "a.npy", np.array(ids, dtype=np.int64))
    for name in ("a.txt", "a.json", "a.npy"):
        assert read_id_file(tmp_path / name).tolist() == ids
    assert parse_ids("1000,1010 5").tolist() == [1000, 1010, 5]


def test_shard_forget_rejects_fractional_ids_file_before_touching_the_store(tmp_path, capsys):
    np.save(tmp_path / "ids.npy", np.array([3.7]))
    store = tmp_path / "nostore"
    err = _one_line_exit_2(
        capsys, ["shard", "forget", "--store", str(store), "--ids-file", str(tmp_path / "ids.npy")]
    )
    assert "not a whole number" in err or "not a shard store" in err


# ---- the user's own arrays: ids and constant features -----------------------------------------
def test_user_ids_are_the_ids_everywhere(tmp_path, capsys, rng):
    spec = _save(
        tmp_path / "u.npz",
        x=rng.normal(size=(300, 6)).astype(np.float32),
        y=np.arange(300) % 3,
        ids=1000 + 10 * np.arange(300),
    )
    train, test = load_dataset(spec)
    assert set(train.ids.tolist()) | set(test.ids.tolist()) == set(range(1000, 4000, 10))
    first = int(train.ids.min())
    assert main(["forget", "--dataset", spec, "--forget", f"ids:{first}"]) == 0
    capsys.readouterr()
    err = _one_line_exit_2(capsys, ["forget", "--dataset", spec, "--forget", "ids:1"])
    assert "not in dataset" in err  # the row index is not an id


def test_test_ids_never_collide_with_user_training_ids(tmp_path, rng):
    spec = _save(
        tmp_path / "u.npz",
        x=rng.normal(size=(50, 3)),
        y=np.arange(50) % 2,
        ids=np.arange(50) * 7,
        x_test=rng.normal(size=(10, 3)),
        y_test=np.arange(10) % 2,
    )
    train, test = load_dataset(spec)
    assert not set(train.ids.tolist()) & set(test.ids.tolist())


def test_a_feature_constant_in_training_keeps_scale_one(tmp_path):
    """Issue example: train x = [[k, 0]], test row [3, 1] -> [(3 - 3.5) / std, 1.0]."""
    x = np.array([[k, 0] for k in range(8)], dtype=float)
    spec = _save(
        tmp_path / "c.npz", x=x, y=np.arange(8) % 2, x_test=np.array([[3.0, 1.0]]), y_test=[1]
    )
    _, test = load_dataset(spec)
    std = np.std(np.arange(8), ddof=1)  # documented: the unbiased std
    np.testing.assert_allclose(test.x.numpy(), [[(3 - 3.5) / std, 1.0]], rtol=1e-6)


# ---- generated damaged npz files ----------------------------------------------------------------
DAMAGE = st.sampled_from(
    [
        "y_strings",
        "y_fraction",
        "y_negative",
        "y_nan",
        "y_2d",
        "x_nan",
        "x_inf",
        "x_rows",
        "ids_duplicate",
        "ids_fraction",
        "ids_count",
        "x_test_shape",
        "y_test_missing",
        "test_ids_clash",
    ]
)


def _damaged(kind: str, n: int, d: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    a: dict[str, np.ndarray] = {"x": rng.normal(size=(n, d)), "y": np.arange(n) % 3}
    if kind == "y_strings":
        a["y"] = np.array([f"c{i % 3}" for i in range(n)])
    elif kind == "y_fraction":
        a["y"] = (np.arange(n) % 3) + 0.5
    elif kind == "y_negative":
        a["y"] = -(np.arange(n) % 3) - 1
    elif kind == "y_nan":
        a["y"] = np.where(np.arange(n) == 0, np.nan, np.arange(n) % 3)
    elif kind == "y_2d":
        a["y"] = (np.arange(n) % 3).reshape(n, 1)
    elif kind == "x_nan":
        a["x"][n // 2, 0] = np.nan
    elif kind == "x_inf":
        a["x"][0, d - 1] = np.inf
    elif kind == "x_rows":
        a["x"] = a["x"][:-1]
    elif kind == "ids_duplicate":
        a["ids"] = np.zeros(n, dtype=np.int64)
    elif kind == "ids_fraction":
        a["ids"] = np.arange(n) + 0.25
    elif kind == "ids_count":
        a["ids"] = np.arange(n + 1)
    elif kind == "x_test_shape":
        a |= {"x_test": rng.normal(size=(6, d + 1)), "y_test": np.arange(6) % 3}
    elif kind == "y_test_missing":
        a["x_test"] = rng.normal(size=(6, d))
    elif kind == "test_ids_clash":
        a |= {
            "ids": np.arange(n),
            "x_test": rng.normal(size=(6, d)),
            "y_test": np.arange(6) % 3,
            "ids_test": np.arange(6),
        }
    return a


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=DAMAGE, n=st.integers(30, 80), d=st.integers(1, 6), seed=st.integers(0, 1000))
def test_generated_damaged_npz_files_are_one_line_errors(tmp_path, capsys, kind, n, d, seed):
    path = tmp_path / f"{kind}-{n}-{d}-{seed}.npz"
    np.savez(path, **_damaged(kind, n, d, seed))
    out = tmp_path / f"{path.stem}.json"
    _one_line_exit_2(
        capsys,
        [
            "learn",
            "--dataset",
            f"npz:{path}",
            "--experiences",
            "1",
            "--epochs",
            "1",
            "--out",
            str(out),
        ],
    )
    assert not out.exists()  # nothing written


@settings(max_examples=30)
@given(
    values=st.lists(
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True).filter(
                lambda v: v != int(v) if v == v and abs(v) != float("inf") else True
            ),
            st.integers(min_value=2**63, max_value=2**80),
            st.text(min_size=1, max_size=5).filter(lambda t: not t.strip().lstrip("-").isdigit()),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_generated_bad_inline_ids_raise_a_clear_error(values):
    text = " ".join(str(v).replace(",", ";") for v in values)
    if not text.replace(",", " ").split():
        return
    with pytest.raises(ObliviateError):
        parse_ids(text)


def test_atomic_writes_get_the_mode_open_would_give(tmp_path):
    import os

    from obliviate.io import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(old)
    mode = (tmp_path / "r.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "name, message", [("x.txt", ".csv or a .json"), ("no/such/x.json", "does not exist")]
)
def test_events_out_is_checked_before_training(tmp_path, capsys, name, message):
    err = _one_line_exit_2(capsys, ["events", "--dataset", "digits", "--out", str(tmp_path / name)])
    assert message in err
