"""benchmarks/unlearning_merge_distill.py: ``scrub_r`` is SCRUB with ``rewind=True`` and no
``rewind_target``, so the run measures the reference itself on held-out test rows and reports
scrub_r's row on the other test rows; the script records the chosen epoch and the reference."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from _benchmarks import load

ROOT = Path(__file__).resolve().parents[1]
script = load("unlearning_merge_distill")


def test_scrub_r_uses_the_methods_own_reference(tmp_path, monkeypatch, capsys):
    assert not hasattr(script, "rewind_target")
    out = tmp_path / "r.json"
    argv = ["x", "--dataset", "digits", "--limit", "300", "--forget", "class:3", "--seeds", "0"]
    monkeypatch.setattr(sys, "argv", [*argv, "--methods", "scrub,scrub_r", "--json", str(out)])
    script.main()
    data = json.loads(out.read_text())
    (rec,) = data["extra"]["scrub_r"]
    assert rec["n_validation_rows"] > 0 and rec["n_test_rows"] > 0
    assert 1 <= rec["epoch"] <= len(rec["forget_errors"])
    assert 0.0 <= rec["reference"] <= 1.0 and rec["n_reference_rows"] >= 1
    # the rewind picks the earliest checkpoint whose forget error is closest to the reference
    gaps = [abs(e - rec["reference"]) for e in rec["forget_errors"]]
    assert rec["epoch"] == gaps.index(min(gaps)) + 1
    assert "every other row uses the whole test split" in capsys.readouterr().out
