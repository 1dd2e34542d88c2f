"""Bad input refused up front, in one line, exit 2, nothing written (issue 17 items 2 and 7, the
tester round's left-overs; issue 10's dry-run labels): seeds out of range or too many, a file
named ``.npz`` that is no npz archive, bench spec values the dataset decides (a class it does
not have, more samples than it holds, ids it never trained on), ``demo --seed``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from obliviate.bench.specs import distinct_labels, parse_spec
from obliviate.cli._common import MAX_SEEDS, SEED_LIMIT, parse_seeds
from obliviate.cli.main import main
from obliviate.errors import ObliviateError

# ---- seeds ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seeds", "needles"),
    [
        ("0-100000", ["100001 seeds", str(MAX_SEEDS)]),
        ("0-10000", ["10001 seeds"]),
        ("-3-2", ["-3", "0..4294967295"]),
        ("1,-2", ["-2", "0..4294967295"]),
        ("0,4294967296", ["4294967296"]),
        ("5-1", ["range 5-1 is empty"]),
    ],
)
def test_bad_seed_lists_are_refused_before_any_work(one_line_error, capsys, seeds, needles):
    one_line_error(["learn", "--seeds", seeds, "-q"], f"--seeds {seeds!r}", *needles)


def test_seed_lists_up_to_the_bound_are_accepted():
    assert parse_seeds(0, f"0-{MAX_SEEDS - 1}") == list(range(MAX_SEEDS))
    assert parse_seeds(0, f"{SEED_LIMIT - 2}-{SEED_LIMIT - 1}") == [SEED_LIMIT - 2, SEED_LIMIT - 1]
    assert parse_seeds(7, None) == [7]
    with pytest.raises(ObliviateError, match="not a valid seed"):
        parse_seeds(-5, None)  # a --seed reaching parse_seeds unchecked (the Python caller)


@pytest.mark.parametrize(
    "line",
    ["seeds = [0, -1]", "seeds = [4294967296]"],
)
def test_spec_seeds_out_of_range(one_line_error, tmp_path, capsys, line):
    spec = tmp_path / "s.toml"
    spec.write_text(
        f'{line}\n[[forget]]\ndatasets = ["digits"]\nforgets = ["class:3"]\nmethods = ["finetune"]\n'
    )
    one_line_error(["bench", str(spec), "--out", str(tmp_path / "r"), "--dry-run"], "0..4294967295")


def test_a_negative_seed_in_a_block_is_refused(one_line_error, tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(
        '[[forget]]\ndatasets = ["digits"]\nforgets = ["class:3"]\nmethods = ["finetune"]\n'
        "seeds = [-7]\n"
    )
    one_line_error(["bench", str(spec), "--out", str(tmp_path / "r"), "--dry-run"], "-7", "seed")


# ---- a file named .npz that is no npz archive --------------------------------------------------


def _text(p: Path) -> None:
    p.write_text("x,y\n1,2\n")


def _npy(p: Path) -> None:
    with p.open("wb") as f:
        np.save(f, np.arange(10))


def _empty(p: Path) -> None:
    p.write_bytes(b"")


@pytest.mark.parametrize(
    ("make", "what"),
    [(_text, "not an npz archive"), (_npy, "single .npy"), (_empty, "not an npz archive")],
)
def test_a_file_that_is_not_an_npz_archive(one_line_error, tmp_path, capsys, make, what):
    path = tmp_path / "data.npz"
    make(path)
    line = one_line_error(
        ["learn", "--dataset", f"npz:{path}", "-q"], str(path), what, "x", "y", "savez"
    )
    assert "pickle" not in line  # numpy's advice to unpickle is never passed on


def test_an_npz_of_object_arrays_names_them_not_pickle_advice(one_line_error, tmp_path, capsys):
    path = tmp_path / "o.npz"
    np.savez(path, x=np.zeros((20, 2)), y=np.array(["cat", "dog"] * 10, dtype=object))
    line = one_line_error(["learn", "--dataset", f"npz:{path}", "-q"], "object arrays")
    assert "allow_pickle" not in line


# ---- bench specs: what the dataset decides, before any run ---------------------------------------

FORGET_SPEC = """\
seeds = [0, 1]
[[forget]]
datasets = ["digits"]
forgets = ["class:3", "{value}"]
methods = ["finetune"]
"""


@pytest.mark.parametrize(
    ("value", "needles"),
    [
        ("class:99", ["class:99", "0..9", "digits"]),
        ("class:2,10", ["class 10", "0..9"]),
        ("subclass:12:5", ["class 12", "0..9"]),
        ("random:5000", ["random:5000", "5000", "1438"]),
        ("subclass:3:1000", ["1000"]),
        ("ids:1,99999999", ["99999999"]),
        ("foo:3", ["foo", "random, class, subclass, source, ids"]),
        ("subclass:3:x", ["'x'"]),
        ("random:150%", ["150%"]),
        ("source:no-such-file.txt", ["no-such-file.txt"]),
    ],
)
@pytest.mark.parametrize("dry", [True, False])
def test_a_forget_set_the_dataset_cannot_serve(
    one_line_error, tmp_path, capsys, value, needles, dry
):
    spec = tmp_path / "s.toml"
    spec.write_text(FORGET_SPEC.format(value=value))
    out = tmp_path / "results"
    args = ["bench", str(spec), "--out", str(out), "--backend", "inline"]
    line = one_line_error(args + (["--dry-run"] if dry else []), *needles)
    assert f"{spec}:4:" in line  # the file and the line of the key
    assert not out.exists()  # nothing written


OTHER_KINDS = {
    "continual_forget sequence": (
        '[[continual_forget]]\ndatasets = ["digits"]\nsequence = "class:1,class:12"\n'
        'methods = ["gs_lora"]\n',
        ["class 12", "0..9"],
    ),
    "learn scenario": (
        '[[learn]]\ndatasets = ["digits"]\nscenarios = ["class-incremental"]\n'
        'strategies = ["naive"]\nn_experiences = 20\n',
        ["20"],
    ),
    "sharded exclude_ids": (
        '[[sharded]]\ndatasets = ["digits"]\nn_shards = 2\nexclude_ids = [1, 99999999]\n',
        ["exclude_ids", "99999999"],
    ),
    "sharded subjects": (
        '[[sharded]]\ndatasets = ["digits"]\nn_shards = 2\nsubjects = "no-such-subjects.csv"\n',
        ["subjects", "no-such-subjects.csv"],
    ),
    "lifecycle schedule": (
        '[[lifecycle]]\ndatasets = ["digits"]\nscenarios = ["class-incremental"]\n'
        'strategies = ["replay"]\nschedule = "2:ids:99999999"\n',
        ["99999999"],
    ),
}


@pytest.mark.parametrize("case", list(OTHER_KINDS))
def test_data_checks_of_the_other_kinds(one_line_error, tmp_path, capsys, case):
    block, needles = OTHER_KINDS[case]
    spec = tmp_path / "s.toml"
    out = tmp_path / "r"
    spec.write_text("seeds = [0]\n" + block)
    one_line_error(["bench", str(spec), "--out", str(out), "--dry-run"], *needles)
    assert not out.exists()


def test_valid_data_values_still_pass(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(FORGET_SPEC.format(value="subclass:3:10%"))
    assert main(["bench", str(spec), "--out", str(tmp_path / "r"), "--dry-run"]) == 0
    assert "4 of 4 runs to do" in capsys.readouterr().out


# ---- dry-run labels (issue 10) -------------------------------------------------------------------


def test_dry_run_labels_tell_every_run_apart(tmp_path, capsys):
    text = (
        'seeds = [0]\n[[learn]]\ndatasets = ["digits"]\nscenarios = ["class-incremental"]\n'
        'strategies = ["naive"]\nprecision = ["fp32", "bf16"]\nn_epochs = 1\n'
        '[[learn]]\ndatasets = ["digits"]\nscenarios = ["class-incremental"]\n'
        'strategies = ["naive"]\nn_epochs = 1\n'
    )
    _, runs = parse_spec(text, "s.toml")
    assert len({r.label() for r in runs}) == 1  # the kind's own label cannot tell them apart
    labels = distinct_labels(runs)
    assert len(set(labels)) == 3
    assert any(lab.endswith("precision=bf16") for lab in labels)
    assert any(lab.endswith("precision=default") for lab in labels)
    spec = tmp_path / "s.toml"
    spec.write_text(text)
    assert main(["bench", str(spec), "--out", str(tmp_path / "r"), "--dry-run"]) == 0
    printed = [ln.split("  ", 1)[1] for ln in capsys.readouterr().out.splitlines()[:-1]]
    assert len(set(printed)) == 3


def test_labels_that_differ_already_are_left_alone():
    text = (
        'seeds = [0, 1]\n[[learn]]\ndatasets = ["digits"]\nscenarios = ["class-incremental"]\n'
        'strategies = ["naive", "ewc"]\nn_epochs = 1\n'
    )
    _, runs = parse_spec(text, "s.toml")
    assert distinct_labels(runs) == [r.label() for r in runs]


# ---- demo --seed ---------------------------------------------------------------------------------


def test_demo_seed_shifts_every_section(one_line_error, monkeypatch, capsys):
    from obliviate.cli import demo

    assert "seeds = [0, 1, 2]" in demo.CONTINUAL_SPEC  # the default is the documented demo
    assert "seeds = [0]" in demo.LIFECYCLE_SPEC
    assert "seeds = [5, 6, 7]" in demo.continual_spec(5)
    assert "seeds = [5]" in demo.lifecycle_spec(5)
    seen = []
    monkeypatch.setattr(demo, "DEMO_SECTIONS", ("test_cli_inputs:_record_section",))
    monkeypatch.setattr(demo, "_OPTIONS", {"quiet": False, "seed": 0})
    _SEEN.clear()
    assert main(["demo", "--seed", "5", "-q"]) == 0
    assert main(["demo", "-q"]) == 0
    seen = list(_SEEN)
    assert seen == [5, 0]
    capsys.readouterr()
    one_line_error(["demo", "--seed", "-1"], "--seed -1", "0..4294967295")
    one_line_error(["demo", "--seed", str(SEED_LIMIT - 1)], "at most")


_SEEN: list[int] = []


def _record_section(console) -> None:
    from obliviate.cli import demo

    _SEEN.append(demo._OPTIONS["seed"])


def test_shard_predict_input_that_is_not_npy(one_line_error, tmp_path, capsys):
    rows = tmp_path / "rows.npy"
    _text(rows)
    args = ["shard", "predict", "--store", str(tmp_path / "store"), "--input", str(rows)]
    line = one_line_error(args, str(rows), "not a .npy array", "numpy.save")
    assert "pickle" not in line
