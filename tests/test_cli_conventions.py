"""One CLI convention for every command (issue 17, docs/cli.md): ``--json`` is a flag, ``--out``
(``-o``) the one option that writes a result file, old names hidden but working with a note,
``--seeds`` beside ``--seed``, ``--quiet`` on every command, every ``--seed`` checked (0 <= seed < 2**32);
tables never cut when piped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer.main

from obliviate.cli._common import resolve_out, rewrite_legacy_args
from obliviate.cli.main import build_app, main
from obliviate.errors import ObliviateError


def _commands() -> list[tuple[str, object]]:
    """Every leaf command of the CLI as ``("shard forget", click command)``."""
    root = typer.main.get_command(build_app())
    out: list[tuple[str, object]] = []

    def walk(prefix: str, cmd: object) -> None:
        if hasattr(cmd, "commands"):  # a group
            for name, sub in cmd.commands.items():  # type: ignore[attr-defined]
                walk(f"{prefix} {name}".strip(), sub)
        else:
            out.append((prefix, cmd))

    walk("", root)
    return out


COMMANDS = _commands()


def _options(cmd: object) -> dict[str, object]:
    return {o: p for p in cmd.params for o in getattr(p, "opts", [])}  # type: ignore[attr-defined]


def test_the_commands_were_found():
    names = {n for n, _ in COMMANDS}
    assert {"learn", "forget", "events", "shard train", "shard status", "llm forget"} <= names


@pytest.mark.parametrize(("name", "cmd"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_one_meaning_per_option(name, cmd):
    opts = _options(cmd)
    if "--json" in opts:  # a flag everywhere, never a path
        assert opts["--json"].is_flag, f"{name}: --json must be a flag"  # type: ignore[attr-defined]
    if "--out" in opts:
        assert "-o" in opts, f"{name}: --out has the short form -o"
    if "--output" in opts:  # only as the hidden, deprecated name of --out
        assert opts["--output"].hidden and "--out" in opts, name  # type: ignore[attr-defined]
    if "--seeds" in opts:
        assert "--seed" in opts, f"{name}: --seeds comes with --seed"
    if "--quiet" in opts:
        assert "-q" in opts and opts["--quiet"].is_flag, name  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "cmd"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_has_quiet(name, cmd):
    """One convention for every command (issue 17 item 8): ``--quiet``/``-q`` everywhere; a
    new command without it fails here (use ``obliviate.cli._common.quiet_option``)."""
    opts = _options(cmd)
    assert "--quiet" in opts and "-q" in opts, f"{name}: add quiet: bool = _c.quiet_option()"
    assert opts["--quiet"].is_flag  # type: ignore[attr-defined]


def test_groups_with_their_own_work_have_quiet_too():
    """``obliviate serve`` runs the service itself (its group callback takes options)."""
    root = typer.main.get_command(build_app())
    serve = root.commands["serve"]  # type: ignore[attr-defined]
    assert "--quiet" in _options(serve) and "-q" in _options(serve)


SEEDED = [(n, c) for n, c in COMMANDS if "--seed" in _options(c)]


def test_the_seeded_commands_were_found():
    names = {n for n, _ in SEEDED}
    assert {"learn", "forget", "events", "tune", "demo", "shard train", "llm forget"} <= names


@pytest.mark.parametrize("value", ["-5", "4294967296"])
@pytest.mark.parametrize(("name", "cmd"), SEEDED, ids=[n for n, _ in SEEDED])
def test_every_seed_option_refuses_an_invalid_seed(tmp_path, capsys, name, cmd, value):
    """``0 <= seed < 2**32`` on every command, checked before any work (no store created)."""
    args = [*name.split(), "--seed", value]
    if "--store" in _options(cmd):
        args += ["--store", str(tmp_path / "store")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == (
        f"error: --seed {value} is not a valid seed; give an integer in 0..4294967295"
    ), err
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("name", ["learn", "forget", "events", "llm forget"])
def test_experiment_commands_have_the_common_options(name):
    opts = _options(dict(COMMANDS)[name])
    assert {"--json", "--out", "--seed", "--seeds", "--quiet"} <= set(opts), name


def test_old_json_path_becomes_out_with_a_note(capsys):
    assert rewrite_legacy_args(["learn", "--json", "r.json", "-q"]) == [
        "learn",
        "--out",
        "r.json",
        "-q",
    ]
    assert rewrite_legacy_args(["forget", "--json=r.json"]) == ["forget", "--out", "r.json"]
    assert "deprecated" in capsys.readouterr().err
    for flag_use in (
        ["learn", "--json"],
        ["learn", "--json", "--quiet"],
        ["shard", "status", "--json", "x"],
    ):
        assert rewrite_legacy_args(flag_use) == flag_use
    assert capsys.readouterr().err == ""


def test_out_and_its_old_name_together_are_refused(capsys):
    assert resolve_out(None, None) is None
    assert resolve_out("a", None) == "a"
    assert resolve_out(None, "b") == "b" and "--output is deprecated" in capsys.readouterr().err
    with pytest.raises(ObliviateError, match="give --out only"):
        resolve_out("a", "b")


def test_events_json_and_out(tmp_path, capsys):
    args = ["events", "--epochs", "1", "--limit", "120", "--hidden", "8", "-q"]
    assert main([*args, "--json", "--out", str(tmp_path / "e.json")]) == 0
    out = json.loads(capsys.readouterr().out)  # stdout: the JSON document only
    assert json.loads((tmp_path / "e.json").read_text()) == out
    assert main([*args, "--seeds", "0,1", "--out", str(tmp_path / "e.csv")]) == 0
    rows = (tmp_path / "e.csv").read_text().splitlines()
    assert rows[0] == "seed,id,forgetting_events,never_learned" and len(rows) == 1 + 2 * 120


def test_shard_status_is_a_table_not_cut_when_piped(tmp_path, capsys):
    store = tmp_path / "a-store-folder-with-a-long-name"
    train = ["shard", "train", "--store", str(store), "--shards", "2", "--slices", "1"]
    assert main([*train, "--epochs", "1", "--limit", "200", "--backend", "inline"]) == 0
    capsys.readouterr()
    assert main(["shard", "status", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert not out.lstrip().startswith("{") and "┃ shard" in out
    assert "neighbourhood" in out  # the last column is there
    assert "…" not in out  # no cell cut
    assert main(["shard", "status", "--store", str(store), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["shards"]) == 2
    assert main(["shard", "status", "--store", str(store), "-q"]) == 0  # the result still prints
    out, err = capsys.readouterr()
    assert "┃ shard" in out and err == ""
    assert main(["shard", "verify", "--store", str(store), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


@pytest.mark.slow
def test_a_relative_store_in_another_folder_with_the_warm_pool(tmp_path, monkeypatch, capsys):
    """The local backend keeps its worker pool warm between calls; a pool started in another
    working directory resolved ``store/`` against the old folder (the second train failed)."""
    args = ["shard", "train", "--store", "store/", "--shards", "2", "--slices", "1"]
    args += ["--epochs", "1", "--limit", "200", "--workers", "1"]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        assert main(args) == 0, capsys.readouterr().err
        assert main(["shard", "verify", "--store", "store/"]) == 0
    assert Path(tmp_path / "b" / "store" / "checkpoints").is_dir()
