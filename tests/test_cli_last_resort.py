"""The CLI's last-resort handler: any unexpected exception is one line (exit 1), an OSError one
line naming the file (exit 2), and ``--debug`` lets the traceback through."""

from __future__ import annotations

import pytest
import typer

from obliviate.cli import main as cli_main


def _app_raising(exc: BaseException) -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def boom(n: int = 1) -> None:
        raise exc

    @app.command()
    def other() -> None:  # a second command keeps typer from collapsing to a single command
        pass

    return app


def test_unexpected_exception_is_one_line_exit_1(monkeypatch, capsys):
    monkeypatch.setattr(cli_main, "build_app", lambda: _app_raising(RuntimeError("bad\nstate")))
    assert cli_main.main(["boom"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unexpected failure in `obliviate boom`: RuntimeError: bad state" in err
    assert "--debug" in err


def test_os_error_names_the_file_exit_2(monkeypatch, capsys):
    exc = PermissionError(13, "Permission denied", "store/ledger.sqlite")
    monkeypatch.setattr(cli_main, "build_app", lambda: _app_raising(exc))
    assert cli_main.main(["boom"]) == 2
    err = capsys.readouterr().err
    assert err == "error: cannot access store/ledger.sqlite: Permission denied\n"


def test_debug_lets_the_traceback_through(monkeypatch):
    monkeypatch.setattr(cli_main, "build_app", lambda: _app_raising(RuntimeError("bad")))
    with pytest.raises(RuntimeError, match="bad"):
        cli_main.main(["boom", "--debug"])


def test_warnings_are_one_line_and_quiet_silences_them(capsys):
    """A Python warning printed its file, line number and source line (two lines) on stderr,
    even under --quiet."""
    from obliviate.cli.main import main

    args = ["forget", "--forget", "random:0", "--method", "finetune", "--epochs", "1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "random:0" in line]
    assert warned and all(line.startswith("warning: ") for line in warned), err
    assert main([*args, "-q"]) == 0
    assert "warning" not in capsys.readouterr().err
