"""Scenario builders by name: turn a (train, test) pair into a :class:`Stream` of experiences.

:data:`SCENARIOS` maps every scenario name to its builder: the fixed-sequence splits of
:mod:`obliviate.data.splits` (class-, task-, domain-incremental, joint) and the derived streams of
:mod:`obliviate.data.streams` (online, recurring). The stream types are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from obliviate.data.dataset import Dataset
from obliviate.data.splits import (
    Experience,
    Stream,
    class_incremental,
    class_order,
    domain_permutation,
    domain_rotation,
    joint,
    rotate_images,
    task_incremental,
)
from obliviate.data.streams import online, recurring
from obliviate.errors import ObliviateError

SCENARIOS: dict[str, Callable[..., Stream]] = {
    "class-incremental": class_incremental,
    "task-incremental": task_incremental,
    "domain-permutation": domain_permutation,
    "domain-rotation": domain_rotation,
    "joint": joint,
    "online": online,
    "recurring": recurring,
}


def build_scenario(
    name: str, train: Dataset, test: Dataset, *, n_experiences: int, seed: int = 0, **kwargs: Any
) -> Stream:
    """Build the named scenario; unknown names list the valid ones."""
    if name not in SCENARIOS:
        raise ObliviateError(f"unknown scenario {name!r}; valid: {', '.join(SCENARIOS)}")
    return SCENARIOS[name](train, test, n_experiences=n_experiences, seed=seed, **kwargs)


__all__ = [
    "SCENARIOS",
    "Experience",
    "Stream",
    "build_scenario",
    "class_incremental",
    "class_order",
    "domain_permutation",
    "domain_rotation",
    "joint",
    "online",
    "recurring",
    "rotate_images",
    "task_incremental",
]
