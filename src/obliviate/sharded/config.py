"""A shard store's configuration and sample assignment: where the data comes from
(:class:`DataSpec`), how it is sharded (:class:`ShardConfig`), which shard and slice every id
belongs to (:func:`assign`), and the per-process cache of loaded training data."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from obliviate import recipes
from obliviate._rng import derive_seed
from obliviate._validation import check_choice, check_number
from obliviate.data.dataset import Dataset, data_fingerprint
from obliviate.data.datasets import load_dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec
from obliviate.parallel import shared_value
from obliviate.sharded.graph import neighbourhoods
from obliviate.training import Recipe, TrainConfig

AGGREGATIONS = ("softmax", "vote")


@dataclass(frozen=True)
class DataSpec:
    """Where a store's training data comes from (reloaded by every command, fingerprinted)."""

    dataset: str = "digits"
    data_dir: str | None = None
    limit: int | None = None
    split_seed: int = 0

    def __post_init__(self) -> None:
        if self.limit is not None and (
            isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1
        ):
            raise ObliviateError(
                f"limit={self.limit!r}: give a whole number of training rows >= 1, or None for all"
            )


def default_recipe(seed: int = 0, **given: Any) -> Recipe:
    """The recipe ``obliviate shard train`` trains every shard with: the ``sharded`` defaults of
    :mod:`obliviate.recipes` (MLP(100), SGD lr 0.05, batch 32, 10 epochs; one
    recipe for every dataset) with the fields in ``given`` (``model``, ``hidden``, ``n_epochs``,
    ``batch_size``, ``lr``, ``optimizer``, ``momentum``, ``weight_decay``) over them, and
    ``seed`` as the model's and the schedule's seed (the CLI's one ``--seed``). So the library
    and the CLI give the same model for the same words: ``ShardConfig(n_shards=S, n_slices=R,
    seed=s)`` trains what ``obliviate shard train --shards S --slices R --seed s`` trains."""
    r = recipes.fill("sharded", "sharded", given)
    return Recipe(
        ModelSpec(name=r["model"], hidden=tuple(r["hidden"]), seed=seed),
        TrainConfig(
            n_epochs=r["n_epochs"],
            batch_size=r["batch_size"],
            lr=r["lr"],
            optimizer=r["optimizer"],
            momentum=r["momentum"],
            weight_decay=r["weight_decay"],
            seed=seed,
        ),
    )


MAX_SHARDS = 1_000_000
"""The most shards a config may name before its data is known (the graph's neighbourhoods are
built per shard when the config is made); with data, :func:`check_fits` bounds S x R by the rows."""


@dataclass(frozen=True)
class ShardConfig:
    """The sharding: ``n_shards`` (S), ``n_slices`` (R), the shard graph, the aggregation rule,
    the assignment ``seed`` and the training recipe every shard uses.

    ``recipe=None`` (the default) is :func:`default_recipe` of ``seed``: the recipe of
    ``obliviate shard train`` with the same ``--seed`` and no recipe options."""

    n_shards: int = 5
    n_slices: int = 4
    graph: str = "none"
    aggregation: str = "softmax"
    seed: int = 0
    recipe: Recipe = None  # type: ignore[assignment]  # None -> default_recipe(seed)

    def __post_init__(self) -> None:
        if self.recipe is None:
            object.__setattr__(self, "recipe", default_recipe(self.seed))
        check_number("n_shards", self.n_shards, low=1, integer=True)
        if self.n_shards > MAX_SHARDS:  # before the graph below allocates per shard
            raise ObliviateError(
                f"n_shards={self.n_shards}: at most {MAX_SHARDS:_} shards (each needs training "
                "rows: n_shards x n_slices may not exceed them); choose fewer shards"
            )
        check_number("n_slices", self.n_slices, low=1, integer=True)
        check_number("seed", self.seed, integer=True)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        neighbourhoods(self.graph, self.n_shards, self.seed)  # validates the graph spec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardConfig:
        r = d["recipe"]
        m = r["model"]
        model = ModelSpec(
            name=m["name"], hidden=tuple(m["hidden"]), seed=m["seed"], channels=tuple(m["channels"])
        )
        recipe = Recipe(model=model, train=TrainConfig(**r["train"]))
        return cls(**{**d, "recipe": recipe})


def check_fits(n_rows: int, n_shards: int, n_slices: int, dataset: str = "the data") -> None:
    """Refuse a sharding with more slices than training rows: ``n_shards * n_slices`` (S x R)
    must not exceed ``n_rows`` (N, the training rows left after any excluded ids).

    The assignment is a seeded hash, so S x R <= N gives every slice at least one row on
    average, not each one for sure; a shard or slice that the hash leaves empty trains on
    nothing and is allowed (the store trains and forgets as usual). S x R > N would leave most
    of them empty, and a huge S (say 100 000 on 1 437 rows) would only spend time and disk on empty shards.

    Raises :class:`ObliviateError` naming S, R and N."""
    if n_shards * n_slices > n_rows:
        raise ObliviateError(
            f"n_shards x n_slices = {n_shards} x {n_slices} = {n_shards * n_slices} slices "
            f"exceed the {n_rows} training rows of {dataset}; choose n_shards x n_slices <= "
            f"{n_rows} (each slice needs rows to train on)"
        )


def config_hash(config: ShardConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()


# ---- data ------------------------------------------------------------------------------------
_DATA: dict[DataSpec, tuple[Dataset, Dataset, str]] = {}


def load_data(spec: DataSpec) -> tuple[Dataset, Dataset, str]:
    """(train, test, fingerprint of train), cached per process; the arrays are loaded once and
    shared with the warm pool's workers (:func:`obliviate.parallel.shared_value`)."""
    if spec not in _DATA:
        _DATA[spec] = shared_value(("sharded.load_data", spec), lambda: _load(spec))
    return _DATA[spec]


def _load(spec: DataSpec) -> tuple[Dataset, Dataset, str]:
    train, test = load_dataset(
        spec.dataset, data_dir=spec.data_dir, limit=spec.limit, split_seed=spec.split_seed
    )
    return train, test, data_fingerprint(train)


# ---- assignment ------------------------------------------------------------------------------
def assign(
    ids: np.ndarray, n_shards: int, n_slices: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shard and slice of every id: a seeded hash of the id alone."""
    h = np.array([derive_seed(seed, "sisa-assign", int(i)) for i in ids], dtype=np.uint64)
    return (h % np.uint64(n_shards)).astype(np.int64), (
        (h // np.uint64(n_shards)) % np.uint64(n_slices)
    ).astype(np.int64)


def shard_model_spec(spec: ModelSpec, shard: int) -> ModelSpec:
    return replace(spec, seed=derive_seed(spec.seed, "sisa-shard", shard))


def slices_of(samples: np.ndarray, hood: tuple[int, ...], n_slices: int) -> tuple[np.ndarray, ...]:
    """Sorted ids per slice over a shard's neighbourhood ``hood``, from (id, shard, slice) rows."""
    in_hood = np.isin(samples[:, 1], hood)
    rows = samples[in_hood]
    return tuple(np.sort(rows[rows[:, 2] == r, 0]) for r in range(n_slices))
