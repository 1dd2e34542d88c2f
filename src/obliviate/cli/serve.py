"""``obliviate serve``: the deletion-request service; ``serve keys|subjects|openapi``.

FastAPI, uvicorn and friends are imported inside the commands (optional extra ``[serve]``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from obliviate.cli import _common as _c
from obliviate.errors import ObliviateError

STORE_HELP = "folder of the shard store"


def _need_serve() -> None:
    try:
        import cryptography  # noqa: F401
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ObliviateError(
            f"the service needs the optional extra: pip install 'obliviate[serve]' ({exc.name} is missing)"
        ) from None


def _ledger_db(store: Path):  # type: ignore[no-untyped-def]
    from obliviate.sharded import ShardedStore

    ShardedStore(store).close()  # a clear error when it is not a store
    from obliviate.serve.auth import connect

    return connect(store / "ledger.sqlite")


def register(app: typer.Typer) -> None:
    serve = typer.Typer(
        help="The deletion-request service over a shard store (HTTP API, worker, receipts).",
        invoke_without_command=True,
    )

    @serve.callback()
    def run(
        ctx: typer.Context,
        store: Path | None = typer.Option(None, "--store", help=STORE_HELP),
        host: str = typer.Option("127.0.0.1", "--host", help="address to bind (loopback default)"),
        port: int = typer.Option(8000, "--port"),
        backend: str = typer.Option(
            "local", "--backend", help="where shards retrain: local (process pool), inline or ray"
        ),
        workers: int | None = typer.Option(None, "--workers", help="parallel retraining workers"),
        batch_window: float = typer.Option(
            2.0, "--batch-window", help="seconds to gather requests into one retraining pass"
        ),
        data_dir: str | None = typer.Option(None, "--data-dir"),
        allow_remote: bool = typer.Option(
            False, "--allow-remote", help="allow a non-loopback --host (use a TLS reverse proxy)"
        ),
        max_ids: int = typer.Option(10_000, "--max-ids", help="ids per deletion request"),
        max_body_bytes: int = typer.Option(1_048_576, "--max-body-bytes"),
        rate: float = typer.Option(
            20.0, "--rate", help="requests per second per API key (0: unlimited)"
        ),
        burst: int = typer.Option(100, "--burst", help="burst size of the per-key rate limit"),
        signing_key: Path | None = typer.Option(
            None,
            "--signing-key",
            help="Ed25519 PEM private key for receipts (default STORE/serve/receipt_signing_key.pem; created if absent)",
        ),
        secure_cookies: bool = typer.Option(
            False, "--secure-cookies", help="mark status-page cookies Secure (behind HTTPS)"
        ),
        log_level: str = typer.Option("info", "--log-level"),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Run the service: ``obliviate serve --store DIR``."""
        if ctx.invoked_subcommand is not None:
            return
        if store is None:
            raise ObliviateError("give --store DIR (a store made by `obliviate shard train`)")
        if batch_window < 0:
            raise ObliviateError(f"--batch-window {batch_window}: give seconds >= 0")
        if not 1 <= port <= 65535:
            raise ObliviateError(f"--port {port}: give a TCP port in 1..65535")
        from obliviate._validation import check_choice
        from obliviate.sharded.backends import BACKENDS

        check_choice("backend", backend, BACKENDS)
        _need_serve()
        from obliviate.serve import ServeConfig
        from obliviate.serve.runner import serve as run_server

        config = ServeConfig(
            store=store,
            backend=backend,
            n_workers=workers,
            data_dir=data_dir,
            batch_window=batch_window,
            max_body_bytes=max_body_bytes,
            max_ids=max_ids,
            rate=rate,
            burst=burst,
            signing_key=signing_key,
            secure_cookies=secure_cookies,
        )
        if quiet and log_level == "info":  # no access log, no startup notes: errors only
            log_level = "error"
        run_server(config, host, port, allow_remote=allow_remote, log_level=log_level)

    keys = typer.Typer(help="API keys: add, list, revoke.", no_args_is_help=True)

    @keys.command("add")
    def keys_add(
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        role: str = typer.Option(..., "--role", help="submit, read or admin"),
        label: str = typer.Option("", "--label", help="who holds the key (shown in keys list)"),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Create a key; it is printed once and only its salted hash is stored."""
        from obliviate.serve.auth import add_key

        db = _ledger_db(store)
        key_id, key = add_key(db, role, label)
        if not quiet:  # the key itself (the result) is printed either way
            print(f"key {key_id} ({role}); store it now, it is not shown again:", file=sys.stderr)
        print(key)

    @keys.command("list")
    def keys_list(
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Key ids, roles, labels and revocation times (never the keys)."""
        from obliviate.serve.auth import list_keys

        print(json.dumps(list_keys(_ledger_db(store)), indent=2))

    @keys.command("revoke")
    def keys_revoke(
        key_id: str = typer.Argument(..., help="the key id (the 8 hex digits after obv_)"),
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Revoke a key (a running server refuses it within 30 s)."""
        from obliviate.serve.auth import revoke_key

        revoke_key(_ledger_db(store), key_id)
        print(f"revoked {key_id}")

    subjects = typer.Typer(help="Data subjects: a subject -> ids mapping.", no_args_is_help=True)

    @subjects.command("import")
    def subjects_import(
        file: Path = typer.Argument(
            ..., help="CSV with columns subject,id or JSON {subject: [ids]}"
        ),
        store: Path = typer.Option(..., "--store", help=STORE_HELP),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Store the mapping (as keyed hashes of the subjects) so requests can name a subject."""
        from obliviate.sharded import ShardedStore
        from obliviate.sharded.subjects import import_subjects, read_mapping

        mapping = read_mapping(file)
        with ShardedStore(store) as st:
            print(json.dumps(import_subjects(st.ledger, mapping)))

    @serve.command("openapi")
    def openapi(
        out: Path | None = typer.Option(
            None, "--out", "-o", help="write the schema to this file (default: stdout)"
        ),
        output: Path | None = typer.Option(None, "--output", hidden=True),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Print (or write) the OpenAPI schema of the service (checked in as docs/openapi.json)."""
        from obliviate.cli._common import check_out_target, resolve_out

        output = resolve_out(out, output)
        if output is not None:
            check_out_target(output)
        _need_serve()
        from obliviate.io import atomic_write_text
        from obliviate.serve.app import openapi_schema

        text = json.dumps(openapi_schema(), indent=2, sort_keys=True) + "\n"
        if output is None:
            sys.stdout.write(text)
        else:
            atomic_write_text(output, text)

    serve.add_typer(keys, name="keys")
    serve.add_typer(subjects, name="subjects")
    app.add_typer(serve, name="serve")
