"""Ed25519 signatures over deletion receipts (RFC 8032, via the ``cryptography`` package).

A signed receipt is a JSON object ``{"document": {...}, "signature": {...}}``. The signed bytes
are the canonical JSON of ``document`` (keys sorted, no spaces, ASCII only: :func:`canonical`),
so anyone holding the service's public key can check a receipt offline, without trusting or
reaching the server (``obliviate receipt verify FILE --key PUB``). ``signature`` holds ``alg``
(``"Ed25519"``), ``key_id`` (the first 16 hex digits of the sha256 of the raw 32-byte public key)
and ``value`` (the 64-byte signature, base64). The document names the same ``key_id``, so a
signature cannot be moved to a document made for another key, and the document names its request,
so a signature cannot be moved to another receipt.

The private key is a PKCS#8 PEM file written with mode 0600; the public key is served as PEM and
as raw base64 at ``GET /v1/receipt-key``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from obliviate.errors import ObliviateError

ALG = "Ed25519"
FORMAT = "obliviate-signed-receipt/1"


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice (readers would disagree on its value)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKeyError(f"duplicate JSON key {k[:40]!r}")
        out[k] = v
    return out


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` that raises :class:`DuplicateKeyError` (a ``ValueError``) when any object
    names a key twice: a signed receipt must read the same to every JSON reader, and
    first-wins and last-wins readers see different values in such a document."""
    return json.loads(text, object_pairs_hook=_no_duplicates)


def canonical(obj: Any) -> bytes:
    """The bytes that are signed: JSON with sorted keys, no whitespace, ASCII escapes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    return hashlib.sha256(_raw(public)).hexdigest()[:16]


def load_or_create_private_key(path: Path) -> Ed25519PrivateKey:
    """Read the PEM private key at ``path``, or create one (mode 0600) if the file is absent."""
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ObliviateError(
                f"receipt signing key {str(path)!r} is not an unencrypted PEM private key ({exc})"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ObliviateError(f"receipt signing key {str(path)!r} is not an Ed25519 key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
        f.flush()
        os.fsync(f.fileno())
    return key


def public_key_info(public: Ed25519PublicKey) -> dict[str, str]:
    """What ``GET /v1/receipt-key`` answers: alg, key_id, PEM and raw base64 of the public key."""
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return {
        "alg": ALG,
        "key_id": key_id(public),
        "public_key_pem": pem,
        "public_key_b64": base64.b64encode(_raw(public)).decode(),
    }


def sign(document: dict[str, Any], private: Ed25519PrivateKey) -> dict[str, Any]:
    """``{"document", "signature"}`` for ``document`` (which must carry this key's ``key_id``)."""
    kid = key_id(private.public_key())
    if document.get("key_id") != kid:
        raise ValueError("the document must name the signing key's key_id")
    value = base64.b64encode(private.sign(canonical(document))).decode()
    return {"document": document, "signature": {"alg": ALG, "key_id": kid, "value": value}}


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from PEM text, from raw base64 (32 bytes), or from the JSON that
    ``GET /v1/receipt-key`` answers."""
    text = text.strip()
    if text.startswith("{"):
        try:
            text = str(json.loads(text)["public_key_pem"]).strip()
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ObliviateError(
                "the key file is JSON but not the answer of GET /v1/receipt-key"
            ) from None
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ObliviateError(
            f"the public key is neither PEM nor base64 of 32 raw bytes ({exc})"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ObliviateError("the public key is not an Ed25519 key")
    return key


def verify(signed: Any, public: Ed25519PublicKey) -> tuple[bool, str]:
    """Check a signed receipt offline: ``(True, "valid")`` or ``(False, the reason)``.

    ``signed`` is the decoded receipt, or its JSON text (``str`` or ``bytes``), which is then
    parsed strictly: a receipt whose JSON names any key twice is invalid, since an already
    decoded ``dict`` has lost the duplicates, give the text when it comes from elsewhere."""
    if isinstance(signed, str | bytes):
        try:
            signed = loads_strict(signed)
        except DuplicateKeyError as exc:
            return False, f"the receipt is ambiguous JSON: {exc}"
        except (ValueError, UnicodeDecodeError):
            return False, "the receipt is not JSON"
    if not isinstance(signed, dict) or not {"document", "signature"} <= set(signed):
        return False, "not a signed receipt (needs 'document' and 'signature')"
    document, sig = signed["document"], signed["signature"]
    if not isinstance(document, dict) or not isinstance(sig, dict):
        return False, "'document' and 'signature' must be JSON objects"
    if sig.get("alg") != ALG:
        return False, f"signature algorithm {sig.get('alg')!r} is not {ALG}"
    kid = key_id(public)
    if sig.get("key_id") != kid or document.get("key_id") != kid:
        return False, f"signed by key {sig.get('key_id')!r}, not by the given key {kid!r}"
    try:
        value = base64.b64decode(str(sig.get("value", "")), validate=True)
        public.verify(value, canonical(document))
    except (InvalidSignature, binascii.Error, ValueError):
        return False, "the signature does not match the document (altered, or signed elsewhere)"
    return True, "valid"
