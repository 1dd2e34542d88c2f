"""Unlearning: forget requests, unlearners (one file each) and the retrain oracle.

``UNLEARNERS`` is the registry: a literal dict of name -> "module:Class" (imported lazily).
"""

from __future__ import annotations

from typing import Any

from obliviate._registry import resolve

UNLEARNERS: dict[str, str] = {}


def unlearner_class(name: str) -> Any:
    return resolve(UNLEARNERS, "unlearner", name)


def make_unlearner(name: str, **params: Any) -> Any:
    return unlearner_class(name)(**params)


__all__ = ["UNLEARNERS", "make_unlearner", "unlearner_class"]
