"""Every script in examples/ runs with --small (the CI mode) and prints sane figures.

Each runs in a subprocess exactly as a user would start it (``python examples/NAME.py --small``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


def run(name: str) -> str:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--small"],
        cwd=EXAMPLES.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_every_example_is_tested() -> None:
    assert set(SCRIPTS) == {
        "own_model_continual.py",
        "own_model_forget.py",
        "own_model_sharded.py",
    }, "a new example needs its check in tests/test_examples.py"


def test_continual_example() -> None:
    out = run("own_model_continual.py")
    for strategy in ("ewc", "derpp"):
        m = re.search(rf"^{strategy}\s+ACC ([\d.]+)\s+BWT ([-+\d.]+)", out, re.M)
        assert m, out
        acc, bwt = float(m.group(1)), float(m.group(2))
        assert 0.0 < acc <= 1.0 and -1.0 <= bwt <= 1.0


def test_forget_example() -> None:
    out = run("own_model_forget.py")
    for method in ("ssd", "scrub"):
        m = re.search(
            rf"^{method}\s+forget acc ([\d.]+) \(oracle ([\d.]+)\)\s+test acc ([\d.]+) "
            r"\(oracle ([\d.]+)\)",
            out,
            re.M,
        )
        assert m, out
        _, _, test_acc, oracle_test_acc = map(float, m.groups())
        # the user's CNN learned digits, and the unlearner did not wreck it
        assert oracle_test_acc > 0.7 and test_acc > 0.5, out


def test_sharded_example() -> None:
    out = run("own_model_sharded.py")
    deleted = re.search(r"^deleted \[([\d, ]+)\]: removed (\d+)", out, re.M)
    assert deleted, out
    ids = [int(i) for i in deleted.group(1).split(",")]
    assert all(i >= 1000 and i % 10 == 0 for i in ids)  # the user's ids, not row positions
    assert int(deleted.group(2)) == 3
    verification = json.loads(out.split("verification ", 1)[1].splitlines()[0])
    assert verification["exactness"]["checked"] and verification["exactness"]["equal"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_example_has_small_flag(name: str) -> None:
    assert "SMALL" in (EXAMPLES / name).read_text(), f"{name} must honour --small"


def test_readme_own_model_snippet(tmp_path: Path) -> None:
    """The README's "Your own model and data" snippet runs as printed."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    code = readme.split("<!-- own-model-snippet -->\n```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "snippet.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + code)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = proc.stdout.splitlines()[:2]
    acc, bwt, forgetting = map(float, first.split())
    assert 0.0 < acc <= 1.0 and -1.0 <= bwt <= 1.0 and -1.0 <= forgetting <= 1.0
    forget_acc, oracle_forget_acc = map(float, second.split()[:2])
    assert 0.0 <= forget_acc <= 1.0 and oracle_forget_acc > 0.5
