"""The ``obliviate`` command. Sub-commands live in their own modules, listed in ``COMMANDS``.

Each module exposes ``register(app)``. Modules import only light things at top level (typer,
rich, the standard library); torch and friends are imported inside the command functions, so
``obliviate --help`` stays fast.

Bad input (an :class:`~obliviate.errors.ObliviateError` or a usage error) prints one line
``error: ...`` on stderr and exits with code 2; no traceback. A file the command cannot read or
write (``OSError``: missing, read-only, disk full) is one line naming the file, exit 2. Anything
else is a bug: one line saying what failed and where to report it, exit 1. ``--debug`` anywhere on
the command line (or ``OBLIVIATE_DEBUG=1``) lets every exception through with its traceback.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

import typer

try:  # typer >= 0.25 vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exc  # type: ignore[no-redef]  # the same module

from obliviate.errors import ObliviateError

COMMANDS: tuple[str, ...] = (
    "obliviate.cli.listing",
    "obliviate.cli.learn",
    "obliviate.cli.demo",
    "obliviate.cli.shard",
    "obliviate.cli.events",
    "obliviate.cli.bench",
    "obliviate.cli.forget",
    "obliviate.cli.tune",
    "obliviate.cli.serve",
    "obliviate.cli.receipt",
    "obliviate.cli.llm",
    "obliviate.cli.lifecycle",
    "obliviate.cli.continual_forget",
)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="obliviate",
        help="Control what a neural network remembers and what it forgets, and prove both.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def _root() -> None:
        """Control what a neural network remembers and what it forgets, and prove both."""

    for module in COMMANDS:
        importlib.import_module(module).register(app)
    return app


REPORT_URL = "the project's issue tracker"

#: errno values of a full disk, a file-size limit, a quota
_NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
NO_SPACE_HINT = (
    "the disk is full (or a file-size limit or quota was hit); free space and rerun the "
    "command (a shard store completes interrupted work with `obliviate shard resume`)"
)


def _store_of(args: list[str]) -> str:
    """`` in store DIR`` when the command names a ``--store`` (a write error inside a store
    carries no file name), else ``""``."""
    for i, a in enumerate(args):
        if a == "--store" and i + 1 < len(args):
            return f" in store {args[i + 1]}"
        if a.startswith("--store="):
            return f" in store {a.split('=', 1)[1]}"
    return ""


def _is_sqlite_no_space(exc: BaseException) -> bool:
    """SQLite's ``database or disk is full`` / ``disk I/O error`` (what a full disk or a
    file-size limit gives while the ledger is written)."""
    if type(exc).__module__ != "sqlite3" or type(exc).__name__ != "OperationalError":
        return False
    text = str(exc).lower()
    return "disk is full" in text or "disk i/o error" in text


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("OBLIVIATE_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    if debug:
        return _main(args)
    _one_line_warnings(quiet="-q" in args or "--quiet" in args)
    try:
        return _main(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else _store_of(args)
        if exc.errno in _NO_SPACE:
            print(
                f"error: cannot write{where}: {exc.strerror or exc}; {NO_SPACE_HINT}",
                file=sys.stderr,
            )
        else:
            print(f"error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # last resort: never a bare traceback
        if _is_sqlite_no_space(exc):  # SQLite reports a full disk as its own error
            print(
                f"error: cannot write the ledger{_store_of(args)}: {exc}; {NO_SPACE_HINT}",
                file=sys.stderr,
            )
            return 2
        if _is_sqlite_damage(exc):  # a byte-flipped or truncated ledger met outside verify
            print(
                f"error: the ledger{_store_of(args)} is damaged (SQLite: {exc}); nothing was "
                "written. `obliviate shard verify --store DIR` reports what it finds; restore "
                "the store from a backup",
                file=sys.stderr,
            )
            return 2
        command = next((a for a in args if not a.startswith("-")), "obliviate")
        detail = " ".join(str(exc).split())[:300]  # one line, bounded
        print(
            f"error: unexpected failure in `obliviate {command}`: {type(exc).__name__}: {detail} "
            f"(this is a bug: rerun with --debug for the traceback and report it on "
            f"{REPORT_URL})",
            file=sys.stderr,
        )
        return 1


def _one_line_warnings(*, quiet: bool) -> None:
    """Python warnings print as one ``warning: ...`` line on stderr (not the file, line number
    and source line); ``--quiet`` silences them (``--debug`` keeps Python's own format)."""
    import warnings

    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)

    warnings.showwarning = show
    if quiet:
        warnings.simplefilter("ignore")


def _is_sqlite_damage(exc: BaseException) -> bool:
    """SQLite's own report of a damaged database file (SQLITE_CORRUPT / SQLITE_NOTADB)."""
    import sqlite3

    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    return (
        name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
        or "malformed" in text
        or ("not a database" in text)
    )


def _main(args: list[str]) -> int:
    from obliviate.cli._common import rewrite_legacy_args

    app = build_app()
    try:
        result = app(args=rewrite_legacy_args(args), standalone_mode=False)
    except ObliviateError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        print(f"error: {'; '.join(lines)}", file=sys.stderr)  # always one line
        return 2
    except click_exc.ClickException as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return 2
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except typer.Exit as exc:
        return int(exc.exit_code)
    return int(result) if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
