"""The report's language-model section: a table of methods beside the target and the retain
oracle (mean ± std over seeds, hand-checked) and the forget-quality vs model-utility plot, from
``llm`` records in a results.jsonl; absent (no note, no card) without llm runs. The slow test
runs real ``llm`` grid points on the tiny model and reports them."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from obliviate.bench import results as store
from obliviate.bench.specs import run_key
from obliviate.report.html import build_report, write_report
from obliviate.report.llm import llm_table

FIGS = ("forget_Q_A_Prob", "forget_value_accuracy", "forget_quality", "model_utility")


def _figures(fp: float, fq: float, mu: float) -> dict[str, float]:
    return {
        "forget_Q_A_Prob": fp,
        "forget_value_accuracy": fp,
        "forget_quality": fq,
        "forget_quality_same_wording": fq,
        "privleak": -10.0,
        "extraction_strength": fp / 2,
        "retain_Q_A_Prob": 0.8,
        "retain_value_accuracy": 1.0,
        "model_utility": mu,
        "seconds": 1.0,
    }


def _llm_record(method: str, seed: int, fp: float) -> dict:
    # the shape obliviate.experiments.llm.run returns, as the bench runner stores it
    run = {"kind": "llm", "method": method, "model": "tiny", "params": {}, "seed": seed}
    metrics = {
        "metrics": _figures(fp, 0.01 * (seed + 1), 0.2),
        "target": _figures(0.9 + 0.02 * seed, 1e-15, 0.3),
        "retrain": _figures(0.05, 1.0, 0.25),
        "seconds": 1.0,
        "timing": {"target": 2.0},
    }
    return {
        "key": run_key(run),
        "kind": "llm",
        "label": f"llm {method} seed={seed}",
        "status": "ok",
        "run": run,
        "spec": run,
        "metrics": metrics,
        "timings": {"seconds": 3.0},
        "provenance": {"git_commit": "0" * 40},
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    path = store.results_path(tmp_path)
    for seed in (0, 1):
        store.append(path, _llm_record("grad_diff", seed, 0.1 + 0.1 * seed))
        store.append(path, _llm_record("npo", seed, 0.5))
    return tmp_path


def test_llm_section_table_and_plot(results: Path, tmp_path: Path) -> None:
    html = write_report(results, tmp_path / "r.html").read_text()
    assert '<section id="llm"' in html and "Language models: unlearning facts" in html
    assert "section-omitted" in html  # the classifier sections are absent, llm is not
    table = llm_table(store.read(results))
    assert table is not None
    labels = [row[0] for row in table["rows"]]
    assert labels == [
        "target (fine-tuned) — tiny",
        "retain oracle — tiny",
        "grad_diff — tiny",
        "npo — tiny",
    ]
    col = {name: i for i, name in enumerate(table["header"])}
    rows = {row[0]: row for row in table["rows"]}
    # hand-computed: grad_diff forget prob 0.1, 0.2 -> 0.150 ± 0.071; the target 0.90, 0.92 ->
    # 0.910 ± 0.014, from one record per seed (not one per method)
    assert rows["grad_diff — tiny"][col["forget prob"]] == "0.150 ± 0.071"
    assert rows["target (fine-tuned) — tiny"][col["forget prob"]] == "0.910 ± 0.014"
    assert rows["target (fine-tuned) — tiny"][col["seeds"]] == "2"
    assert rows["retain oracle — tiny"][col["forget quality"]] == "1.000 ± 0.000"
    assert rows["npo — tiny"][col["model utility"]] == "0.200 ± 0.000"
    for label in labels:
        assert label in html
    figs = re.findall(
        r'<figure class="plot" data-kind="llm-tradeoff">.*?base64,([A-Za-z0-9+/=]+)"', html, re.S
    )
    assert len(figs) == 1
    svg = base64.b64decode(figs[0])
    assert b"<svg" in svg and len(svg) > 2000
    for text in (b"grad_diff", b"npo", b"oracle", b"target", b"forget quality"):
        assert text in svg
    assert '"value">4</' in html or ">4<" in html  # the runs card counts the llm runs


def test_no_llm_runs_no_llm_section(results: Path) -> None:
    others = [r for r in store.read(results) if r["kind"] != "llm"]
    others.append({**_llm_record("npo", 0, 0.5), "kind": "forget", "status": "error"})
    html = build_report(others, source="x")
    assert '<section id="llm"' not in html and "Language models" not in html


@pytest.mark.slow
def test_real_llm_runs_reach_the_report(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("rouge_score")
    from obliviate.bench import runner
    from obliviate.bench.specs import parse_spec

    spec = """\
seeds = [0]
[[llm]]
methods = ["grad_diff", "npo"]
n_people = 5
n_attributes = 2
n_forget = 1
n_holdout = 1
n_world = 2
n_epochs = 20
unlearn_epochs = 2
generate = false
"""
    _, runs = parse_spec(spec, "llm.toml")
    runner.run_grid(runs, tmp_path)
    recs = store.read(tmp_path)
    assert [r["status"] for r in recs] == ["ok", "ok"], [r.get("error") for r in recs]
    html = write_report(tmp_path, tmp_path / "r.html").read_text()
    assert 'data-kind="llm-tradeoff"' in html
    assert "grad_diff — tiny" in html and "retain oracle — tiny" in html
