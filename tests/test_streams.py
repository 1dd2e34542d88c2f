"""Online / task-free streams with blurry boundaries, and recurring tasks on a power-law schedule."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from obliviate.continual import STRATEGIES, make_strategy, strategy_class
from obliviate.continual.base import Strategy
from obliviate.continual.loop import check_compatible, train_stream
from obliviate.data import build_scenario, synthetic_dataset
from obliviate.data.streams import distinct_tasks, power_law_schedule, task_accuracy
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, model_for_stream
from obliviate.training import TrainConfig, online_config


def _data(n_classes: int = 6):
    return synthetic_dataset(n_classes=n_classes, n_per_class=40, n_features=8)


def test_online_stream_is_task_free_and_rejects_boundary_strategies():
    tr, te = _data()
    stream = build_scenario("online", tr, te, n_experiences=3)
    assert stream.boundaries is False
    with pytest.raises(ObliviateError, match="needs task boundaries") as err:
        check_compatible(make_strategy("gem"), stream)
    assert "GEM" in str(err.value) and "task-free" in str(err.value)
    model = model_for_stream(ModelSpec(hidden=(8,), seed=0), stream)
    result = train_stream(
        model, stream, make_strategy("naive"), online_config(TrainConfig(batch_size=64))
    )
    n_train = sum(len(e.train) for e in stream)
    assert result.n_steps == sum(-(-len(e.train) // 10) for e in stream)  # one pass, batches of 10
    assert n_train == len(tr)


def test_online_config_is_single_pass_small_batches():
    cfg = online_config(TrainConfig(n_epochs=5, batch_size=128, lr=0.3))
    assert (cfg.n_epochs, cfg.batch_size, cfg.lr) == (1, 10, 0.3)


def _uses_boundaries(cls: type[Strategy]) -> bool:
    return cls.begin is not Strategy.begin or cls.end is not Strategy.end or cls.data_view == "seen"


# Streaming methods whose begin/end only set up and freeze the encoder (and reset a per-call
# log); their learning is per sample, so they run on task-free streams. One line each.
NO_BOUNDARIES_NEEDED = {
    "cope": "online by design (De Lange & Tuytelaars 2021); begin/end freeze the head only",
    "remind": "streaming by design (Hayes et al. 2020); begin/end freeze the encoder only",
    "slda": "streaming by design (Hayes & Kanan 2020); begin/end freeze the encoder only",
}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategies_using_experience_hooks_declare_boundaries(name):
    cls = strategy_class(name)
    if _uses_boundaries(cls) and name not in NO_BOUNDARIES_NEEDED:
        assert cls.needs_task_boundaries, (
            f"{name} uses begin/end or past experiences but does not declare needs_task_boundaries"
        )


@pytest.mark.parametrize("blurry", [0.0, 0.1, 0.25])
def test_blurry_boundaries_mix_the_stated_fraction(blurry):
    tr, te = _data()
    base = build_scenario("class-incremental", tr, te, n_experiences=3)
    stream = build_scenario("online", tr, te, n_experiences=3, blurry=blurry)
    all_ids = torch.cat([e.train.ids for e in stream])
    assert torch.unique(all_ids).numel() == all_ids.numel() == len(tr)  # nothing lost or duplicated
    for i, exp in enumerate(stream):
        own = set(base[i].train.ids.tolist())
        nxt = set(base[i + 1].train.ids.tolist()) if i + 1 < len(base) else set()
        ids = exp.train.ids.tolist()
        from_next = sum(1 for x in ids if x in nxt)
        assert from_next == (round(blurry * len(base[i + 1].train)) if nxt else 0)
        assert all(x in own or x in nxt for x in ids)
        assert torch.equal(exp.test.ids, base[i].test.ids)
        labels = set(exp.train.y.tolist())
        assert labels <= set(base[i].classes) | (set(base[i + 1].classes) if nxt else set())


def test_bad_stream_arguments():
    tr, te = _data()
    with pytest.raises(ObliviateError, match="blurry"):
        build_scenario("online", tr, te, n_experiences=3, blurry=1.0)
    with pytest.raises(ObliviateError, match="n_tasks=7"):
        build_scenario("recurring", tr, te, n_experiences=5, n_tasks=7)
    with pytest.raises(ObliviateError, match="alpha"):
        power_law_schedule(10, 3, alpha=-1.0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.5])
def test_power_law_schedule_properties(seed, alpha):
    n, k = 60, 6
    sched = power_law_schedule(n, k, alpha=alpha, seed=seed)
    assert sched == power_law_schedule(n, k, alpha=alpha, seed=seed)
    assert len(sched) == n and set(sched) == set(range(k))
    firsts = [sched.index(t) for t in range(k)]
    assert firsts == [(t * n) // k for t in range(k)]  # tasks arrive in order, evenly spread
    for t in range(1, n):
        if t not in firsts and len(set(sched[:t])) > 1:
            assert sched[t] != sched[t - 1]  # a recurrence is never the task just presented


def _mean_gap(sched: list[int]) -> float:
    last: dict[int, int] = {}
    gaps = []
    for t, task in enumerate(sched):
        if task in last:
            gaps.append(t - last[task])
        last[task] = t
    return float(np.mean(gaps))


def test_power_law_exponent_favours_recent_tasks():
    gaps = {
        a: np.mean([_mean_gap(power_law_schedule(400, 8, alpha=a, seed=s)) for s in range(3)])
        for a in (0.0, 1.0, 3.0)
    }
    assert gaps[0.0] > gaps[1.0] > gaps[3.0]


def test_recurring_stream_and_per_task_accuracy():
    tr, te = _data()
    stream = build_scenario("recurring", tr, te, n_experiences=7, n_tasks=3, alpha=1.0, seed=1)
    sched = power_law_schedule(7, 3, alpha=1.0, seed=1)
    assert len(stream) == 7 and [e.index for e in stream] == list(range(7))
    assert distinct_tasks(stream) == sched  # tasks first appear in order, so the numbering agrees
    model = model_for_stream(ModelSpec(hidden=(8,), seed=0), stream)
    result = train_stream(model, stream, make_strategy("naive"), TrainConfig(n_epochs=1, seed=0))
    per_task = task_accuracy(result.accuracy_matrix, distinct_tasks(stream))
    assert per_task.shape == (7, 3)
    for j, task in enumerate(sched):  # columns of the same task are identical
        np.testing.assert_array_equal(result.accuracy_matrix[:, j], per_task[:, task])
