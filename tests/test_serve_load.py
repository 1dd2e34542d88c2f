"""The bounded load benchmark runs clean at a small size (slow set: it starts a server process)."""

from __future__ import annotations

import pytest
from _benchmarks import load

pytest.importorskip("fastapi")


@pytest.mark.slow
def test_serve_load_benchmark_small(capsys):
    module = load("serve_load")
    assert module.main(["--requests", "120", "--clients", "6", "--batch-window", "0.5"]) == 0
    out = capsys.readouterr().out
    assert '"completed_exactly_once": true' in out and '"verify_ok": true' in out
