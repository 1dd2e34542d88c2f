"""``obliviate receipt verify FILE --key PUB``: check a signed deletion receipt offline."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from obliviate.cli import _common as _c
from obliviate.errors import ObliviateError


def register(app: typer.Typer) -> None:
    receipt = typer.Typer(help="Signed deletion receipts.", no_args_is_help=True)

    @receipt.command("verify")
    def verify(
        file: Path = typer.Argument(..., help="signed receipt (JSON from GET .../receipt)"),
        key: Path = typer.Option(
            ...,
            "--key",
            help="the service's public key: PEM, raw base64, or the JSON of GET /v1/receipt-key",
        ),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Exit 0 and print 'valid' when the signature checks; exit 1 and say why when not."""
        try:
            from obliviate.serve import signing
        except ImportError:
            raise ObliviateError(
                "verifying receipts needs the cryptography package: pip install 'obliviate[serve]'"
            ) from None
        for path in (file, key):
            if not path.is_file():
                raise ObliviateError(f"{str(path)!r} does not exist")
        try:
            signed = signing.loads_strict(file.read_bytes())
        except signing.DuplicateKeyError as exc:
            print(f"INVALID: the receipt is ambiguous JSON: {exc}")
            raise typer.Exit(1) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ObliviateError(f"{str(file)!r} is not JSON: {exc}") from None
        public = signing.load_public_key(key.read_text())
        ok, reason = signing.verify(signed, public)
        if not ok:
            print(f"INVALID: {reason}")
            raise typer.Exit(1)
        doc = signed["document"]
        rid = doc.get("receipt", {}).get("request_id")
        print(f"valid: receipt of request {rid} signed by key {signed['signature']['key_id']}")

    app.add_typer(receipt, name="receipt")
