"""Records for the demo's HTML report (the section itself is :func:`obliviate.cli.demo.report_section`).

:func:`collect` gathers the results the demo's sections left under a folder: every
``*/results.jsonl`` (results-store format) and the unlearning section's
``forget/results.json`` (``{request: [run_forget result, ...]}``, turned into store records by
:func:`forget_records`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from obliviate.bench import results as store
from obliviate.bench.specs import Run, run_key


def forget_records(path: Path) -> list[dict[str, Any]]:
    """Store records from a ``{request: [run_forget result, ...]}`` JSON file."""

    data = json.loads(path.read_text())
    records = []
    for results in data.values():
        for res in results:
            spec = res.get("spec", {})
            run = {
                "kind": "forget",
                "dataset": spec.get("dataset"),
                "forget": spec.get("forget"),
                "method": spec.get("method"),
                "params": spec.get("params") or {},
                "seed": spec.get("seed", 0),
            }
            metrics = {k: v for k, v in res.items() if k not in ("spec", "provenance")}
            records.append(
                {
                    "key": run_key(run),
                    "kind": "forget",
                    "label": Run(run, "").label(),
                    "status": "ok",
                    "run": run,
                    "spec": spec,
                    "metrics": metrics,
                    "timings": {"seconds": res.get("seconds")},
                    "provenance": res.get("provenance", {}),
                }
            )
    return records


def collect(folder: Path) -> list[dict[str, Any]]:
    """Every result record under ``folder`` (one level of section folders)."""

    records: list[dict[str, Any]] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        if (sub / store.RESULTS).exists():
            records.extend(store.read(sub))
        elif (sub / "results.json").exists() and sub.name == "forget":
            records.extend(forget_records(sub / "results.json"))
    return records


__all__ = ["collect", "forget_records"]
