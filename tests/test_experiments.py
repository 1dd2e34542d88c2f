"""The experiments layer: the registry of run kinds, recipes and datasets, spec files generated
from the spec dataclasses, and one implementation per kind behind the CLI and the grid runner."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from obliviate import recipes
from obliviate.bench import results as store
from obliviate.bench.runner import run_point
from obliviate.bench.specs import parse_spec, schema
from obliviate.cli.main import main
from obliviate.data.datasets import DATASET_HELP, DATASETS
from obliviate.errors import ObliviateError
from obliviate.experiments import KINDS, kind


def _blobs(data_dir: str | None) -> tuple[np.ndarray, np.ndarray, None, None]:
    """4 Gaussian blobs of 40 rows in 6 dimensions (no test part: 20 % is held out)."""
    rng = np.random.default_rng(7)
    centres = rng.normal(0, 3, size=(4, 6))
    y = np.repeat(np.arange(4), 40)
    x = centres[y] + rng.normal(0, 1, size=(len(y), 6))
    return x.astype(np.float32), y, None, None


RECIPE = {"model": "mlp", "hidden": (8,), "n_epochs": 2, "batch_size": 16, "lr": 0.05}


@pytest.fixture
def blobs():
    """``blobs`` registered for one test (loader + recipe), removed afterwards."""
    tables = (DATASETS, DATASET_HELP, recipes.RECIPES, recipes.FORGET_RECIPES)
    saved = [dict(t) for t in tables]
    recipes.register_dataset("blobs", _blobs, recipe=RECIPE, help="test blobs")
    yield "blobs"
    for table, old in zip(tables, saved, strict=True):
        table.clear()
        table.update(old)


def test_registry_modules_follow_the_kind_contract():
    for name in KINDS:
        mod = kind(name)
        assert dataclasses.is_dataclass(mod.Spec) and mod.Spec.__dataclass_params__.frozen
        assert callable(mod.run) and callable(mod.label)
        assert mod.SUMMARY_COLUMNS and all(len(c) == 2 for c in mod.SUMMARY_COLUMNS)
        assert set(mod.METHOD_KEYS) <= {f.name for f in dataclasses.fields(mod.Spec)}
        spec = mod.Spec()  # every field has a default; to_dict / from_dict round-trip
        assert mod.Spec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ObliviateError, match="unknown run kind 'nope'"):
        kind("nope")


@pytest.mark.parametrize("name", list(KINDS))
def test_every_spec_field_is_a_spec_file_key(name):
    """The spec-file schema is read off the dataclass: every field is a key, with its type."""
    sch = schema(name)
    fields = {f.name for f in dataclasses.fields(kind(name).Spec)}
    assert set(sch.types) == fields
    assert fields <= set(sch.alias)  # each field under its own name (plurals are extra)


def _command(module: str, name: str):  # the typer callback of `obliviate [group] name`
    import importlib

    import typer

    app = typer.Typer()
    importlib.import_module(f"obliviate.cli.{module}").register(app)
    commands = list(app.registered_commands)
    for group in app.registered_groups:
        commands += group.typer_instance.registered_commands
    return next(c.callback for c in commands if c.name == name)


# CLI option -> spec field where the CLI spells it shorter; options that only shape the output
RENAMED = {
    "experiences": "n_experiences",
    "epochs": "n_epochs",
    "sets": "params",
    "set_": "params",
    "scenario_sets": "scenario_params",
    "seeds": "seed",
    "forget_spec": "forget",
    "cache": "cache_dir",
    "shards": "n_shards",
    "slices": "n_slices",
    "workers": "n_workers",
}
OUTPUT_ONLY = {"json_path", "threads", "quiet", "out", "as_json"}


@pytest.mark.parametrize(
    ("module", "command", "kind_name"),
    [
        ("learn", "learn", "learn"),
        ("forget", "forget", "forget"),
        ("events", "events", "events"),
        ("shard", "train", "sharded"),
    ],
)
def test_cli_options_are_spec_fields(module, command, kind_name):
    """Every option of `obliviate learn|forget|events|shard train` that configures the run is a
    field of the kind's spec, hence a spec-file key."""
    import inspect

    options = set(inspect.signature(_command(module, command)).parameters) - OUTPUT_ONLY
    fields = {f.name for f in dataclasses.fields(kind(kind_name).Spec)}
    assert {RENAMED.get(o, o) for o in options} <= fields


def test_a_dataset_without_a_recipe_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(DATASETS, "bare", _blobs)
    LearnSpec, ForgetSpec = kind("learn").Spec, kind("forget").Spec
    with pytest.raises(
        ObliviateError, match="dataset 'bare' has no default learn recipe.*register"
    ):
        LearnSpec(dataset="bare").resolved()
    with pytest.raises(ObliviateError, match="dataset 'bare' has no default forget recipe"):
        ForgetSpec(dataset="bare", method="finetune")  # never digits' recipe in silence
    full = LearnSpec(dataset="bare", **RECIPE).resolved()  # every field given: no recipe needed
    assert full.hidden == (8,) and full.optimizer == "sgd"
    # events and sharded use one recipe for every dataset, stated in recipes.KIND_DEFAULTS
    assert kind("events").Spec(dataset="bare").resolved().n_epochs == 20


def test_register_dataset_rejects_bad_recipes():
    with pytest.raises(ObliviateError, match="has no field 'epochs'"):
        recipes.register_dataset("x", _blobs, recipe={**RECIPE, "epochs": 1})
    with pytest.raises(ObliviateError, match="lacks lr"):
        recipes.register_dataset("x", _blobs, recipe={k: v for k, v in RECIPE.items() if k != "lr"})
    for field, bad, message in [
        ("n_epochs", float("nan"), "n_epochs must be an integer"),
        ("batch_size", -3, "batch_size must be >= 1"),
        ("lr", "x", "lr must be a number"),
        ("hidden", 8, "hidden must be a tuple"),
        ("model", "resnet", "model"),
    ]:
        with pytest.raises(ObliviateError, match=message):
            recipes.register_dataset("x", _blobs, recipe={**RECIPE, field: bad})
    assert "x" not in DATASETS


def test_new_dataset_runs_every_kind_from_the_cli(blobs, tmp_path, capsys):
    assert (
        main(
            [
                "learn",
                "--dataset",
                blobs,
                "--experiences",
                "2",
                "-q",
                "--json",
                str(tmp_path / "l.json"),
            ]
        )
        == 0
    )
    learned = json.loads((tmp_path / "l.json").read_text())
    assert learned["spec"]["hidden"] == [8] and learned["spec"]["n_epochs"] == 2
    args = ["--dataset", blobs, "--forget", "class:1", "--method", "finetune", "--relearn-cap", "3"]
    assert (
        main(["forget", *args, "--cache", str(tmp_path / "c"), "--json", str(tmp_path / "f.json")])
        == 0
    )
    forgot = json.loads((tmp_path / "f.json").read_text())
    assert forgot["spec"]["recipe"]["model"]["hidden"] == [8]  # blobs' recipe, not digits'
    assert (
        main(["events", "--dataset", blobs, "--epochs", "3", "--out", str(tmp_path / "e.json")])
        == 0
    )
    assert len(json.loads((tmp_path / "e.json").read_text())["ids"]) == 128
    store_dir = tmp_path / "store"
    shard = ["--store", str(store_dir), "--dataset", blobs, "--shards", "2", "--slices", "1"]
    assert (
        main(["shard", "train", *shard, "--epochs", "1", "--hidden", "8", "--backend", "inline"])
        == 0
    )
    assert main(["shard", "status", "--store", str(store_dir)]) == 0
    capsys.readouterr()


def test_new_dataset_runs_every_kind_from_a_spec_file(blobs, tmp_path):
    spec = tmp_path / "blobs.toml"
    spec.write_text(
        f"""seeds = [0]
[[learn]]
datasets = ["{blobs}"]
scenarios = ["class-incremental"]
strategies = ["naive"]
n_experiences = 2
[[forget]]
datasets = ["{blobs}"]
forgets = ["class:1"]
methods = ["finetune"]
relearn_cap = 3
[[events]]
datasets = ["{blobs}"]
n_epochs = 3
[[sharded]]
datasets = ["{blobs}"]
n_shards = 2
n_epochs = 1
n_deletions = 1
"""
    )
    out = tmp_path / "out"
    assert main(["bench", str(spec), "--out", str(out), "--workers", "1", "--quiet"]) == 0
    recs = store.read(out)
    assert sorted(r["kind"] for r in recs) == ["events", "forget", "learn", "sharded"]
    assert all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]


def test_spec_file_sets_scenario_params(tmp_path):
    text = """seeds = [0]
[[learn]]
datasets = ["digits"]
scenarios = ["online", "recurring", "class-incremental"]
strategies = ["naive"]
n_experiences = 5
limit = 300
[learn.scenario_params.online]
blurry = [0.0, 0.1]
[learn.scenario_params.recurring]
n_tasks = 2
"""
    _, runs = parse_spec(text, "s.toml")
    points = {(r.spec["scenario"], json.dumps(r.spec.get("scenario_params"))) for r in runs}
    assert points == {
        ("online", '{"blurry": 0.0}'),
        ("online", '{"blurry": 0.1}'),
        ("recurring", '{"n_tasks": 2}'),
        ("class-incremental", "null"),
    }
    with pytest.raises(
        ObliviateError,
        match=r"s.toml:9: learn.scenario_params.online.blur: online has no parameter 'blur'",
    ):
        parse_spec(text.replace("blurry = [0.0, 0.1]", "blur = 0.1"), "s.toml")
    with pytest.raises(
        ObliviateError,
        match=r"s.toml:10: learn.scenario_params.joint: scenario_params for 'joint', which is not in scenarios",
    ):
        parse_spec(
            text.replace("[learn.scenario_params.recurring]", "[learn.scenario_params.joint]"),
            "s.toml",
        )
    with pytest.raises(
        ObliviateError, match=r"s.toml:9: learn.scenario_params.online.blurry must be a number"
    ):
        parse_spec(text.replace("blurry = [0.0, 0.1]", 'blurry = "lots"'), "s.toml")
    # the grid point runs exactly like the Python API (and `obliviate learn --scenario-set`)
    point = next(r.spec for r in runs if r.spec.get("scenario_params") == {"blurry": 0.1})
    via_grid = run_point(point, {})
    LearnSpec = kind("learn").Spec
    direct = kind("learn").run(
        LearnSpec(scenario="online", n_experiences=5, limit=300, scenario_params={"blurry": 0.1})
    )
    for key in ("accuracy_matrix", "initial_accuracy", "acc", "bwt", "n_steps", "spec"):
        assert via_grid[key] == direct[key], key


def test_events_cli_and_grid_block_give_one_result_shape(tmp_path):
    out = tmp_path / "e.json"
    assert (
        main(
            [
                "events",
                "--dataset",
                "synthetic",
                "--epochs",
                "2",
                "--limit",
                "200",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    from_cli = json.loads(out.read_text())
    _, runs = parse_spec(
        'seeds = [0]\n[[events]]\ndatasets = ["synthetic"]\nn_epochs = 2\nlimit = 200\n'
    )
    from_grid = run_point(runs[0].spec, {})
    assert set(from_cli) == set(from_grid)
    for key in ("ids", "forgetting_events", "summary", "test_acc", "spec"):
        assert from_cli[key] == json.loads(json.dumps(from_grid[key])), key


def test_learn_spec_is_resolved_once(monkeypatch):
    from obliviate.experiments import learn as learn_kind

    calls = []
    original = learn_kind.LearnSpec.strategy_params

    def counting(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(learn_kind.LearnSpec, "strategy_params", counting)
    learn_kind.run(learn_kind.LearnSpec(dataset="synthetic", n_experiences=2, n_epochs=1))
    assert len(calls) == 1


def test_list_fields_take_one_list_as_one_value():
    text = """seeds = [0]
[[sharded]]
datasets = ["digits"]
n_shards = 2
exclude_ids = [1, 2]
hidden = [[8], [8, 8]]
check_exactness = true
"""
    _, runs = parse_spec(text, "s.toml")
    assert [r.spec["hidden"] for r in runs] == [[8], [8, 8]]
    assert all(r.spec["exclude_ids"] == [1, 2] and r.spec["check_exactness"] for r in runs)
    with pytest.raises(
        ObliviateError, match=r"s.toml:7: sharded.check_exactness must be true or false"
    ):
        parse_spec(text.replace("true", '"yes"'), "s.toml")
