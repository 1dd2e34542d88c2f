"""Hyperparameters, scikit-learn style: the keyword-only constructor arguments, read back."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from obliviate.errors import ObliviateError


def param_names(cls: type) -> list[str]:
    """Names of ``cls.__init__``'s keyword-only arguments."""
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    return [p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY]


def check_param_names(name: str, cls: type, params: Mapping[str, Any]) -> None:
    """Raise :class:`~obliviate.errors.ObliviateError` (one line) when ``params`` names a
    hyperparameter ``cls`` does not have, listing the ones it has."""
    valid = param_names(cls)
    unknown = [k for k in params if k not in valid]
    if unknown:
        raise ObliviateError(
            f"{name} has no hyperparameter {unknown[0]!r}; its hyperparameters: "
            f"{', '.join(valid) or '(none)'} (obliviate list shows each with its meaning)"
        )


def get_params(obj: object) -> dict[str, Any]:
    """The constructor arguments of ``obj``, read back from attributes of the same name."""
    return {name: getattr(obj, name) for name in param_names(type(obj))}


def describe(obj: object) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in get_params(obj).items())
    return f"{type(obj).__name__}({args})"
