"""benchmarks/unlearning_robustness.py: the recipe flags reach the original and the oracle, the
JSON is written per run, and tables merged from several runs say which seeds each row has."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _benchmarks import load

ROOT = Path(__file__).resolve().parents[1]
script = load("unlearning_robustness")

TINY = ["--dataset", "digits", "--forget", "class:3", "--hidden", "16", "--n-epochs", "2"]
TINY += ["--batch-size", "64", "--lr", "0.01", "--optimizer", "adam", "--model", "mlp"]


def _run(method: str, seed: int, fa: float, oracle_fa: float = 0.0) -> dict:
    pair = {"unlearned": {"after": fa}, "oracle": {"after": oracle_fa}}
    return {
        "spec": {"seed": seed},
        "n_forget": 7,
        "run_wall_seconds": 2.0 + seed,
        "unlearned": {"forget_acc": fa},
        "oracle": {"forget_acc": oracle_fa},
        "robustness": {
            "quantization": pair,
            "related_finetune": pair,
            "probe": {"unlearned": 0.9, "oracle": 0.8},
        },
        "relearn_steps": 10 * (seed + 1),
        "relearn_steps_oracle": 5,
    }


def test_render_says_which_seeds_each_row_has():
    store = {
        "class:3": {
            "retrain": [_run("retrain", 0, 0.0), _run("retrain", 1, 0.0)],
            "finetune": [_run("finetune", 1, 1.0)],
            "ssd": [],
        }
    }
    text = "\n".join(script.render(store, ["finetune", "retrain", "ssd"], {}, "tiny"))
    assert "### tiny forget `class:3` (7 training samples), seeds 0,1" in text
    rows = {ln.split(" |")[0]: ln for ln in text.splitlines() if ln.startswith("| ")}
    assert rows["| retrain"].endswith("| 15 ± 7 (5 ± 0) | 2 |")  # relearn mean ± std, mean s/run
    assert rows["| finetune (seeds 1)"].startswith("| finetune (seeds 1) | 1.00 (0.00) |")
    assert "not run" in rows["| ssd"]


@pytest.mark.slow
def test_recipe_flags_json_and_merged_table(tmp_path):
    a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "t.md"
    assert script.main([*TINY, "--seeds", "0", "--methods", "retrain", "--json", str(a)]) == 0
    assert (
        script.main(
            [
                *TINY,
                "--seeds",
                "1",
                "--methods",
                "retrain,finetune",
                "--json",
                str(b),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    runs = json.loads(a.read_text())["class:3"]["retrain"]
    assert len(runs) == 1
    recipe = runs[0]["spec"]["recipe"]
    assert recipe["model"]["hidden"] == [16]
    assert recipe["train"]["n_epochs"] == 2 and recipe["train"]["batch_size"] == 64
    assert runs[0]["run_wall_seconds"] > 0
    single = out.read_text()
    assert "seeds 1\n" in single and "| s/run |" in single and "load average" in single

    merged = tmp_path / "m.md"
    assert (
        script.main(["--from-json", str(a), str(b), "--label", "tiny", "--out", str(merged)]) == 0
    )
    text = merged.read_text()
    assert "### tiny forget `class:3`" in text and "seeds 0,1\n" in text
    lines = {ln.split(" |")[0]: ln for ln in text.splitlines() if ln.startswith("| ")}
    assert "±" in lines["| retrain"]  # two seeds: mean ± std
    assert "| finetune (seeds 1)" in lines  # run on one seed of the two
