"""Every default training recipe, and the one rule for a dataset without one.

A *recipe* is the model and training schedule a run uses when its spec leaves them unset: the
fields :data:`TRAIN_FIELDS` (``model``, ``hidden``, ``n_epochs``, ``batch_size``, ``lr``,
``optimizer``, ``momentum``, ``weight_decay``). Two kinds of run take theirs from the dataset:

``learn``   :data:`RECIPES` (continual learning; fits each experience quickly, see below).
``forget``  :data:`FORGET_RECIPES` (unlearning; the original must memorise its training set, so
            that forgetting part of it is measurable: Adam, many epochs).

The two others use one recipe for every dataset, the defaults of their spec
(:data:`KIND_DEFAULTS`): ``events`` (MLP(100), SGD lr 0.05, batch 32, 20 epochs) and
``sharded`` (MLP(100), SGD lr 0.05, batch 32, 10 epochs).

The rule for a dataset that has no recipe of the kind asked for: a run that sets every recipe
field itself runs; any other raises :class:`~obliviate.errors.ObliviateError` naming the dataset,
the missing fields and how to register a recipe. Never another dataset's recipe in silence.
``npz:PATH`` datasets (user arrays) use the ``"npz"`` entries.

A new dataset is one registration, its loader and its recipe::

    from obliviate.experiments import register_dataset

    register_dataset("blobs", load_blobs, recipe={"model": "mlp", "hidden": (64,),
                     "n_epochs": 5, "batch_size": 32, "lr": 0.05},
                     help="my Gaussian blobs")

after which ``obliviate learn|forget|events|shard train --dataset blobs`` and spec files with
``datasets = ["blobs"]`` work in the process that registered it (a plugin module imported before
the command runs, or a test). Worker processes of the ``local`` and ``ray`` backends
(:mod:`obliviate.parallel`) start fresh and see only the built-in datasets unless they import
that module too: run such grids and stores with one worker or the ``inline`` backend.

Learn recipes, chosen for clarity and speed on a laptop CPU rather than tuned on test accuracy:

- ``digits`` (1438 train rows of 8x8): MLP with one hidden layer of 100 units, SGD with
  momentum 0.9 and lr 0.01 (effective step 0.1), batch 32, 5 epochs per experience. One
  experience of the 5-way class-incremental split is ~290 rows, i.e. ~45 steps per epoch; every
  experience is learned to ~0.99 test accuracy in well under a second. Plain SGD at lr 0.1
  learns as well (learning accuracy 0.987) but naive fine-tuning then keeps ACC 0.448 ± 0.029
  on the 5-way class-incremental split (3 seeds); with momentum it ends at 0.306 ± 0.037, the
  catastrophic forgetting the usual protocol shows (little beyond the last experience, 0.2).
  Measured with ``obliviate learn --strategy naive --seeds 0,1,2 [--lr 0.1 --momentum 0]``.
- ``mnist1d`` (4000 x 40): MLP (100, 100), SGD lr 0.1, batch 32, 10 epochs.
- ``mnist`` / ``fashion-mnist`` (60000 x 28x28): MLP (256, 256), SGD lr 0.05, batch 64, 1 epoch.
- ``synthetic`` (Gaussian blobs for tests): MLP (32,), SGD lr 0.1, batch 32, 5 epochs.
- ``npz``: MLP (100,), SGD lr 0.05, batch 32, 5 epochs.

Forget recipes: on digits an MLP with one hidden layer of 128 units, Adam (lr 1e-3), batch 32,
30 epochs: the original fits its training set exactly (train accuracy 1.0, test about 0.97), so
the forget set is memorised and forgetting it is measurable. ``npz`` user arrays get the same
recipe as digits (an explicit entry, not a fallback).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from obliviate.data.datasets import DATASET_HELP, DATASETS
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec
from obliviate.training import TrainConfig

TRAIN_FIELDS: tuple[str, ...] = (
    "model",
    "hidden",
    "n_epochs",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
)
"""The fields of a recipe (the same names in every spec, on the CLI and in spec files)."""

COMMON_DEFAULTS: dict[str, Any] = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0}
"""Recipe fields a recipe may leave out."""

RECIPES: dict[str, dict[str, Any]] = {
    "digits": {
        "model": "mlp",
        "hidden": (100,),
        "n_epochs": 5,
        "batch_size": 32,
        "lr": 0.01,
        "momentum": 0.9,
    },
    "mnist1d": {"model": "mlp", "hidden": (100, 100), "n_epochs": 10, "batch_size": 32, "lr": 0.1},
    "mnist": {"model": "mlp", "hidden": (256, 256), "n_epochs": 1, "batch_size": 64, "lr": 0.05},
    "fashion-mnist": {
        "model": "mlp",
        "hidden": (256, 256),
        "n_epochs": 1,
        "batch_size": 64,
        "lr": 0.05,
    },
    "synthetic": {"model": "mlp", "hidden": (32,), "n_epochs": 5, "batch_size": 32, "lr": 0.1},
    "npz": {"model": "mlp", "hidden": (100,), "n_epochs": 5, "batch_size": 32, "lr": 0.05},
}
"""Default continual-learning recipe per dataset (fields not named: :data:`COMMON_DEFAULTS`)."""

_ADAM = {"optimizer": "adam", "lr": 1e-3}
FORGET_RECIPES: dict[str, dict[str, Any]] = {
    "digits": {"model": "mlp", "hidden": (128,), "n_epochs": 30, "batch_size": 32, **_ADAM},
    "synthetic": {"model": "mlp", "hidden": (64,), "n_epochs": 30, "batch_size": 32, **_ADAM},
    "mnist1d": {"model": "mlp", "hidden": (256, 256), "n_epochs": 30, "batch_size": 64, **_ADAM},
    "mnist": {"model": "mlp", "hidden": (256,), "n_epochs": 5, "batch_size": 128, **_ADAM},
    "fashion-mnist": {"model": "mlp", "hidden": (256,), "n_epochs": 5, "batch_size": 128, **_ADAM},
    "npz": {"model": "mlp", "hidden": (128,), "n_epochs": 30, "batch_size": 32, **_ADAM},
}
"""Default recipe of the original and the oracle of unlearning runs, per dataset."""

KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "events": {"model": "mlp", "hidden": (100,), "n_epochs": 20, "batch_size": 32, "lr": 0.05},
    "sharded": {"model": "mlp", "hidden": (100,), "n_epochs": 10, "batch_size": 32, "lr": 0.05},
}
"""Kinds with one recipe for every dataset."""

BY_KIND: dict[str, dict[str, dict[str, Any]]] = {"learn": RECIPES, "forget": FORGET_RECIPES}
"""Kinds whose recipe depends on the dataset, and their tables."""

CNN_HIDDEN: tuple[int, ...] = (64,)
"""``hidden`` of ``model="cnn"`` when the recipe is an MLP's: one dense layer of 64 units."""


def recipe_name(dataset: str) -> str:
    """The recipe entry ``dataset`` uses: ``"npz"`` for ``npz:PATH``, else its own name."""
    return "npz" if dataset.startswith("npz:") else dataset


def recipe(kind: str, dataset: str) -> dict[str, Any] | None:
    """The full default recipe (every field of :data:`TRAIN_FIELDS`) of a ``kind`` run on
    ``dataset``, or ``None`` when that dataset has none for that kind."""
    if kind in KIND_DEFAULTS:
        base = KIND_DEFAULTS[kind]
    else:
        table = BY_KIND.get(kind)
        if table is None:
            raise ObliviateError(f"run kind {kind!r} has no recipes; valid: {', '.join(BY_KIND)}")
        entry = table.get(recipe_name(dataset))
        if entry is None:
            return None
        base = entry
    out = {**COMMON_DEFAULTS, **base}
    out["hidden"] = tuple(out["hidden"])
    return out


def fill(kind: str, dataset: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every recipe field: ``given`` (its non-``None`` values) over the default recipe of
    ``kind`` on ``dataset``. A changed ``model`` without ``hidden`` takes that model's default
    widths (:data:`CNN_HIDDEN` for a CNN, ``npz``'s for an MLP). A dataset without a recipe is
    fine when ``given`` sets every field; otherwise :class:`~obliviate.errors.ObliviateError`
    names the dataset, the missing fields and the two ways to give them."""
    set_ = {k: v for k, v in given.items() if v is not None and k in TRAIN_FIELDS}
    base = recipe(kind, dataset)
    if base is None:
        missing = [
            k for k in TRAIN_FIELDS if k not in set_ and k not in COMMON_DEFAULTS and k != "hidden"
        ]
        if "hidden" not in set_ and set_.get("model", "mlp") != "cnn":
            missing.insert(1, "hidden")
        if missing:
            raise ObliviateError(
                f"dataset {dataset!r} has no default {kind} recipe; register one with "
                f"obliviate.experiments.register_dataset({recipe_name(dataset)!r}, loader, "
                f"recipe={{...}}) or set {', '.join(missing)} in the spec or on the command line"
            )
        base = {**COMMON_DEFAULTS, "model": "mlp", "hidden": CNN_HIDDEN}
    model = set_.get("model", base["model"])
    if "hidden" in set_:
        hidden = set_["hidden"]
    elif model == base["model"]:
        hidden = base["hidden"]
    else:
        hidden = CNN_HIDDEN if model == "cnn" else RECIPES["npz"]["hidden"]
    out = {k: set_[k] if k in set_ else base[k] for k in TRAIN_FIELDS}
    out["model"], out["hidden"] = model, tuple(int(h) for h in hidden)
    return out


def register_dataset(
    name: str,
    loader: Callable[[str | None], Any],
    *,
    recipe: Mapping[str, Any],
    forget_recipe: Mapping[str, Any] | None = None,
    help: str = "",  # noqa: A002 - the CLI's word for it
) -> None:
    """Register a dataset: its loader and its default recipe, in one call.

    ``loader(data_dir) -> (x, y, x_test, y_test)``: NumPy arrays (``x`` float ``[N, ...]``,
    ``y`` int ``[N]``; ``x_test``/``y_test`` may be ``None``, then 20 % of the rows are held out,
    stratified, split seed 0), as the built-in sources in :mod:`obliviate.data.datasets`.
    ``recipe``: the recipe fields (:data:`TRAIN_FIELDS`; ``optimizer``, ``momentum`` and
    ``weight_decay`` may be left out) used by ``learn`` runs and, unless ``forget_recipe`` is
    given, by the original and oracle of ``forget`` runs. ``help`` is the line ``obliviate list
    datasets`` shows. Re-registering a name replaces it; ``npz:`` names are reserved. Bad
    input raises :class:`~obliviate.errors.ObliviateError`.
    """

    if not isinstance(name, str) or not name or name.startswith("npz:") or ":" in name:
        raise ObliviateError(f"dataset name {name!r}: give a plain name such as 'blobs'")
    if not callable(loader):
        raise ObliviateError(f"register_dataset({name!r}): loader must be callable(data_dir)")
    learn = _check_recipe(name, "recipe", recipe)
    forget = learn if forget_recipe is None else _check_recipe(name, "forget_recipe", forget_recipe)
    DATASETS[name] = loader
    DATASET_HELP[name] = help or f"{name} (registered)"
    RECIPES[name] = learn
    FORGET_RECIPES[name] = forget


def _check_recipe(dataset: str, what: str, r: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(r, Mapping):
        raise ObliviateError(f"register_dataset({dataset!r}): {what} must be a dict of fields")
    unknown = [k for k in r if k not in TRAIN_FIELDS]
    if unknown:
        raise ObliviateError(
            f"register_dataset({dataset!r}): {what} has no field {unknown[0]!r}; "
            f"valid: {', '.join(TRAIN_FIELDS)}"
        )
    missing = [k for k in TRAIN_FIELDS if k not in r and k not in COMMON_DEFAULTS]
    if missing:
        raise ObliviateError(f"register_dataset({dataset!r}): {what} lacks {', '.join(missing)}")
    out = {**COMMON_DEFAULTS, **r}
    hidden = out["hidden"]
    if isinstance(hidden, int | float | str) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden
    ):
        raise ObliviateError(
            f"register_dataset({dataset!r}): {what} hidden must be a tuple of widths >= 1, "
            f"got {hidden!r}"
        )
    out["hidden"] = tuple(hidden)
    try:  # the same checks a run applies, now rather than at its first step
        ModelSpec(name=out["model"], hidden=out["hidden"])
        TrainConfig(
            n_epochs=out["n_epochs"],
            batch_size=out["batch_size"],
            lr=out["lr"],
            optimizer=out["optimizer"],
            momentum=out["momentum"],
            weight_decay=out["weight_decay"],
        )
    except ObliviateError as exc:
        raise ObliviateError(f"register_dataset({dataset!r}): {what}: {exc}") from None
    return {k: out[k] for k in r} | {"hidden": out["hidden"]}


__all__ = [
    "BY_KIND",
    "COMMON_DEFAULTS",
    "FORGET_RECIPES",
    "KIND_DEFAULTS",
    "RECIPES",
    "TRAIN_FIELDS",
    "fill",
    "recipe",
    "recipe_name",
    "register_dataset",
]
