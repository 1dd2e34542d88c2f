"""Continual-learning experiments: one spec in, one JSON-able result out.

:class:`LearnSpec` says everything a continual-learning run needs; :func:`run_learn` runs it and
returns the result that ``obliviate learn --json`` writes and the benchmark runner stores. Both
are the stable programmatic entry points::

    from obliviate.experiments import LearnSpec, run_learn

    result = run_learn(LearnSpec(dataset="digits", scenario="class-incremental",
                                 n_experiences=5, strategy="replay",
                                 params={"memory_size": 200}, seed=0))
    result["acc"], result["accuracy_matrix"]

The result dict (every value JSON-able; undefined figures such as BWT on a one-experience stream
are ``None``) has exactly the keys in :data:`RESULT_KEYS` plus ``curves`` when ``eval_every`` is
set:

``accuracy_matrix``  ``R[i][j]``, accuracy on experience ``j``'s test set after learning ``i``;
``initial_accuracy``  the untrained model's accuracy on each experience (the FWT reference);
``acc``, ``bwt``, ``fwt``, ``forgetting``, ``forgetting_per_experience``, ``learning_accuracy``
    see :mod:`obliviate.metrics.accuracy_matrix`;
``seconds``  wall time of the training loop (training and the per-experience evaluation; data
    loading excluded); ``n_steps``  optimiser steps taken;
``spec``  the fully resolved configuration (:meth:`LearnSpec.to_dict` of the resolved spec,
    including every strategy hyperparameter), enough to rerun it;
``provenance``  versions, git commit, platform, time and the seed;
``curves``  continual evaluation every ``eval_every`` steps: ``step``, ``experience`` and ``acc``
    (one row per evaluation; ``None`` for experiences not yet seen).

Default recipes
---------------
Unset training fields (``None``) are filled from :data:`RECIPES` for the dataset (``npz:...``
datasets use the ``"npz"`` entry). The choices, made for clarity and speed on a laptop CPU rather
than tuned on test accuracy:

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

``model="cnn"`` with ``hidden`` unset uses a 64-unit dense layer after the convolutions.

Seeds
-----
``seed`` seeds the model initialisation (``ModelSpec.seed``), the data order
(``TrainConfig.seed``), the class order of class-split scenarios and the permutations of
``domain-permutation``, and, when the strategy has a ``seed`` hyperparameter that ``params`` does
not set, the strategy (e.g. the replay buffer). The train/test split of datasets without a fixed
split does not depend on it (every seed sees the same split). Same spec on CPU -> the same bits.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from obliviate._validation import check_choice, check_number
from obliviate.errors import ObliviateError

__all__ = [
    "RECIPES",
    "RESULT_KEYS",
    "LearnRun",
    "LearnSpec",
    "aggregate",
    "learn",
    "result_from_run",
    "run_learn",
]

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
"""Default training recipe per dataset; fields not named here default to
``optimizer="sgd"``, ``momentum=0.0``, ``weight_decay=0.0``."""

_COMMON_DEFAULTS: dict[str, Any] = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0}
_CNN_HIDDEN = (64,)

RESULT_KEYS: tuple[str, ...] = (
    "accuracy_matrix",
    "initial_accuracy",
    "acc",
    "bwt",
    "fwt",
    "forgetting",
    "forgetting_per_experience",
    "learning_accuracy",
    "seconds",
    "n_steps",
    "spec",
    "provenance",
)
"""Keys of every :func:`run_learn` result (``curves`` is added when ``eval_every`` is set)."""

METRIC_KEYS: tuple[str, ...] = ("acc", "bwt", "fwt", "forgetting", "learning_accuracy", "seconds")
"""The scalar figures :func:`aggregate` summarises over seeds."""


@dataclass(frozen=True)
class LearnSpec:
    """Everything one continual-learning run needs. ``None`` training fields take the dataset's
    default recipe (:data:`RECIPES`); :meth:`resolved` fills them in.

    Parameters
    ----------
    dataset : a name from ``obliviate.data.DATASETS`` or ``"npz:PATH"``.
    scenario : a name from ``obliviate.data.SCENARIOS`` (e.g. ``"class-incremental"``).
    n_experiences : number of experiences of the stream (>= 1).
    strategy : a name from ``obliviate.continual.STRATEGIES``.
    params : the strategy's hyperparameters (constructor keywords); the rest take its defaults.
    model : ``"mlp"`` or ``"cnn"``; task-aware scenarios get the multi-head version of it.
    hidden : hidden widths (MLP) or ``(dense width,)`` (CNN); ``()`` is a linear model.
    n_epochs, batch_size, lr, optimizer, momentum, weight_decay : the training recipe per
        experience (:class:`obliviate.training.TrainConfig`).
    seed : seeds model init, data order, class order / permutations and the strategy.
    data_dir : folder of IDX files for ``mnist`` / ``fashion-mnist`` (default ``$OBLIVIATE_DATA``).
    eval_every : continual evaluation every this many optimiser steps (``None``: off).
    limit : keep only the first ``limit`` training rows (quick runs); ``None`` keeps all.
    """

    dataset: str = "digits"
    scenario: str = "class-incremental"
    n_experiences: int = 5
    strategy: str = "naive"
    params: Mapping[str, Any] = field(default_factory=dict)
    scenario_params: Mapping[str, Any] = field(default_factory=dict)
    model: str | None = None
    hidden: tuple[int, ...] | None = None
    n_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    seed: int = 0
    data_dir: str | None = None
    eval_every: int | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        from obliviate.continual import STRATEGIES
        from obliviate.data.datasets import DATASETS
        from obliviate.data.scenarios import SCENARIOS
        from obliviate.models import MODELS

        for name in ("dataset", "scenario", "strategy"):
            if not isinstance(getattr(self, name), str):
                raise ObliviateError(
                    f"{name} must be a name (a string), got {getattr(self, name)!r}"
                )
        if not (self.dataset in DATASETS or self.dataset.startswith("npz:")):
            raise ObliviateError(
                f"unknown dataset {self.dataset!r}; valid: {', '.join(list(DATASETS) + ['npz:PATH'])}"
            )
        if self.scenario not in SCENARIOS:
            raise ObliviateError(
                f"unknown scenario {self.scenario!r}; valid: {', '.join(SCENARIOS)}"
            )
        if self.strategy not in STRATEGIES:
            raise ObliviateError(
                f"unknown strategy {self.strategy!r}; valid: {', '.join(sorted(STRATEGIES))}"
            )
        if not isinstance(self.params, Mapping):
            raise ObliviateError(
                f"params must be a mapping of hyperparameters, got {self.params!r}"
            )
        object.__setattr__(self, "params", dict(self.params))
        if not isinstance(self.scenario_params, Mapping):
            raise ObliviateError(f"scenario_params must be a mapping, got {self.scenario_params!r}")
        object.__setattr__(self, "scenario_params", dict(self.scenario_params))
        valid_sp = _scenario_keywords(self.scenario)
        bad = [k for k in self.scenario_params if k not in valid_sp]
        if bad:
            raise ObliviateError(
                f"scenario {self.scenario!r} has no parameter {bad[0]!r}; valid: {', '.join(valid_sp) or '(none)'}"
            )
        check_number("n_experiences", self.n_experiences, low=1, integer=True)
        check_number("seed", self.seed, integer=True)
        if self.model is not None:
            check_choice("model", self.model, MODELS)
        if self.hidden is not None:
            if isinstance(self.hidden, (str, bytes)) or not isinstance(self.hidden, Sequence):
                raise ObliviateError(
                    f"hidden must be a sequence of layer widths, got {self.hidden!r}"
                )
            for h in self.hidden:
                check_number("hidden width", h, low=1, integer=True)
            object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        for name in ("eval_every", "limit"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), low=1, integer=True)
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ObliviateError(f"data_dir must be a folder path, got {self.data_dir!r}")
        # the recipe fields are checked by TrainConfig when they are given
        given = {
            k: getattr(self, k)
            for k in ("n_epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay")
        }
        given = {k: v for k, v in given.items() if v is not None}
        if given:
            from obliviate.training import TrainConfig

            TrainConfig(**given)

    # ---- resolution ----------------------------------------------------------------------
    @property
    def recipe_name(self) -> str:
        """The :data:`RECIPES` entry the dataset uses."""
        return "npz" if self.dataset.startswith("npz:") else self.dataset

    def resolved(self) -> LearnSpec:
        """A copy with every ``None`` training field filled from the dataset's recipe and
        ``params`` completed with every strategy hyperparameter (validated by constructing the
        strategy). Resolving a resolved spec changes nothing."""
        recipe = {**_COMMON_DEFAULTS, **RECIPES[self.recipe_name]}
        model = self.model or recipe["model"]
        if self.hidden is not None:
            hidden = self.hidden
        elif model == recipe["model"]:
            hidden = recipe["hidden"]
        else:
            hidden = _CNN_HIDDEN if model == "cnn" else RECIPES["npz"]["hidden"]
        filled: dict[str, Any] = {"model": model, "hidden": tuple(hidden)}
        for key in ("n_epochs", "batch_size", "lr", "optimizer", "momentum", "weight_decay"):
            value = getattr(self, key)
            filled[key] = recipe[key] if value is None else value
        if self.scenario in SINGLE_PASS_SCENARIOS:  # the online protocol: one pass, small batches
            from obliviate.data.streams import ONLINE_BATCH_SIZE

            filled["n_epochs"] = 1
            filled["batch_size"] = min(int(filled["batch_size"]), ONLINE_BATCH_SIZE)
        return replace(self, params=self.strategy_params(), **filled)

    def strategy_params(self) -> dict[str, Any]:
        """Every hyperparameter of the strategy: ``params`` over its defaults, plus the run seed
        for a ``seed`` hyperparameter ``params`` leaves unset. Bad keys or values raise."""
        from obliviate._hyper import param_names
        from obliviate.continual import strategy_class

        cls = strategy_class(self.strategy)
        valid = param_names(cls)
        unknown = [k for k in self.params if k not in valid]
        if unknown:
            raise ObliviateError(
                f"strategy {self.strategy!r} has no parameter {unknown[0]!r}; valid: {', '.join(valid) or '(none)'}"
            )
        params = _constructor_params(self.params)
        if "seed" in valid and "seed" not in params:
            params["seed"] = self.seed
        try:
            strategy = cls(**params)
        except TypeError as exc:  # e.g. a positional-only quirk; keep it one line
            raise ObliviateError(f"strategy {self.strategy!r}: {exc}") from None
        return _jsonable(strategy.get_params())

    def train_config(self):  # type: ignore[no-untyped-def]
        """The :class:`~obliviate.training.TrainConfig` of the resolved recipe."""
        from obliviate.training import TrainConfig

        r = self.resolved()
        return TrainConfig(
            n_epochs=r.n_epochs,  # type: ignore[arg-type]
            batch_size=r.batch_size,  # type: ignore[arg-type]
            lr=r.lr,  # type: ignore[arg-type]
            optimizer=r.optimizer,  # type: ignore[arg-type]
            momentum=r.momentum,  # type: ignore[arg-type]
            weight_decay=r.weight_decay,  # type: ignore[arg-type]
            seed=r.seed,
        )

    def model_spec(self):  # type: ignore[no-untyped-def]
        """The :class:`~obliviate.models.ModelSpec` of the resolved recipe (init seeded by ``seed``)."""
        from obliviate.models import ModelSpec

        r = self.resolved()
        return ModelSpec(name=r.model, hidden=r.hidden, seed=r.seed)  # type: ignore[arg-type]

    # ---- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of all fields (tuples become lists)."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LearnSpec:
        """Build a spec from a dict such as :meth:`to_dict`'s output or a benchmark-runner run
        (a ``"kind": "learn"`` entry is accepted and ignored). Unknown keys raise."""
        names = [f.name for f in fields(cls)]
        data = {k: v for k, v in data.items() if not (k == "kind" and v == "learn")}
        unknown = [k for k in data if k not in names]
        if unknown:
            raise ObliviateError(
                f"unknown learn-spec key {unknown[0]!r}; valid: {', '.join(names)}"
            )
        return cls(**data)


# ---- running -------------------------------------------------------------------------------


@dataclass
class LearnRun:
    """What :func:`learn` produced: the resolved spec, the stream, the trained model, the
    trained strategy and the loop's :class:`~obliviate.continual.loop.StreamResult`."""

    spec: LearnSpec
    stream: Any
    model: Any
    strategy: Any
    result: Any


def learn(spec: LearnSpec, *, progress: bool = False) -> LearnRun:
    """Run ``spec`` and keep everything (model and stream included), for callers that continue
    with the trained model (e.g. unlearning). :func:`run_learn` is the JSON view of it."""
    from obliviate.continual import make_strategy
    from obliviate.continual.loop import train_stream
    from obliviate.data import build_scenario, load_dataset
    from obliviate.models import model_for_stream

    spec = spec.resolved()
    _warm_up()
    train, test = load_dataset(spec.dataset, data_dir=spec.data_dir, limit=spec.limit)
    stream = build_scenario(
        spec.scenario,
        train,
        test,
        n_experiences=spec.n_experiences,
        seed=spec.seed,
        **spec.scenario_params,
    )
    strategy = make_strategy(spec.strategy, **_constructor_params(spec.params))
    model = model_for_stream(spec.model_spec(), stream)
    result = train_stream(
        model, stream, strategy, spec.train_config(), eval_every=spec.eval_every, progress=progress
    )
    return LearnRun(
        spec=spec, stream=stream, model=model, strategy=result.state.strategy, result=result
    )


def result_from_run(run: LearnRun) -> dict[str, Any]:
    """The JSON result (see the module docstring) of a finished :class:`LearnRun`."""
    from obliviate.metrics import summary
    from obliviate.provenance import provenance

    res = run.result
    metrics = summary(res.accuracy_matrix, res.initial_accuracy)
    out: dict[str, Any] = {
        "accuracy_matrix": res.accuracy_matrix.tolist(),
        "initial_accuracy": res.initial_accuracy.tolist(),
        **metrics,
        "seconds": res.seconds,
        "n_steps": res.n_steps,
        "spec": run.spec.to_dict(),
        "provenance": provenance(seed=run.spec.seed),
    }
    if run.spec.eval_every:
        out["curves"] = {k: list(v) for k, v in res.curves.items()}
    return _jsonable(out)


def run_learn(spec: LearnSpec, *, progress: bool = False) -> dict[str, Any]:
    """Run one continual-learning experiment and return its JSON result.

    THE programmatic entry point behind ``obliviate learn`` and the benchmark runner: resolve
    ``spec`` (default recipe, strategy defaults), load the dataset, build the scenario, build
    the model (multi-head on task-aware scenarios), run
    :func:`~obliviate.continual.loop.train_stream` and compute the metrics. ``progress`` shows
    a rich progress bar. Bad input raises :class:`~obliviate.errors.ObliviateError`.
    """
    return result_from_run(learn(spec, progress=progress))


def aggregate(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single run) of the scalar
    figures in :data:`METRIC_KEYS` over runs (e.g. seeds): ``{"n": k, "mean": {...},
    "std": {...}}``. Figures that are ``None`` in every run stay ``None``."""
    mean: dict[str, float | None] = {}
    std: dict[str, float | None] = {}
    for key in METRIC_KEYS:
        vals = [float(r[key]) for r in results if r.get(key) is not None]
        if not vals:
            mean[key] = std[key] = None
            continue
        arr = np.asarray(vals)
        mean[key] = float(arr.mean())
        std[key] = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"n": len(results), "mean": mean, "std": std}


# ---- helpers -------------------------------------------------------------------------------


@functools.cache
def _warm_up() -> None:
    """Pay torch's one-off lazy imports (the first optimiser imports ``torch._dynamo``, about a
    second) before the loop's clock starts, so ``seconds`` measures training, not imports."""
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


SINGLE_PASS_SCENARIOS = ("online",)
"""Task-free scenarios trained by the online protocol (:func:`obliviate.data.streams.online_config`):
:meth:`LearnSpec.resolved` sets one epoch and small batches for them, whatever the recipe says."""


def _scenario_keywords(scenario: str) -> list[str]:
    """The keyword parameters a scenario builder takes beyond ``n_experiences`` and ``seed``."""
    import inspect

    from obliviate.data.scenarios import SCENARIOS

    fn = SCENARIOS[scenario]
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in ("n_experiences", "seed")
    ]


def _constructor_params(params: Mapping[str, Any]) -> dict[str, Any]:
    # JSON turned tuples into lists; constructors documented with tuples get tuples back
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, NumPy scalars -> Python, NaN/inf -> None, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if value is None or isinstance(value, str):
        return value
    return repr(value)
