"""Forget sets: which training ids a deletion request names, built from a short text spec.

Specs (``seed`` drives every random choice, through :func:`obliviate._rng.generator`):

``random:K``        K training ids drawn uniformly at random;
``random:P%``       a fraction P percent of the training ids (rounded to the nearest count);
``class:C``         every training sample of class C (``class:1,7`` for several classes);
``subclass:C:K``    K random training samples of class C (``subclass:C:P%`` for a fraction of it);
``source:FILE``     the ids listed in FILE: a text file with one id per line (``#`` comments and
                    blank lines ignored) or a ``.npy`` array of integers;
``ids:1,2,3``       the ids given.

Validation (:func:`request_ids`, and :func:`obliviate.unlearning.base.build_request` that turns
them into a forget request): ids never trained on raise :class:`ObliviateError`; an empty forget
set is allowed (the identity request) and emits a :class:`EmptyForgetSetWarning`; a request
naming every training sample raises.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from obliviate._rng import generator
from obliviate.data.dataset import Dataset, as_id_tensor
from obliviate.errors import ObliviateError

KINDS = ("random", "class", "subclass", "source", "ids")

_HELP = "use random:K, random:P%, class:C, subclass:C:K, source:FILE or ids:1,2,3"


class EmptyForgetSetWarning(UserWarning):
    """A forget request selected no training sample: unlearning it is the identity."""


def _int(text: str, what: str, spec: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ObliviateError(
            f"forget spec {spec!r}: {what} {text!r} is not an integer; {_HELP}"
        ) from None
    if value < 0:
        raise ObliviateError(f"forget spec {spec!r}: {what} must be >= 0, got {value}")
    return value


def _count(text: str, n: int, spec: str) -> int:
    """``K`` or ``P%`` of ``n`` rows, checked against ``n``."""
    if text.endswith("%"):
        try:
            pct = float(text[:-1])
        except ValueError:
            raise ObliviateError(
                f"forget spec {spec!r}: {text!r} is not a percentage like 10%"
            ) from None
        if not 0.0 <= pct <= 100.0:
            raise ObliviateError(f"forget spec {spec!r}: percentage must be in 0..100, got {pct}")
        return int(round(pct / 100.0 * n))
    k = _int(text, "count", spec)
    if k > n:
        raise ObliviateError(
            f"forget spec {spec!r}: asks for {k} samples but only {n} are available"
        )
    return k


def _draw(ids: Tensor, k: int, seed: int, *keys: object) -> Tensor:
    """``k`` of ``ids`` without replacement, in a seeded order, returned sorted."""
    perm = torch.randperm(ids.numel(), generator=generator(seed, "forget-set", *keys))
    return torch.sort(ids[perm[:k]]).values


def _classes(text: str, train: Dataset, spec: str) -> list[int]:
    out = []
    for part in text.split(","):
        c = _int(part.strip(), "class", spec)
        if c >= train.n_classes:
            raise ObliviateError(
                f"forget spec {spec!r}: class {c} is outside 0..{train.n_classes - 1} of dataset {train.name!r}"
            )
        out.append(c)
    return out


def read_id_file(path: str | Path) -> Tensor:
    """Ids from a file: text (ids separated by commas, spaces or newlines; ``#`` comments), a
    ``.json`` list, or a ``.npy`` integer array. int64 ``[K]``, in file order.

    The one reader of id files (forget specs ``source:FILE``, ``--ids-file``). Every value
    passes :func:`~obliviate.data.dataset.as_id_tensor`: a non-integer, a fraction (``3.7``) or
    a value beyond int64 raises :class:`ObliviateError` naming it; nothing is truncated.
    """
    p = Path(path).expanduser()
    if p.is_dir():
        raise ObliviateError(
            f"id file {str(p)!r} is a folder; give a text file of ids, a .json list or a .npy"
        )
    if not p.is_file():
        raise ObliviateError(
            f"id file {str(p)!r} does not exist; give a text file of ids, a .json list or a .npy"
        )
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            why = "pickled objects or not a .npy file" if "pickle" in str(exc) else str(exc)
            raise ObliviateError(
                f"{p}: not a readable .npy array of integer ids ({' '.join(why.split())[:120]}); "
                "save one with numpy.save(path, numpy.asarray(ids, dtype=numpy.int64))"
            ) from None
        if arr.ndim != 1:
            raise ObliviateError(
                f"{p}: ids must be a 1-D array, got shape {list(arr.shape)}; save the ids as a "
                "flat list"
            )
        try:
            return as_id_tensor(arr)
        except ObliviateError as exc:
            raise ObliviateError(f"{p}: {exc}") from None
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise ObliviateError(f"{p}: not a text file of ids (use .npy for binary arrays)") from None
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ObliviateError(f"{p} is not valid JSON: {exc}") from None
        values = data if isinstance(data, list) else [data]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            bad = next(v for v in values if isinstance(v, bool) or not isinstance(v, int))
            raise ObliviateError(f"{p}: {bad!r} is not an integer id")
        return as_id_tensor(np.array(values, dtype=object))
    ids: list[int] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        for part in line.split("#", 1)[0].replace(",", " ").split():
            try:
                ids.append(int(part))
            except ValueError:
                raise ObliviateError(f"{p}:{lineno}: {part!r} is not an integer id") from None
    return as_id_tensor(np.array(ids, dtype=object))


def parse_ids(text: str) -> Tensor:
    """Ids written inline (``"3,17,42"`` or space-separated): int64 ``[K]``; raises
    :class:`ObliviateError` naming the first value that is not an integer within int64."""
    parts = [p for p in text.replace(",", " ").split() if p]
    values: list[int] = []
    for part in parts:
        try:
            values.append(int(part))
        except ValueError:
            raise ObliviateError(
                f"id {part!r} is not an integer; ids are integers separated by commas or spaces"
            ) from None
    return as_id_tensor(np.array(values, dtype=object))


def forget_ids(train: Dataset, spec: str, *, seed: int = 0) -> Tensor:
    """The sorted unique ids that ``spec`` names in ``train`` (may be empty; not validated
    against ``train`` for ``source``/``ids`` specs: see :func:`build_request`)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ObliviateError(f"forget spec {spec!r} is not understood; {_HELP}")
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "random":
        k = _count(rest.strip(), len(train), spec)
        return _draw(train.ids, k, seed, "random", k)
    if kind == "class":
        sel = torch.tensor(_classes(rest, train, spec))
        return torch.sort(train.ids[torch.isin(train.y, sel)]).values
    if kind == "subclass":
        c_text, sep, k_text = rest.partition(":")
        if not sep:
            raise ObliviateError(
                f"forget spec {spec!r}: subclass needs subclass:C:K or subclass:C:P%"
            )
        (c,) = _classes(c_text, train, spec)
        pool = train.ids[train.y == c]
        k = _count(k_text.strip(), pool.numel(), spec)
        return _draw(pool, k, seed, "subclass", c, k)
    if kind == "source":
        return torch.unique(read_id_file(rest.strip()))
    if kind == "ids":
        return torch.unique(parse_ids(rest))
    raise ObliviateError(f"unknown forget-set kind {kind!r} in {spec!r}; {_HELP}")


def request_ids(train: Dataset, spec: str | Tensor, *, seed: int = 0) -> Tensor:
    """The sorted unique ids a deletion request names: ``spec`` is a text spec (see the module
    docstring) or the ids themselves (int64 ``[K]``).

    An empty selection warns (:class:`EmptyForgetSetWarning`); the ids are checked against
    ``train`` when the request is built (:meth:`obliviate.unlearning.base.ForgetRequest.from_ids`).
    """
    ids = (
        forget_ids(train, spec, seed=seed)
        if isinstance(spec, str)
        else torch.unique(as_id_tensor(spec))
    )
    if ids.numel() == 0:
        warnings.warn(
            f"forget spec {spec!r} selects no training sample of {train.name!r}; unlearning is the identity",
            EmptyForgetSetWarning,
            stacklevel=3,
        )
    return ids


__all__ = [
    "KINDS",
    "EmptyForgetSetWarning",
    "forget_ids",
    "parse_ids",
    "read_id_file",
    "request_ids",
]
