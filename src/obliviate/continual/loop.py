"""THE training loop: one strategy over one stream, evaluated after every experience.

Read it top to bottom: for each experience, ``begin``; for each epoch and batch, ``loss``,
``backward``, ``adjust_gradients``, optimiser step (plus, optionally, continual evaluation every
``eval_every`` steps); ``end``; then a row of the accuracy matrix.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from obliviate._rng import generator
from obliviate.continual.base import Strategy
from obliviate.data.dataset import Dataset
from obliviate.data.scenarios import Experience, Stream
from obliviate.errors import ObliviateError
from obliviate.models.base import takes_task
from obliviate.training import (
    Stepper,
    TrainConfig,
    accuracy,
    batches,
    check_finite,
    global_rng_from,
    make_optimizer,
    min_batch_rows,
    model_device,
    stream_to,
    train_mode,
)


@dataclass
class LoopState:
    """Everything needed to resume a run after ``next_experience - 1`` experiences."""

    next_experience: int
    model_state: dict[str, torch.Tensor]
    strategy: Strategy
    rows: list[list[float]]
    initial_accuracy: list[float]
    step: int = 0
    curves: dict[str, list] = field(
        default_factory=lambda: {"step": [], "experience": [], "acc": []}
    )
    seconds: float = 0.0


@dataclass
class StreamResult:
    """What a run produced.

    ``accuracy_matrix[i, j]``: accuracy on experience ``j``'s test set after learning ``i``
    (rows not yet run are NaN). ``initial_accuracy[j]``: the untrained model's accuracy on ``j``
    (the FWT reference). ``curves``: continual evaluation, when ``eval_every`` was set:
    ``step`` (global iteration), ``experience`` (being trained) and ``acc`` (one row per
    evaluation, NaN for experiences not yet seen). ``state``: resume point.
    """

    accuracy_matrix: np.ndarray
    initial_accuracy: np.ndarray
    seconds: float
    n_steps: int
    curves: dict[str, list]
    state: LoopState


def check_compatible(strategy: Strategy, stream: Stream, model: nn.Module | None = None) -> None:
    """Reject a strategy whose declared needs the stream cannot meet, and a model that cannot
    receive the task ids of a task-aware stream (:func:`~obliviate.models.base.takes_task`)."""
    name = type(strategy).__name__
    if model is not None and stream.task_aware and not takes_task(model):
        raise ObliviateError(
            f"stream {stream.name!r} gives every row a task id, but {type(model).__name__}."
            "forward takes no `task` argument, so it would train single-head without a word; "
            "add `task: Tensor | None = None` to forward (int64 [B], one task id per row) or use "
            "a scenario without task ids"
        )
    if strategy.needs_task_boundaries and not stream.boundaries:
        raise ObliviateError(
            f"strategy {name} needs task boundaries, but stream {stream.name!r} is task-free; "
            "choose a strategy that works without boundaries or a stream with them"
        )
    if strategy.needs_task_ids and not stream.task_aware:
        raise ObliviateError(
            f"strategy {name} needs task ids, but stream {stream.name!r} has none; "
            "use the task-incremental scenario"
        )


def training_data(stream: Stream, i: int, view: str) -> Dataset:
    """The data the loop feeds at experience ``i`` for a strategy's ``data_view``.

    ``"seen"`` and ``"all"`` mean every distinct training set seen (so far / in the stream): on
    a recurring stream, where a task comes back with the same samples, each sample is fed once
    per epoch, as its latest presentation, not once per occurrence
    (:func:`distinct_training_sets`). Experiences that share ids but not features (a
    domain-incremental stream's permuted copies) stay distinct.
    """
    if view == "experience":
        return stream[i].train
    if view == "seen":
        return Dataset.concat(distinct_training_sets(stream.experiences[: i + 1]))
    # "all": everything at the first experience, nothing afterwards (the model is already joint)
    if i == 0:
        return Dataset.concat(distinct_training_sets(stream.experiences))
    none = torch.zeros(0, dtype=torch.int64, device=stream[i].train.x.device)
    return stream[i].train.subset(none)


def distinct_training_sets(experiences: Sequence[Experience]) -> list[Dataset]:
    """The experiences' training sets, each distinct one once, at its latest occurrence, in
    order. Two training sets are the same when they hold the same rows in the same order (ids,
    labels, task ids and features bitwise equal): a recurring stream's occurrences of one task.
    Without recurrences this is every training set, in order."""
    sets = [e.train for e in experiences]
    return [
        d for j, d in enumerate(sets) if not any(_same_rows(d, later) for later in sets[j + 1 :])
    ]


def _same_rows(a: Dataset, b: Dataset) -> bool:
    if a is b:
        return True
    if a.x.shape != b.x.shape or (a.task is None) != (b.task is None):
        return False
    if not torch.equal(a.ids, b.ids) or not torch.equal(a.x[:1], b.x[:1]):
        return False  # cheap rejections first: a permuted copy differs in its first row
    same_task = a.task is None or torch.equal(a.task, b.task)  # type: ignore[arg-type]
    return same_task and torch.equal(a.y, b.y) and torch.equal(a.x, b.x)


def train_stream(
    model: nn.Module,
    stream: Stream,
    strategy: Strategy,
    config: TrainConfig,
    *,
    eval_every: int | None = None,
    stop_after: int | None = None,
    resume: LoopState | None = None,
    progress: bool = False,
) -> StreamResult:
    """Train ``model`` (in place) with ``strategy`` on ``stream``; return the accuracy matrix.

    ``stop_after=k`` stops once ``k`` experiences are done (a checkpoint); ``resume`` continues
    from a :class:`LoopState` and gives bitwise the run that never stopped: each experience draws
    its data order from ``generator(config.seed, "stream", i)`` and gets a fresh optimiser.

    Device: the run happens where ``model`` lives (:func:`~obliviate.training.model_device`);
    the stream is moved there once (:func:`~obliviate.training.stream_to`), so every batch and
    every strategy hook sees data on the model's device. Precision: the forward pass and loss
    run at :func:`~obliviate.training.current_precision` (fp16 with a grad scaler, gradients
    unscaled before ``adjust_gradients``); strategy hooks ``begin``/``end`` run in float32.
    ``state.model_state`` is kept on the CPU (device-independent); a resume loads it onto the
    model's device.
    """
    check_compatible(strategy, stream, model)
    device = model_device(model)
    stream = stream_to(stream, device)
    n = len(stream)
    if resume is None:
        state = LoopState(0, {}, strategy, [], [accuracy(model, e.test) for e in stream])
    else:
        state = copy.deepcopy(resume)
        model.load_state_dict(state.model_state)
        strategy = state.strategy
    end = n if stop_after is None else min(n, stop_after)
    started = time.perf_counter() - state.seconds
    bar = _progress(progress, stream, config)
    for i in range(state.next_experience, end):
        exp = stream[i]
        data = training_data(stream, i, strategy.data_view)
        gen = generator(config.seed, "stream", i)
        strategy.begin(model, exp)
        opt = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
        stepper = Stepper(opt, device)
        if not model.training:
            train_mode(model)
        min_rows = min_batch_rows(model)  # no one-row batch for BatchNorm
        with global_rng_from(config.seed, "stream", i):  # dropout masks from the seed too
            for _ in range(config.n_epochs):
                for batch in batches(data, config.batch_size, gen, experience=i, min_rows=min_rows):
                    if not model.training:  # model.train() walks every submodule: ~4% of a step
                        train_mode(model)
                    opt.zero_grad(set_to_none=True)
                    with stepper.autocast():
                        loss = strategy.loss(model, batch)
                    stepper.backward(loss)
                    strategy.adjust_gradients(model)
                    stepper.step()
                    state.step += 1
                    if eval_every and state.step % eval_every == 0:
                        _continual_eval(model, stream, i, state)
                if bar is not None:
                    bar[0].advance(bar[1])
        strategy.end(model, exp)
        check_finite(strategy, model)  # a diverged run stops here with a clear error
        state.rows.append([accuracy(model, e.test) for e in stream])
        state.next_experience = i + 1
    if bar is not None:
        bar[0].stop()
    state.seconds = time.perf_counter() - started
    state.model_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    state.strategy = strategy
    matrix = np.full((n, n), np.nan)
    if state.rows:
        matrix[: len(state.rows)] = np.asarray(state.rows)
    return StreamResult(
        accuracy_matrix=matrix,
        initial_accuracy=np.asarray(state.initial_accuracy),
        seconds=state.seconds,
        n_steps=state.step,
        curves=state.curves,
        # a copy the caller may keep (a later resume must not see this run's objects); the
        # CPU weights were copied just above, so they are shared instead of copied twice
        state=copy.deepcopy(state, {id(state.model_state): state.model_state}),
    )


def _continual_eval(model: nn.Module, stream: Stream, i: int, state: LoopState) -> None:
    row = [accuracy(model, e.test) if j <= i else float("nan") for j, e in enumerate(stream)]
    state.curves["step"].append(state.step)
    state.curves["experience"].append(i)
    state.curves["acc"].append(row)


def _progress(enabled: bool, stream: Stream, config: TrainConfig):  # type: ignore[no-untyped-def]
    if not enabled:
        return None
    from rich.progress import Progress

    bar = Progress(transient=True)
    task = bar.add_task(stream.name, total=len(stream) * config.n_epochs)
    bar.start()
    return bar, task
