"""CLI surface of the benchmark tools: fast --help, bad specs exit 2, compare tables."""

from __future__ import annotations

import subprocess
import sys

from obliviate.bench import results as store
from obliviate.bench.specs import run_key
from obliviate.cli.main import main


def test_help_does_not_import_torch():
    code = (
        "import sys\n"
        "from obliviate.cli.main import main\n"
        "rc = main(['--help'])\n"
        "heavy = [m for m in ('torch', 'numpy', 'matplotlib', 'sklearn', 'ray', 'jinja2') if m in sys.modules]\n"
        "print('HEAVY', heavy, rc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "bench" in out.stdout and "report" in out.stdout and "compare" in out.stdout
    assert "HEAVY [] 0" in out.stdout, out.stdout[-500:]


def test_bad_spec_is_one_line_error_exit_2(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(
        'seeds = [0]\n[[learn]]\ndatasets = ["digits"]\nscenarios = ["joint"]\nstrategies = ["naive"]\nlr = "x"\n'
    )
    assert main(["bench", str(spec), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {spec}:6: learn.lr must be a number or a list of them, got 'x'"
    assert main(["bench", str(spec), "--out", str(tmp_path / "o"), "--backend", "slurm"]) == 2


def _rec(method: str, seed: int, acc: float) -> dict:
    run = {
        "kind": "learn",
        "dataset": "digits",
        "scenario": "class-incremental",
        "strategy": method,
        "params": {},
        "seed": seed,
    }
    return {
        "key": run_key(run),
        "kind": "learn",
        "status": "ok",
        "run": run,
        "metrics": {"acc": acc, "bwt": -0.1, "forgetting": 0.1, "seconds": 1.0},
    }


def test_compare_prints_mean_std_and_difference(tmp_path, capsys):
    for d, accs in (("a", (0.5, 0.7)), ("b", (0.8, 0.8))):
        for seed, acc in enumerate(accs):
            store.append(
                store.results_path(tmp_path / d)
                if (tmp_path / d).mkdir(exist_ok=True) is None
                else None,
                _rec("naive", seed, acc),
            )
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "ACC" in x)
    assert "0.600 ± 0.141" in line and "0.800 ± 0.000" in line and "+0.200" in line


def test_quiet_still_reports_failed_runs(tmp_path, capsys):
    spec = tmp_path / "div.toml"
    spec.write_text(
        'name = "div"\nseeds = [0]\n[[learn]]\ndatasets = ["synthetic"]\n'
        'scenarios = ["class-incremental"]\nn_experiences = 2\nstrategies = ["naive"]\n'
        "n_epochs = 2\nlr = 1e30\n"
    )
    assert main(["bench", str(spec), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "1 failed" in err
