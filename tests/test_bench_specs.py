"""Spec files: grid expansion, run keys, and errors that name the key and its line."""

from __future__ import annotations

import pytest

from obliviate import ObliviateError
from obliviate.bench.specs import key_lines, load_spec, parse_spec, run_key

GOOD = """\
name = "t"
seeds = [0, 1]

[[learn]]
datasets = ["synthetic"]
scenarios = ["class-incremental", "domain-permutation"]
strategies = ["naive"]
n_experiences = 2
n_epochs = [1,
  2]
lr = 0.05

[[sharded]]
datasets = ["digits"]
n_shards = [1, 2]
n_slices = 2
graphs = ["none", "ring:1"]
seeds = [3]
"""


def test_grid_expansion_and_keys():
    header, runs = parse_spec(GOOD, "good.toml")
    assert header == {"name": "t", "seeds": [0, 1]}
    learn = [r for r in runs if r.kind == "learn"]
    sharded = [r for r in runs if r.kind == "sharded"]
    assert len(learn) == 2 * 2 * 2  # scenarios x n_epochs x seeds
    assert len(sharded) == 2 * 2  # shards x graphs, one seed
    first = learn[0].spec
    assert first == {
        "kind": "learn",
        "dataset": "synthetic",
        "scenario": "class-incremental",
        "n_experiences": 2,
        "n_epochs": 1,
        "lr": 0.05,
        "strategy": "naive",
        "params": {},
        "seed": 0,
    }
    assert {r.spec["seed"] for r in sharded} == {3}
    assert len({r.key for r in runs}) == len(runs)
    assert learn[0].key == run_key(dict(reversed(list(first.items()))))  # order-independent


def test_key_lines_tracks_array_tables_and_multiline_values():
    lines = key_lines(GOOD)
    assert lines[("learn", 0, "n_epochs")] == 9
    assert lines[("learn", 0, "lr")] == 11
    assert lines[("sharded", 0, "graphs")] == 17
    assert lines[("sharded", 0)] == 13


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("lr = 0.05", "lr = 'fast'", "good.toml:11: learn.lr must be a number"),
        (
            "lr = 0.05",
            "lr = 0.05\nlearning_rate = 1",
            "good.toml:12: learn.learning_rate: unknown key",
        ),
        ("n_slices = 2", 'n_slices = "2"', "good.toml:16: sharded.n_slices must be an integer"),
        ("seeds = [0, 1]", 'seeds = [0, 1]\ncolour = "red"', "good.toml:3: colour: unknown key"),
        (
            'strategies = ["naive"]',
            'strategies = ["nope"]',
            "good.toml:7: learn.strategies: unknown strategy 'nope'",
        ),
        (
            'datasets = ["synthetic"]',
            'datasets = ["imagenet"]',
            "good.toml:5: learn.datasets: unknown dataset",
        ),
        (
            "n_experiences = 2",
            "n_experiences = true",
            "good.toml:8: learn.n_experiences must be an integer",
        ),
        ("n_experiences = 2", "n_experiences = 0", "good.toml:8: learn.n_experiences must be >= 1"),
        (
            "[[sharded]]",
            "[sharded]",
            "good.toml:13: sharded: write the sharded grid as an array of tables",
        ),
        ("n_shards = [1, 2]", "n_shards = []", "good.toml:15: sharded.n_shards is an empty list"),
        (
            'graphs = ["none", "ring:1"]',
            'graphs = ["star:2"]',
            "good.toml:17: sharded.graphs: unknown graph 'star:2'",
        ),
    ],
)
def test_errors_name_key_and_line(old, new, expected):
    assert old in GOOD
    with pytest.raises(ObliviateError) as err:
        parse_spec(GOOD.replace(old, new, 1), "good.toml")
    assert expected in str(err.value)


def test_strategy_params_are_checked_with_line():
    text = GOOD.replace("lr = 0.05", "lr = 0.05\n[learn.params.naive]\nstrength = [1, 2]")
    with pytest.raises(
        ObliviateError,
        match=r"good.toml:13: learn.params.naive.strength: naive has no parameter 'strength'",
    ):
        parse_spec(text, "good.toml")


def test_missing_required_key_and_toml_syntax():
    with pytest.raises(
        ObliviateError,
        match=r"good.toml:4: learn: \[\[learn\]\] block 1 lacks the required key 'strategies'",
    ):
        parse_spec(GOOD.replace('strategies = ["naive"]\n', ""), "good.toml")
    with pytest.raises(
        ObliviateError, match=r"good.toml:3: not valid TOML: Invalid value \(column 3\)"
    ):
        parse_spec("name = 'x'\nseeds = [0,\n[[learn]]\n", "good.toml")
    with pytest.raises(ObliviateError, match="no runs"):
        parse_spec("seeds = [0]\n", "good.toml")


def test_load_spec_missing_file(tmp_path):
    with pytest.raises(ObliviateError, match="cannot read spec file"):
        load_spec(tmp_path / "nope.toml")


def test_smoke_spec_parses():
    from pathlib import Path

    smoke = Path(__file__).resolve().parents[1] / "benchmarks" / "specs" / "smoke.toml"
    _, runs = load_spec(smoke)
    assert {r.kind for r in runs} == {"learn", "forget", "sharded", "events"}


@pytest.mark.parametrize("name", ["cl_digits", "unlearning_digits", "sharded_digits"])
def test_published_specs_parse(name):
    from pathlib import Path

    spec = Path(__file__).resolve().parents[1] / "benchmarks" / "specs" / f"{name}.toml"
    _, runs = load_spec(spec)
    assert len(runs) >= 30
