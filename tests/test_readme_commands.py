"""Every shell command in the README's code blocks is checked by a test (issue 17).

* **Parses** (default suite, all of them): each ``obliviate`` command's sub-command and options
  exist (the command line with ``--help`` appended exits 0: click rejects an unknown option or
  sub-command before it shows the help); each ``make`` target exists (``make -n``); each
  ``python benchmarks/...`` script exists.
* **Runs as written** in a scratch folder, with what it needs (a store, a results folder, an id
  file) built first: the cheap ones in the default suite, the rest in the slow set (``make
  test-all``). Commands of the tour are run by ``tests/test_readme_tour.py`` and not repeated.
* **Skipped, with the reason**: commands needing files or hardware CI does not have (MNIST, a
  GPU, the user's own model, a running server), and the benchmark scripts (minutes to hours
  each; their ``--help`` lists every option the README uses, in the slow set).

A README command that is in none of the lists below runs in the slow set, so a new command is
never unchecked.
"""

from __future__ import annotations

import csv
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from obliviate.cli.main import main

ROOT = Path(__file__).resolve().parents[1]

#: placeholders the README uses in commands, and a value that parses
PLACEHOLDERS = {
    "SPEC": "benchmarks/specs/smoke.toml",
    "DIR": "readme-dir",
    "HOST:PORT": "127.0.0.1:6379",
}

#: (substring of the command, reason) -- not run anywhere by this file
SKIP = (
    ("make test", "the test suite itself"),
    ("make demo", "`obliviate demo`: minutes; its sections are tested in tests/test_cli_learn.py"),
    ("--device cuda", "needs a CUDA GPU (tests/test_device_placement.py runs the CPU path)"),
    ("--dataset mnist ", "needs the MNIST IDX files (not in CI; tests/test_idx_data.py reads IDX)"),
    (
        "--model ./my-model",
        "needs the user's own model and QA file (tests/test_llm_unlearning.py "
        "runs --model PATH on a saved tiny model)",
    ),  # fmt: skip
    ("obliviate serve --store", "starts a long-running server (tests/test_serve_*.py run it)"),
    ("curl ", "talks to a running server (tests/test_serve_api.py sends the same request)"),
    (
        "receipt verify",
        "needs a receipt signed by a running service (tests/test_serve_api.py "
        "signs one and verifies it with this command)",
    ),  # fmt: skip
    ("--backend ray", "starts a Ray cluster (tests/test_sharded_ray.py covers the backend)"),
)

#: cheap enough for the default suite (seconds); everything else not skipped is slow
CHEAP = ("obliviate list ", "--dry-run")


def _lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    out: list[str] = []
    for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)  # backslash continuations
        for line in joined.splitlines():
            line = re.split(r"\s#\s|\s#$", " " + line, maxsplit=1)[0].strip()
            if line:
                out.append(line)
    return out


def _expand(line: str) -> list[str]:
    """Alternatives ``a|b`` (in an ``obliviate`` word) and optional ``[--x 1]`` parts, as the
    tour test expands them."""
    if not line.startswith("obliviate "):
        return [line]
    optional = re.findall(r"\[([^\]]+)\]", line)
    base = re.sub(r"\s*\[[^\]]+\]", "", line)
    words = base.split()
    alt = next((w for w in words if "|" in w and not w.startswith(("'", '"'))), None)
    variants = [base.replace(alt, a) for a in alt.split("|")] if alt else [base]
    return list(dict.fromkeys(variants + [f"{base} {o}" for o in optional]))


COMMANDS = list(dict.fromkeys(c for line in _lines() for c in _expand(line)))
OBLIVIATE = [c for c in COMMANDS if c.startswith("obliviate ")]


def skip_reason(command: str) -> str | None:
    return next((why for key, why in SKIP if key in command), None)


def tour_commands() -> set[str]:
    """The commands tests/test_readme_tour.py runs (so they are not run twice)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tour", ROOT / "tests" / "test_readme_tour.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return set(module.COMMANDS)


def _args(command: str) -> list[str]:
    for key, value in PLACEHOLDERS.items():
        command = re.sub(rf"(?<![\w-]){re.escape(key)}(?![\w-])", value, command)
    args = shlex.split(command)[1:]
    return [str(ROOT / a) if a.startswith("benchmarks/") else a for a in args]


def test_the_readme_commands_were_found():
    assert len(OBLIVIATE) >= 30
    assert any(c.startswith("python benchmarks/") for c in COMMANDS)
    assert any(c.startswith("make ") for c in COMMANDS)


# ---- every command parses ----------------------------------------------------------------------


@pytest.mark.parametrize("command", OBLIVIATE)
def test_readme_command_parses(command, capsys):
    """The sub-command and every option exist (click checks them before showing --help)."""
    code = main([*_args(command), "--help"])
    captured = capsys.readouterr()
    assert code == 0, f"{command}\n{captured.err[-1500:]}"
    assert "Usage" in captured.out


@pytest.mark.parametrize("command", sorted({c for c in COMMANDS if c.startswith("make ")}))
def test_readme_make_target_exists(command):
    target = command.split()[1]
    proc = subprocess.run(
        ["make", "-n", "-f", str(ROOT / "Makefile"), target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "No rule to make target" not in proc.stderr, proc.stderr


SCRIPTS = sorted({c for c in COMMANDS if c.startswith("python ")})


@pytest.mark.parametrize("command", SCRIPTS)
def test_readme_benchmark_script_exists(command):
    script = ROOT / shlex.split(command)[1]
    assert script.is_file(), command


@pytest.mark.slow
@pytest.mark.parametrize("command", SCRIPTS)
def test_readme_benchmark_script_knows_its_options(command):
    """The script's ``--help`` names every option the README passes (the runs themselves take
    minutes to hours and some need MNIST: not run here)."""
    words = shlex.split(command)
    proc = subprocess.run(
        [sys.executable, str(ROOT / words[1]), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-1500:]
    for option in (w for w in words[2:] if w.startswith("--")):
        assert option in proc.stdout, f"{command}: {option} not in --help"


# ---- the commands run as written ---------------------------------------------------------------


def _run_params() -> list:
    tour = tour_commands()
    params = []
    for c in OBLIVIATE:
        why = skip_reason(c)
        if why:
            params.append(pytest.param(c, marks=pytest.mark.skip(reason=why)))
        elif c in tour:
            continue  # tests/test_readme_tour.py runs it
        elif any(k in c for k in CHEAP):
            params.append(c)
        else:
            params.append(pytest.param(c, marks=pytest.mark.slow))
    return params


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """What commands need, built on first use by the README's own commands."""
    return {"_root": tmp_path_factory.mktemp("readme-built")}


def _build(built: dict[str, Path], name: str) -> Path:
    if name in built:
        return built[name]
    root = built["_root"]
    recipes = {
        "store": "obliviate shard train --dataset digits --shards 5 --slices 4 --store store/",
        "st": "obliviate llm sharded train --store st --model tiny --shards 3 --slices 2",
        "results/smoke": "obliviate bench benchmarks/specs/smoke.toml --out results/smoke "
        "--workers 2",
    }
    import os

    here = os.getcwd()
    os.chdir(root)
    try:
        assert main(_args(recipes[name])) == 0, f"building {name} failed"
    finally:
        os.chdir(here)
    built[name] = root / name
    return built[name]


def _prepare(command: str, here: Path, built: dict[str, Path]) -> None:
    """Build, in the scratch folder ``here``, the files and folders the command reads."""
    words = shlex.split(command)
    if "--store" in words and not {"train"} & set(words[:4]):
        name = words[words.index("--store") + 1].rstrip("/")
        shutil.copytree(_build(built, name), here / name)
    if "rows.npy" in words:
        rng = np.random.default_rng(0)
        np.save(here / "rows.npy", rng.standard_normal((4, 64)).astype(np.float32))
    if "subjects.csv" in words:
        from obliviate.sharded import DataSpec
        from obliviate.sharded.config import load_data

        ids = load_data(DataSpec(dataset="digits", split_seed=0))[0].ids.tolist()[:4]
        with (here / "subjects.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["subject", "id"])
            w.writerows([["alice@example.org", ids[0]], ["bob@example.org", ids[1]]])
    if words[:2] == ["obliviate", "report"] or words[:2] == ["obliviate", "compare"]:
        smoke = _build(built, "results/smoke")
        for name in ("results/smoke", "results/a", "results/b"):
            if name in words:
                shutil.copytree(smoke, here / name)


@pytest.mark.parametrize("command", _run_params())
def test_readme_command_runs(command, tmp_path, built, monkeypatch, capsys):
    _prepare(command, tmp_path, built)
    monkeypatch.chdir(tmp_path)
    code = main(_args(command))
    captured = capsys.readouterr()
    assert code == 0, f"{command}\n{captured.err[-2000:]}"
