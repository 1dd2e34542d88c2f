"""The results store: one JSON line per finished run, crash-safe to append and to read.

A results directory holds ``results.jsonl`` (one record per run), a copy of the spec and a
``cache/`` folder shared by the runs (original and oracle models of unlearning runs). Each
record is a dict::

    {"key": ..., "kind": "learn"|"forget"|"sharded", "label": ..., "status": "ok"|"error",
     "run": <grid point, hashed into key>, "spec": <fully resolved spec from the entry point>,
     "metrics": <the entry point's output, minus spec and provenance>, "error": <message>,
     "timings": {"seconds", "started_utc", "finished_utc", "worker"}, "provenance": {...}}

Writing: each record is one ``write`` of one complete line on a file opened for appending,
followed by ``flush`` and ``fsync``; before the first append a torn last line (a crash in
mid-write) is cut off, so a new record never glues onto it. Reading ignores a torn last line.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from obliviate.errors import ObliviateError

RESULTS = "results.jsonl"
TIMING_KEYS = ("seconds", "speedup", "fraction_of_ideal", "time", "wall")
"""Substrings of metric names that are wall-time figures (or ratios of them)."""


def _default(obj: Any) -> Any:
    """JSON for numpy arrays/scalars, tuples and paths."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in a result")


def dumps(record: dict[str, Any]) -> str:
    """One line of canonical JSON (no newline inside)."""
    return json.dumps(record, default=_default, sort_keys=True, separators=(",", ":"))


def results_path(out: str | Path) -> Path:
    return Path(out) / RESULTS


def repair(path: Path) -> bool:
    """Mend a last line without its newline: a complete record gets its newline, a torn one (a
    crash mid-write) is cut off. True if the file was changed."""
    if not path.exists():
        return False
    with open(path, "rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        if size == 0:
            return False
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return False
        # find the last newline before the torn tail
        pos, chunk = size, 65536
        keep = 0
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            block = fh.read(pos - start)
            nl = block.rfind(b"\n")
            if nl >= 0:
                keep = start + nl + 1
                break
            pos = start
        fh.seek(keep)
        tail = fh.read(size - keep)
        if _complete_record(tail):  # a whole record that lacks only its newline: keep it, as
            fh.seek(size)  # read() does, so --dry-run and the run count the same records
            fh.write(b"\n")
        else:
            fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _complete_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def append(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` as one complete line and make it durable (flush + fsync)."""
    data = (dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a results file (or of ``DIR/results.jsonl``).

    A torn last line (a crash mid-write) is ignored; a corrupt line elsewhere is an error
    naming the file and line. Later records of the same key replace earlier ones.
    """
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS
    if not p.exists():
        raise ObliviateError(
            f"no results at {str(p)!r}; run `obliviate bench SPEC --out DIR` first"
        )
    return parse(p.read_bytes(), str(p))


def parse(
    raw: bytes, name: str, *, on_torn: Callable[[int, int], None] | None = None
) -> list[dict[str, Any]]:
    """The records of the bytes of a results file called ``name`` (as :func:`read`; for a
    caller that got the bytes elsewhere, e.g. decompressed). ``on_torn(line, n_bytes)`` is
    called for a torn last line that is skipped (a complete last record that only lacks its
    newline counts). Raises :class:`ObliviateError` naming ``name`` and the line for a corrupt
    line elsewhere."""
    lines = raw.split(b"\n")
    torn = lines[-1]  # b"" when the file ends with a newline
    records: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise ObliviateError(
                f"{name}:{n}: corrupt result line; delete it and re-run the benchmark"
            ) from None
        problem = _record_problem(rec)
        if problem:
            raise ObliviateError(
                f"{name}:{n}: not a valid result record ({problem}); delete the line and run the "
                "benchmark again to redo that run"
            )
        records[rec["key"]] = rec
    if torn.strip():
        try:  # a complete record that merely lacks its newline still counts
            rec = json.loads(torn)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            rec = None
        if rec is not None and not _record_problem(rec):
            records[rec["key"]] = rec
        elif on_torn is not None:
            on_torn(len(lines), len(torn))
    return list(records.values())


def _record_problem(rec: Any) -> str | None:
    """What makes ``rec`` unusable as a result record (None when it is fine): a JSON object with
    a string ``key``, a ``status`` of "ok" or "error", a ``run`` object, and for "ok" a
    ``metrics`` object."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    if not isinstance(rec.get("key"), str):
        return "no key"
    if rec.get("status") not in ("ok", "error"):
        return f"status {rec.get('status')!r}"
    if rec["status"] == "ok" and not isinstance(rec.get("metrics"), dict):
        return f"status ok but metrics is {type(rec.get('metrics')).__name__}"
    if "run" in rec and not isinstance(rec["run"], dict):
        return "run is not an object"
    return None


def finished_keys(path: Path) -> set[str]:
    """Keys of runs that finished successfully (failed runs are retried)."""
    if not path.exists():
        return set()
    return {r["key"] for r in read(path) if r.get("status") == "ok"}


def is_timing(key: str) -> bool:
    """Whether a metric name is a wall-time figure (differs between identical runs)."""
    k = key.lower()
    return any(t in k for t in TIMING_KEYS)


def strip_timings(obj: Any) -> Any:
    """``obj`` without wall-time entries, for comparing runs across backends."""
    if isinstance(obj, dict):
        return {k: strip_timings(v) for k, v in obj.items() if not is_timing(k)}
    if isinstance(obj, list):
        return [strip_timings(v) for v in obj]
    return obj


def get(record: dict[str, Any], dotted: str) -> float | None:
    """A numeric metric by dotted path (``"unlearned.forget_acc"``), or None when absent."""
    value: Any = record.get("metrics", {})
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def only_ok(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok"]


__all__ = [
    "RESULTS",
    "append",
    "dumps",
    "finished_keys",
    "get",
    "is_timing",
    "only_ok",
    "read",
    "repair",
    "results_path",
    "strip_timings",
]
