"""Every command of the README's tour runs as written (in a scratch folder). Those that take
minutes on a 2-core machine (forgetting events over 30 epochs of mnist1d, forgetting quality
with 8 model pairs per seed, the 5 x 4 shard store and its deletion, the smoke grid and its
report) are in the slow set (`make test-all`)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from obliviate.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SLOW = ("obliviate events", "obliviate bench", "obliviate report", "obliviate shard", "--quality")


def tour() -> list[str]:
    """The tour's commands, alternatives (``a|b``) and optional parts (``[--x 1]``) expanded."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## A tour of the command line", 1)[1].split("```bash", 1)[1]
    block = block.split("```", 1)[0]
    out: list[str] = []
    for line in block.strip().splitlines():
        line = line.split("#", 1)[0].strip()
        optional = re.findall(r"\[([^\]]+)\]", line)
        base = re.sub(r"\s*\[[^\]]+\]", "", line)
        words = base.split()
        alt = next((w for w in words if "|" in w), None)
        variants = [base.replace(alt, a) for a in alt.split("|")] if alt else [base]
        out += variants + [f"{base} {o}" for o in optional]
    return out


COMMANDS = tour()


def test_the_tour_was_found():
    assert len(COMMANDS) >= 10 and all(c.startswith("obliviate ") for c in COMMANDS)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tour")


@pytest.mark.parametrize(
    "command",
    [pytest.param(c, marks=pytest.mark.slow) if any(s in c for s in SLOW) else c for c in COMMANDS],
)
def test_tour_command_runs(command, scratch, monkeypatch, capsys):
    monkeypatch.chdir(scratch)
    args = shlex.split(command)[1:]
    args = [str(ROOT / a) if a.startswith("benchmarks/") else a for a in args]
    if args[:2] == ["shard", "forget"] and not (scratch / "store").exists():
        assert main(shlex.split(next(c for c in COMMANDS if " shard train " in c))[1:]) == 0
    if args[0] == "report" and not (scratch / "results" / "smoke").exists():
        pytest.skip("needs the bench command's results (run the slow set)")
    code = main(args)
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
