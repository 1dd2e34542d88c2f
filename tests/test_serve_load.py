"""The bounded load benchmark runs clean at a small size (slow set: it starts a server process)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("fastapi")


@pytest.mark.slow
def test_serve_load_benchmark_small(capsys):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"
    spec = importlib.util.spec_from_file_location("serve_load", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--requests", "120", "--clients", "6", "--batch-window", "0.5"]) == 0
    out = capsys.readouterr().out
    assert '"completed_exactly_once": true' in out and '"verify_ok": true' in out
