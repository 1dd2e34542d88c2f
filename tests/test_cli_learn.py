"""``obliviate learn`` and :func:`obliviate.experiments.run_learn`: results, seeds, bad input."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from obliviate.cli.main import main
from obliviate.errors import ObliviateError
from obliviate.experiments import RESULT_KEYS, LearnSpec, aggregate, run_learn

QUICK = ["--epochs", "1", "--limit", "300", "--quiet"]


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# ---- run_learn ---------------------------------------------------------------------------------


def test_run_learn_result_shape_and_determinism():
    spec = LearnSpec(
        dataset="digits",
        scenario="class-incremental",
        n_experiences=5,
        n_epochs=1,
        limit=300,
        seed=3,
    )
    a = run_learn(spec)
    assert set(a) == set(RESULT_KEYS)
    r = np.asarray(a["accuracy_matrix"])
    assert r.shape == (5, 5) and np.all((r >= 0) & (r <= 1))
    assert a["acc"] == pytest.approx(r[-1].mean())
    assert a["learning_accuracy"] == pytest.approx(np.diag(r).mean())
    assert a["spec"]["seed"] == 3 and a["provenance"]["seed"] == 3
    # the spec is fully resolved (the digits recipe) and JSON round-trips
    assert (
        a["spec"]["n_epochs"] == 1
        and a["spec"]["hidden"] == [100]
        and a["spec"]["optimizer"] == "sgd"
    )
    json.dumps(a, allow_nan=False)
    b = run_learn(LearnSpec.from_dict(a["spec"]))
    assert b["accuracy_matrix"] == a["accuracy_matrix"]
    c = run_learn(LearnSpec.from_dict({**a["spec"], "seed": 4}))
    assert c["accuracy_matrix"] != a["accuracy_matrix"]


def test_run_learn_curves_and_task_incremental():
    res = run_learn(
        LearnSpec(
            scenario="task-incremental", n_experiences=2, n_epochs=5, limit=300, eval_every=10
        )
    )
    assert "curves" in res
    assert len(res["curves"]["step"]) == len(res["curves"]["acc"]) > 0
    assert res["curves"]["acc"][0][1] is None  # experience 1 not yet seen at the first evaluation
    # a multi-head model is chosen automatically: task-incremental accuracy is well above chance
    assert res["learning_accuracy"] > 0.7


def test_one_experience_gives_null_transfer():
    res = run_learn(LearnSpec(scenario="joint", n_experiences=1, n_epochs=1, limit=200))
    assert res["bwt"] is None and res["fwt"] is None and res["forgetting"] is None
    assert 0 <= res["acc"] <= 1


def test_resolved_spec_fills_recipe_and_strategy_params():
    spec = LearnSpec(strategy="replay", params={"memory_size": 50}, seed=7).resolved()
    assert (
        spec.params["memory_size"] == 50 and spec.params["seed"] == 7
    )  # strategy seed follows the run
    assert spec.n_epochs is not None and spec.lr is not None and spec.model == "mlp"
    assert spec.resolved() == spec
    cnn = LearnSpec(model="cnn").resolved()
    assert cnn.hidden == (64,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dataset": "nope"}, "valid: digits"),
        ({"scenario": "nope"}, "valid: class-incremental"),
        ({"strategy": "nope"}, "valid:.*naive"),
        ({"n_experiences": 0}, "n_experiences"),
        ({"lr": -1.0}, "lr"),
        ({"hidden": (0,)}, "hidden"),
        ({"eval_every": 0}, "eval_every"),
        ({"strategy": "ewc", "params": {"nope": 1}}, "has no parameter 'nope'"),
    ],
)
def test_learn_spec_validation(kwargs, match):
    with pytest.raises(ObliviateError, match=match):
        LearnSpec(**kwargs).resolved()


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ObliviateError, match="unknown learn-spec key 'epochs'"):
        LearnSpec.from_dict({"epochs": 3})
    assert LearnSpec.from_dict({"kind": "learn", "strategy": "naive"}).strategy == "naive"


def test_aggregate():
    agg = aggregate(
        [{"acc": 0.5, "bwt": None, "seconds": 1.0}, {"acc": 0.7, "bwt": None, "seconds": 3.0}]
    )
    assert agg["n"] == 2
    assert agg["mean"]["acc"] == pytest.approx(0.6)
    assert agg["std"]["acc"] == pytest.approx(math.sqrt(0.02))  # sample std, ddof=1
    assert agg["mean"]["bwt"] is None


# ---- the command -------------------------------------------------------------------------------


def test_learn_writes_json(capsys, tmp_path):
    path = tmp_path / "r.json"
    code, out, err = cli(
        capsys,
        "learn",
        "--strategy",
        "replay",
        "--set",
        "memory_size=40",
        "--seed",
        "1",
        "--out",
        str(path),
        *QUICK,
    )
    assert code == 0, err
    assert "ACC" in out and "replay" in out
    data = json.loads(path.read_text())
    assert set(data) == set(RESULT_KEYS)
    assert data["spec"]["params"]["memory_size"] == 40 and data["spec"]["seed"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name != "r.json"]  # no temp file left behind


def test_learn_json_flag_prints_only_the_result(capsys, tmp_path):
    code, out, err = cli(capsys, "learn", "--json", *QUICK)
    assert code == 0, err
    data = json.loads(out)  # stdout is exactly one JSON document: no table
    assert set(data) == set(RESULT_KEYS)


def test_learn_old_json_path_still_works_with_a_note(capsys, tmp_path):
    path = tmp_path / "r.json"
    code, out, err = cli(capsys, "learn", "--json", str(path), *QUICK)
    assert code == 0, err
    assert set(json.loads(path.read_text())) == set(RESULT_KEYS)
    assert err.strip() == "note: --json PATH is deprecated; use --out PATH"


def test_learn_several_seeds(capsys, tmp_path):
    path = tmp_path / "r.json"
    code, out, err = cli(capsys, "learn", "--seeds", "0,1", "--out", str(path), *QUICK)
    assert code == 0, err
    assert "±" in out
    data = json.loads(path.read_text())
    assert data["seeds"] == [0, 1] and len(data["runs"]) == 2
    assert [r["spec"]["seed"] for r in data["runs"]] == [0, 1]
    accs = [r["acc"] for r in data["runs"]]
    assert data["mean"]["acc"] == pytest.approx(np.mean(accs))
    assert data["std"]["acc"] == pytest.approx(np.std(accs, ddof=1))
    assert data["spec"]["seed"] is None


def _npz(tmp_path, x, y, name="d.npz"):
    p = tmp_path / name
    np.savez(p, x=x, y=y)
    return f"npz:{p}"


def _bad_inputs(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    y = np.arange(40) % 4
    y_bad = y.copy()
    y_bad[3] = -2
    x_nan = x.copy()
    x_nan[5, 1] = np.nan
    x_inf = x.copy()
    x_inf[7, 0] = np.inf
    return [
        (
            ["--dataset", "imagenet"],
            ["unknown dataset 'imagenet'", "digits", "mnist1d", "npz:PATH"],
        ),
        (["--strategy", "magic"], ["unknown strategy 'magic'", "naive", "ewc", "replay"]),
        (
            ["--scenario", "sideways"],
            ["unknown scenario 'sideways'", "class-incremental", "domain-permutation"],
        ),
        (
            ["--experiences", "3"],
            ["n_experiences=3 does not divide the 10 classes", "[1, 2, 5, 10]"],
        ),
        (
            ["--dataset", _npz(tmp_path, x, y_bad, "lab.npz"), "--experiences", "2"],
            ["label -2 is outside the class range"],
        ),
        (["--dataset", _npz(tmp_path, x_nan, y, "nan.npz"), "--experiences", "2"], ["NaN or inf"]),
        (["--dataset", _npz(tmp_path, x_inf, y, "inf.npz"), "--experiences", "2"], ["NaN or inf"]),
        (
            ["--dataset", "mnist", "--data-dir", "/nonexistent"],
            [
                "/nonexistent",
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            ],
        ),
        (["--strategy", "ewc", "--set", "strength=3"], ["no parameter 'strength'", "reg_strength"]),
        (
            ["--strategy", "ewc", "--set", "reg_strength=lots"],
            ["reg_strength='lots' must be a number"],
        ),
        (["--strategy", "ewc", "--set", "reg_strength=-1"], ["reg_strength must be >= 0"]),
        (
            ["--strategy", "replay", "--set", "memory_size=2.5"],
            ["memory_size='2.5' must be an integer"],
        ),
        (["--strategy", "ewc", "--set", "reg_strength"], ["expected key=value"]),
        (["--seeds", "0,x"], ["--seeds '0,x'"]),
        (["--seeds", "0,0"], ["appears twice"]),
        (["--seeds", "3-1"], ["range 3-1 is empty"]),
        (["--hidden", "10,a"], ["--hidden '10,a'"]),
        (["--epochs", "-1"], ["n_epochs must be >= 0"]),
        (["--out", "/nonexistent/dir/r.json"], ["does not exist"]),
        (["--strategy", "naive", "--seed", "x"], ["Invalid value for '--seed'"]),
    ]


def test_bad_input_is_one_line_exit_2(capsys, tmp_path):
    for args, needles in _bad_inputs(tmp_path):
        code, out, err = cli(capsys, "learn", *args, "--quiet")
        assert code == 2, (args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, err)
        assert "Traceback" not in err
        for needle in needles:
            assert needle in lines[0], (args, needle, lines[0])


def test_console_script_bad_input(tmp_path):
    exe = Path(sys.executable).with_name("obliviate")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "obliviate.cli.main"]
    env = {**os.environ, "OBLIVIATE_DATA": ""}
    proc = subprocess.run(
        [*cmd, "learn", "--dataset", "mnist", "--data-dir", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    assert "t10k-labels-idx1-ubyte" in proc.stderr and "Traceback" not in proc.stderr


# ---- the demo ----------------------------------------------------------------------------------


def test_demo_sections_resolve():
    import importlib

    from obliviate.cli.demo import DEMO_SECTIONS

    assert DEMO_SECTIONS[0] == "obliviate.cli.demo:continual_section"
    for name in DEMO_SECTIONS:
        module, _, func = name.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), name


def test_demo_table_and_verdict_from_records():
    from rich.console import Console

    from obliviate.cli.demo import continual_table, verdict

    def rec(strategy, acc, seed):
        m = {
            "acc": acc,
            "bwt": acc - 1,
            "fwt": 0.0,
            "forgetting": 1 - acc,
            "learning_accuracy": 0.99,
            "seconds": 1.0,
        }
        return {
            "status": "ok",
            "spec": {"scenario": "class-incremental", "strategy": strategy, "seed": seed},
            "metrics": m,
        }

    records = [
        rec(s, a + 0.01 * seed, seed)
        for s, a in [("naive", 0.2), ("ewc", 0.4), ("replay", 0.8), ("joint", 0.95)]
        for seed in range(3)
    ]
    console = Console(width=200, record=True)
    console.print(continual_table(records, "class-incremental"))
    text = console.export_text()
    assert "replay (200)" in text and "0.810 ± 0.010" in text and "lwf" not in text
    v = verdict(records, "class-incremental")
    assert "ACC 0.21" in v and "replay (ACC 0.81)" in v and "0.96" in v


def test_demo_help(capsys):
    code, out, err = cli(capsys, "demo", "--help")
    assert code == 0 and "main job" in out


@pytest.mark.slow
def test_acceptance_figures_digits():
    """Issue #2's acceptance on digits, default settings, seeds 0-2 (about a minute)."""

    def acc(scenario, strategy, **params):
        runs = [
            run_learn(LearnSpec(scenario=scenario, strategy=strategy, params=params, seed=s))
            for s in range(3)
        ]
        return aggregate(runs)["mean"]["acc"]

    assert acc("class-incremental", "naive") <= 0.35
    assert acc("class-incremental", "replay", memory_size=200) >= 0.80
    assert acc("class-incremental", "joint") >= 0.93
    assert acc("domain-permutation", "ewc") > acc("domain-permutation", "naive")
