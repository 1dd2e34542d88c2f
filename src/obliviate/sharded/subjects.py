"""Data subjects: a subject -> ids mapping stored in a shard store, so that a deletion request can
name a person (or a source) instead of sample ids.

The mapping is ingested with the training data (``obliviate shard train --subjects FILE`` or
``obliviate serve subjects import``). Only a keyed hash of each subject is stored, never the
subject itself: ``subject_sha256 = sha256("obliviate-subject/1" \\0 salt \\0 subject)`` where
``salt`` is 32 random bytes drawn once per store (ledger meta ``subject_salt``). The operator can
hand the salt to a data subject, who can then check that a receipt names them; without it, the
hash of a name or an e-mail address cannot be reversed by guessing.

Files
-----
- CSV with a header naming the columns ``subject`` and ``id`` (one row per sample; other columns
  are ignored), or
- JSON: an object ``{"subject": [id, ...], ...}``.

Every id must be a sample of the store (unknown ids raise, naming them). Importing again adds
pairs (the table is a set); the import is one transaction with a ``subjects_imported`` event in
the ledger's hash chain.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
from pathlib import Path
from typing import Any

from obliviate.errors import ObliviateError
from obliviate.sharded.ledger import Ledger

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS subjects (subject_sha256 TEXT NOT NULL, id INTEGER NOT NULL, "
    "PRIMARY KEY (subject_sha256, id))"
)
MAX_SUBJECT_CHARS = 512


def _salt(ledger: Ledger) -> str:
    salt = ledger.get_meta("subject_salt")
    if salt is None:
        raise ObliviateError(
            "this store has no data subjects; import a mapping first "
            "(`obliviate serve subjects import --store DIR FILE`)"
        )
    return str(salt)


def subject_hash(ledger: Ledger, subject: str) -> str:
    """The keyed sha256 (hex) of ``subject`` in this store (see the module docstring)."""
    return _hash(_salt(ledger), subject)


def _hash(salt: str, subject: str) -> str:
    text = f"obliviate-subject/1\0{salt}\0{subject}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def subject_ids(ledger: Ledger, subject: str) -> tuple[str, list[int]]:
    """``(subject_sha256, sorted ids)`` of a subject; an unknown subject has no ids (``[]``)."""
    if ledger.get_meta("subject_salt") is None:
        return "", []
    digest = subject_hash(ledger, subject)
    rows = ledger.db.execute(
        "SELECT id FROM subjects WHERE subject_sha256 = ? ORDER BY id", (digest,)
    ).fetchall()
    return digest, [int(r[0]) for r in rows]


def read_mapping(path: Path) -> dict[str, list[int]]:
    """Read a subject -> ids file (CSV with ``subject`` and ``id`` columns, or a JSON object)."""
    if not path.is_file():
        raise ObliviateError(f"subjects file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    mapping: dict[str, list[int]] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ObliviateError(f"subjects file {str(path)!r} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ObliviateError(
                f"subjects file {str(path)!r} must hold a JSON object {{subject: [ids]}}"
            )
        for subject, ids in data.items():
            if not isinstance(ids, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids
            ):
                raise ObliviateError(
                    f"subjects file {str(path)!r}: the ids of a subject must be a list of integers"
                )
            mapping.setdefault(subject, []).extend(ids)
    else:
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None or not {"subject", "id"} <= set(reader.fieldnames):
            raise ObliviateError(
                f"subjects file {str(path)!r} needs a header with columns 'subject' and 'id'"
            )
        for line, row in enumerate(reader, start=2):
            try:
                i = int(row["id"])
            except (TypeError, ValueError):
                raise ObliviateError(
                    f"subjects file {str(path)!r} line {line}: id {row['id']!r} is not an integer"
                ) from None
            mapping.setdefault(row["subject"] or "", []).append(i)
    return mapping


def check_mapping(mapping: dict[str, list[int]], trained_ids: Any) -> None:
    """Raise :class:`ObliviateError` unless every subject is 1..MAX_SUBJECT_CHARS characters
    and every id is one of ``trained_ids`` (any iterable of ints: the store's samples, or the
    training split before a store exists, so that ``shard train --subjects`` refuses a bad
    file before it trains)."""
    for subject in mapping:
        if not subject or len(subject) > MAX_SUBJECT_CHARS:
            raise ObliviateError(
                f"subject {subject[:40]!r}: a subject is 1 to {MAX_SUBJECT_CHARS} characters"
            )
    known = {int(i) for i in trained_ids}
    unknown = sorted({int(i) for ids in mapping.values() for i in ids} - known)
    if unknown:
        shown = ", ".join(map(str, unknown[:10]))
        raise ObliviateError(
            f"{len(unknown)} id(s) of the subjects file were never trained on in this store: {shown}"
        )


def import_subjects(ledger: Ledger, mapping: dict[str, list[int]]) -> dict[str, int]:
    """Store ``mapping`` (subject -> ids of this store) as keyed hashes, in one transaction.

    Returns ``{"n_subjects", "n_pairs"}``. Raises :class:`ObliviateError` for an empty or too long
    subject, or ids the store never trained on (nothing is stored then)."""
    wanted = sorted({int(i) for ids in mapping.values() for i in ids})
    states = ledger.sample_states(wanted)
    check_mapping(mapping, [i for i in wanted if i in states])
    with ledger.transaction():
        ledger.db.execute(SCHEMA)
        salt = ledger.get_meta("subject_salt")
        if salt is None:
            salt = secrets.token_hex(32)
            ledger.set_meta("subject_salt", salt)
        pairs = sorted({(_hash(salt, s), int(i)) for s, ids in mapping.items() for i in ids})
        ledger.db.executemany("INSERT OR IGNORE INTO subjects VALUES (?, ?)", pairs)
        digest = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()
        ledger.append_event(
            "subjects_imported",
            {"n_subjects": len(mapping), "n_pairs": len(pairs), "pairs_sha256": digest},
        )
    return {"n_subjects": len(mapping), "n_pairs": len(pairs)}
