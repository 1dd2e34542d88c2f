"""Core contracts: datasets keep ids, scenarios split correctly, the loop is deterministic."""

import numpy as np
import pytest
import torch

from obliviate.continual import make_strategy
from obliviate.continual.loop import train_stream
from obliviate.data import Dataset, build_scenario, load_dataset, synthetic_dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, model_for_stream
from obliviate.training import TrainConfig


def test_digits_ids_unique_and_stable():
    tr, te = load_dataset("digits")
    tr2, _ = load_dataset("digits")
    assert torch.equal(tr.ids, tr2.ids)
    all_ids = torch.cat([tr.ids, te.ids])
    assert torch.unique(all_ids).numel() == all_ids.numel() == 1797
    assert tr.sample_shape == (1, 8, 8)


def test_subset_and_select_keep_ids():
    tr, _ = synthetic_dataset()
    sub = tr.subset(torch.tensor([5, 2, 9]))
    assert sub.ids.tolist() == [tr.ids[5].item(), tr.ids[2].item(), tr.ids[9].item()]
    back = tr.select_ids(sub.ids)
    assert torch.equal(back.x, sub.x)
    rest = tr.without_ids(sub.ids)
    assert len(rest) == len(tr) - 3 and not torch.isin(sub.ids, rest.ids).any()
    with pytest.raises(ObliviateError, match="not in dataset"):
        tr.select_ids([10**9])


def test_bad_arrays_rejected():
    with pytest.raises(ObliviateError, match="NaN or inf"):
        Dataset.from_arrays(np.array([[0.0], [np.nan]]), np.array([0, 1]))
    with pytest.raises(ObliviateError, match="outside the class range"):
        Dataset.from_arrays(np.zeros((2, 1)), np.array([0, 5]), n_classes=3)
    with pytest.raises(ObliviateError, match="unique"):
        Dataset.from_arrays(np.zeros((2, 1)), np.array([0, 1]), ids=[3, 3])


def test_class_incremental_split():
    tr, te = load_dataset("digits")
    s = build_scenario("class-incremental", tr, te, n_experiences=5, seed=1)
    seen = []
    for e in s:
        assert len(e.classes) == 2
        assert set(e.train.y.tolist()) == set(e.classes)
        seen += e.classes
    assert sorted(seen) == list(range(10))
    with pytest.raises(ObliviateError, match="does not divide"):
        build_scenario("class-incremental", tr, te, n_experiences=3)
    with pytest.raises(ObliviateError, match="valid:"):
        build_scenario("nope", tr, te, n_experiences=3)


def test_permutation_and_rotation_keep_ids():
    tr, te = load_dataset("digits")
    s = build_scenario("domain-permutation", tr, te, n_experiences=3)
    assert torch.equal(s[0].train.x, tr.x)
    assert torch.equal(s[2].train.ids, tr.ids) and not torch.equal(s[2].train.x, tr.x)
    r = build_scenario("domain-rotation", tr, te, n_experiences=3)
    assert torch.equal(r[1].train.ids, tr.ids)


def _run(seed=0, stop_after=None, resume=None):
    tr, te = synthetic_dataset(n_classes=4)
    stream = build_scenario("class-incremental", tr, te, n_experiences=2, seed=0)
    model = model_for_stream(ModelSpec(hidden=(16,), seed=seed), stream)
    res = train_stream(
        model,
        stream,
        make_strategy("naive"),
        TrainConfig(seed=seed, n_epochs=2),
        stop_after=stop_after,
        resume=resume,
    )
    return model, res


def test_loop_deterministic_and_resumable():
    m1, r1 = _run()
    m2, r2 = _run()
    for a, b in zip(m1.parameters(), m2.parameters(), strict=True):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(r1.accuracy_matrix, r2.accuracy_matrix)
    _, half = _run(stop_after=1)
    assert np.isnan(half.accuracy_matrix[1]).all()
    m3, r3 = _run(resume=half.state)
    for a, b in zip(m1.parameters(), m3.parameters(), strict=True):
        assert torch.equal(a, b)
    np.testing.assert_array_equal(r1.accuracy_matrix, r3.accuracy_matrix)


def test_task_incremental_multihead_trains():
    tr, te = synthetic_dataset(n_classes=4)
    stream = build_scenario("task-incremental", tr, te, n_experiences=2)
    model = model_for_stream(ModelSpec(hidden=(16,)), stream)
    res = train_stream(model, stream, make_strategy("naive"), TrainConfig(n_epochs=20, lr=0.1))
    assert res.accuracy_matrix[1, 1] > 0.6
