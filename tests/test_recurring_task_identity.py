"""Task identity on recurring streams (issue 11, item 6): LwF distils each distinct old task once;
joint and cumulative train on each distinct sample once."""

import torch

from obliviate.continual import strategy_class
from obliviate.continual.loop import distinct_training_sets, train_stream, training_data
from obliviate.continual.penalties import distillation_loss
from obliviate.data import synthetic_dataset
from obliviate.data.streams import recurring
from obliviate.models import ModelSpec, model_for_stream
from obliviate.models.base import logits
from obliviate.training import Batch, TrainConfig


def _stream():
    """Tasks 0, 0, 1, 0, 2, 0 over 6 classes: (3, 5), (3, 5), (0, 4), (3, 5), (1, 2), (3, 5)."""
    train, test = synthetic_dataset(n_classes=6, n_per_class=30, n_features=8, seed=0)
    return recurring(train, test, n_experiences=6, n_tasks=3, base="task-incremental", seed=0)


def test_the_stream_is_the_issues_schedule():
    stream = _stream()
    assert [e.task_id for e in stream] == [0, 0, 1, 0, 2, 0]
    assert [e.classes for e in stream][:5] == [(3, 5), (3, 5), (0, 4), (3, 5), (1, 2)]


def test_lwf_distils_each_distinct_old_task_once():
    stream = _stream()
    model = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
    lwf = strategy_class("lwf")()
    config = TrainConfig(n_epochs=1, batch_size=16, lr=0.1, seed=0)
    train_stream(model, stream, lwf, config, stop_after=5)
    assert lwf.groups_ == [(3, 5), (0, 4), (1, 2)]  # was [(3,5), (3,5), (0,4), (3,5), (1,2)]
    data = stream[5].train
    batch = Batch(data.x[:16], data.y[:16], data.ids[:16], data.task[:16], 5)
    with torch.no_grad():
        total = lwf.loss(model, batch)
        ce = torch.nn.functional.cross_entropy(logits(model, batch.x, batch.task), batch.y)
        student, teacher = logits(model, batch.x, None), logits(lwf.teacher_, batch.x, None)

        def kd(group):
            cols = torch.tensor(group)
            return distillation_loss(student[:, cols], teacher[:, cols], lwf.temperature)

        one_per_task = sum(kd(g) for g in [(3, 5), (0, 4), (1, 2)])
        per_occurrence = sum(kd(g) for g in [(3, 5), (3, 5), (0, 4), (3, 5), (1, 2)])
    assert torch.allclose(total - ce, lwf.reg_strength * one_per_task, atol=1e-6)
    assert float(per_occurrence - one_per_task) > 0.01  # the duplicated term was not small
    print(f"distillation term: {float(one_per_task):.4f} (was {float(per_occurrence):.4f})")


def test_lwf_on_a_stream_without_recurrences_is_unchanged():
    train, test = synthetic_dataset(n_classes=6, n_per_class=30, n_features=8, seed=0)
    from obliviate.data import build_scenario

    stream = build_scenario("task-incremental", train, test, n_experiences=3, seed=0)
    model = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
    lwf = strategy_class("lwf")()
    train_stream(model, stream, lwf, TrainConfig(n_epochs=1, batch_size=16, seed=0))
    assert lwf.groups_ == [tuple(e.classes) for e in stream]


def test_joint_and_cumulative_feed_each_distinct_sample_once():
    stream = _stream()
    n_rows = sum(len(e.train) for e in stream)
    every = torch.cat([e.train.ids for e in stream])
    n_distinct = int(torch.unique(every).numel())
    assert n_rows == 2 * n_distinct  # the recurrences duplicate half the rows
    joint = training_data(stream, 0, "all")
    assert len(joint) == n_distinct and int(torch.unique(joint.ids).numel()) == n_distinct
    for i in range(len(stream)):
        seen = training_data(stream, i, "seen")
        want = torch.unique(torch.cat([e.train.ids for e in stream.experiences[: i + 1]]))
        assert torch.equal(torch.sort(seen.ids).values, want)
    # each row is the latest presentation of its sample
    pos = {int(s): p for p, s in enumerate(every.tolist())}
    order = [pos[int(s)] for s in joint.ids]
    assert order == sorted(order)


def test_streams_without_recurrences_keep_every_training_set():
    from obliviate.data import build_scenario

    train, test = synthetic_dataset(n_classes=4, n_per_class=10, n_features=8, seed=1)
    # a domain-incremental stream repeats every id with other features: all sets stay
    for name in ("class-incremental", "domain-permutation"):
        stream = build_scenario(name, train, test, n_experiences=2, seed=1)
        sets = distinct_training_sets(stream.experiences)
        assert len(sets) == 2 and all(a is e.train for a, e in zip(sets, stream, strict=True))
        assert len(training_data(stream, 0, "all")) == sum(len(e.train) for e in stream)


def test_joint_trains_on_176_rows_not_352():
    """A run: joint on the recurring stream takes as many steps as one pass over the distinct
    samples per epoch (the issue saw 352 rows for 176 distinct ids)."""
    stream = _stream()
    model = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
    config = TrainConfig(n_epochs=1, batch_size=10, seed=0)
    res = train_stream(model, stream, strategy_class("joint")(), config)
    n_distinct = int(torch.unique(torch.cat([e.train.ids for e in stream])).numel())
    assert res.n_steps == -(-n_distinct // 10)


def test_ewc_gem_agem_keep_one_entry_per_distinct_task():
    """EWC's penalties, GEM's and A-GEM's memories: one per distinct task on a recurring stream
    (tasks 0, 0, 1, 0, 2, 0), not one per occurrence; a recurring task's EWC penalty is the one
    after its latest occurrence."""
    from obliviate.continual.base import task_key

    stream = _stream()
    keys = [task_key(e) for e in stream]
    assert len(set(keys)) == 3 and keys[0] == keys[1] == keys[3] == keys[5]
    config = TrainConfig(n_epochs=1, batch_size=16, lr=0.1, seed=0)
    for name in ("ewc", "gem", "agem"):
        model = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
        strategy = strategy_class(name)()
        train_stream(model, stream, strategy, config)
        entries = strategy.penalties_ if name == "ewc" else strategy.memories_
        assert len(entries) == 3, name
        if name != "ewc":
            ids = torch.cat([m.ids for m in strategy.memories_])
            assert int(torch.unique(ids).numel()) == ids.numel(), name  # no sample twice
    anchor = strategy_class("ewc")()
    model = model_for_stream(ModelSpec(hidden=(16,), seed=0), stream)
    train_stream(model, stream, anchor, config)
    final = dict(model.named_parameters())
    assert all(torch.equal(anchor.penalties_[0][1][n], p) for n, p in final.items())


def test_task_key_tells_a_domain_streams_copies_apart():
    from obliviate.continual.base import task_key
    from obliviate.data import build_scenario

    train, test = synthetic_dataset(n_classes=4, n_per_class=10, n_features=8, seed=1)
    stream = build_scenario("domain-permutation", train, test, n_experiences=3, seed=1)
    assert len({task_key(e) for e in stream}) == 3
