"""Streams and the fixed-sequence scenarios: class-, task- and domain-incremental splits, joint.

A stream is an ordered tuple of experiences; each carries its own train and test data (with the
original sample ids), the classes it contains and, for task-aware streams, its task id. The
builders that derive streams from these (online, recurring) are in :mod:`obliviate.data.streams`;
the registry of every scenario by name is :mod:`obliviate.data.scenarios`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from obliviate._rng import generator
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError


@dataclass(frozen=True, eq=False)
class Experience:
    """One step of a stream: data to learn from now and data to evaluate on from now on."""

    index: int
    train: Dataset
    test: Dataset
    classes: tuple[int, ...]
    task_id: int | None = None


@dataclass(frozen=True, eq=False)
class Stream:
    """An ordered tuple of experiences over one label space.

    ``task_aware``: experiences carry task ids and the model may use them (task-incremental).
    ``task_classes``: for task-aware streams, the classes of each task (the multi-head layout).
    ``boundaries``: False for task-free streams, where strategies that need task boundaries
    must be rejected.
    """

    name: str
    experiences: tuple[Experience, ...]
    n_classes: int
    sample_shape: tuple[int, ...]
    task_aware: bool = False
    task_classes: tuple[tuple[int, ...], ...] | None = None
    boundaries: bool = True

    def __len__(self) -> int:
        return len(self.experiences)

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __getitem__(self, i: int) -> Experience:
        return self.experiences[i]


def _check_n(n_experiences: int, limit: int, what: str) -> None:
    if isinstance(n_experiences, bool) or not isinstance(n_experiences, int) or n_experiences < 1:
        raise ObliviateError(f"n_experiences must be a positive integer, got {n_experiences!r}")
    if n_experiences > limit:
        raise ObliviateError(f"n_experiences={n_experiences} exceeds the {limit} {what} available")


def class_order(n_classes: int, seed: int) -> list[int]:
    """The class order of class-split scenarios: a permutation of the classes drawn from ``seed``."""
    return torch.randperm(n_classes, generator=generator(seed, "class-order")).tolist()


def _class_split(
    train: Dataset, test: Dataset, n_experiences: int, seed: int, task_aware: bool, name: str
) -> Stream:
    k = train.n_classes
    _check_n(n_experiences, k, "classes")
    if k % n_experiences:
        divisors = [d for d in range(1, k + 1) if k % d == 0]
        raise ObliviateError(
            f"n_experiences={n_experiences} does not divide the {k} classes; use one of {divisors}"
        )
    order = class_order(k, seed)
    per = k // n_experiences
    exps, groups = [], []
    for i in range(n_experiences):
        cls = tuple(sorted(order[i * per : (i + 1) * per]))
        groups.append(cls)
        sel = torch.tensor(cls)
        tr = train.subset(torch.isin(train.y, sel))
        te = test.subset(torch.isin(test.y, sel))
        if task_aware:
            tr, te = tr.with_task(i), te.with_task(i)
        exps.append(Experience(i, tr, te, cls, i if task_aware else None))
    return Stream(
        name=name,
        experiences=tuple(exps),
        n_classes=k,
        sample_shape=train.sample_shape,
        task_aware=task_aware,
        task_classes=tuple(groups) if task_aware else None,
    )


def class_incremental(
    train: Dataset, test: Dataset, *, n_experiences: int = 5, seed: int = 0
) -> Stream:
    """Split the classes into ``n_experiences`` equal groups (order drawn from ``seed``); one head."""
    return _class_split(train, test, n_experiences, seed, False, "class-incremental")


def task_incremental(
    train: Dataset, test: Dataset, *, n_experiences: int = 5, seed: int = 0
) -> Stream:
    """Class-incremental split plus task ids: train with a multi-head model."""
    return _class_split(train, test, n_experiences, seed, True, "task-incremental")


def _all_classes(d: Dataset) -> tuple[int, ...]:
    return tuple(range(d.n_classes))


def domain_permutation(
    train: Dataset,
    test: Dataset,
    *,
    n_experiences: int = 5,
    seed: int = 0,
    first_identity: bool = True,
) -> Stream:
    """Each experience applies one fixed random permutation of the features to all the data.

    Experience 0 is the identity when ``first_identity`` (as in Permuted MNIST setups).
    """
    _check_n(n_experiences, 10**6, "permutations")
    d = train.n_features
    exps = []
    for i in range(n_experiences):
        if i == 0 and first_identity:
            perm = torch.arange(d)
        else:
            perm = torch.randperm(d, generator=generator(seed, "permutation", i))

        def apply(ds: Dataset, perm: torch.Tensor = perm) -> Dataset:
            flat = ds.x.reshape(len(ds), -1)[:, perm]
            return ds.with_x(flat.reshape(ds.x.shape).contiguous())

        exps.append(Experience(i, apply(train), apply(test), _all_classes(train)))
    return Stream("domain-permutation", tuple(exps), train.n_classes, train.sample_shape)


def rotate_images(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate a batch of images ``[N, C, H, W]`` by ``degrees`` (bilinear, zero fill)."""
    theta = math.radians(degrees)
    c, s = math.cos(theta), math.sin(theta)
    mat = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def domain_rotation(
    train: Dataset,
    test: Dataset,
    *,
    n_experiences: int = 5,
    seed: int = 0,
    max_degrees: float = 180.0,
) -> Stream:
    """Image data rotated by a fixed angle per experience: 0, then evenly spaced up to ``max_degrees``.

    ``seed`` shuffles the order of the non-zero angles.
    """
    if len(train.sample_shape) != 3:
        raise ObliviateError(
            f"domain-rotation needs image data [C, H, W]; {train.name!r} has samples of shape "
            f"{train.sample_shape}. Use domain-permutation instead"
        )
    _check_n(n_experiences, 360, "rotations")
    angles = np.linspace(
        0.0, max_degrees, n_experiences, endpoint=n_experiences > 1 and max_degrees < 360
    )
    rest = angles[1:][
        torch.randperm(n_experiences - 1, generator=generator(seed, "rotation")).numpy()
    ]
    angles = np.concatenate([[0.0], rest])
    exps = []
    for i, a in enumerate(angles):
        exps.append(
            Experience(
                i,
                train.with_x(rotate_images(train.x, float(a))),
                test.with_x(rotate_images(test.x, float(a))),
                _all_classes(train),
            )
        )
    return Stream("domain-rotation", tuple(exps), train.n_classes, train.sample_shape)


def joint(train: Dataset, test: Dataset, *, n_experiences: int = 1, seed: int = 0) -> Stream:
    """A single experience holding all the data."""
    if n_experiences != 1:
        raise ObliviateError(
            f"the joint scenario has exactly 1 experience, got n_experiences={n_experiences}"
        )
    exp = Experience(0, train, test, _all_classes(train))
    return Stream("joint", (exp,), train.n_classes, train.sample_shape)
