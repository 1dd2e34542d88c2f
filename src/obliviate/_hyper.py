"""Hyperparameters, scikit-learn style: the keyword-only constructor arguments, read back."""

from __future__ import annotations

import inspect
from typing import Any


def param_names(cls: type) -> list[str]:
    """Names of ``cls.__init__``'s keyword-only arguments."""
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    return [p.name for p in sig.parameters.values() if p.kind is p.KEYWORD_ONLY]


def get_params(obj: object) -> dict[str, Any]:
    """The constructor arguments of ``obj``, read back from attributes of the same name."""
    return {name: getattr(obj, name) for name in param_names(type(obj))}


def describe(obj: object) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in get_params(obj).items())
    return f"{type(obj).__name__}({args})"
