"""Small argument checks shared by every constructor; each raises :class:`ObliviateError`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from obliviate.errors import ObliviateError


def _where(owner: str, name: str) -> str:
    return f"{owner}: {name}" if owner else name


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    owner: str = "",
) -> None:
    """Raise unless ``value`` is a finite number inside the given range."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise ObliviateError(f"{_where(owner, name)} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise ObliviateError(f"{_where(owner, name)} must be finite, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        op = ">" if low_open else ">="
        raise ObliviateError(f"{_where(owner, name)} must be {op} {low}, got {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        op = "<" if high_open else "<="
        raise ObliviateError(f"{_where(owner, name)} must be {op} {high}, got {value!r}")


def check_choice(name: str, value: Any, choices: Iterable[Any], *, owner: str = "") -> None:
    """Raise unless ``value`` is one of ``choices`` (listed in the message)."""
    choices = list(choices)
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ObliviateError(f"{_where(owner, name)} must be one of {valid}; got {value!r}")


OPTIMIZERS = ("sgd", "adam")
"""The optimisers a training recipe may name (:func:`obliviate.training.make_optimizer`)."""

_SCHEDULE_RULES: dict[str, dict[str, Any]] = {
    "n_epochs": {"low": 1, "integer": True},
    "lr": {"low": 0, "low_open": True},
    "batch_size": {"low": 1, "integer": True},
    "momentum": {"low": 0, "high": 1, "high_open": True},
    "seed": {"integer": True},
}


def check_schedule(owner: str, **values: Any) -> None:
    """Check the usual optimisation hyperparameters, by name: ``n_epochs`` (integer >= 1),
    ``lr`` (> 0), ``batch_size`` (integer >= 1), ``optimizer`` (one of :data:`OPTIMIZERS`), ``momentum``
    (in [0, 1)) and ``seed`` (integer). Other names are an error of the caller."""
    for name, value in values.items():
        if name == "optimizer":
            check_choice("optimizer", value, OPTIMIZERS, owner=owner)
        else:
            check_number(name, value, owner=owner, **_SCHEDULE_RULES[name])
