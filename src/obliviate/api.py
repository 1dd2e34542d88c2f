"""The public API for a user's own model and data: a few functions, no subclassing.

A user brings a plain ``nn.Module`` (BatchNorm, Dropout, frozen parts and a ``forward(x)`` are
fine) and numpy arrays or tensors with their own sample ids::

    import obliviate.api as ob

    train, test = ob.dataset(x, y, ids=my_ids)                  # ids: the user's, everywhere
    model = ob.build(MyNet, seed=0)                             # seeded init
    result = ob.learn(model, ob.stream(train, test), strategy="ewc")       # ACC, BWT, ...
    recipe = ob.recipe(MyNet, n_epochs=10, lr=0.05)             # how to build and train one
    model = recipe.fit(train)                                   # the original (seeded)
    unlearned, report = ob.forget(model, train, [1010, 1020], method="ssd", test=test,
                                  recipe=recipe)                # report: against the oracle

:func:`dataset` validates and splits the arrays, :func:`stream` cuts them into experiences,
:func:`learn` runs a continual strategy over the stream (:func:`obliviate.continual.loop.
train_stream`), :func:`recipe` wraps the user's model factory and training recipe in a
:class:`~obliviate.training.FactoryRecipe`, and :func:`forget` runs an unlearner on named ids and
evaluates it against the model retrained from scratch on the retain set with that recipe
(:func:`obliviate.unlearning.evaluate.evaluate_unlearning`). Every function is deterministic
given its seeds (same seed on CPU, same thread count -> same bits), Dropout included: training,
unlearning and evaluation run with torch's global RNG forked and seeded from ``seed``.

Exact sharded training and deletion of a user's model is not here yet: the sharded engine
(:class:`obliviate.sharded.ShardedStore`) builds its own models from a
:class:`~obliviate.models.ModelSpec`; it takes the user's arrays and ids through
``DataSpec("npz:PATH")`` (see ``examples/own_model_sharded.py``).
"""

from __future__ import annotations

import inspect
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from obliviate._rng import derive_seed
from obliviate.continual import make_strategy, strategy_class
from obliviate.continual.base import Strategy
from obliviate.continual.loop import train_stream
from obliviate.data.dataset import Dataset, as_id_tensor
from obliviate.data.datasets import standardize as standardize_split
from obliviate.data.datasets import stratified_split
from obliviate.data.forget_sets import EmptyForgetSetWarning
from obliviate.data.scenarios import SCENARIOS, Experience, Stream, build_scenario
from obliviate.errors import ObliviateError
from obliviate.metrics import summary
from obliviate.models.base import check_model_output, seeded_init
from obliviate.training import Batch, FactoryRecipe, TrainConfig, model_device
from obliviate.unlearning import make_unlearner, unlearner_class
from obliviate.unlearning.base import ForgetRequest, Unlearner
from obliviate.unlearning.evaluate import CollapseWarning, collapse_message, evaluate_unlearning

ArrayLike = np.ndarray | Tensor | Sequence[Any]


def arrays(
    data: torch.utils.data.Dataset[Any] | torch.utils.data.DataLoader[Any] | Iterable[Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A torch ``Dataset`` (map-style or iterable) or ``DataLoader`` as numpy ``(x, y, ids)``
    for :func:`dataset`: ``ob.dataset(*ob.arrays(loader))``.

    Each item (a dataset's sample, or a loader's batch) is ``(x, y)`` or ``(x, y, id)``: with a
    third element those are the ids (one per row), else ``ids`` is ``None`` (rows get ``0..N-1``
    in iteration order, so use an unshuffled loader). Rows are read once, in order. Raises
    :class:`ObliviateError` when an item is not such a tuple or items disagree.
    """
    batched = isinstance(data, torch.utils.data.DataLoader)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    ids: list[np.ndarray] = []
    n_parts = None
    for k, item in enumerate(_items(data)):
        if not isinstance(item, tuple | list) or len(item) not in (2, 3):
            raise ObliviateError(
                f"item {k} is {type(item).__name__}; each sample or batch must be (x, y) or "
                "(x, y, id)"
            )
        if n_parts is not None and len(item) != n_parts:
            raise ObliviateError(f"item {k} has {len(item)} parts, earlier ones {n_parts}")
        n_parts = len(item)
        parts = [_np(v) for v in item]
        if not batched:
            parts = [p[None] if p.ndim else p.reshape(1) for p in parts]
        xs.append(parts[0])
        ys.append(parts[1].reshape(-1))
        if n_parts == 3:
            ids.append(parts[2].reshape(-1))
    if not xs:
        raise ObliviateError("the dataset is empty; give at least one row")
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ids) if ids else None


def _items(data: Any) -> Iterator[Any]:
    if isinstance(data, torch.utils.data.DataLoader) or not hasattr(data, "__getitem__"):
        yield from data
        return
    for k in range(len(data)):
        yield data[k]


def dataset(
    x: ArrayLike,
    y: ArrayLike,
    ids: ArrayLike | None = None,
    *,
    x_test: ArrayLike | None = None,
    y_test: ArrayLike | None = None,
    ids_test: ArrayLike | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    standardize: bool = True,
    name: str = "user",
) -> tuple[Dataset, Dataset]:
    """The user's arrays as ``(train, test)`` :class:`~obliviate.data.dataset.Dataset` s.

    ``x``: features ``[N, *sample_shape]`` (cast to float32; images keep their shape, e.g.
    ``[N, 1, 8, 8]`` for a CNN). ``y``: int labels ``[N]`` in ``0..n_classes-1``. ``ids``: one
    unique int64 id per row, the ids every deletion request names; ``None`` assigns ``0..N-1``
    (read them back from ``train.ids`` / ``test.ids``). Without ``x_test``/``y_test`` a
    deterministic stratified ``test_fraction`` of the rows (drawn from ``split_seed``) becomes the
    test set, keeping each row's id. With them, test ids are ``ids_test`` or, when ``None``, the
    integers after the largest training id. ``standardize``: per-feature mean and std
    fitted on the training rows only (:func:`obliviate.data.datasets.standardize`; constant
    features keep scale 1).

    Raises :class:`ObliviateError` for non-numeric or non-finite features, labels out of range,
    duplicate ids (within or across the splits), mismatched lengths and an empty split.
    """
    if (x_test is None) != (y_test is None):
        raise ObliviateError("give both x_test and y_test, or neither")
    if ids_test is not None and x_test is None:
        raise ObliviateError("ids_test given without x_test and y_test")
    if x_test is None:
        full = Dataset.from_arrays(_np(x), _np(y), _ids(ids), name=name)
        if not 0 < test_fraction < 1:
            raise ObliviateError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        tr, te = stratified_split(full.y.numpy(), test_fraction, split_seed)
        if len(tr) == 0 or len(te) == 0:
            raise ObliviateError(
                f"a {test_fraction:.0%} stratified test split of {len(full)} rows leaves an empty "
                "part; give more rows per class, or your own x_test and y_test"
            )
        train, test = full.subset(tr), full.subset(te)
    else:
        assert y_test is not None
        y_np, yt_np = _np(y), _np(y_test)
        k = int(max(np.max(y_np, initial=0), np.max(yt_np, initial=0))) + 1
        train = Dataset.from_arrays(_np(x), y_np, _ids(ids), n_classes=k, name=name)
        test_ids = _ids(ids_test)
        if test_ids is None:  # after every training id, so the two never collide
            start = int(train.ids.max()) + 1
            test_ids = torch.arange(start, start + len(yt_np), dtype=torch.int64)
        test = Dataset.from_arrays(_np(x_test), yt_np, test_ids, n_classes=k, name=name)
        clash = np.intersect1d(train.ids.numpy(), test.ids.numpy())
        if clash.size:
            raise ObliviateError(
                f"id {int(clash[0])} names a training row and a test row; ids must be unique "
                "across both"
            )
        if train.sample_shape != test.sample_shape:
            raise ObliviateError(
                f"x rows have shape {train.sample_shape} but x_test rows {test.sample_shape}; "
                "they must match"
            )
    if standardize:
        train, test = standardize_split(train, test)
    return train.renamed(name), test.renamed(name + ":test")


def stream(
    train: Dataset,
    test: Dataset,
    scenario: str = "class-incremental",
    *,
    n_experiences: int = 5,
    seed: int = 0,
    experiences: Sequence[tuple[ArrayLike, ArrayLike]] | None = None,
    **kwargs: Any,
) -> Stream:
    """The user's data as a stream of experiences.

    ``scenario``: one of :data:`obliviate.data.scenarios.SCENARIOS` (``class-incremental``,
    ``task-incremental``, ``domain-permutation``, ``domain-rotation``, ``joint``, ``online``,
    ``recurring``); ``seed`` draws the class order or permutations; ``kwargs`` go to the
    scenario's builder. Row ids are kept in every experience.

    ``experiences``: the user's own split instead of a scenario: one ``(train_ids, test_ids)``
    pair per experience, in order, naming rows of ``train`` and ``test`` by id (one head, no
    task ids; a training id may appear in one experience only, test ids may repeat). With it,
    ``scenario``, ``n_experiences`` and ``seed`` are not used.

    Raises :class:`ObliviateError` for an unknown scenario (listing the valid ones), an
    impossible split, unknown ids, a training id in two experiences, or an experience without
    training or test rows (named, with its classes). Warns (:class:`MissingClassWarning`, one
    line) when a class of ``0..n_classes-1`` has no training row in any experience.
    """
    if experiences is not None:
        own = _own_stream(train, test, experiences)
        check_stream_rows(own)
        return own
    if scenario not in SCENARIOS:
        raise ObliviateError(f"unknown scenario {scenario!r}; valid: {', '.join(SCENARIOS)}")
    built = build_scenario(scenario, train, test, n_experiences=n_experiences, seed=seed, **kwargs)
    check_stream_rows(built)
    return built


class MissingClassWarning(UserWarning):
    """A class of the stream has no training rows in the user's data (a label value below the
    largest one that never occurs, or a class only the test rows have): the model never sees
    it, so its test rows, if any, are always misclassified."""


def check_stream_rows(stream: Stream, *, warn: bool = True) -> None:
    """Refuse a stream with an experience that has no training rows or no test rows (its
    accuracy could not be measured: every metric would be NaN), naming the experience and its
    classes. With ``warn``, one :class:`MissingClassWarning` line names the classes of
    ``0..n_classes-1`` that no experience has a training row of (and the experience each one
    belongs to). Called by :func:`stream` (with the warning) and :func:`learn` (without)."""
    seen: set[int] = set()
    for e in stream.experiences:
        what = f"experience {e.index}" + (
            f" (classes {', '.join(map(str, e.classes))})" if e.classes else ""
        )
        if len(e.train) == 0:
            raise ObliviateError(
                f"{what} has no training rows: the labels lack its classes; use fewer "
                "experiences, or labels 0..n_classes-1 that all occur"
            )
        if len(e.test) == 0:
            raise ObliviateError(
                f"{what} has no test rows, so its accuracy cannot be measured; give test rows "
                "of its classes (x_test/y_test, or a larger test_fraction)"
            )
        seen.update(torch.unique(e.train.y).tolist())
    missing = [c for c in range(stream.n_classes) if c not in seen]
    if not warn or not missing:
        return
    where = {c: e.index for e in stream.experiences for c in e.classes if c in missing}
    names = ", ".join(
        f"{c}" + (f" (experience {where[c]})" if len(stream.experiences) > 1 and c in where else "")
        for c in missing
    )
    warnings.warn(
        f"class{'es' if len(missing) > 1 else ''} {names} of 0..{stream.n_classes - 1} "
        f"ha{'ve' if len(missing) > 1 else 's'} no training rows: the model never learns "
        f"{'them' if len(missing) > 1 else 'it'} (labels must be 0..n_classes-1, each with rows)",
        MissingClassWarning,
        stacklevel=3,
    )


def _own_stream(
    train: Dataset, test: Dataset, experiences: Sequence[tuple[ArrayLike, ArrayLike]]
) -> Stream:
    if len(experiences) == 0:
        raise ObliviateError("experiences is empty; give one (train_ids, test_ids) pair per step")
    exps, seen = [], torch.zeros(0, dtype=torch.int64)
    for i, pair in enumerate(experiences):
        if len(pair) != 2:
            raise ObliviateError(f"experience {i}: give a (train_ids, test_ids) pair")
        tr_ids, te_ids = as_id_tensor(_np(pair[0])), as_id_tensor(_np(pair[1]))
        if tr_ids.numel() == 0:
            raise ObliviateError(f"experience {i} has no training ids")
        again = tr_ids[torch.isin(tr_ids, seen)]
        if again.numel():
            raise ObliviateError(
                f"training id {int(again[0])} is in experience {i} and an earlier one; each "
                "training row belongs to one experience"
            )
        if te_ids.numel() == 0:
            raise ObliviateError(
                f"experience {i} has no test ids, so its accuracy cannot be measured; give at "
                "least one test id per experience"
            )
        seen = torch.cat([seen, tr_ids])
        tr, te = train.select_ids(tr_ids), test.select_ids(te_ids)
        classes = tuple(int(c) for c in torch.unique(tr.y))
        exps.append(Experience(i, tr, te, classes))
    return Stream(
        name="user-split",
        experiences=tuple(exps),
        n_classes=train.n_classes,
        sample_shape=train.sample_shape,
    )


def learn(
    model: nn.Module,
    stream: Stream,
    strategy: str | Strategy = "ewc",
    params: dict[str, Any] | None = None,
    *,
    n_epochs: int = 5,
    lr: float = 0.01,
    batch_size: int = 32,
    momentum: float = 0.9,
    optimizer: str = "sgd",
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``model`` in place on ``stream`` with a continual ``strategy``; return the figures.

    ``strategy``: a registry name (``obliviate list strategies``) built with ``params`` (a
    ``seed`` hyperparameter the params leave unset gets ``seed``), or a strategy instance.
    ``seed`` also drives the data order of every experience. ``model`` is any classifier whose
    ``forward(x)`` returns logits ``[B, n_classes]`` (task-aware streams need
    ``forward(x, task=None)``).

    Returns a JSON-ready dict: ``accuracy_matrix`` (``[T][T]`` list, row ``i`` = accuracy on
    every experience's test set after learning experience ``i``), ``initial_accuracy``,
    ``acc``, ``bwt``, ``fwt``, ``forgetting``, ``forgetting_per_experience``,
    ``learning_accuracy`` (:func:`obliviate.metrics.summary`), ``strategy``, ``params``,
    ``n_steps`` and ``seconds``. Raises :class:`ObliviateError` for an unknown strategy, bad
    hyperparameters, a strategy the stream cannot serve, an experience without training or
    test rows (named), or a diverged run.
    """
    if not isinstance(model, nn.Module):
        raise ObliviateError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if not isinstance(stream, Stream):
        raise ObliviateError(
            f"stream must be an obliviate Stream (from obliviate.api.stream), got "
            f"{type(stream).__name__}"
        )
    check_stream_rows(stream, warn=False)
    first = stream.experiences[0].train if stream.experiences else None
    if first is not None and len(first):
        check_model_output(
            model, first.x.to(model_device(model)), stream.n_classes,
            None if first.task is None else first.task.to(model_device(model)),
        )  # fmt: skip
    if isinstance(strategy, str):
        kwargs = dict(params or {})
        if "seed" in inspect.signature(strategy_class(strategy)).parameters:
            kwargs.setdefault("seed", seed)
        strat = make_strategy(strategy, **kwargs)
    else:
        if params:
            raise ObliviateError("params is for a strategy name; a strategy instance has its own")
        strat = strategy
    config = TrainConfig(
        n_epochs=n_epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        momentum=momentum,
        seed=seed,
    )
    modes = [(m, m.training) for m in model.modules()]
    try:
        with seeded_init(derive_seed(seed, "learn", "global-rng")):  # Dropout masks: seeded too
            result = train_stream(model, stream, strat, config)
    finally:  # the model comes back in the modes it came in (weights trained in place)
        for m, training in modes:
            m.training = training
    return {
        "strategy": type(strat).__name__,
        "params": strat.get_params(),
        "accuracy_matrix": result.accuracy_matrix.tolist(),
        "initial_accuracy": result.initial_accuracy.tolist(),
        **summary(result.accuracy_matrix, result.initial_accuracy),
        "n_steps": result.n_steps,
        "seconds": result.seconds,
    }


def build(factory: Callable[[], nn.Module], *, seed: int = 0) -> nn.Module:
    """A fresh ``factory()`` model whose initial weights come from ``seed`` alone
    (:func:`~obliviate.models.base.seeded_init`): the same factory and seed give bitwise the same
    model, whatever the global torch RNG state. Raises :class:`ObliviateError` when ``factory``
    is not callable or does not return an ``nn.Module``."""
    return FactoryRecipe(factory=factory, seed=seed).build()


def recipe(
    factory: Callable[[], nn.Module],
    *,
    n_epochs: int = 5,
    lr: float = 0.01,
    batch_size: int = 32,
    momentum: float = 0.9,
    optimizer: str = "sgd",
    weight_decay: float = 0.0,
    seed: int = 0,
    loss_fn: Callable[[nn.Module, Batch], Tensor] | None = None,
) -> FactoryRecipe:
    """How to build and train the user's model: ``factory`` (zero-argument callable returning a
    fresh ``nn.Module``; a class works) built with init seed ``seed``, trained with these
    settings and data-order seed ``seed``, minimising ``loss_fn(model, batch)`` (a
    :class:`~obliviate.training.Batch` has ``x``, ``y``, ``ids``; default cross-entropy; the
    unlearners keep their own paper-defined losses). ``recipe(...).fit(train)`` trains the original;
    :func:`forget` retrains the oracle with the same recipe on the retain set. Raises
    :class:`ObliviateError` for bad settings or a non-callable factory."""
    config = TrainConfig(
        n_epochs=n_epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        seed=seed,
    )
    return FactoryRecipe(factory=factory, train=config, seed=seed, loss_fn=loss_fn)


def forget(
    model: nn.Module,
    train: Dataset,
    ids: ArrayLike,
    method: str | Unlearner = "ssd",
    params: dict[str, Any] | None = None,
    *,
    test: Dataset | None = None,
    recipe: FactoryRecipe | None = None,
    factory: Callable[[], nn.Module] | None = None,
    train_config: TrainConfig | None = None,
    evaluate: bool = True,
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """Forget the training rows named by ``ids`` (the user's ids) from ``model``.

    ``method``: an unlearner name (``obliviate list unlearners``) built with ``params`` (a
    ``seed`` hyperparameter the params leave unset gets ``seed``), or an unlearner instance.
    ``model`` is left untouched; the unlearned copy is returned. How the original was built and
    trained is ``recipe`` (from :func:`recipe`), or ``factory`` with ``train_config``
    (default :class:`~obliviate.training.TrainConfig` with ``seed``); it is needed by
    ``method="retrain"`` and, with ``evaluate=True``, to train the oracle: a fresh
    ``factory()`` model (init seed ``seed``) trained from scratch on the retain set.

    Returns ``(unlearned_model, report)``. ``report`` always has ``method``, ``params``,
    ``n_forget``, ``n_retain``, ``forget_ids`` (list) and ``seconds`` (the unlearning alone);
    with ``evaluate=True`` also everything of
    :func:`~obliviate.unlearning.evaluate.evaluate_unlearning` (``original``, ``oracle``,
    ``unlearned``, ``gaps``, ``js_to_oracle``, ``relearn_steps``, ``collapsed``, ``collapse``,
    ...) and ``oracle_seconds``; a collapsed unlearned model (retain accuracy below half-way
    from chance to the oracle's, :func:`~obliviate.unlearning.evaluate.collapse`) also warns
    once with :class:`~obliviate.unlearning.evaluate.CollapseWarning`.

    An empty ``ids`` warns (:class:`~obliviate.data.forget_sets.EmptyForgetSetWarning`, as
    ``obliviate forget`` does) and unlearning is the identity.

    Raises :class:`ObliviateError` for ids that are not a 1-D array (``[[3, 17]]`` is refused,
    never flattened), ids never trained on, a request that forgets every row, an unknown
    method, bad hyperparameters, ``evaluate=True`` without ``test`` or without a
    recipe/factory, and a diverged method (:class:`~obliviate.training.Diverged`).
    """
    if not isinstance(model, nn.Module):
        raise ObliviateError(f"model must be a torch nn.Module, got {type(model).__name__}")
    if recipe is not None and factory is not None:
        raise ObliviateError("give recipe or factory (with train_config), not both")
    if factory is not None:
        recipe = FactoryRecipe(
            factory=factory, train=train_config or TrainConfig(seed=seed), seed=seed
        )
    if evaluate and (test is None or recipe is None):
        missing = "test" if test is None else "recipe (or factory)"
        raise ObliviateError(
            f"evaluate=True needs {missing}: the report compares against a model retrained on "
            "the retain set; pass it, or evaluate=False"
        )
    if len(train):
        check_model_output(model, train.x.to(model_device(model)), train.n_classes)
    wanted = _np(ids)
    if wanted.ndim != 1:  # as the CLI refuses a 2-D .npy: never flattened silently
        raise ObliviateError(
            f"ids must be a 1-D array, got shape {list(wanted.shape)}; pass the ids as a flat list"
        )
    request = ForgetRequest.from_ids(train, as_id_tensor(wanted), recipe)
    if len(request.forget) == 0:  # the CLI's warning for an empty forget set, same words
        warnings.warn(
            f"forget ids {wanted.tolist()!r} select no training sample of {train.name!r}; "
            "unlearning is the identity",
            EmptyForgetSetWarning,
            stacklevel=2,
        )
    unlearner = _unlearner(method, params, seed)
    started = time.perf_counter()
    with seeded_init(derive_seed(seed, "forget", "global-rng")):  # Dropout masks: seeded too
        unlearned = unlearner.unlearn(model, request)
    seconds = time.perf_counter() - started
    report: dict[str, Any] = {
        "method": type(unlearner).__name__,
        "params": unlearner.get_params(),
        "n_forget": len(request.forget),
        "n_retain": 0 if request.retain is None else len(request.retain),
        "forget_ids": request.forget.ids.tolist(),
        "seconds": seconds,
    }
    if evaluate:
        assert recipe is not None and test is not None and request.retain is not None
        started = time.perf_counter()
        oracle = recipe.fit(request.retain, n_classes=train.n_classes, device=model_device(model))
        report["oracle_seconds"] = time.perf_counter() - started
        with seeded_init(derive_seed(seed, "evaluate", "global-rng")):
            report.update(evaluate_unlearning(model, oracle, unlearned, request, test, seed=seed))
        if report["collapsed"]:
            warnings.warn(
                collapse_message(report, f"{report['method']} unlearned model"),
                CollapseWarning,
                stacklevel=2,
            )
    return unlearned, report


def _unlearner(method: str | Unlearner, params: dict[str, Any] | None, seed: int) -> Unlearner:
    if not isinstance(method, str):
        if params:
            raise ObliviateError("params is for a method name; an unlearner instance has its own")
        return method
    kwargs = dict(params or {})
    if "seed" in inspect.signature(unlearner_class(method)).parameters:
        kwargs.setdefault("seed", seed)
    unlearner: Unlearner = make_unlearner(method, **kwargs)
    return unlearner


def _np(a: ArrayLike) -> np.ndarray:
    """A numpy view of user data (tensors are moved to the CPU and detached; a set of ids is
    taken in sorted order)."""
    if a is None:
        raise ObliviateError("ids is None; give the ids to forget (a list, array or tensor)")
    if isinstance(a, set | frozenset):
        return np.asarray(sorted(a))
    if isinstance(a, Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _ids(a: ArrayLike | None) -> Tensor | None:
    return None if a is None else as_id_tensor(_np(a))


__all__ = [
    "CollapseWarning",
    "MissingClassWarning",
    "arrays",
    "build",
    "dataset",
    "forget",
    "learn",
    "recipe",
    "stream",
]
