"""Lazy registries: literal dicts of ``name -> "module:Class"``, imported on first use."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from obliviate.errors import ObliviateError


def resolve(registry: Mapping[str, str], kind: str, name: str) -> Any:
    """The class registered under ``name``; an unknown name lists the valid ones."""
    if name not in registry:
        raise ObliviateError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(registry))}")
    module, _, attr = registry[name].partition(":")
    return getattr(importlib.import_module(module), attr)
