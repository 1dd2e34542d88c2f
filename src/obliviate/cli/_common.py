"""Helpers shared by CLI commands: the common options (``--quiet``, ``--json``, ``--out``,
``--seed``/``--seeds``), ``--set key=value`` parsing and seed lists.

The CLI conventions (documented once, in ``docs/cli.md``):

* ``--quiet`` / ``-q``: no progress bars and no notes (``wrote FILE``, headers) on any stream;
  the result itself (table or JSON) is still printed, and errors always are.
* ``--json``: a flag. Standard output carries exactly one JSON document, the command's result,
  instead of the table or text; everything else goes to standard error. Commands whose result is
  already a JSON document (receipts, verify reports) accept the flag as well.
* ``--out PATH`` / ``-o PATH``: the one option that writes the result to a file (atomically,
  checked before any work). Old names (``--output``; ``--json PATH`` on ``learn`` and
  ``forget``) still work, with a one-line deprecation note on standard error.
* ``--seed N`` and ``--seeds 0,1,2`` (or ``0-4``) on every command that runs seeded
  experiments; commands that build one store (``shard train``, ``llm sharded train``) take
  ``--seed`` only.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from obliviate.errors import ObliviateError

QUIET_HELP = "no progress and no notes; the result and errors are still printed"
JSON_HELP = "print the result as one JSON document on stdout instead of the table"
ALWAYS_JSON_HELP = "accepted for uniformity: this command's result is always JSON on stdout"
SEEDS_HELP = "several seeds: 0,1,2 or a range 0-4 (overrides --seed; mean ± std reported)"


def quiet_option() -> Any:
    """``--quiet/-q`` (the same everywhere)."""
    return typer.Option(False, "--quiet", "-q", help=QUIET_HELP)


def json_option(help: str = JSON_HELP) -> Any:
    """``--json``: a flag, JSON result on stdout (the same everywhere)."""
    return typer.Option(False, "--json", help=help)


def out_option(help: str) -> Any:
    """``--out/-o PATH``: where the result file is written."""
    return typer.Option(None, "--out", "-o", help=help)


def legacy_output_option() -> Any:
    """``--output PATH``: the deprecated name of ``--out`` (hidden from ``--help``)."""
    return typer.Option(None, "--output", hidden=True)


DEVICE_HELP = "where to train and evaluate: cpu, cuda, cuda:N or mps (checked before any work)"
PRECISION_HELP = (
    "fp32 (default; same bits for the same seed), bf16 (bfloat16 autocast) or fp16 (float16 "
    "autocast with a grad scaler)"
)


def _device_callback(ctx: Any, param: Any, value: Any) -> Any:
    """Checks ``--device`` while the command line is parsed; the error names the flag."""
    if value is not None:
        from obliviate.training import check_device  # torch: only when a command runs

        check_device(value, name="--device")
    return value


def _precision_callback(ctx: Any, param: Any, value: Any) -> Any:
    """Checks ``--precision`` while the command line is parsed; the error names the flag."""
    if value is not None:
        from obliviate.training import check_precision

        check_precision(value, name="--precision")
    return value


def device_option() -> Any:
    """``--device``: the run's device (validated by :func:`obliviate.training.check_device`)."""
    return typer.Option("cpu", "--device", help=DEVICE_HELP, callback=_device_callback)


def precision_option() -> Any:
    """``--precision``: fp32, bf16 or fp16 (:data:`obliviate.training.PRECISIONS`)."""
    return typer.Option("fp32", "--precision", help=PRECISION_HELP, callback=_precision_callback)


def store_precision_option() -> Any:
    """``--precision`` of a command that retrains a sharded store: default the store's own."""
    return typer.Option(
        None,
        "--precision",
        help="fp32, bf16 or fp16; default: the store's own",
        callback=_precision_callback,
    )


def seeds_option() -> Any:
    """``--seeds 0,1,2`` (the same everywhere)."""
    return typer.Option(None, "--seeds", help=SEEDS_HELP)


def deprecated(old: str, new: str) -> None:
    """One line on stderr: ``note: OLD is deprecated; use NEW``."""
    print(f"note: {old} is deprecated; use {new}", file=sys.stderr)


def resolve_out(out: Any, legacy: Any, legacy_name: str = "--output") -> Any:
    """The ``--out`` value, or the deprecated ``legacy`` one (with a note); both given is an
    :class:`ObliviateError`."""
    if legacy is None:
        return out
    if out is not None:
        raise ObliviateError(f"give --out only ({legacy_name} is its deprecated old name)")
    deprecated(legacy_name, "--out")
    return legacy


def check_out_target(path: str | Path, option: str = "--out") -> Path:
    """The output file, checked before any work is done: not a folder, its folder exists."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise ObliviateError(f"{option} {str(target)!r} is a folder; give a file path")
    if not target.parent.is_dir():
        why = "is a file, not a folder" if target.parent.exists() else "does not exist"
        raise ObliviateError(
            f"{option} {str(target)!r}: the folder {str(target.parent)!r} {why}; "
            "give a path in an existing folder"
        )
    import tempfile

    try:  # a real write test: permissions, a read-only mount, capabilities, a full disk
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".obliviate-check-"):
            pass
    except OSError as exc:
        raise ObliviateError(
            f"{option} {str(target)!r}: cannot write in {str(target.parent)!r} "
            f"({exc.strerror or exc}); choose a writable folder"
        ) from None
    return target


#: commands whose ``--json`` used to take a path (now ``--out``)
_JSON_PATH_COMMANDS = ("learn", "forget")


def rewrite_legacy_args(args: list[str]) -> list[str]:
    """``obliviate learn|forget --json PATH`` (the old form) becomes ``--out PATH`` with a
    deprecation note; ``--json`` followed by an option or nothing is the flag. Both commands
    take no positional argument, so a word after ``--json`` can only be the old path."""
    if not args or args[0] not in _JSON_PATH_COMMANDS:
        return args
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("--json="):
            deprecated("--json PATH", "--out PATH")
            out += ["--out", a.split("=", 1)[1]]
        elif a == "--json" and i + 1 < len(args) and not args[i + 1].startswith("-"):
            deprecated("--json PATH", "--out PATH")
            out += ["--out", args[i + 1]]
            i += 1
        elif a == "--":
            out += args[i:]
            break
        else:
            out.append(a)
        i += 1
    return out


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Name ``path`` in an :class:`OSError` raised while writing it (a full disk's ``write``
    error carries no file name), so the CLI's one-line error says which file failed."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def console(*, quiet: bool = False, stderr: bool = False) -> Any:
    """A rich console that never cuts a table: the terminal's width on a terminal, otherwise
    wide enough (200 columns) that piped or logged tables keep every cell."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, quiet=quiet, width=width)


def emit_json(obj: Any) -> None:
    """The result as one JSON document on stdout (NaN becomes null; numpy/torch values plain)."""
    import json

    from obliviate.io import jsonable

    sys.stdout.write(json.dumps(jsonable(obj), indent=2, sort_keys=True) + "\n")


def _coerce(key: str, text: str, annotation: Any, owner: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        errors = []
        for a in args:
            try:
                return _coerce(key, text, a, owner)
            except ObliviateError as exc:
                errors.append(str(exc))
        raise ObliviateError(errors[0] if errors else f"{owner}: cannot parse {key}={text!r}")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if text not in [str(c) for c in choices]:
            raise ObliviateError(
                f"{owner}: {key}={text!r} must be one of {', '.join(map(str, choices))}"
            )
        return next(c for c in choices if str(c) == text)
    if origin in (tuple, list):
        inner = typing.get_args(annotation)[0] if typing.get_args(annotation) else str
        parts = [p for p in text.split(",") if p.strip()]
        return tuple(_coerce(key, p.strip(), inner, owner) for p in parts)
    if annotation is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ObliviateError(f"{owner}: {key}={text!r} must be true or false")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise ObliviateError(f"{owner}: {key}={text!r} must be an integer") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ObliviateError(f"{owner}: {key}={text!r} must be a number") from None
    return text


def parse_sets(
    cls: Any, pairs: list[str] | None, *, exclude: tuple[str, ...] = (), option: str = "--set"
) -> dict[str, Any]:
    """Turn ``["key=value", ...]`` into keyword-only arguments of ``cls`` (a class: its
    constructor; or a function), typed by its annotations. Unknown keys (and ``exclude``-d ones)
    and values of the wrong type raise :class:`ObliviateError`."""
    # a class: read its constructor's signature (the class itself, not an instance)
    target = cls.__init__ if isinstance(cls, type) else cls  # type: ignore[misc]
    hints = typing.get_type_hints(target)
    params = {
        p.name
        for p in inspect.signature(target).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in exclude
    }
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ObliviateError(f"{option} {pair!r}: expected key=value")
        if key not in params:
            valid = ", ".join(sorted(params)) or "(none)"
            raise ObliviateError(f"{cls.__name__} has no parameter {key!r}; valid: {valid}")
        out[key] = _coerce(key, value.strip(), hints.get(key, str), cls.__name__)
    return out


SEED_LIMIT = 2**32
"""Seeds are integers ``0 <= seed < 2**32`` (what numpy's and torch's generators accept)."""

MAX_SEEDS = 10_000
"""The most seeds one ``--seeds`` list or range may name (docs/cli.md)."""


def check_seed(option: str, value: Any) -> int:
    """``value`` as a seed, or an :class:`ObliviateError` naming it and the valid range."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise ObliviateError(
            f"{option} {value!r} is not a valid seed; give an integer in 0..{SEED_LIMIT - 1}"
        )
    return value


def _seed_callback(ctx: Any, param: Any, value: Any) -> Any:
    """Checks a ``--seed`` value while the command line is parsed (before any work)."""
    if value is not None:
        check_seed("--seed", value)
    return value


def seed_option(default: int | None = 0, help: str = "the run's seed") -> Any:
    """``--seed N``: a seed in ``0..2**32-1``, checked before any work."""
    return typer.Option(default, "--seed", help=help, callback=_seed_callback)


def parse_seeds(seed: int, seeds: str | None) -> list[int]:
    """``--seeds 0,1,2`` (or an inclusive range ``0-4``) overrides ``--seed``.

    Seeds are integers in ``0 <= s < 2**32`` without repeats (a repeated seed would count one
    run twice in a mean ± std), at most :data:`MAX_SEEDS` of them; anything else raises
    :class:`ObliviateError`.
    """
    if seeds is None:
        return [check_seed("--seed", seed)]
    hint = f"give integers in 0..{SEED_LIMIT - 1} like 0,1,2 or a range like 0-4"
    text = seeds.strip()
    try:
        is_range = "-" in text.lstrip("-") and "," not in text
        if is_range:
            lo_text, _, hi_text = text.lstrip("-").partition("-")
            lo = int(lo_text) * (-1 if text.startswith("-") else 1)
            hi = int(hi_text)
            bounds = [lo, hi]
            count = hi - lo + 1
        else:
            bounds = [int(p) for p in text.split(",")]
            count = len(bounds)
    except ValueError:
        raise ObliviateError(f"--seeds {seeds!r}: {hint}") from None
    if is_range and count < 1:
        raise ObliviateError(f"--seeds {seeds!r}: the range {lo}-{hi} is empty; {hint}")
    bad = next((s for s in bounds if not 0 <= s < SEED_LIMIT), None)
    if bad is not None:
        raise ObliviateError(f"--seeds {seeds!r}: seed {bad} is out of range; {hint}")
    if count > MAX_SEEDS:
        raise ObliviateError(
            f"--seeds {seeds!r} names {count} seeds; at most {MAX_SEEDS} per command"
        )
    out = list(range(bounds[0], bounds[1] + 1)) if is_range else bounds
    if len(set(out)) != len(out):
        dup = next(s for s in out if out.count(s) > 1)
        raise ObliviateError(f"--seeds {seeds!r}: seed {dup} appears twice; give each seed once")
    return out


def parse_int_tuple(option: str, text: str) -> tuple[int, ...]:
    """``"100,100"`` -> ``(100, 100)``; an empty string gives ``()``."""
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ObliviateError(
            f"{option} {text!r}: give comma-separated integers like 100,100"
        ) from None


def parse_ids_option(text: str | None, file: Path | None) -> list[int]:
    """The ids of ``--ids 1,2,3`` or ``--ids-file FILE`` (exactly one of them), as ints."""
    from obliviate.data.forget_sets import parse_ids, read_id_file

    if (text is None) == (file is None):
        raise ObliviateError("give exactly one of --ids 1,2,3 or --ids-file FILE")
    ids = read_id_file(file) if file is not None else parse_ids(text or "")
    return [int(i) for i in ids.tolist()]


# ---- the experiment commands' loop: runs (specs x seeds) -> groups -> tables -> result -------


def check_run_options(seed: int, seeds: str | None, out: Any, threads: int) -> list[int]:
    """The options every experiment command (``learn``, ``lifecycle``, ``continual-forget``)
    checks before any work: the seed list (:func:`parse_seeds`), the ``--out`` target and
    ``--threads``. Returns the seed list."""
    seed_list = parse_seeds(seed, seeds)
    if out is not None:
        check_out_target(out)
    if threads < 1:
        raise ObliviateError(f"--threads must be >= 1, got {threads}")
    return seed_list


def run_groups(
    jobs: list[tuple[str, Any]],
    *,
    aggregate: Any,
    show: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run an experiment command's runs and print one summary per group.

    ``jobs``: ``(group label, run)`` pairs in run order, ``run()`` returning one run's result
    (a JSON-ready dict; specs x seeds, built by the command). Results are grouped by label (in
    first-seen order); ``aggregate(results)`` summarises a group (mean ± std over its seeds) and
    ``show(label, results, summary)`` prints it (a table). Returns ``(every result in run
    order, {label: summary})``.
    """
    results: list[dict[str, Any]] = []
    groups: dict[str, list[dict[str, Any]]] = {}
    for label, job in jobs:
        res = job()
        results.append(res)
        groups.setdefault(label, []).append(res)
    summary = {label: aggregate(rs) for label, rs in groups.items()}
    for label, rs in groups.items():
        show(label, rs, summary[label])
    return results, summary


def emit_result(payload: Any, *, as_json: bool, out: Any, notes: Any) -> None:
    """The command's result: one JSON document on stdout with ``--json``, and the file of
    ``--out`` (written atomically; ``notes`` prints ``wrote FILE``)."""
    from obliviate.io import write_json_atomic

    if as_json:
        emit_json(payload)
    if out is not None:
        with writing(out):
            where = write_json_atomic(check_out_target(out), payload)
        notes.print(f"wrote {where}")


def seeds_text(seed_list: list[int]) -> str:
    """``0,1,2``: how titles name the seeds of a run."""
    return ",".join(map(str, seed_list))
