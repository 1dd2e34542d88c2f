"""Crash-safe file writes (temp file in the same folder, fsync, rename) and JSON normalisation.

The one module for both: every result file obliviate writes goes through
:func:`atomic_write_bytes` (or :func:`write_json_atomic` / :func:`atomic_save_torch` on top of
it), and every result dict is made JSON-able by :func:`jsonable`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from obliviate.errors import ObliviateError


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting (briefly) and restoring it
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp creates 0600; give the file the mode open() would (0666 less the umask), so
        # a team sharing a results folder or a store can read what each other wrote
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename durable
        dfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode())


def markdown_markers(name: str) -> tuple[str, str]:
    """The start and end comments (``<!-- NAME:start -->``, ``<!-- NAME:end -->``) that delimit
    the generated section ``name`` of a Markdown file."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def _section_span(text: str, name: str, path: str | os.PathLike[str]) -> tuple[int, int] | None:
    """Where section ``name`` of ``text`` starts and ends (markers included); None when neither
    marker is there. Damaged markers (one without the other, either twice, the end before the
    start) raise :class:`ObliviateError`: rewriting or appending could delete text."""
    start, end = markdown_markers(name)
    n_start, n_end = text.count(start), text.count(end)
    if not n_start and not n_end:
        return None
    at, stop = text.find(start), text.find(end)
    if (n_start, n_end) != (1, 1) or stop < at:
        raise ObliviateError(
            f"{str(path)!r}: the markers of section {name!r} are damaged ({n_start} start, "
            f"{n_end} end{', end before start' if (n_start, n_end) == (1, 1) else ''}); "
            f"leave exactly one {start} followed by one {end}, or remove both"
        )
    return at, stop + len(end)


def markdown_out_problem(path: str | os.PathLike[str], name: str) -> str | None:
    """Why ``path`` cannot take the generated Markdown section ``name`` (None when it can): a
    folder, a path under a file, a missing folder, a file that is not UTF-8 or whose markers of
    ``name`` are damaged. For scripts to check before their work."""
    target = Path(path)
    if target.is_dir():
        return f"{str(path)!r} is a folder; give a Markdown file"
    parent = target.parent
    if parent.exists() and not parent.is_dir():
        return f"{str(parent)!r} is a file; give a path in a folder"
    if not parent.exists():
        return f"the folder {str(parent)!r} does not exist; create it first"
    if target.exists():
        try:
            _section_span(target.read_bytes().decode().replace("\r\n", "\n"), name, path)
        except UnicodeDecodeError:
            return f"{str(path)!r} is not UTF-8 text; give a Markdown file (or a new path)"
        except ObliviateError as exc:
            return str(exc)
    return None


def write_markdown_section(path: str | os.PathLike[str], lines: list[str], name: str) -> None:
    """Replace the part of the Markdown file ``path`` between the markers of ``name``
    (:func:`markdown_markers`; the markers are kept) by ``lines``, leaving every other byte as it
    was; append the section, markers included, when neither marker is there (or no file is).
    Damaged markers (one without the other, either twice, the end before the start) raise
    :class:`ObliviateError` and change nothing: rewriting would delete text. The file is replaced atomically (never left
    half-written), keeps its permissions and CRLF line ends, and a symbolic link is followed.
    Raises :class:`ObliviateError` for a file that is not UTF-8. Used by the benchmark scripts
    that regenerate one table of a document that also holds others (``docs/unlearning.md``)."""
    start, end = markdown_markers(name)
    target = Path(path).resolve()  # through a symbolic link: the file it names is rewritten
    try:
        raw = target.read_bytes() if target.exists() else b""
        text = raw.decode()
    except UnicodeDecodeError:
        raise ObliviateError(
            f"{str(path)!r} is not UTF-8 text; give a Markdown file (or a new path)"
        ) from None
    newline = "\r\n" if "\r\n" in text else "\n"  # keep a CRLF file CRLF
    text = text.replace("\r\n", "\n")
    mode = target.stat().st_mode & 0o7777 if target.exists() else None
    block = f"{start}\n" + "\n".join(lines) + f"\n{end}"
    span = _section_span(text, name, path)
    if span is not None:
        text = text[: span[0]] + block + text[span[1] :]
    elif text:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        text = block + "\n"
    atomic_write_text(target, text.replace("\n", newline))
    if mode is not None:
        os.chmod(target, mode)  # the file keeps its permissions


def jsonable(value: Any) -> Any:
    """``value`` made JSON-able, recursively: mappings -> dicts with str keys, tuples and arrays
    -> lists, NumPy and torch scalars -> Python numbers, NaN and +-inf -> ``None``; anything else
    -> its ``repr``. The one normalisation every result dict goes through."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (bool, int, float, str)):
        return jsonable(value.tolist())  # numpy arrays and scalars, torch tensors
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return repr(value)


def _json_default(obj: Any) -> Any:
    """JSON for what :func:`json.dumps` cannot write: tensors and arrays, NumPy scalars, paths."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, allow_nan: bool = False) -> Path:
    """Write ``data`` as indented JSON (one trailing newline) to ``path`` atomically (see
    :func:`atomic_write_bytes`); returns the path. Tensors and arrays are written as lists.
    ``allow_nan=False`` (the default) refuses NaN and infinities with :class:`ValueError`, since
    results carry ``null`` for undefined figures (:func:`jsonable`); ``True`` writes them as
    JavaScript's ``NaN`` / ``Infinity``."""
    target = Path(path).expanduser()
    text = json.dumps(data, indent=2, default=_json_default, allow_nan=allow_nan) + "\n"
    atomic_write_text(target, text)
    return target


def atomic_save_torch(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj)`` to ``path`` atomically (serialised in memory, then
    :func:`atomic_write_bytes`)."""
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


__all__ = [
    "atomic_save_torch",
    "atomic_write_bytes",
    "atomic_write_text",
    "jsonable",
    "write_json_atomic",
]


def state_sha256(state: Mapping[str, Any]) -> str:
    """sha256 over a state dict's names, dtypes, shapes and tensor bytes (in name order): the
    content hash a cached model carries and is checked against when loaded."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state entry {name!r} is not a tensor")
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
