"""The unlearning section of ``obliviate demo``: forget on request, measured against the oracle.

On digits (default recipe: MLP(128), Adam 1e-3, 30 epochs), seed 0: forget class 3 and a random
10 % of the training set with a few methods, and print one table per request with the retrained
oracle alongside (retain / forget / test accuracy, loss-threshold MIA AUC, JS divergence to the
oracle on the forget set, wall time and speed-up vs retraining). Results are also written as JSON
to ``<demo dir>/forget/results.json``.
"""

from __future__ import annotations

import time
from typing import Any

REQUESTS = ("class:3", "random:10%")
METHODS = ("neggrad_plus", "ssd", "scrub", "bad_teacher", "newton")
SEED = 0
RELEARN_CAP = 100


def unlearning_section(console: Any) -> None:
    """Class and random forgetting on digits: a few methods next to the retrained oracle."""
    from rich.table import Table

    from obliviate.cli.demo import fresh_section_dir
    from obliviate.unlearning import UNLEARNERS
    from obliviate.unlearning.run import ForgetSpec, prepare, run_forget, write_json_atomic

    out = fresh_section_dir("forget")
    methods = [m for m in METHODS if m in UNLEARNERS]
    console.rule("[bold]Unlearning: forget on request, measured against the retrained oracle")
    console.print(
        f"digits, MLP(128) trained 30 epochs (Adam 1e-3), seed {SEED}; each method's default "
        "hyperparameters; the oracle is retrained from scratch without the forget set"
    )
    started = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    for request in REQUESTS:
        base = ForgetSpec(dataset="digits", forget=request, seed=SEED, relearn_cap=RELEARN_CAP)
        p = prepare(base)
        rows = [
            run_forget(
                ForgetSpec(
                    dataset="digits", forget=request, method=m, seed=SEED, relearn_cap=RELEARN_CAP
                ),
                prepared=p,
            )
            for m in methods
        ]
        results[request] = rows
        table = Table(
            title=f"forget {request} ({len(p.request.forget)} of {len(p.train)} training samples)"
        )
        for col in (
            "model",
            "retain acc",
            "forget acc",
            "test acc",
            "MIA AUC",
            "JS to oracle",
            "seconds",
            "speed-up",
        ):
            table.add_column(col, justify="right" if col != "model" else "left")
        o, g = rows[0]["original"], rows[0]["oracle"]
        table.add_row(
            "original",
            f"{o['retain_acc']:.3f}",
            f"{o['forget_acc']:.3f}",
            f"{o['test_acc']:.3f}",
            f"{o['mia_auc']:.3f}",
            f"{rows[0]['js_to_oracle']['original_forget']:.4f}",
            "-",
            "-",
        )
        table.add_row(
            "oracle (retrain)",
            f"{g['retain_acc']:.3f}",
            f"{g['forget_acc']:.3f}",
            f"{g['test_acc']:.3f}",
            f"{g['mia_auc']:.3f}",
            "0",
            f"{p.oracle_seconds:.2f}",
            "1.0x",
        )
        for m, r in zip(methods, rows, strict=True):
            u = r["unlearned"]
            table.add_row(
                m,
                f"{u['retain_acc']:.3f}",
                f"{u['forget_acc']:.3f}",
                f"{u['test_acc']:.3f}",
                f"{u['mia_auc']:.3f}",
                f"{r['js_to_oracle']['forget']:.4f}",
                f"{r['seconds']:.2f}",
                f"{r['speedup']:.0f}x",
            )
        console.print(table)
    write_json_atomic(results, out / "results.json")
    console.print(
        "Class forgetting: the target is the oracle's forget accuracy (0: it never saw a 3); random "
        "forgetting: the target is the oracle's forget accuracy and MIA AUC, not 0 and not 0.5. "
        f"Section took {time.perf_counter() - started:.0f} s; the full table of every method over 3 seeds: "
        "docs/unlearning.md (python benchmarks/unlearning_table.py)."
    )


__all__ = ["unlearning_section"]
