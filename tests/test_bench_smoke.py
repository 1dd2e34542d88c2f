"""End to end (slow): benchmarks/specs/smoke.toml on 2 workers, then its report; Ray agrees."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from obliviate.bench import results as store

SMOKE = Path(__file__).resolve().parents[1] / "benchmarks" / "specs" / "smoke.toml"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "obliviate.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.integration
def test_smoke_grid_and_report(tmp_path):
    out = tmp_path / "smoke"
    done = _cli("bench", str(SMOKE), "--out", str(out), "--workers", "2", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    records = store.read(out)
    assert {r["kind"] for r in records} == {"learn", "forget", "sharded", "events"}
    assert all(r["status"] == "ok" for r in records)
    # originals and oracles trained once per (dataset, forget set, seed), shared by the methods
    cache = sorted(p.name.split("-")[0] for p in (out / "cache").glob("*.pt"))
    assert cache == ["oracle", "original"]
    again = _cli("bench", str(SMOKE), "--out", str(out), "--quiet")
    assert again.returncode == 0 and len(store.read(out)) == len(records)
    rep = _cli("report", str(out), "-o", str(tmp_path / "report.html"))
    assert rep.returncode == 0, rep.stderr[-3000:]
    html = (tmp_path / "report.html").read_text()
    kinds = set(re.findall(r'<figure class="plot" data-kind="([a-z-]+)"', html))
    assert kinds == {
        "heatmap",
        "experience-lines",
        "curves",
        "events",
        "unlearning-bars",
        "tradeoff",
        "mia",
        "deletion-cost",
        "sharded-accuracy",
    }


@pytest.mark.slow
@pytest.mark.integration
def test_smoke_grid_ray_matches_local(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (optional extra [distributed])")
    a = _cli("bench", str(SMOKE), "--out", str(tmp_path / "local"), "--workers", "2", "--quiet")
    b = _cli(
        "bench",
        str(SMOKE),
        "--out",
        str(tmp_path / "ray"),
        "--backend",
        "ray",
        "--workers",
        "2",
        "--quiet",
    )
    assert a.returncode == 0 and b.returncode == 0, (a.stderr[-2000:], b.stderr[-2000:])
    la = {r["key"]: store.strip_timings(r["metrics"]) for r in store.read(tmp_path / "local")}
    lb = {r["key"]: store.strip_timings(r["metrics"]) for r in store.read(tmp_path / "ray")}
    assert la == lb
