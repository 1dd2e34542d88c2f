"""What every run-kind spec shares: field declarations, checks, and dict (de)serialisation.

A spec is a frozen dataclass whose fields are declared with :func:`option`. A field's Python type
(its annotation) says what a spec file may write for it; its ``check`` validates a value and
raises :class:`~obliviate.errors.ObliviateError` as ``"<name> must ..."`` or
``"<name>: unknown ..."``, where ``name`` is whatever the caller passes: the field name when the
spec checks itself, ``"file.toml:12: learn.lr"`` when :mod:`obliviate.bench.specs` checks a spec
file. So one check serves the Python API, the CLI and spec files alike.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from typing import Any

from obliviate._validation import OPTIMIZERS, check_number
from obliviate.continual import STRATEGIES
from obliviate.data.datasets import DATASETS
from obliviate.data.scenarios import SCENARIOS
from obliviate.errors import ObliviateError
from obliviate.io import jsonable
from obliviate.models import MODELS
from obliviate.sharded.graph import GRAPH_KINDS
from obliviate.training import check_device, check_precision
from obliviate.unlearning import UNLEARNERS

Check = Callable[[str, Any], None]


def option(
    default: Any = MISSING,
    *,
    default_factory: Any = MISSING,
    check: Check | None = None,
    alias: str | None = None,
    required: bool = False,
) -> Any:
    """A spec field. ``check(name, value)`` validates a non-``None`` value; ``alias`` is the
    plural spelling a spec file may use (``datasets`` for ``dataset``); ``required`` fields must
    be written in every spec-file block of the kind."""
    meta = {"check": check, "alias": alias, "required": required}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ---- the type of a field, as a spec file sees it -----------------------------------------------


@dataclass(frozen=True)
class FieldType:
    """``kind``: ``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"ints"`` (a tuple of ints, one
    value written as a list) or ``"table"`` (a mapping); ``optional``: ``None`` is allowed."""

    kind: str
    optional: bool

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if self.kind == "bool":
            return isinstance(value, bool)
        if isinstance(value, bool):
            return False
        if self.kind == "int":
            return isinstance(value, int)
        if self.kind == "float":
            return isinstance(value, (int, float))
        if self.kind == "str":
            return isinstance(value, str)
        if self.kind == "ints":
            return isinstance(value, (list, tuple)) and all(
                isinstance(x, int) and not isinstance(x, bool) for x in value
            )
        return isinstance(value, Mapping)

    @property
    def noun(self) -> str:
        return {
            "int": "an integer",
            "float": "a number",
            "str": "a string",
            "bool": "true or false",
            "ints": "a list of integers",
            "table": "a table",
        }[self.kind]


def field_types(cls: type) -> dict[str, FieldType]:
    """The :class:`FieldType` of every field of the spec dataclass ``cls`` (computed once per
    class: resolving the type hints per spec made a 10 000-seed grid slow to load)."""
    return dict(_field_types(cls))


@functools.cache
def _field_types(cls: type) -> dict[str, FieldType]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = field_type(hints[f.name], f"{cls.__name__}.{f.name}")
    return out


def field_type(hint: Any, where: str) -> FieldType:
    """The :class:`FieldType` of a type hint; a type a spec file cannot write raises TypeError."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            raise TypeError(f"{where}: a spec field has one type (or that type | None)")
        hint = args[0]
        origin = typing.get_origin(hint)
    simple = {int: "int", float: "float", str: "str", bool: "bool"}
    if hint in simple:
        return FieldType(simple[hint], optional)
    if origin is tuple:
        return FieldType("ints", optional)
    if origin in (Mapping, dict) or hint in (dict, Mapping):
        return FieldType("table", optional)
    raise TypeError(f"{where}: type {hint!r} cannot be written in a spec file")


# ---- checks shared by the kinds ---------------------------------------------------------------


def positive_int(name: str, value: Any) -> None:
    check_number(name, value, low=1, integer=True)


def nonnegative_int(name: str, value: Any) -> None:
    check_number(name, value, low=0, integer=True)


SEED_LIMIT = 2**32
"""Seeds are integers ``0 <= seed < 2**32`` (what numpy's and torch's generators accept)."""


def seed(name: str, value: Any) -> None:
    """A seed: an integer in ``0..2**32-1``."""
    check_number(name, value, integer=True)
    if not 0 <= value < SEED_LIMIT:
        raise ObliviateError(
            f"{name} {value!r} is not a valid seed; give an integer in 0..{SEED_LIMIT - 1}"
        )


any_int = seed  # every spec field checked with it is a seed (seed, data_seed, split_seed)


def positive_number(name: str, value: Any) -> None:
    check_number(name, value, low=0, low_open=True)


def nonnegative_number(name: str, value: Any) -> None:
    check_number(name, value, low=0)


def momentum(name: str, value: Any) -> None:
    check_number(name, value, low=0, high=1, high_open=True)


def _unknown(name: str, what: str, value: Any, valid: list[str]) -> None:
    raise ObliviateError(f"{name}: unknown {what} {value!r}; valid: {', '.join(valid)}")


def _string(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise ObliviateError(f"{name} must be a name (a string), got {value!r}")


def dataset(name: str, value: Any) -> None:

    _string(name, value)
    if not (value in DATASETS or value.startswith("npz:")):
        _unknown(name, "dataset", value, list(DATASETS) + ["npz:PATH"])


def scenario(name: str, value: Any) -> None:

    _string(name, value)
    if value not in SCENARIOS:
        _unknown(name, "scenario", value, list(SCENARIOS))


def strategy(name: str, value: Any) -> None:

    _string(name, value)
    if value not in STRATEGIES:
        _unknown(name, "strategy", value, sorted(STRATEGIES))


def unlearner(name: str, value: Any) -> None:

    _string(name, value)
    if value not in UNLEARNERS:
        _unknown(name, "method", value, sorted(UNLEARNERS))


def model(name: str, value: Any) -> None:

    _string(name, value)
    if value not in MODELS:
        _unknown(name, "model", value, list(MODELS))


def device(name: str, value: Any) -> None:
    """A device this machine has (``cpu``, ``cuda``, ``cuda:N``, ``mps``)."""
    _string(name, value)
    check_device(value)


def precision(name: str, value: Any) -> None:
    """One of :data:`obliviate.training.PRECISIONS`."""
    _string(name, value)
    check_precision(value)


def optimizer(name: str, value: Any) -> None:

    _string(name, value)
    if value not in OPTIMIZERS:
        _unknown(name, "optimizer", value, list(OPTIMIZERS))


def widths(name: str, value: Any) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ObliviateError(f"{name} must be a list of layer widths, got {value!r}")
    for h in value:
        check_number(f"{name} width", h, low=1, integer=True)


def graph(name: str, value: Any) -> None:

    _string(name, value)
    if value.split(":", 1)[0] not in GRAPH_KINDS:
        _unknown(name, "graph", value, list(GRAPH_KINDS))


def forget_request(name: str, value: Any) -> None:
    _string(name, value)
    if not re.fullmatch(r"(class:\d+|random:\d+(\.\d+)?%?|[a-z_]+:.+)", value):
        raise ObliviateError(
            f"{name}: bad forget request {value!r}; use class:C, random:K, random:P%, "
            "subclass:C:K, ids:1,2,3 or source:FILE"
        )


def table(name: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise ObliviateError(f"{name} must be a mapping, got {value!r}")


# ---- validation and (de)serialisation ---------------------------------------------------------


def validate(spec: Any) -> None:
    """Run every field's check on its value (``None`` skips it); normalise tuples and dicts."""
    types_ = field_types(type(spec))
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if value is None:
            continue
        check = f.metadata.get("check")
        if check is not None:
            check(f.name, value)
        kind = types_[f.name].kind
        if kind == "ints":
            object.__setattr__(spec, f.name, tuple(int(v) for v in value))
        elif kind == "table":
            object.__setattr__(spec, f.name, dict(value))


def from_dict(cls: type, data: Mapping[str, Any], kind: str) -> Any:
    """``cls(**data)``; a ``"kind": kind`` entry is ignored, lists become tuples for tuple
    fields, and an unknown key raises naming it and the valid ones."""
    names = [f.name for f in dataclasses.fields(cls)]
    data = {k: v for k, v in data.items() if not (k == "kind" and v == kind)}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ObliviateError(f"unknown {kind}-spec key {unknown[0]!r}; valid: {', '.join(names)}")
    types_ = field_types(cls)
    values = {
        k: tuple(v) if types_[k].kind == "ints" and isinstance(v, list) else v
        for k, v in data.items()
    }
    return cls(**values)


def to_dict(spec: Any) -> dict[str, Any]:
    """A JSON-able dict of every field (tuples become lists)."""

    return jsonable(dataclasses.asdict(spec))


def is_resolved(spec: Any) -> bool:
    """Whether ``spec`` came out of its ``resolved()`` (resolution happens once per run)."""
    return bool(spec.__dict__.get("_resolved", False))


def mark_resolved(spec: Any) -> Any:
    object.__setattr__(spec, "_resolved", True)
    return spec


def constructor_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameters for a constructor: JSON turned tuples into lists; give tuples back."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
