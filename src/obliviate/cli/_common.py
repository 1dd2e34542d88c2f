"""Helpers shared by CLI commands: ``--set key=value`` parsing and seed lists."""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

from obliviate.errors import ObliviateError


def _coerce(key: str, text: str, annotation: Any, owner: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        errors = []
        for a in args:
            try:
                return _coerce(key, text, a, owner)
            except ObliviateError as exc:
                errors.append(str(exc))
        raise ObliviateError(errors[0] if errors else f"{owner}: cannot parse {key}={text!r}")
    if origin is typing.Literal:
        choices = typing.get_args(annotation)
        if text not in [str(c) for c in choices]:
            raise ObliviateError(
                f"{owner}: {key}={text!r} must be one of {', '.join(map(str, choices))}"
            )
        return next(c for c in choices if str(c) == text)
    if origin in (tuple, list):
        inner = typing.get_args(annotation)[0] if typing.get_args(annotation) else str
        parts = [p for p in text.split(",") if p.strip()]
        return tuple(_coerce(key, p.strip(), inner, owner) for p in parts)
    if annotation is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ObliviateError(f"{owner}: {key}={text!r} must be true or false")
    if annotation is int:
        try:
            return int(text)
        except ValueError:
            raise ObliviateError(f"{owner}: {key}={text!r} must be an integer") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ObliviateError(f"{owner}: {key}={text!r} must be a number") from None
    return text


def parse_sets(
    cls: Any, pairs: list[str] | None, *, exclude: tuple[str, ...] = (), option: str = "--set"
) -> dict[str, Any]:
    """Turn ``["key=value", ...]`` into keyword-only arguments of ``cls`` (a class: its
    constructor; or a function), typed by its annotations. Unknown keys (and ``exclude``-d ones)
    and values of the wrong type raise :class:`ObliviateError`."""
    # a class: read its constructor's signature (the class itself, not an instance)
    target = cls.__init__ if isinstance(cls, type) else cls  # type: ignore[misc]
    hints = typing.get_type_hints(target)
    params = {
        p.name
        for p in inspect.signature(target).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in exclude
    }
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ObliviateError(f"{option} {pair!r}: expected key=value")
        if key not in params:
            valid = ", ".join(sorted(params)) or "(none)"
            raise ObliviateError(f"{cls.__name__} has no parameter {key!r}; valid: {valid}")
        out[key] = _coerce(key, value.strip(), hints.get(key, str), cls.__name__)
    return out


def parse_seeds(seed: int, seeds: str | None) -> list[int]:
    """``--seeds 0,1,2`` (or an inclusive range ``0-4``) overrides ``--seed``.

    Seeds are non-negative integers without repeats (a repeated seed would count one run twice
    in a mean ± std); anything else raises :class:`ObliviateError`.
    """
    if seeds is None:
        return [seed]
    hint = "give non-negative integers like 0,1,2 or a range like 0-4"
    text = seeds.strip()
    empty = ""
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(p) for p in text.split("-"))
            out = list(range(lo, hi + 1))
            if not out:
                empty = f"the range {lo}-{hi} is empty"
        else:
            out = [int(p) for p in text.split(",")]
    except ValueError:
        raise ObliviateError(f"--seeds {seeds!r}: {hint}") from None
    if not out and "-" in text:
        raise ObliviateError(f"--seeds {seeds!r}: {empty}; {hint}")
    if not out or any(s < 0 for s in out):
        raise ObliviateError(f"--seeds {seeds!r}: {hint}")
    if len(set(out)) != len(out):
        dup = next(s for s in out if out.count(s) > 1)
        raise ObliviateError(f"--seeds {seeds!r}: seed {dup} appears twice; give each seed once")
    return out


def parse_int_tuple(option: str, text: str) -> tuple[int, ...]:
    """``"100,100"`` -> ``(100, 100)``; an empty string gives ``()``."""
    try:
        return tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ObliviateError(
            f"{option} {text!r}: give comma-separated integers like 100,100"
        ) from None
