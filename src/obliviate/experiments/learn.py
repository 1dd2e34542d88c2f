"""Run kind ``learn``: continual learning, one spec in, one JSON-able result out.

:class:`LearnSpec` says everything a continual-learning run needs; :func:`run` (also exported as
``run_learn``) runs it and returns the result that ``obliviate learn --json`` writes and the
benchmark runner stores::

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

Unset recipe fields (``None``) come from the dataset's learn recipe
(:mod:`obliviate.recipes`); a dataset without one needs them set.

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
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from obliviate import parallel, recipes
from obliviate._hyper import param_names
from obliviate.continual import make_strategy, strategy_class
from obliviate.continual.loop import train_stream
from obliviate.data import build_scenario, load_dataset
from obliviate.data.dataset import Dataset
from obliviate.data.datasets import DATA_ENV
from obliviate.data.scenarios import SCENARIOS
from obliviate.data.streams import ONLINE_BATCH_SIZE
from obliviate.errors import ObliviateError
from obliviate.experiments import _spec as S
from obliviate.io import jsonable
from obliviate.metrics import summary
from obliviate.models import ModelSpec, model_for_stream
from obliviate.provenance import provenance
from obliviate.training import TrainConfig, precision

SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("acc", "ACC"),
    ("bwt", "BWT"),
    ("forgetting", "forgetting"),
    ("seconds", "s"),
)
"""The figures ``obliviate report`` / ``compare`` show: (dotted result key, column name)."""

METHOD_KEYS: tuple[str, ...] = ("dataset", "scenario", "strategy")
"""The spec keys that name what a run compares (its seeds are summarised together)."""

METHOD_FIELD = "strategy"
"""The field naming a registered method; a spec file gives its hyperparameters per name in
``[learn.params.<strategy>]``."""

SHARED_MODELS_IGNORE: tuple[str, ...] | None = None
"""Learn runs share no trained models."""

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
"""Keys of every :func:`run` result (``curves`` is added when ``eval_every`` is set)."""

METRIC_KEYS: tuple[str, ...] = ("acc", "bwt", "fwt", "forgetting", "learning_accuracy", "seconds")
"""The scalar figures :func:`aggregate` summarises over seeds."""

SINGLE_PASS_SCENARIOS = ("online",)
"""Task-free scenarios trained by the online protocol (:func:`obliviate.training.online_config`):
:meth:`LearnSpec.resolved` sets one epoch and small batches for them, whatever the recipe says."""


def label(run: Mapping[str, Any]) -> str:
    """A short name of a grid point: strategy(params) dataset/scenario."""
    params = ",".join(f"{k}={v}" for k, v in sorted(run.get("params", {}).items()))
    return f"{run['strategy']}{'(' + params + ')' if params else ''} {run['dataset']}/{run['scenario']}"


@dataclass(frozen=True)
class StreamSpec:
    """The fields of a continual-learning stream and its training recipe, shared by
    :class:`LearnSpec` and :class:`~obliviate.experiments.lifecycle.LifecycleSpec` (abstract:
    the run kinds' specs add their own fields and checks; it is never run itself). ``None``
    recipe fields take the dataset's default learn recipe.

    Parameters
    ----------
    dataset : a name from ``obliviate.data.DATASETS`` or ``"npz:PATH"``.
    scenario : a name from ``obliviate.data.SCENARIOS`` (e.g. ``"class-incremental"``).
    n_experiences : number of experiences of the stream (>= 1).
    strategy : a name from ``obliviate.continual.STRATEGIES``.
    params : the strategy's hyperparameters (constructor keywords); the rest take its defaults.
    scenario_params : the scenario builder's own keywords (e.g. ``blurry`` of ``online``,
        ``n_tasks`` of ``recurring``).
    model : ``"mlp"`` or ``"cnn"``; task-aware scenarios get the multi-head version of it.
    hidden : hidden widths (MLP) or ``(dense width,)`` (CNN); ``()`` is a linear model.
    n_epochs, batch_size, lr, optimizer, momentum, weight_decay : the training recipe per
        experience (:class:`obliviate.training.TrainConfig`).
    seed : seeds model init, data order, class order / permutations and the strategy.
    device, precision : where the run trains and at which precision
        (:func:`obliviate.training.precision`).
    data_dir : folder of IDX files for ``mnist`` / ``fashion-mnist`` (default ``$OBLIVIATE_DATA``).
    limit : keep only the first ``limit`` training rows (quick runs); ``None`` keeps all.
    """

    dataset: str = S.option("digits", check=S.dataset, alias="datasets", required=True)
    scenario: str = S.option(
        "class-incremental", check=S.scenario, alias="scenarios", required=True
    )
    n_experiences: int = S.option(5, check=S.positive_int)
    strategy: str = S.option("naive", check=S.strategy, alias="strategies", required=True)
    params: Mapping[str, Any] = S.option(default_factory=dict, check=S.table)
    scenario_params: Mapping[str, Any] = S.option(default_factory=dict, check=S.table)
    model: str | None = S.option(None, check=S.model)
    hidden: tuple[int, ...] | None = S.option(None, check=S.widths)
    n_epochs: int | None = S.option(None, check=S.nonnegative_int)
    batch_size: int | None = S.option(None, check=S.positive_int)
    lr: float | None = S.option(None, check=S.positive_number)
    optimizer: str | None = S.option(None, check=S.optimizer)
    momentum: float | None = S.option(None, check=S.momentum)
    weight_decay: float | None = S.option(None, check=S.nonnegative_number)
    seed: int = S.option(0, check=S.any_int, alias="seeds")
    device: str = S.option("cpu", check=S.device)
    precision: str = S.option("fp32", check=S.precision)
    data_dir: str | None = S.option(None)
    limit: int | None = S.option(None, check=S.positive_int)


def stream_fields(spec: StreamSpec) -> dict[str, Any]:
    """The values of ``spec``'s :class:`StreamSpec` fields, by name."""
    return {f.name: getattr(spec, f.name) for f in fields(StreamSpec)}


@dataclass(frozen=True)
class LearnSpec(StreamSpec):
    """Everything one continual-learning run needs: the fields of :class:`StreamSpec` (the
    stream and its recipe) and ``eval_every``. ``None`` recipe fields take the dataset's
    default learn recipe; :meth:`resolved` fills them in.

    Parameters
    ----------
    dataset, scenario, n_experiences, strategy, params, scenario_params, model, hidden,
    n_epochs, batch_size, lr, optimizer, momentum, weight_decay, seed, device, precision,
    data_dir, limit : see :class:`StreamSpec`.
    eval_every : continual evaluation every this many optimiser steps (``None``: off).

    Errors: bad values raise :class:`~obliviate.errors.ObliviateError` naming the field.
    """

    eval_every: int | None = S.option(None, check=S.positive_int)

    def __post_init__(self) -> None:
        S.validate(self)
        valid_sp = scenario_keywords(self.scenario)
        bad = [k for k in self.scenario_params if k not in valid_sp]
        if bad:
            raise ObliviateError(
                f"scenario {self.scenario!r} has no parameter {bad[0]!r}; valid: {', '.join(valid_sp) or '(none)'}"
            )
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ObliviateError(f"data_dir must be a folder path, got {self.data_dir!r}")
        # a dataset without a learn recipe fails here, before any work
        recipes.fill("learn", self.dataset, {k: getattr(self, k) for k in recipes.TRAIN_FIELDS})

    # ---- resolution ----------------------------------------------------------------------
    @property
    def recipe_name(self) -> str:
        """The recipe entry the dataset uses (``"npz"`` for ``npz:PATH``)."""
        return recipes.recipe_name(self.dataset)

    def resolved(self) -> LearnSpec:
        """A copy with every ``None`` recipe field filled from the dataset's learn recipe and
        ``params`` completed with every strategy hyperparameter (validated by constructing the
        strategy). Resolving a resolved spec returns it unchanged (no second resolution)."""
        if S.is_resolved(self):
            return self
        filled = recipes.fill(
            "learn", self.dataset, {k: getattr(self, k) for k in recipes.TRAIN_FIELDS}
        )
        if self.scenario in SINGLE_PASS_SCENARIOS:  # the online protocol: one pass, small batches
            filled["n_epochs"] = 1
            filled["batch_size"] = min(int(filled["batch_size"]), ONLINE_BATCH_SIZE)
        return S.mark_resolved(replace(self, params=self.strategy_params(), **filled))

    def strategy_params(self) -> dict[str, Any]:
        """Every hyperparameter of the strategy: ``params`` over its defaults, plus the run seed
        for a ``seed`` hyperparameter ``params`` leaves unset. Bad keys or values raise."""
        cls = strategy_class(self.strategy)
        valid = param_names(cls)
        unknown = [k for k in self.params if k not in valid]
        if unknown:
            raise ObliviateError(
                f"strategy {self.strategy!r} has no parameter {unknown[0]!r}; valid: {', '.join(valid) or '(none)'}"
            )
        params = S.constructor_params(self.params)
        if "seed" in valid and "seed" not in params:
            params["seed"] = self.seed
        try:
            strategy = cls(**params)
        except TypeError as exc:  # e.g. a positional-only quirk; keep it one line
            raise ObliviateError(f"strategy {self.strategy!r}: {exc}") from None
        return jsonable(strategy.get_params())

    def train_config(self):  # type: ignore[no-untyped-def]
        """The :class:`~obliviate.training.TrainConfig` of the resolved recipe."""
        r = self.resolved()
        return TrainConfig(
            n_epochs=r.n_epochs,
            batch_size=r.batch_size,
            lr=r.lr,
            optimizer=r.optimizer,
            momentum=r.momentum,
            weight_decay=r.weight_decay,
            seed=r.seed,
        )

    def model_spec(self):  # type: ignore[no-untyped-def]
        """The :class:`~obliviate.models.ModelSpec` of the resolved recipe (init seeded by ``seed``)."""
        r = self.resolved()
        return ModelSpec(name=r.model, hidden=r.hidden, seed=r.seed)

    # ---- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of all fields (tuples become lists)."""
        return S.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LearnSpec:
        """Build a spec from a dict such as :meth:`to_dict`'s output or a benchmark-runner run
        (a ``"kind": "learn"`` entry is accepted and ignored). Unknown keys raise."""
        return S.from_dict(cls, data, "learn")


Spec = LearnSpec


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
    with the trained model (e.g. unlearning). :func:`run` is the JSON view of it."""

    spec = spec.resolved()
    _warm_up()
    train, test = _load(spec)
    stream = build_scenario(
        spec.scenario,
        train,
        test,
        n_experiences=spec.n_experiences,
        seed=spec.seed,
        **spec.scenario_params,
    )
    strategy = make_strategy(spec.strategy, **S.constructor_params(spec.params))
    model = model_for_stream(spec.model_spec(), stream).to(spec.device)  # init drawn on the CPU
    with precision(spec.precision):
        result = train_stream(
            model,
            stream,
            strategy,
            spec.train_config(),
            eval_every=spec.eval_every,
            progress=progress,
        )
    return LearnRun(
        spec=spec, stream=stream, model=model, strategy=result.state.strategy, result=result
    )


def result_from_run(run: LearnRun) -> dict[str, Any]:
    """The JSON result (see the module docstring) of a finished :class:`LearnRun`."""

    res = run.result
    metrics = summary(res.accuracy_matrix, res.initial_accuracy)
    out: dict[str, Any] = {
        "accuracy_matrix": res.accuracy_matrix.tolist(),
        "initial_accuracy": res.initial_accuracy.tolist(),
        **metrics,
        "seconds": res.seconds,
        "n_steps": res.n_steps,
        "spec": run.spec.to_dict(),
        "provenance": provenance(
            seed=run.spec.seed, device=run.spec.device, precision=run.spec.precision
        ),
    }
    if run.spec.eval_every:
        out["curves"] = {k: list(v) for k, v in res.curves.items()}
    return jsonable(out)


def run(spec: LearnSpec, *, progress: bool = False) -> dict[str, Any]:
    """Run one continual-learning experiment and return its JSON result.

    THE programmatic entry point behind ``obliviate learn`` and the benchmark runner: resolve
    ``spec`` once (default recipe, strategy defaults), load the dataset, build the scenario,
    build the model (multi-head on task-aware scenarios), run
    :func:`~obliviate.continual.loop.train_stream` and compute the metrics. ``progress`` shows
    a rich progress bar. Bad input raises :class:`~obliviate.errors.ObliviateError`.
    """
    return result_from_run(learn(spec, progress=progress))


run_learn = run


def aggregate(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single run) of the scalar
    figures in :data:`METRIC_KEYS` over runs (e.g. seeds): ``{"n": k, "mean": {...},
    "std": {...}}``. Figures that are ``None`` in every run stay ``None``."""
    import numpy as np

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


def _load(spec: LearnSpec) -> tuple[Dataset, Dataset]:
    """``load_dataset`` of ``spec``; in a warm pool worker (a bench grid's runs) the loaded
    arrays are shared by every run and worker of the pool (one copy, mapped copy-on-write
    by :func:`obliviate.parallel.shared_value`): each run gets a fresh mapping, so
    nothing one run does to its rows reaches another. The key holds the data files' sizes and
    modification times, so changed files are loaded afresh."""

    def load() -> tuple[Dataset, Dataset]:
        return load_dataset(spec.dataset, data_dir=spec.data_dir, limit=spec.limit)

    if not parallel.in_worker():
        return load()
    return parallel.shared_value(
        ("learn.load_dataset", spec.dataset, spec.data_dir, spec.limit, _files_signature(spec)),
        load,
    )


def _files_signature(spec: LearnSpec) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime) of the files a dataset may be read from (the ``npz:`` file, the
    files of ``data_dir`` and of its sub-folders one level down)."""
    paths = [Path(spec.dataset[4:])] if spec.dataset.startswith("npz:") else []
    base = spec.data_dir or os.environ.get(DATA_ENV)
    if base and Path(base).is_dir():
        for p in Path(base).iterdir():
            paths += sorted(p.iterdir()) if p.is_dir() else [p]
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((str(p), st.st_size, st.st_mtime_ns))
    return tuple(out)


@functools.cache
def _warm_up() -> None:
    """Pay torch's one-off lazy imports (the first optimiser imports ``torch._dynamo``, about a
    second) before the loop's clock starts, so ``seconds`` measures training, not imports."""
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def scenario_keywords(scenario: str) -> list[str]:
    """The keyword parameters a scenario builder takes beyond ``n_experiences`` and ``seed``."""
    import inspect

    fn = SCENARIOS[scenario]
    return [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in ("n_experiences", "seed")
    ]


__all__ = [
    "METHOD_KEYS",
    "METRIC_KEYS",
    "RESULT_KEYS",
    "SUMMARY_COLUMNS",
    "LearnRun",
    "LearnSpec",
    "Spec",
    "StreamSpec",
    "aggregate",
    "label",
    "learn",
    "result_from_run",
    "run",
    "run_learn",
    "stream_fields",
]
