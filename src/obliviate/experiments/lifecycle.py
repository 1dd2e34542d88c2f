"""Run kind ``lifecycle``: one stream where learning and deletion requests interleave.

A :class:`LifecycleSpec` names a scenario, a continual-learning strategy and a deletion schedule
(:mod:`obliviate.data.lifecycle`: explicit ``schedule`` or generated from ``deletion_rate``,
``deletion_kinds``, ``deletion_every``). :func:`run` walks the events in order:

``Learn(i)``   the strategy learns experience ``i`` with THE loop
               (:func:`obliviate.continual.loop.train_stream`, resumed from the previous event),
               on the experience's rows minus every id deleted so far;
``Forget(r)``  the deletion is honoured on one of two paths:

   * ``path = "approximate"``: the strategy first purges the ids from whatever it stores
     (:meth:`Strategy.purge`), then the unlearner ``method`` runs on the current model with a
     request holding only what a continual learner still has: the forget rows, and as retain
     set the samples the strategy still stores (after the purge) plus the current experience's
     rows. An unlearner that needs more (the original training set, the training recipe) is
     refused before anything runs;
   * ``path = "exact"``: the sharded continual-learning engine
     (:class:`obliviate.sharded.continual.ShardedContinual`, ``n_shards`` x ``n_slices``, in a
     temporary folder): a Forget rolls every affected shard back to its last checkpoint that
     never saw the ids and replays the rest without them (ledger, receipt). Each event records
     ``bitwise_equal_oracle``: every live checkpoint's sha256 equals that of a store that learned
     the stream without the ids from the start.

After every event the model is evaluated (:func:`evaluate_event`): accuracy on the test set of
every experience learned so far (``accuracy``; its mean is ``retention``), and, once something
was deleted, accuracy on the deleted rows (``forget_acc``), on the retained learned rows
(``retain_acc``) and the loss-threshold membership-inference AUC (deleted rows against held-out
test rows of their classes), each beside the
same figure of the **lifecycle oracle**: the same stream, same seed and strategy, trained from
the start without the ids deleted so far (one oracle per deletion set, continued over the Learn
events that follow it). The cost of a Forget (purge + unlearning, wall seconds) stands beside
the cost of re-running the stream without the ids up to that point (the oracle's training time).

The result dict (JSON-able): ``events`` (one record per event, see :func:`run`),
``accuracy_matrix`` (``R[i][j]`` after learning ``i``, as in the learn kind, rows evaluated right
after each Learn), ``final`` (the last event's record), ``n_deleted``, ``forget_seconds`` and
``rerun_seconds`` (sums over the Forget events), ``seconds`` (the whole run, oracles included),
``schedule`` (the ``(after, request)`` items run), ``spec`` and ``provenance``.
"""

from __future__ import annotations

import copy
import importlib.util
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from obliviate import recipes
from obliviate._hyper import param_names
from obliviate._validation import check_number
from obliviate.continual import make_strategy, strategy_class
from obliviate.continual.buffers import ClassBalancedBuffer, ReservoirBuffer
from obliviate.continual.loop import LoopState, train_stream
from obliviate.data import build_scenario, load_dataset
from obliviate.data.dataset import Dataset
from obliviate.data.lifecycle import (
    GENERATED_KINDS,
    Forget,
    Learn,
    LifecycleStream,
    build_lifecycle,
    generate_schedule,
    parse_schedule,
    without_ids,
)
from obliviate.data.splits import Stream
from obliviate.errors import ObliviateError
from obliviate.experiments import _spec as S
from obliviate.experiments.learn import LearnSpec, StreamSpec, _warm_up, stream_fields
from obliviate.io import jsonable
from obliviate.metrics.membership import loss_threshold_auc
from obliviate.models import model_for_stream
from obliviate.provenance import provenance
from obliviate.sharded.continual import ShardedContinual, check_unique_ids
from obliviate.training import Recipe, accuracy, precision, predict_logits
from obliviate.unlearning import UNLEARNERS, unlearner_class
from obliviate.unlearning.base import ForgetRequest
from obliviate.unlearning.evaluate import nonmembers

SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("final.retention", "retention"),
    ("final.oracle_retention", "oracle retention"),
    ("final.forget_acc", "forget acc"),
    ("final.oracle_forget_acc", "oracle forget acc"),
    ("final.mia_auc", "MIA AUC"),
    ("final.oracle_mia_auc", "oracle MIA AUC"),
    ("forget_seconds", "forget s"),
    ("rerun_seconds", "rerun s"),
)
"""The figures ``obliviate report`` / ``compare`` show: (dotted result key, column name)."""

METHOD_KEYS: tuple[str, ...] = ("dataset", "scenario", "strategy", "path", "method", "schedule")
METHOD_FIELD = "strategy"
"""A spec file gives the strategy's hyperparameters in ``[lifecycle.params.<strategy>]``."""
SHARED_MODELS_IGNORE: tuple[str, ...] | None = None

PATHS = ("approximate", "exact")
EXACT_ENGINE = "obliviate.sharded.continual"
"""The module of the sharded continual-learning engine the exact path runs on."""


def label(run: Mapping[str, Any]) -> str:
    sched = run.get("schedule") or f"rate {run.get('deletion_rate')}"
    method = run.get("method") if run.get("path", "approximate") == "approximate" else "exact"
    return f"{run['strategy']}+{method} {run['dataset']}/{run['scenario']} [{sched}]"


def _path(name: str, value: Any) -> None:
    if value not in PATHS:
        raise ObliviateError(f"{name}: unknown path {value!r}; valid: {', '.join(PATHS)}")


def _kinds(name: str, value: Any) -> None:
    S._string(name, value)
    bad = [k for k in value.split(",") if k.strip() not in GENERATED_KINDS]
    if bad or not value.strip():
        raise ObliviateError(
            f"{name}: unknown deletion kind {bad[0] if bad else value!r}; "
            f"valid: {', '.join(GENERATED_KINDS)} (comma-separated)"
        )


def _rate(name: str, value: Any) -> None:
    check_number(name, value, low=0, high=1, low_open=True, high_open=True)


def usable_unlearners() -> list[str]:
    """Registered unlearners whose ``needs`` a continual learner can meet at a Forget event
    (at most the retain set)."""
    return sorted(n for n in UNLEARNERS if unlearner_class(n).needs <= {"retain"})


def check_unlearner(name: str) -> None:
    """Refuse (one line) an unlearner that needs what a continual learner no longer holds."""
    cls = unlearner_class(name)
    missing = sorted(cls.needs - {"retain"})
    if missing:
        what = {"train": "the original training set", "recipe": "the training recipe"}
        raise ObliviateError(
            f"unlearner {name!r} needs {' and '.join(what.get(m, m) for m in missing)}, which a "
            "continual learner does not hold at a Forget event (it keeps only its memory and "
            f"the current experience); use one of: {', '.join(usable_unlearners())}"
        )


@dataclass(frozen=True)
class LifecycleSpec(StreamSpec):
    """Everything one lifecycle run needs: the stream and its recipe (the fields of
    :class:`~obliviate.experiments.learn.StreamSpec`, as a learn run has them) and the
    deletions. Recipe fields left ``None`` come from the dataset's learn recipe.

    Parameters
    ----------
    dataset, scenario, n_experiences, strategy, params, scenario_params, model, hidden,
    n_epochs, batch_size, lr, optimizer, momentum, weight_decay, data_dir, limit : the
        continual run (see :class:`~obliviate.experiments.learn.StreamSpec`; ``strategy``
        defaults to ``"replay"`` here).
    seed : seeds everything: model, data order, class order, strategy, schedule, unlearner.
    device, precision : where the approximate path's model, strategy memory, unlearner and oracle
        run, and at which precision (:func:`obliviate.training.precision`); the exact path runs
        on the CPU at fp32 (other values are refused).
    schedule : the deletion schedule, ``"AFTER:REQUEST; ..."`` (:mod:`obliviate.data.lifecycle`);
        ``None``: generated from ``deletion_rate`` (or no deletion when that is ``None`` too).
    deletion_rate : in (0, 1): generate a schedule deleting this fraction at each Forget.
    deletion_kinds : comma-separated kinds a generated schedule draws from
        (``random``, ``experience``, ``class``).
    deletion_every : a generated Forget after every this many experiences.
    path : ``"approximate"`` (purge + ``method``) or ``"exact"`` (sharded continual engine).
    n_shards, n_slices : shards and slices per experience of the exact path (S >= 1, R >= 1).
    method : the unlearner of the approximate path (needs at most the retain set).
    method_params : its hyperparameters (``seed`` defaults to the run seed).

    Errors: bad values raise :class:`~obliviate.errors.ObliviateError` naming the field.
    """

    strategy: str = S.option("replay", check=S.strategy, alias="strategies", required=True)
    schedule: str | None = S.option(None, alias="schedules")
    deletion_rate: float | None = S.option(None, check=_rate)
    deletion_kinds: str = S.option("random", check=_kinds)
    deletion_every: int = S.option(1, check=S.positive_int)
    path: str = S.option("approximate", check=_path, alias="paths")
    n_shards: int = S.option(2, check=S.positive_int)
    n_slices: int = S.option(1, check=S.positive_int)
    method: str = S.option("neggrad_plus", check=S.unlearner, alias="methods")
    method_params: Mapping[str, Any] = S.option(default_factory=dict, check=S.table)

    def __post_init__(self) -> None:
        S.validate(self)
        if self.schedule is not None:
            if self.deletion_rate is not None:
                raise ObliviateError(
                    "give either schedule or deletion_rate (a generated schedule), not both"
                )
            parse_schedule(self.schedule, self.n_experiences)
        if strategy_class(self.strategy).data_view == "all":
            raise ObliviateError(
                f"strategy {self.strategy!r} learns the whole stream at once; a lifecycle needs "
                "a strategy that learns experience by experience"
            )
        if self.path == "approximate":
            check_unlearner(self.method)
            valid = param_names(unlearner_class(self.method))
            bad = [k for k in self.method_params if k not in valid]
            if bad:
                raise ObliviateError(
                    f"unlearner {self.method!r} has no parameter {bad[0]!r}; "
                    f"valid: {', '.join(valid) or '(none)'}"
                )
        else:
            check_exact_available()
            if strategy_class(self.strategy).data_view != "experience":
                raise ObliviateError(
                    f"path 'exact': strategy {self.strategy!r} trains on everything seen so far; "
                    "sharded continual learning feeds each shard the current experience only"
                )
        self.learn_spec()  # validates the strategy, scenario and recipe fields

    def learn_spec(self) -> LearnSpec:
        """The :class:`LearnSpec` of the stream this lifecycle runs (no deletion)."""
        return LearnSpec(**stream_fields(self))

    def resolved(self) -> LifecycleSpec:
        """A copy with the recipe and the strategy's hyperparameters filled in."""
        if S.is_resolved(self):
            return self
        ls = self.learn_spec().resolved()
        filled = {k: getattr(ls, k) for k in ("params", *recipes.TRAIN_FIELDS)}
        return S.mark_resolved(replace(self, **filled))

    def to_dict(self) -> dict[str, Any]:
        return S.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LifecycleSpec:
        return S.from_dict(cls, data, "lifecycle")


Spec = LifecycleSpec


def check_exact_available() -> None:
    """Refuse the exact path (one line) when the sharded continual engine is absent."""
    if importlib.util.find_spec(EXACT_ENGINE) is None:
        raise ObliviateError(
            f"path 'exact': exact path not available in this build (the sharded "
            f"continual-learning engine {EXACT_ENGINE} is missing); use path='approximate'"
        )


# ---- what a strategy holds ---------------------------------------------------------------------


def held_ids(strategy: Any) -> torch.Tensor:
    """Ids of the training samples a strategy stores (features and all): the rows of its
    buffers (:class:`ReservoirBuffer`, :class:`ClassBalancedBuffer`), stored
    :class:`~obliviate.data.dataset.Dataset` objects and mappings holding both ``x`` and
    ``ids``, found under its declared ``learned_state``. Sorted, unique int64 ``[K]``.

    Ids kept without features (e.g. sets of ids already offered) are not samples held and are
    not counted here; purging them is :meth:`Strategy.purge`'s job."""
    found: list[torch.Tensor] = []
    for name in type(strategy).learned_state:
        _collect(getattr(strategy, name, None), found, 0)
    if not found:
        return torch.empty(0, dtype=torch.int64)
    return torch.unique(torch.cat([f.reshape(-1).to(torch.int64) for f in found]))


def _collect(value: Any, found: list[torch.Tensor], depth: int) -> None:
    if value is None or depth > 4:
        return
    if isinstance(value, (ReservoirBuffer, ClassBalancedBuffer)):
        found.append(value.filled()["ids"])  # type: ignore[arg-type]
    elif isinstance(value, Dataset):
        found.append(value.ids)
    elif isinstance(value, Mapping):
        if "x" in value and isinstance(value.get("ids"), torch.Tensor):
            found.append(value["ids"])
        else:
            for v in value.values():
                _collect(v, found, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect(v, found, depth + 1)


# ---- evaluation ------------------------------------------------------------------------------


def _test_seen(stream: Stream, learned: int) -> Dataset:
    parts, seen = [], torch.empty(0, dtype=torch.int64)
    for e in stream.experiences[:learned]:
        t = e.test.subset(~torch.isin(e.test.ids, seen))
        parts.append(t)
        seen = torch.cat([seen, t.ids])
    return Dataset.concat(parts)


def evaluate_event(
    model: Any,
    stream: Stream,
    learned: int,
    forget: Dataset | None,
    retain: Dataset,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """Figures of ``model`` after an event: ``accuracy`` (test accuracy on each of the first
    ``learned`` experiences), ``retention`` (their mean) and, when ``forget`` (every row deleted
    so far) is non-empty, ``forget_acc``, ``retain_acc`` (on ``retain``, the learned rows not
    deleted) and ``mia_auc`` (the loss-threshold attack of Yeom et al. 2018,
    :func:`~obliviate.metrics.membership.loss_threshold_auc`: deleted rows against held-out test
    rows of their classes, :func:`~obliviate.unlearning.evaluate.nonmembers`)."""
    acc = [accuracy(model, stream[j].test) for j in range(learned)]
    out: dict[str, Any] = {"accuracy": acc, "retention": sum(acc) / len(acc) if acc else None}
    if forget is not None and len(forget):
        test = _test_seen(stream, learned)
        held_out = nonmembers(ForgetRequest(forget=forget), test)
        losses = [
            F.cross_entropy(predict_logits(model, d), d.y, reduction="none")
            for d in (forget, held_out)
        ]
        out.update(
            forget_acc=accuracy(model, forget),
            retain_acc=accuracy(model, retain) if len(retain) else None,
            mia_auc=loss_threshold_auc(*losses),
        )
    else:
        out.update(forget_acc=None, retain_acc=None, mia_auc=None)
    return out


# ---- running ---------------------------------------------------------------------------------


@dataclass
class _Learner:
    """A model and its loop state, advanced experience by experience."""

    model: Any
    state: LoopState | None
    train_seconds: float = 0.0

    def learn(self, stream: Stream, strategy: Any, config: Any, i: int) -> None:
        t0 = time.perf_counter()
        res = train_stream(
            self.model, stream, strategy, config, stop_after=i + 1, resume=self.state
        )
        self.train_seconds += time.perf_counter() - t0
        self.state = res.state

    @property
    def strategy(self) -> Any:
        assert self.state is not None
        return self.state.strategy


def _oracle(
    spec: LifecycleSpec, stream: Stream, deleted: torch.Tensor, learned: int, config: Any
) -> _Learner:
    """The lifecycle oracle: the stream without ``deleted`` from the start, same seed, trained
    through its first ``learned`` experiences (its ``train_seconds``: the cost of a re-run)."""
    model = model_for_stream(spec.learn_spec().model_spec(), stream).to(spec.device)
    oracle = _Learner(model, None)
    strategy = make_strategy(spec.strategy, **S.constructor_params(spec.params))
    filtered = without_ids(stream, deleted)
    for i in range(learned):
        oracle.learn(filtered, strategy if oracle.state is None else oracle.strategy, config, i)
    return oracle


def schedule_of(spec: LifecycleSpec, stream: Stream) -> list[tuple[int, str]]:
    """The explicit or generated ``(after, request)`` items of ``spec`` on ``stream``."""
    if spec.schedule is not None:
        return parse_schedule(spec.schedule, len(stream))
    if spec.deletion_rate is None:
        return []
    kinds = tuple(k.strip() for k in spec.deletion_kinds.split(","))
    return generate_schedule(
        stream, rate=spec.deletion_rate, kinds=kinds, every=spec.deletion_every, seed=spec.seed
    )


def build(spec: LifecycleSpec) -> LifecycleStream:
    """Load the data, build the scenario and the lifecycle stream of ``spec`` (validated)."""
    s = spec.resolved()
    train, test = load_dataset(s.dataset, data_dir=s.data_dir, limit=s.limit)
    stream = build_scenario(
        s.scenario, train, test, n_experiences=s.n_experiences, seed=s.seed, **s.scenario_params
    )
    return build_lifecycle(stream, schedule_of(s, stream), seed=s.seed)


def _unlearner(spec: LifecycleSpec) -> Any:
    cls = unlearner_class(spec.method)
    params = S.constructor_params(spec.method_params)
    if "seed" in param_names(cls) and "seed" not in params:
        params["seed"] = spec.seed
    return cls(**params)


def _all_rows(stream: Stream) -> Dataset:
    """Every training row of the stream, once (a recurring experience repeats ids)."""
    all_train = Dataset.concat([e.train for e in stream])
    keep = torch.zeros(len(all_train), dtype=torch.bool)
    seen: set[int] = set()
    for pos, i in enumerate(all_train.ids.tolist()):
        if i not in seen:
            seen.add(i)
            keep[pos] = True
    return all_train.subset(keep)


class _StoreModel(nn.Module):
    """A sharded continual store seen as a classifier: ``forward`` gives the log of the
    aggregate's class scores (so accuracy and per-sample losses read it like any model)."""

    def __init__(self, store: Any) -> None:
        super().__init__()
        self.store = store

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        return torch.log(self.store.predict_proba(x, task).clamp_min(1e-12))


def check_exact(spec: LifecycleSpec) -> None:
    """Refuse (one line, before any training) a spec the exact path cannot run: device or
    precision other than CPU fp32, or a stream that presents a sample id in more than one
    experience (domain-incremental, recurring: "the stream without these ids" is undefined for
    exact sharded deletion)."""
    s = spec.resolved()
    if s.device != "cpu" or s.precision != "fp32":
        raise ObliviateError(
            f"path 'exact' runs on the CPU at fp32 (the sharded continual engine's bitwise "
            f"contract); got device={s.device!r}, precision={s.precision!r}: use "
            "device='cpu', precision='fp32', or path='approximate'"
        )
    check_unique_ids(build(s).stream, f"path 'exact' (scenario {s.scenario!r})")


def _run_exact(s: LifecycleSpec, *, echo: Any = None) -> dict[str, Any]:
    """The exact path: a sharded continual store (:class:`obliviate.sharded.continual.
    ShardedContinual`, in a temporary folder) learns the events; a Forget is its exact deletion
    (rollback to the last checkpoint that never saw the ids, replay without them, a receipt).
    The oracle is a second store that learned the stream without the ids from the start;
    ``bitwise_equal_oracle`` says whether every live checkpoint's sha256 equals the oracle's."""
    _warm_up()
    started = time.perf_counter()
    lc = build(s)
    stream = lc.stream
    rows = _all_rows(stream)
    ls = s.learn_spec().resolved()
    recipe = Recipe(ls.model_spec(), ls.train_config())
    deleted = torch.empty(0, dtype=torch.int64)
    learned_ids = torch.empty(0, dtype=torch.int64)
    learned = 0
    records: list[dict[str, Any]] = []
    matrix: list[list[float]] = []
    with tempfile.TemporaryDirectory(prefix="obliviate-lifecycle-") as tmp:

        def new_store(name: str) -> Any:
            return ShardedContinual.for_stream(  # task-aware streams keep their task heads
                Path(tmp) / name,
                stream,
                n_shards=s.n_shards,
                n_slices=s.n_slices,
                strategy=s.strategy,
                strategy_params=dict(S.constructor_params(s.params)),
                recipe=recipe,
                seed=s.seed,
            )

        store = new_store("store")
        oracle: Any = None
        for pos, ev in enumerate(lc.events):
            rec: dict[str, Any] = {"index": pos}
            if isinstance(ev, Learn):
                exp = without_ids(stream, deleted)[ev.experience]
                store.learn(exp)
                if oracle is not None:
                    oracle.learn(exp)
                learned = ev.experience + 1
                learned_ids = torch.unique(torch.cat([learned_ids, exp.train.ids]))
                matrix.append([accuracy(_StoreModel(store), e.test) for e in stream])
                rec.update(event="learn", experience=ev.experience)
            else:
                assert isinstance(ev, Forget)
                t0 = time.perf_counter()
                receipt = store.forget(ev.ids.numpy())
                forget_seconds = time.perf_counter() - t0
                deleted = torch.unique(torch.cat([deleted, ev.ids]))
                if oracle is not None:
                    oracle.close()
                t0 = time.perf_counter()
                oracle = new_store(f"oracle-{pos}")
                filtered = without_ids(stream, deleted)
                for i in range(learned):
                    oracle.learn(filtered[i])
                rerun = time.perf_counter() - t0
                rec.update(
                    event="forget",
                    request=ev.request,
                    after=ev.after,
                    n_ids=int(ev.ids.numel()),
                    request_id=receipt.get("request_id"),
                    n_retrained_shards=len(receipt.get("retrained") or []),
                    forget_seconds=forget_seconds,
                    rerun_seconds=rerun,
                    speedup=rerun / forget_seconds if forget_seconds > 0 else None,
                )
            forget_rows = rows.select_ids(deleted) if deleted.numel() else None
            retain_rows = rows.select_ids(learned_ids[~torch.isin(learned_ids, deleted)])
            mine = evaluate_event(
                _StoreModel(store), stream, learned, forget_rows, retain_rows, seed=s.seed
            )
            ref = (
                evaluate_event(
                    _StoreModel(oracle), stream, learned, forget_rows, retain_rows, seed=s.seed
                )
                if oracle is not None
                else mine
            )
            equal = (
                True if oracle is None else store.checkpoint_hashes() == oracle.checkpoint_hashes()
            )
            rec.update(
                n_learned=learned,
                n_deleted=int(deleted.numel()),
                memory_used=None,
                n_held_deleted=None,
                bitwise_equal_oracle=equal,
                **mine,
                **{f"oracle_{k}": v for k, v in ref.items()},
            )
            _gaps(rec)
            records.append(jsonable(rec))
            if echo is not None:
                echo(records[-1])
        store.close()
        if oracle is not None:
            oracle.close()
    n = len(stream)
    return _result(s, lc, records, matrix + [[None] * n] * (n - len(matrix)), deleted, started)


def _result(
    s: LifecycleSpec,
    lc: LifecycleStream,
    records: list[dict[str, Any]],
    matrix: list[list[Any]],
    deleted: torch.Tensor,
    started: float,
) -> dict[str, Any]:
    forgets = [r for r in records if r["event"] == "forget"]
    return jsonable(
        {
            "events": records,
            "accuracy_matrix": matrix,
            "final": records[-1] if records else {},
            "n_deleted": int(deleted.numel()),
            "n_forget_events": len(forgets),
            "forget_seconds": sum(r["forget_seconds"] for r in forgets),
            "rerun_seconds": sum(r["rerun_seconds"] for r in forgets),
            "seconds": time.perf_counter() - started,
            "schedule": [[e.after, e.request] for e in lc.events if isinstance(e, Forget)],
            "spec": s.to_dict(),
            "provenance": provenance(seed=s.seed),
        }
    )


def _gaps(rec: dict[str, Any]) -> None:
    for key in ("retention", "forget_acc", "retain_acc", "mia_auc"):
        a, b = rec.get(key), rec.get(f"oracle_{key}")
        rec[f"{key}_gap"] = None if a is None or b is None else a - b


def run(spec: LifecycleSpec, *, echo: Any = None) -> dict[str, Any]:
    """Run one lifecycle (see the module docstring) and return its JSON-able result.

    ``events``: one record per event with ``event`` (``"learn"`` / ``"forget"``),
    ``experience`` (learn) or ``request``, ``after`` and ``n_ids`` (forget), ``n_learned``,
    ``n_deleted`` (cumulative), the model's figures (:func:`evaluate_event`: ``accuracy``,
    ``retention``, ``forget_acc``, ``retain_acc``, ``mia_auc``), the oracle's (``oracle_``
    prefix) and their differences (``_gap`` suffix: model minus oracle), ``memory_used`` and
    ``n_held_deleted`` (deleted ids the strategy still stores: 0 after a working purge) and,
    for Forget events, ``forget_seconds`` (purge + unlearning), ``rerun_seconds`` (training the
    stream from scratch without the ids, up to this point) and ``speedup`` (their ratio).
    ``echo(record)`` is called after every event (the CLI prints a line). Bad input raises
    :class:`~obliviate.errors.ObliviateError` before any training.
    """
    s = spec.resolved()
    if s.path == "exact":
        check_exact_available()
        check_exact(s)
        return _run_exact(s, echo=echo)
    with precision(s.precision):
        return _run_approximate(s, echo=echo)


def _run_approximate(s: LifecycleSpec, *, echo: Any = None) -> dict[str, Any]:
    """The approximate path of :func:`run` (``s`` resolved), inside its precision context."""
    _warm_up()
    started = time.perf_counter()
    lc = build(s)
    stream = lc.stream
    config = s.learn_spec().train_config()
    learner = _Learner(model_for_stream(s.learn_spec().model_spec(), stream).to(s.device), None)
    strategy = make_strategy(s.strategy, **S.constructor_params(s.params))
    method = _unlearner(s)
    rows = _all_rows(stream)

    deleted = torch.empty(0, dtype=torch.int64)
    learned_ids = torch.empty(0, dtype=torch.int64)
    oracle: _Learner | None = None
    learned = 0
    records: list[dict[str, Any]] = []
    for pos, ev in enumerate(lc.events):
        rec: dict[str, Any] = {"index": pos}
        if isinstance(ev, Learn):
            current = without_ids(stream, deleted)
            learner.learn(
                current,
                strategy if learner.state is None else learner.strategy,
                config,
                ev.experience,
            )
            learned = ev.experience + 1
            learned_ids = torch.unique(torch.cat([learned_ids, stream[ev.experience].train.ids]))
            if oracle is not None:
                oracle.learn(current, oracle.strategy, config, ev.experience)
            rec.update(event="learn", experience=ev.experience)
        else:
            assert isinstance(ev, Forget) and learner.state is not None
            t0 = time.perf_counter()
            held = learner.strategy
            held.purge(ev.ids, model=learner.model)
            kept = held_ids(held)
            current_rows = without_ids(stream, deleted)[learned - 1].train
            retain_ids = torch.unique(torch.cat([kept, current_rows.ids]))
            retain_ids = retain_ids[~torch.isin(retain_ids, ev.ids)]
            request = ForgetRequest(
                forget=rows.select_ids(ev.ids), retain=rows.select_ids(retain_ids)
            )
            new = method.unlearn(learner.model, request)
            learner.model.load_state_dict(new.state_dict())
            forget_seconds = time.perf_counter() - t0
            learner.state = replace(
                learner.state,
                model_state=copy.deepcopy(learner.model.state_dict()),
                strategy=held,
            )
            deleted = torch.unique(torch.cat([deleted, ev.ids]))
            oracle = _oracle(s, stream, deleted, learned, config)
            rec.update(
                event="forget",
                request=ev.request,
                after=ev.after,
                n_ids=int(ev.ids.numel()),
                n_retain_given=len(request.retain) if request.retain is not None else 0,
                forget_seconds=forget_seconds,
                rerun_seconds=oracle.train_seconds,
                speedup=oracle.train_seconds / forget_seconds if forget_seconds > 0 else None,
            )
        forget_rows = rows.select_ids(deleted) if deleted.numel() else None
        retain_rows = rows.select_ids(learned_ids[~torch.isin(learned_ids, deleted)])
        mine = evaluate_event(learner.model, stream, learned, forget_rows, retain_rows, seed=s.seed)
        ref = (
            evaluate_event(oracle.model, stream, learned, forget_rows, retain_rows, seed=s.seed)
            if oracle is not None
            else mine  # nothing deleted yet: the oracle is this very run
        )
        held_now = held_ids(learner.strategy)
        rec.update(
            n_learned=learned,
            n_deleted=int(deleted.numel()),
            memory_used=int(learner.strategy.memory_used()),
            n_held_deleted=int(torch.isin(held_now, deleted).sum()),
            **mine,
            **{f"oracle_{k}": v for k, v in ref.items()},
        )
        _gaps(rec)
        records.append(jsonable(rec))
        if echo is not None:
            echo(records[-1])
    assert learner.state is not None
    n = len(stream)
    matrix = [list(r) for r in learner.state.rows] + [[None] * n] * (n - len(learner.state.rows))
    return _result(s, lc, records, matrix, deleted, started)


run_lifecycle = run


EVENT_FIGURES: tuple[str, ...] = (
    "retention",
    "oracle_retention",
    "retention_gap",
    "forget_acc",
    "oracle_forget_acc",
    "forget_acc_gap",
    "mia_auc",
    "oracle_mia_auc",
    "mia_auc_gap",
    "forget_seconds",
    "rerun_seconds",
)
"""Per-event figures :func:`aggregate_events` summarises over seeds."""


def aggregate_events(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per event (runs of one spec over seeds share the event sequence), the mean and sample
    standard deviation (``ddof=1``; 0 for one run) of :data:`EVENT_FIGURES`:
    ``[{"event", "label", "mean": {...}, "std": {...}}, ...]``. Figures undefined in every run
    (e.g. forget accuracy before the first deletion) are ``None``. Runs whose event sequences
    differ raise :class:`ObliviateError`."""
    import numpy as np

    if not results:
        return []
    shapes = {tuple(e["event"] for e in r["events"]) for r in results}
    if len(shapes) != 1:
        raise ObliviateError("the runs have different event sequences; aggregate one spec")
    out = []
    for k, ev in enumerate(results[0]["events"]):
        label_ = (
            f"learn {ev['experience']}" if ev["event"] == "learn" else f"forget {ev['request']}"
        )
        mean: dict[str, float | None] = {}
        std: dict[str, float | None] = {}
        for key in EVENT_FIGURES:
            vals = [r["events"][k].get(key) for r in results]
            vals = [float(v) for v in vals if v is not None]
            if not vals:
                mean[key] = std[key] = None
                continue
            arr = np.asarray(vals)
            mean[key] = float(arr.mean())
            std[key] = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        out.append({"event": ev["event"], "label": label_, "mean": mean, "std": std})
    return out


__all__ = [
    "EVENT_FIGURES",
    "PATHS",
    "SUMMARY_COLUMNS",
    "LifecycleSpec",
    "aggregate_events",
    "Spec",
    "build",
    "check_unlearner",
    "evaluate_event",
    "held_ids",
    "label",
    "run",
    "run_lifecycle",
    "schedule_of",
    "usable_unlearners",
]
