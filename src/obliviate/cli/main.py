"""The ``obliviate`` command. Sub-commands live in their own modules, listed in ``COMMANDS``.

Each module exposes ``register(app)``. Modules import only light things at top level (typer,
rich, the standard library); torch and friends are imported inside the command functions, so
``obliviate --help`` stays fast.

Bad input (an :class:`~obliviate.errors.ObliviateError` or a usage error) prints one line
``error: ...`` on stderr and exits with code 2; no traceback.
"""

from __future__ import annotations

import importlib
import sys

import typer

try:  # typer >= 0.25 vendors click
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_exc

from obliviate.errors import ObliviateError

COMMANDS: tuple[str, ...] = (
    "obliviate.cli.listing",
    "obliviate.cli.learn",
    "obliviate.cli.demo",
    "obliviate.cli.shard",
    "obliviate.cli.events",
    "obliviate.cli.bench",
    "obliviate.cli.forget",
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    app = build_app()
    try:
        result = app(args=argv, standalone_mode=False)
    except ObliviateError as exc:
        print(f"error: {exc}", file=sys.stderr)
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
