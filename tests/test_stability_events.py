"""Continual-evaluation metrics and example forgetting events."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from obliviate.cli.main import main
from obliviate.continual import make_strategy
from obliviate.continual.events import record_presentations
from obliviate.continual.loop import train_stream
from obliviate.data import build_scenario, load_dataset, synthetic_dataset
from obliviate.metrics.forgetting_events import (
    forgettability_order,
    forgetting_counts,
    learning_counts,
    unforgettable,
)
from obliviate.metrics.stability import min_acc, stability_gap, wc_acc, windowed_forgetting
from obliviate.models import ModelSpec, build_model, model_for_stream
from obliviate.training import TrainConfig

NAN = float("nan")


def test_stability_metrics_by_hand():
    # 2 experiences; evals: 2 during exp 0, 3 during exp 1
    acc = [[0.5, NAN], [0.9, NAN], [0.3, 0.2], [0.6, 0.7], [0.8, 0.9]]
    exp = [0, 0, 1, 1, 1]
    r = [[0.95, 0.1], [0.85, 0.92]]
    assert min_acc(acc, exp, r) == pytest.approx(0.3)
    assert wc_acc(acc, exp, r) == pytest.approx(0.92 / 2 + 0.5 * 0.3)
    gap = stability_gap(acc, exp, r)
    (p,) = gap["pairs"]
    assert p["drop"] == pytest.approx(0.95 - 0.3) and p["recovery"] == pytest.approx(0.85 - 0.3)
    assert p["low_step_index"] == 2
    wf = windowed_forgetting(acc, exp, window=1)
    assert wf[0] == pytest.approx(0.6) and wf[1] == pytest.approx(0.0)


def test_loop_curves_feed_stability_gap():
    tr, te = load_dataset("digits")
    stream = build_scenario("class-incremental", tr, te, n_experiences=2)
    model = model_for_stream(ModelSpec(hidden=(32,)), stream)
    res = train_stream(
        model, stream, make_strategy("naive"), TrainConfig(n_epochs=2, lr=0.1), eval_every=2
    )
    c = res.curves
    assert len(c["acc"]) == res.n_steps // 2 and set(c["experience"]) == {0, 1}
    gap = stability_gap(c["acc"], c["experience"], res.accuracy_matrix)
    # naive fine-tuning on a new class split forgets the old one: a positive drop
    assert gap["pairs"] and gap["mean_drop"] > 0.3


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 8), st.integers(1, 8))))
def test_event_counts_properties(c):
    f = forgetting_counts(c)
    learned = c.any(axis=1)
    assert np.all(np.isinf(f) == ~learned)
    finite = f[learned]
    # a forgetting event needs a preceding learning event: forgets <= learns, and learns - forgets in {0, 1}
    diff = learning_counts(c)[learned] - finite
    assert np.all((diff == 0) | (diff == 1))
    assert np.array_equal(diff == 1, c[learned, -1])
    assert np.array_equal(unforgettable(c), learned & (f == 0))
    order = forgettability_order(f)
    assert list(f[order]) == sorted(f)


def test_event_counts_by_hand():
    c = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 0], [0, 1, 0]], dtype=bool)
    assert forgetting_counts(c).tolist() == [0, 1, np.inf, 1]


def test_record_presentations_logs_each_example_each_epoch():
    tr, _ = synthetic_dataset(n_classes=3, n_per_class=20)
    model = build_model(ModelSpec(hidden=(8,)), tr.sample_shape, tr.n_classes)
    log = record_presentations(model, tr, TrainConfig(n_epochs=4, lr=0.1, batch_size=8))
    assert log.correct.shape == (len(tr), 4)
    assert np.array_equal(log.ids, np.sort(tr.ids.numpy()))
    assert log.correct[:, -1].mean() > log.correct[:, 0].mean()  # it learns


def test_events_cli_writes_counts(tmp_path):
    out = tmp_path / "counts.json"
    assert main(["events", "--dataset", "synthetic", "--epochs", "3", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data["ids"]) == len(data["forgetting_events"]) == 800
    assert main(["events", "--dataset", "nope"]) == 2
