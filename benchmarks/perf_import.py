"""Start-up cost: ``import obliviate`` and ``obliviate --help`` in fresh interpreters (goal < 1 s).

    python benchmarks/perf_import.py [--repeat 5]

Prints the median wall time of each over ``--repeat`` fresh processes, and which heavy modules
(torch, numpy, ...) ``--help`` pulled in (none expected: commands import them lazily).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "numpy", "scipy", "sklearn", "matplotlib", "jinja2", "ray")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _time(code: str) -> tuple[float, str, float]:
    """Wall time, stdout and CPU time (user + sys) of a fresh ``python -c code``."""
    c0, t0 = _cpu(), time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, out.stdout, _cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    baseline = [_time("pass") for _ in range(args.repeat)]
    imp = [_time("import obliviate") for _ in range(args.repeat)]
    help_code = (
        "import sys\nfrom obliviate.cli.main import main\nimport io, contextlib\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n    main(['--help'])\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    helps = [_time(help_code) for _ in range(args.repeat)]
    print(
        "median of",
        args.repeat,
        "fresh processes: wall time (CPU time = user + sys, immune to a busy machine)",
    )
    for name, runs, goal in (
        ("python -c pass", baseline, None),
        ("import obliviate", imp, 1.0),
        ("obliviate --help", helps, 1.0),
    ):
        wall = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[2] for r in runs)
        verdict = "" if goal is None else ("OK (< 1 s)" if wall < goal else "SLOW (goal < 1 s)")
        print(f"{name:20s} wall {wall * 1000:6.0f} ms   cpu {cpu * 1000:6.0f} ms   {verdict}")
    print(f"heavy modules loaded by --help: {helps[0][1].strip()}")


if __name__ == "__main__":
    main()
