"""The strategy conformance suite: checks every registered continual strategy must pass.

Each check is a function ``check_*(cls) -> None`` that raises :class:`AssertionError` with a
message saying what is wrong, or :class:`NotApplicable` when the strategy's declarations
(:mod:`obliviate.continual.base`) put it outside the check's scope. They run on a tiny setup
(:func:`tiny_setup`: 4 synthetic classes in 2 experiences, an MLP with 16 hidden units, 2 epochs)
so all checks of one strategy take about a second or two.

The suite reads only the strategy's declarations, never probes: ``needs_task_ids`` (it then builds
a task-incremental stream and a multi-head model), ``needs_task_boundaries``, ``data_view``,
``neutral_params``, ``keeps_memory`` (+ ``memory_used()`` and the ``memory_size``
hyperparameter) and ``freezes_parameters``.

Usage::

    from obliviate.testing import check_strategy
    check_strategy("ewc")               # runs every check, raises on the first failure
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from obliviate._hyper import param_names
from obliviate.continual import strategy_class
from obliviate.continual.base import Strategy, cross_entropy
from obliviate.continual.loop import StreamResult, train_stream
from obliviate.continual.naive import Naive
from obliviate.data import build_scenario, synthetic_dataset
from obliviate.data.scenarios import Experience, Stream
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, model_for_stream
from obliviate.models.base import seeded_init
from obliviate.testing.models import UserCNN, as_images
from obliviate.training import Batch, TrainConfig

__all__ = [
    "MODELS",
    "STRATEGY_CHECKS",
    "NotApplicable",
    "check_purge_removes_deleted",
    "check_strategy",
    "run_check",
    "tiny_setup",
]


class NotApplicable(Exception):  # noqa: N818 - it is a signal, not an error
    """Raised by a check whose scope excludes the strategy (by its declarations)."""


StrategyType = type[Strategy]


# ---- the tiny setup -----------------------------------------------------------------------------


MODELS = ("builtin", "user")
"""The models the suite runs on: ``"builtin"`` (obliviate's MLP, multi-head on task-aware
streams) and ``"user"`` (:class:`~obliviate.testing.models.UserCNN`: a plain ``nn.Module`` with
BatchNorm and Dropout whose forward takes ``x`` only)."""


@dataclasses.dataclass(frozen=True)
class Setup:
    """A stream, a model spec and a recipe small enough for a unit test."""

    stream: Stream
    spec: ModelSpec
    config: TrainConfig
    user: bool = False

    def model(self) -> nn.Module:
        if self.user:
            with seeded_init(self.spec.seed):
                return UserCNN(n_classes=self.stream.n_classes, side=USER_SIDE)
        return model_for_stream(self.spec, self.stream)


USER_SIDE = 4
"""The user-style setup's samples are ``[1, 4, 4]`` images (16 synthetic features)."""


def tiny_setup(
    cls: StrategyType, *, seed: int = 0, task_free: bool = False, model: str = "builtin"
) -> Setup:
    """4 synthetic classes in 2 experiences (task-incremental when the strategy needs task ids),
    an MLP with 16 hidden units and 2 epochs of SGD with batch size 16.

    ``model="user"``: the samples are ``[1, 4, 4]`` images and the model is a
    :class:`~obliviate.testing.models.UserCNN` (a user's plain module with BatchNorm and
    Dropout, forward ``x`` only), whatever the scenario.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    user = model == "user"
    n_features = USER_SIDE**2 if user else 8
    train, test = synthetic_dataset(n_classes=4, n_per_class=40, n_features=n_features, seed=seed)
    if user:
        train, test = as_images(train, USER_SIDE), as_images(test, USER_SIDE)
    scenario = "task-incremental" if cls.needs_task_ids else "class-incremental"
    stream = build_scenario(scenario, train, test, n_experiences=2, seed=seed)
    if task_free:
        stream = dataclasses.replace(stream, boundaries=False)
    config = TrainConfig(n_epochs=2, batch_size=16, lr=0.1, seed=seed)
    return Setup(stream, ModelSpec(hidden=(16,), seed=seed), config, user)


def _run(strategy: Strategy, setup: Setup, **kwargs: Any) -> tuple[nn.Module, StreamResult]:
    model = setup.model()
    return model, train_stream(model, setup.stream, strategy, setup.config, **kwargs)


def _resolve(cls_or_name: StrategyType | str) -> StrategyType:
    return strategy_class(cls_or_name) if isinstance(cls_or_name, str) else cls_or_name


def _learned(strategy: Strategy) -> list[str]:
    return sorted(k for k in vars(strategy) if k.endswith("_") and not k.startswith("__"))


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where the other has NaN (and nowhere else), infinities of the same sign."""
    if not (a.is_floating_point() or a.is_complex()):
        return bool(torch.equal(a, b))
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    if not torch.equal(nan_a, nan_b):
        return False
    return bool(torch.equal(a[~nan_a], b[~nan_b]))


def _same(a: Any, b: Any) -> bool:
    """Deep equality that treats tensors and arrays bitwise (NaN equal to NaN)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and _bits_equal(a, b)
        )
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _weights_equal(m1: nn.Module, m2: nn.Module) -> bool:
    return _same(m1.state_dict(), m2.state_dict())


def _assert_same_run(
    name: str, a: tuple[nn.Module, StreamResult], b: tuple[nn.Module, StreamResult], what: str
) -> None:
    assert _weights_equal(a[0], b[0]), f"{name}: {what}: the final weights differ"
    assert _same(a[1].accuracy_matrix, b[1].accuracy_matrix), (
        f"{name}: {what}: the accuracy matrices differ:\n{a[1].accuracy_matrix}\n{b[1].accuracy_matrix}"
    )


Watch = Callable[[str, int, Batch | None], None]


class _Watched(Strategy):
    """Runs ``inner`` inside the real loop and reports to ``watch`` before and after each hook.

    Events: ``before-begin``, ``begin``, ``before-loss``, ``loss``, ``backward`` (after
    ``backward()``, before ``adjust_gradients``), ``adjust_gradients``, ``before-end``, ``end``;
    each with the experience index and the batch (``None`` around ``begin``/``end``). Before
    ``begin`` and ``end`` the model's mode alternates between train and eval, so the suite also
    sees whether a hook leaves an eval-mode model in eval mode.
    """

    def __init__(self, inner: Strategy, watch: Watch) -> None:
        self.inner, self.watch = inner, watch
        self.experience = -1
        self.batch: Batch | None = None
        # the loop reads the wrapped strategy's declarations off this instance
        vars(self).update(
            needs_task_boundaries=inner.needs_task_boundaries,
            needs_task_ids=inner.needs_task_ids,
            data_view=inner.data_view,
        )

    def begin(self, model: nn.Module, experience: Experience) -> None:
        self.experience += 1
        i = self.experience
        model.train(i % 2 == 0)  # the hooks must also leave an eval-mode model in eval mode
        self.watch("before-begin", i, None)
        self.inner.begin(model, experience)
        self.watch("begin", i, None)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        self.batch = batch
        self.watch("before-loss", self.experience, batch)
        value = self.inner.loss(model, batch)
        self.watch("loss", self.experience, batch)
        return value

    def adjust_gradients(self, model: nn.Module) -> None:
        self.watch("backward", self.experience, self.batch)
        self.inner.adjust_gradients(model)
        self.watch("adjust_gradients", self.experience, self.batch)

    def end(self, model: nn.Module, experience: Experience) -> None:
        i = self.experience
        model.train(i % 2 == 1)
        self.watch("before-end", i, None)
        self.inner.end(model, experience)
        self.watch("end", i, None)


def _drive(strategy: Strategy, setup: Setup, model: nn.Module, watch: Watch) -> StreamResult:
    """Train with the real loop (:func:`~obliviate.continual.loop.train_stream`), calling
    ``watch(event, experience, batch)`` around every hook (see :class:`_Watched`)."""
    return train_stream(model, setup.stream, _Watched(strategy, watch), setup.config)


# ---- the checks ---------------------------------------------------------------------------------


def check_default_constructible(cls: StrategyType, *, model: str = "builtin") -> None:
    """``cls()`` works; every constructor argument is keyword-only with a default; ``get_params``
    reads them all back; ``repr`` and ``clone`` work."""
    name = cls.__name__
    sig = inspect.signature(cls.__init__)
    for p in list(sig.parameters.values())[1:]:
        assert p.kind is p.KEYWORD_ONLY, (
            f"{name}: constructor argument {p.name!r} must be keyword-only"
        )
        assert p.default is not p.empty, f"{name}: constructor argument {p.name!r} needs a default"
    strategy = cls()
    params = strategy.get_params()
    assert list(params) == param_names(cls), (
        f"{name}: get_params() does not read back every argument"
    )
    for k, v in params.items():
        assert _same(v, sig.parameters[k].default), (
            f"{name}: attribute {k!r} = {v!r} is not the default it was given"
        )
    assert name in repr(strategy)
    assert _same(strategy.clone().get_params(), params), (
        f"{name}: clone() changes the hyperparameters"
    )


def check_no_learned_state_before_training(cls: StrategyType, *, model: str = "builtin") -> None:
    """A fresh strategy holds no attribute ending in ``_`` (learned state)."""
    learned = _learned(cls())
    assert not learned, (
        f"{cls.__name__}: learned state {learned} exists before training; create it in a hook"
    )


def check_learned_state_declared(cls: StrategyType, *, model: str = "builtin") -> None:
    """Every name in ``learned_state`` ends in ``_``; a fresh strategy holds none of them (a
    class-level default must be ``None``); after training, every attribute it recorded that ends
    in ``_`` is declared in ``learned_state``."""
    name = cls.__name__
    bad = [n for n in cls.learned_state if not n.endswith("_") or n.startswith("_")]
    assert not bad, f"{name}: learned_state names must end in '_': {bad}"
    fresh = cls()
    held = [n for n in cls.learned_state if getattr(fresh, n, None) is not None]
    assert not held, f"{name}: declared learned state {held} is set before training"
    strategy = cls()
    _run(strategy, tiny_setup(cls, model=model))
    undeclared = [n for n in _learned(strategy) if n not in cls.learned_state]
    assert not undeclared, (
        f"{name}: training recorded {undeclared} without declaring them in learned_state"
    )


def check_params_unchanged_by_training(cls: StrategyType, *, model: str = "builtin") -> None:
    """Training leaves ``get_params()`` exactly as constructed."""
    strategy = cls()
    before = copy.deepcopy(strategy.get_params())
    _run(strategy, tiny_setup(cls, model=model))
    after = strategy.get_params()
    assert _same(before, after), (
        f"{cls.__name__}: training changed hyperparameters {before} -> {after}"
    )


def check_clone_is_fresh(cls: StrategyType, *, model: str = "builtin") -> None:
    """``clone()`` of a trained strategy has no learned state, the same hyperparameters, and trains
    exactly like a new strategy."""
    setup = tiny_setup(cls, model=model)
    trained = cls()
    first = _run(trained, setup)
    clone = trained.clone()
    assert not _learned(clone), f"{cls.__name__}: clone() carries learned state {_learned(clone)}"
    assert _same(clone.get_params(), trained.get_params()), (
        f"{cls.__name__}: clone() changed hyperparameters"
    )
    _assert_same_run(cls.__name__, first, _run(clone, setup), "training a clone vs the original")


def check_deterministic(cls: StrategyType, *, model: str = "builtin") -> None:
    """The same seed gives bitwise the same weights and accuracy matrix."""
    setup = tiny_setup(cls, model=model)
    _assert_same_run(
        cls.__name__, _run(cls(), setup), _run(cls(), setup), "two runs with the same seed"
    )


def check_inputs_not_mutated(cls: StrategyType, *, model: str = "builtin") -> None:
    """Training does not modify the stream's tensors (features, labels, ids, task ids)."""
    setup = tiny_setup(cls, model=model)

    def tensors(stream: Stream) -> list[torch.Tensor | None]:
        out: list[torch.Tensor | None] = []
        for e in stream:
            for d in (e.train, e.test):
                out += [
                    d.x.clone(),
                    d.y.clone(),
                    d.ids.clone(),
                    None if d.task is None else d.task.clone(),
                ]
        return out

    before = tensors(setup.stream)
    _run(cls(), setup)
    assert _same(before, tensors(setup.stream)), (
        f"{cls.__name__}: training mutated the stream's data"
    )


def check_hooks_restore_mode(cls: StrategyType, *, model: str = "builtin") -> None:
    """Every hook leaves the model's train/eval mode and every ``requires_grad`` as it found them
    (strategies that declare ``freezes_parameters``: ``requires_grad`` over the whole experience)."""
    setup = tiny_setup(cls, model=model)
    strategy = cls()
    net = setup.model()

    def snap() -> tuple[list[bool], dict[str, bool]]:
        return [m.training for m in net.modules()], {
            n: p.requires_grad for n, p in net.named_parameters()
        }

    last = snap()
    at_begin = last

    def watch(event: str, i: int, _batch: Batch | None) -> None:
        nonlocal last, at_begin
        now = snap()
        if event.startswith("before") or event == "backward":
            last = now
            if event == "before-begin":
                at_begin = now
            return
        assert now[0] == last[0], (
            f"{cls.__name__}: hook {event!r} (experience {i}) changed the model's train/eval mode"
        )
        if not cls.freezes_parameters:
            assert now[1] == last[1], (
                f"{cls.__name__}: hook {event!r} (experience {i}) changed requires_grad"
            )
        elif event == "end":
            assert now[1] == at_begin[1], (
                f"{cls.__name__}: requires_grad not restored by the end of experience {i}"
            )
        last = now

    _drive(strategy, setup, net, watch)


def check_neutral_equals_naive(cls: StrategyType, *, model: str = "builtin") -> None:
    """With its declared ``neutral_params`` the strategy is bitwise naive fine-tuning."""
    if not cls.neutral_params:
        raise NotApplicable("declares no neutral_params (not a regulariser)")
    setup = tiny_setup(cls, model=model)
    neutral = cls(**dict(cls.neutral_params))
    _assert_same_run(
        cls.__name__,
        _run(neutral, setup),
        _run(Naive(), setup),
        f"{dict(cls.neutral_params)} vs naive",
    )


def check_default_differs_from_naive(cls: StrategyType, *, model: str = "builtin") -> None:
    """With default hyperparameters a regulariser changes the result (its term is not dead)."""
    if not cls.neutral_params:
        raise NotApplicable("declares no neutral_params (not a regulariser)")
    setup = tiny_setup(cls, model=model)
    trained, _ = _run(cls(), setup)
    naive, _ = _run(Naive(), setup)
    assert not _weights_equal(trained, naive), (
        f"{cls.__name__}: default hyperparameters give naive fine-tuning's weights"
    )


def check_resume_equals_uninterrupted(cls: StrategyType, *, model: str = "builtin") -> None:
    """A checkpoint after experience 1 (``stop_after``) resumed into a fresh model equals the run
    that never stopped."""
    setup = tiny_setup(cls, model=model)
    full = _run(cls(), setup)
    _, part = _run(cls(), setup, stop_after=1)
    _assert_same_run(
        cls.__name__, full, _run(cls(), setup, resume=part.state), "stop after 1 + resume"
    )


def check_pickle_roundtrip(cls: StrategyType, *, model: str = "builtin") -> None:
    """Pickle and deepcopy of a fresh strategy keep its hyperparameters; mid-stream, a pickled or
    deep-copied checkpoint (strategy state included) resumes into the uninterrupted run."""
    setup = tiny_setup(cls, model=model)
    fresh = cls()
    for copied in (pickle.loads(pickle.dumps(fresh)), copy.deepcopy(fresh)):
        assert type(copied) is cls and _same(copied.get_params(), fresh.get_params()), (
            f"{cls.__name__}: copy lost hyperparameters"
        )
    full = _run(cls(), setup)
    _, part = _run(cls(), setup, stop_after=1)
    for how, state in (
        ("pickle", pickle.loads(pickle.dumps(part.state))),
        ("deepcopy", copy.deepcopy(part.state)),
    ):
        _assert_same_run(
            cls.__name__,
            full,
            _run(cls(), setup, resume=state),
            f"{how} of the mid-stream state + resume",
        )


def check_memory_bounded(cls: StrategyType, *, model: str = "builtin") -> None:
    """A strategy that keeps a memory never stores more than ``memory_size`` samples (checked after
    every hook, with a small memory) and does store some after the first experience."""
    if not cls.keeps_memory:
        raise NotApplicable("declares keeps_memory = False")
    assert "memory_size" in param_names(cls), (
        f"{cls.__name__}: keeps_memory needs a memory_size hyperparameter"
    )
    for size in (5, cls().get_params()["memory_size"]):
        setup = tiny_setup(cls, model=model)
        strategy = cls(**{**cls().get_params(), "memory_size": size})

        def watch(
            event: str,
            _i: int,
            _batch: Batch | None,
            size: int = size,
            strategy: Strategy = strategy,
        ) -> None:
            used = strategy.memory_used()
            assert 0 <= used <= size, (
                f"{cls.__name__}: stores {used} samples after {event!r} with memory_size={size}"
            )

        _drive(strategy, setup, setup.model(), watch)
        assert strategy.memory_used() > 0, (
            f"{cls.__name__}: memory_used() is 0 after training with memory_size={size}"
        )


def check_finite_gradients(cls: StrategyType, *, model: str = "builtin") -> None:
    """At every step, every trainable parameter that plain cross-entropy reaches gets a gradient,
    and every gradient is finite."""
    setup = tiny_setup(cls, model=model)
    strategy = cls()
    net = setup.model()
    n_steps = 0
    reached: set[str] = set()

    def watch(event: str, i: int, batch: Batch | None) -> None:
        nonlocal n_steps, reached
        if event == "before-loss":
            assert batch is not None
            params = {n: p for n, p in net.named_parameters() if p.requires_grad}
            grads = torch.autograd.grad(
                cross_entropy(net, batch), list(params.values()), allow_unused=True
            )
            reached = {n for n, g in zip(params, grads, strict=True) if g is not None}
        if event != "adjust_gradients":
            return
        n_steps += 1
        for n, p in net.named_parameters():
            if not p.requires_grad:
                continue
            if n in reached:
                assert p.grad is not None, (
                    f"{cls.__name__}: trainable parameter {n!r} got no gradient (experience {i})"
                )
            if p.grad is not None:
                assert bool(torch.isfinite(p.grad).all()), (
                    f"{cls.__name__}: non-finite gradient in {n!r} (experience {i})"
                )

    _drive(strategy, setup, net, watch)
    assert n_steps > 0, f"{cls.__name__}: no training step was taken"


def check_declared_boundaries(cls: StrategyType, *, model: str = "builtin") -> None:
    """A strategy that declares ``needs_task_boundaries`` is refused on a task-free stream; one
    that does not runs on it."""
    setup = tiny_setup(cls, task_free=True, model=model)
    if cls.needs_task_boundaries:
        try:
            _run(cls(), setup)
        except ObliviateError as err:
            assert "task boundaries" in str(err)
            return
        raise AssertionError(
            f"{cls.__name__}: declares needs_task_boundaries but ran on a task-free stream"
        )
    _, res = _run(cls(), setup)
    assert not np.isnan(res.accuracy_matrix).all(), (
        f"{cls.__name__}: no accuracy on a task-free stream"
    )


# ---- deletion (Strategy.purge) ------------------------------------------------------------------

PURGE_ID_OFFSET = 10**12
"""The purge check moves every training id up by this much, so that a stored integer equal to a
deleted id can only be that id (never a label, a count or a task id)."""


def _purge_setup(cls: StrategyType, model: str) -> Setup:
    setup = tiny_setup(cls, model=model)
    exps = tuple(
        dataclasses.replace(
            e, train=dataclasses.replace(e.train, ids=e.train.ids + PURGE_ID_OFFSET)
        )
        for e in setup.stream
    )
    return dataclasses.replace(setup, stream=dataclasses.replace(setup.stream, experiences=exps))


def _reachable(strategy: Strategy) -> list[tuple[str, Any]]:
    """Every tensor, array and int reachable from the strategy's learned state, with its path:
    through dicts (keys too), lists, tuples, sets and objects' attributes. Models (teachers,
    frozen copies) are influence, not storage, and are not entered."""
    out: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def walk(path: str, obj: Any) -> None:
        if isinstance(obj, bool | float | str | bytes | type) or obj is None:
            return
        if isinstance(obj, int | np.integer):
            out.append((path, int(obj)))
            return
        if id(obj) in seen or isinstance(obj, nn.Module):
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor | np.ndarray):
            out.append((path, torch.as_tensor(obj).detach().cpu()))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(f"{path}<key>", k)
                walk(f"{path}[{k!r}]", v)
        elif isinstance(obj, list | tuple | set | frozenset):
            for i, v in enumerate(obj):
                walk(f"{path}[{i}]", v)
        elif hasattr(obj, "__dict__"):
            for k, v in vars(obj).items():
                walk(f"{path}.{k}", v)

    for name in type(strategy).learned_state:
        if name in vars(strategy):
            walk(name, vars(strategy)[name])
    return out


def _stored_ids(strategy: Strategy, stream: Stream) -> set[int]:
    """Every training id of ``stream`` found in the strategy's learned state."""
    train = torch.cat([e.train.ids for e in stream])
    known = set(train.tolist())
    found: set[int] = set()
    for _, v in _reachable(strategy):
        if isinstance(v, int):
            if v in known:
                found.add(v)
        elif not (v.is_floating_point() or v.is_complex() or v.dtype == torch.bool):
            flat = v.reshape(-1).to(torch.int64)
            found.update(flat[torch.isin(flat, train)].tolist())
    return found


def _containers(strategy: Strategy) -> list[tuple[str, dict[str, Any]]]:
    """The dicts and objects' attribute maps reachable from the learned state (the strategy's
    own attributes included), with their paths: where ids sit next to the rows they identify."""
    out: list[tuple[str, dict[str, Any]]] = [("", vars(strategy))]
    seen: set[int] = set()

    def walk(path: str, obj: Any) -> None:
        if id(obj) in seen or isinstance(obj, nn.Module | torch.Tensor | np.ndarray | type):
            return
        seen.add(id(obj))
        if isinstance(obj, dict):
            out.append((path, obj))
            for k, v in obj.items():
                walk(f"{path}[{k!r}]", v)
        elif isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                walk(f"{path}[{i}]", v)
        elif hasattr(obj, "__dict__"):
            out.append((path, vars(obj)))
            for k, v in vars(obj).items():
                walk(f"{path}.{k}", v)

    for name in type(strategy).learned_state:
        if name in vars(strategy):
            walk(name, vars(strategy)[name])
    return out


def _id_columns(strategy: Strategy) -> dict[str, tuple[int, list[str]]]:
    """For every container holding a 1-D id tensor (a key or attribute named ``ids`` or ending
    in ``ids_``): its path -> (number of ids, the sibling tensors with as many rows)."""
    out: dict[str, tuple[int, list[str]]] = {}
    for path, c in _containers(strategy):
        for key, ids in c.items():
            if not (isinstance(key, str) and (key == "ids" or key.endswith("ids_"))):
                continue
            if not isinstance(ids, torch.Tensor) or ids.ndim != 1:
                continue
            rows = [
                k
                for k, v in c.items()
                if k != key and isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == len(ids)
            ]
            out[f"{path}.{key}"] = (len(ids), rows)
    return out


def _assert_aligned(
    cls: StrategyType, before: dict[str, tuple[int, list[str]]], strategy: Strategy
) -> None:
    """Every tensor that had one row per stored id before the purge still has (no per-sample
    tensor left unfiltered while its ids were removed)."""
    after = _id_columns(strategy)
    for where, (_, rows) in before.items():
        if where not in after:
            continue
        n, now = after[where]
        missing = [k for k in rows if k not in now]
        assert not missing, (
            f"{cls.__name__}: after a purge, {missing} next to {where} no longer have one row per "
            f"stored id ({n}): a per-sample tensor was not filtered with its ids"
        )


def _deleted_rows(strategy: Strategy, stream: Stream, deleted: torch.Tensor) -> list[torch.Tensor]:
    """Fingerprints of the deleted samples: their features (``[n, prod(sample_shape)]``) and, for
    every float tensor stored next to an id tensor (same first dimension, a key or attribute
    named ``ids`` or ending in ``ids_``), its rows at the deleted ids (stored logits, features,
    codes as floats). Rows that are all zero are dropped (a freed slot is zero)."""
    rows = []
    for e in stream:
        hit = torch.isin(e.train.ids, deleted)
        rows.append(e.train.x[hit].reshape(int(hit.sum()), e.train.n_features))
    for _, c in _containers(strategy):
        for key, ids in c.items():
            if not (isinstance(key, str) and (key == "ids" or key.endswith("ids_"))):
                continue
            if not isinstance(ids, torch.Tensor) or ids.ndim != 1:
                continue
            hit = torch.isin(ids.cpu(), deleted)
            for other in c.values():
                if (
                    isinstance(other, torch.Tensor)
                    and other.ndim >= 2
                    and other.shape[0] == ids.shape[0]
                    and other.is_floating_point()
                ):
                    width = int(np.prod(other.shape[1:]))
                    rows.append(other.detach().cpu()[hit].reshape(int(hit.sum()), width))
    return [r.double() for r in rows if r.numel() and bool((r != 0).any(dim=1).all())]


def _assert_purged(
    cls: StrategyType,
    strategy: Strategy,
    deleted: torch.Tensor,
    prints: list[torch.Tensor],
    when: str,
) -> None:
    name, gone = cls.__name__, set(deleted.tolist())
    for path, v in _reachable(strategy):
        if isinstance(v, int):
            assert v not in gone, f"{name}: {when}: deleted id {v} is still stored at {path}"
            continue
        if not (v.is_floating_point() or v.dtype == torch.bool):
            left = set(v.reshape(-1).tolist()) & gone
            assert not left, (
                f"{name}: {when}: deleted ids {sorted(left)[:3]} are still stored in {path}"
            )
            continue
        if v.ndim < 2 or not v.is_floating_point():
            continue
        flat = v.reshape(v.shape[0], int(np.prod(v.shape[1:]))).double()
        for p in prints:
            if p.shape[1] == flat.shape[1]:
                match = (flat[:, None, :] == p[None, :, :]).all(dim=2).any()
                assert not bool(match), (
                    f"{name}: {when}: {path} still holds a row of a deleted sample "
                    f"(its features or a tensor stored with it)"
                )


def _purge_run(cls: StrategyType, setup: Setup) -> tuple[Strategy, nn.Module]:
    """Learn experience 0, purge half of the stored ids (and an id never stored), resume through
    experience 1, purge again; check the state after each purge. Returns the final strategy and
    model."""
    name = cls.__name__
    strategy, model = cls(), setup.model()
    res = train_stream(model, setup.stream, strategy, setup.config, stop_after=1)
    first_ids = setup.stream[0].train.ids
    stored = sorted(_stored_ids(strategy, setup.stream))
    if cls.keeps_memory:
        assert stored, f"{name}: keeps_memory, but no sample id is stored after experience 0"
    never = sorted(set(first_ids.tolist()) - set(stored))[:1]
    deleted = torch.tensor(stored[::2] + never if stored else first_ids[:5].tolist())
    prints = _deleted_rows(strategy, setup.stream, deleted)
    used, columns = strategy.memory_used(), _id_columns(strategy)
    strategy.purge(deleted, model=model)
    _assert_purged(cls, strategy, deleted, prints, "after a purge following experience 0")
    _assert_aligned(cls, columns, strategy)
    kept = set(stored) - set(deleted.tolist())
    lost = kept - _stored_ids(strategy, setup.stream)
    assert not lost, f"{name}: purge removed ids it was not asked to remove: {sorted(lost)[:3]}"
    assert strategy.memory_used() <= used, f"{name}: purge grew the memory"
    if used:
        assert strategy.memory_used() > 0, (
            f"{name}: purge of half the stored ids emptied the memory"
        )
    state = res.state
    state.strategy, state.model_state = strategy, copy.deepcopy(model.state_dict())
    model = setup.model()
    res = train_stream(model, setup.stream, cls(), setup.config, resume=state)
    strategy = res.state.strategy
    _assert_purged(cls, strategy, deleted, prints, "after resuming through experience 1")
    stored = sorted(_stored_ids(strategy, setup.stream))
    if cls.keeps_memory:
        assert stored, f"{name}: no sample id stored after experience 1"
    second = torch.tensor(stored[1::2], dtype=torch.int64)
    both = torch.cat([deleted, second])
    prints = prints + _deleted_rows(strategy, setup.stream, both)
    columns = _id_columns(strategy)
    strategy.purge(both, model=model)
    _assert_purged(cls, strategy, both, prints, "after a second purge following experience 1")
    _assert_aligned(cls, columns, strategy)
    lost = (set(stored) - set(both.tolist())) - _stored_ids(strategy, setup.stream)
    assert not lost, f"{name}: purge removed ids it was not asked to remove: {sorted(lost)[:3]}"
    return strategy, model


def check_purge_removes_deleted(cls: StrategyType, *, model: str = "builtin") -> None:
    """After ``purge(ids, model=model)`` no stored tensor, id or per-sample row of a deleted
    sample remains (:meth:`~obliviate.continual.base.Strategy.purge`).

    On the tiny setup with training ids moved up by :data:`PURGE_ID_OFFSET`: learn experience
    0, purge every other stored id (plus an id never stored), resume through experience 1, purge
    every other id stored then. After each purge, every tensor, array and int reachable from the
    learned state (through dicts, lists, sets and objects, models excepted: influence) must hold
    no deleted id, no deleted sample's features, and no row of any float tensor that was stored
    next to a deleted id (logits, features); the ids not deleted must all still be stored; a
    memory that held samples must not be emptied. Two such runs must end bitwise equal
    (determinism). Statistics computed from stored samples (class means) are checked against
    recomputation per strategy in ``tests/test_strategy_purge.py``.
    """
    setup = _purge_setup(cls, model)
    a, model_a = _purge_run(cls, setup)
    b, model_b = _purge_run(cls, setup)

    ra, rb = _reachable(a), _reachable(b)
    assert [p for p, _ in ra] == [p for p, _ in rb] and _same(
        [v for _, v in ra], [v for _, v in rb]
    ), f"{cls.__name__}: two purged runs with one seed differ"
    assert _weights_equal(model_a, model_b), f"{cls.__name__}: purge is not deterministic"


STRATEGY_CHECKS: tuple[Callable[..., None], ...] = (
    check_default_constructible,
    check_no_learned_state_before_training,
    check_learned_state_declared,
    check_params_unchanged_by_training,
    check_clone_is_fresh,
    check_deterministic,
    check_inputs_not_mutated,
    check_hooks_restore_mode,
    check_neutral_equals_naive,
    check_default_differs_from_naive,
    check_resume_equals_uninterrupted,
    check_pickle_roundtrip,
    check_memory_bounded,
    check_finite_gradients,
    check_declared_boundaries,
    check_purge_removes_deleted,
)
"""Every strategy check, in order; parametrise tests over ``(strategy, check)``."""


def run_check(check: Callable[..., None], cls: StrategyType, model: str = "builtin") -> None:
    """Run one check on ``model`` (see :data:`MODELS`).

    On the user-style model a strategy may refuse with one :class:`ObliviateError` only when it
    declares why: a ``model_requirement`` (e.g. PNN's multi-head MLP) or ``needs_task_ids`` (the
    user's forward takes ``x`` only, so the loop refuses a task-aware stream). That refusal is
    reported as :class:`NotApplicable`; any other refusal, or a multi-line or non-ObliviateError
    failure, fails the check.
    """
    if model == "builtin":
        check(cls)
        return
    if cls.needs_task_ids:  # the loop refuses the x-only user model before any check can run
        try:
            _run(cls(), tiny_setup(cls, model=model))
        except ObliviateError as err:
            assert "\n" not in str(err), f"{cls.__name__}: the refusal is not one line: {err}"
            raise NotApplicable(f"refuses a user-style model: {err}") from err
        raise AssertionError(
            f"{cls.__name__}: needs task ids but trained a model whose forward takes x only"
        )
    try:
        check(cls, model=model)
    except ObliviateError as err:
        text = str(err)
        declared = cls.model_requirement is not None or cls.needs_task_ids
        assert declared, (
            f"{cls.__name__}: refused the user-style model without declaring a "
            f"model_requirement: {text}"
        )
        assert "\n" not in text, f"{cls.__name__}: the refusal is not one line: {text!r}"
        raise NotApplicable(f"refuses a user-style model: {text}") from err


def check_strategy(
    cls_or_name: StrategyType | str,
    *,
    checks: tuple[Callable[..., None], ...] = STRATEGY_CHECKS,
    model: str = "builtin",
) -> dict[str, str]:
    """Run every check on a strategy class (or registry name) on ``model`` (``"builtin"`` or
    ``"user"``, see :data:`MODELS`); raise on the first failure.

    Returns ``{check name: "passed" | "not applicable: <why>"}``.
    """
    cls = _resolve(cls_or_name)
    report: dict[str, str] = {}
    for check in checks:
        try:
            run_check(check, cls, model)
        except NotApplicable as why:
            report[check.__name__] = f"not applicable: {why}"
        else:
            report[check.__name__] = "passed"
    return report
