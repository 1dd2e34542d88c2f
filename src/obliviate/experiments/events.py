"""Run kind ``events``: example forgetting events (Toneva et al., ICLR 2019), per sample id.

Train one model on the training set and record, at every presentation of every example (one per
epoch), whether the model classified it correctly just before the update; a *forgetting event*
is a transition from correct to incorrect (Toneva et al. 2019, "An Empirical Study of Example
Forgetting during Deep Neural Network Learning", Sec. 2). The one implementation behind
``obliviate events`` and the ``[[events]]`` block of spec files; both give the same result dict:

``ids``                 training-sample ids, ascending;
``forgetting_events``   forgetting events per id (``None``: never learned, counted as
                        infinitely forgettable by the paper);
``summary``             ``n_examples``, ``unforgettable``, ``forgotten_at_least_once``,
                        ``never_learned`` (:func:`obliviate.metrics.forgetting_events.summary`);
``test_acc``            accuracy of the trained model on the test split;
``seconds``             wall time of the training;
``spec``, ``provenance``.

Unset recipe fields take the events defaults (:mod:`obliviate.recipes`: MLP(100),
SGD lr 0.05, batch 32, 20 epochs), the same for every dataset.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from obliviate import recipes
from obliviate.continual.events import record_presentations
from obliviate.data import load_dataset
from obliviate.experiments import _spec as S
from obliviate.metrics.forgetting_events import forgetting_counts, summary
from obliviate.models import ModelSpec, build_model
from obliviate.provenance import provenance
from obliviate.training import TrainConfig, accuracy, precision

SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("summary.unforgettable", "unforgettable"),
    ("summary.forgotten_at_least_once", "forgotten ≥ 1"),
    ("summary.never_learned", "never learned"),
    ("test_acc", "test acc"),
    ("seconds", "s"),
)
"""The figures ``obliviate report`` / ``compare`` show: (dotted result key, column name)."""

METHOD_KEYS: tuple[str, ...] = ("dataset",)
METHOD_FIELD: str | None = None
SHARED_MODELS_IGNORE: tuple[str, ...] | None = None


def label(run: Mapping[str, Any]) -> str:
    return f"{run['dataset']}"


@dataclass(frozen=True)
class EventsSpec:
    """One forgetting-events run: ``dataset``, the recipe (``model`` ... ``weight_decay``;
    ``None``: the events defaults), ``seed`` (model init and data order), ``data_dir`` and
    ``limit`` (first ``limit`` training rows). Bad values raise
    :class:`~obliviate.errors.ObliviateError` naming the field."""

    dataset: str = S.option("digits", check=S.dataset, alias="datasets", required=True)
    model: str | None = S.option(None, check=S.model)
    hidden: tuple[int, ...] | None = S.option(None, check=S.widths)
    n_epochs: int | None = S.option(None, check=S.positive_int)
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

    def __post_init__(self) -> None:
        S.validate(self)

    def resolved(self) -> EventsSpec:
        """A copy with every recipe field set (the events defaults for the unset ones)."""
        if S.is_resolved(self):
            return self
        filled = recipes.fill(
            "events", self.dataset, {k: getattr(self, k) for k in recipes.TRAIN_FIELDS}
        )
        return S.mark_resolved(replace(self, **filled))

    def to_dict(self) -> dict[str, Any]:
        return S.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EventsSpec:
        return S.from_dict(cls, data, "events")


Spec = EventsSpec


def run(spec: EventsSpec) -> dict[str, Any]:
    """Train once, record every example's correctness at each presentation, count forgetting
    events; the result dict of the module docstring."""
    import math

    s = spec.resolved()
    train, test = load_dataset(s.dataset, data_dir=s.data_dir, limit=s.limit)
    model = build_model(
        ModelSpec(name=s.model, hidden=s.hidden, seed=s.seed),  # type: ignore[arg-type]
        train.sample_shape,
        train.n_classes,
    ).to(s.device)  # init drawn on the CPU, the same on every device
    config = TrainConfig(
        n_epochs=s.n_epochs,  # type: ignore[arg-type]
        batch_size=s.batch_size,  # type: ignore[arg-type]
        lr=s.lr,  # type: ignore[arg-type]
        optimizer=s.optimizer,  # type: ignore[arg-type]
        momentum=s.momentum,  # type: ignore[arg-type]
        weight_decay=s.weight_decay,  # type: ignore[arg-type]
        seed=s.seed,
    )
    t0 = time.perf_counter()
    with precision(s.precision):
        log = record_presentations(model, train, config)
    seconds = time.perf_counter() - t0
    counts = forgetting_counts(log.correct)
    return {
        "ids": [int(i) for i in log.ids],
        "forgetting_events": [None if math.isinf(c) else int(c) for c in counts.tolist()],
        "summary": summary(log.correct),
        "test_acc": accuracy(model, test),
        "seconds": seconds,
        "spec": s.to_dict(),
        "provenance": provenance(seed=s.seed, device=s.device, precision=s.precision),
    }


run_events = run

__all__ = ["SUMMARY_COLUMNS", "EventsSpec", "Spec", "label", "run", "run_events"]
