"""benchmarks/unlearning_bench_table.py: mean ± std over seeds, ratios per seed, failures counted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "unlearning_bench_table", ROOT / "benchmarks" / "unlearning_bench_table.py"
)
assert _spec is not None and _spec.loader is not None
table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table)


def _model(acc: float) -> dict:
    return {"retain_acc": acc, "forget_acc": acc / 2, "test_acc": acc, "mia_auc": 0.5}


def _rec(method: str, seed: int, cpu: float, ok: bool = True) -> dict:
    rec = {
        "key": f"{method}-{seed}",
        "kind": "forget",
        "run": {"dataset": "d", "forget": "class:3", "method": method, "seed": seed},
        "status": "ok" if ok else "error",
    }
    if ok:
        rec["metrics"] = {
            "method": method,
            "n_forget": 10,
            "unlearned": _model(0.8 + 0.1 * seed),
            "oracle": _model(0.9),
            "relearn_steps": 4 + seed,
            "relearn_steps_oracle": 6,
            "cpu_seconds": cpu,
            "oracle_cpu_seconds": 2.0 * (seed + 1),
            "seconds": 3 * cpu,
            "oracle_seconds": 1.0,
        }
    else:
        rec["error"] = "Diverged: weights became NaN\nmore"
    return rec


def test_table_means_stds_ratios_and_failures(tmp_path):
    recs = [_rec("retrain", s, 2.0 * (s + 1)) for s in (0, 1)]
    recs += [_rec("ssd", 0, 0.2), _rec("ssd", 1, 0.4), _rec("scrub", 0, 0.0, ok=False)]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    text = table.tables(table.load(path))
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if "| `" in line}
    assert list(rows) == ["retrain", "scrub", "ssd"]  # oracle first, then by name
    # RA of ssd: 0.8 and 0.9 -> 0.850 ± 0.071; CPU ratio per seed: 0.2/2 and 0.4/4 -> 10.0 ± 0.0 %
    assert "0.850 ± 0.071" in rows["ssd"] and "10.0 ± 0.0" in rows["ssd"]
    assert "100.0 ± 0.0" in rows["retrain"]
    assert "| 0 |" in rows["scrub"] and "1: Diverged: weights became NaN" in rows["scrub"]
    assert "more" not in rows["scrub"]


def test_wall_puts_wall_seconds_in_the_cost_columns(tmp_path):
    recs = [_rec("retrain", 0, 2.0), _rec("ssd", 0, 0.2)]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    text = table.tables(table.load(path), wall=True)
    assert "wall s | % of retrain wall" in text and "retraining 1.0 wall s" in text
    ssd = next(line for line in text.splitlines() if line.startswith("| `ssd`"))
    assert "| 0.60 | 60.0 |" in ssd  # 3 x 0.2 wall s over the oracle's 1.0
    assert "CPU" not in text


def test_missing_results_is_exit_2(tmp_path, capsys):
    assert table.main([str(tmp_path)]) == 2
    assert "error: no results.jsonl" in capsys.readouterr().out
