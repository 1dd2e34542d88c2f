"""The first strategies' building blocks: Fisher, penalties, EWC modes, LwF groups, replay buffers,
bad input, and that the conformance suite catches broken strategies."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from obliviate.continual import make_strategy
from obliviate.continual.base import Strategy, cross_entropy
from obliviate.continual.buffers import ClassBalancedBuffer, ReservoirBuffer
from obliviate.continual.loop import train_stream
from obliviate.continual.penalties import (
    diagonal_fisher,
    distillation_loss,
    per_sample_grads,
    per_sample_grads_loop,
    quadratic_penalty,
    snapshot,
)
from obliviate.data import build_scenario, synthetic_dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, model_for_stream
from obliviate.testing import STRATEGY_CHECKS, NotApplicable
from obliviate.training import TrainConfig


def _stream(scenario="class-incremental", n_experiences=2, n_classes=4):
    tr, te = synthetic_dataset(n_classes=n_classes, n_per_class=30)
    return build_scenario(scenario, tr, te, n_experiences=n_experiences, seed=0)


# ---- Fisher: vectorised == per-sample loop ------------------------------------------------------


@pytest.mark.parametrize("scenario", ["class-incremental", "task-incremental"])
@pytest.mark.parametrize("fisher", ["empirical", "true"])
def test_fisher_vectorised_equals_loop(scenario, fisher):
    stream = _stream(scenario)
    model = model_for_stream(ModelSpec(hidden=(8,), seed=1), stream)
    data = stream[1].train
    fast = diagonal_fisher(model, data, fisher=fisher, chunk_size=7)
    slow = diagonal_fisher(model, data, fisher=fisher, vectorised=False)
    assert fast.keys() == slow.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-5, atol=1e-8)
    assert any(float(f.sum()) > 0 for f in fast.values())


def test_per_sample_grads_match_loop_and_batch_gradient():
    stream = _stream()
    model = model_for_stream(ModelSpec(hidden=(8,), seed=2), stream)
    d = stream[0].train.subset(torch.arange(10))
    fast = per_sample_grads(model, d.x, d.y)
    slow = per_sample_grads_loop(model, d.x, d.y)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(d.x), d.y).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-5, atol=1e-7)
        # the mean of per-sample gradients is the batch gradient
        torch.testing.assert_close(fast[name].mean(dim=0), p.grad, rtol=1e-5, atol=1e-7)
    assert model.training  # mode untouched


def test_true_fisher_of_linear_softmax_matches_closed_form():
    # For logits W x + b, d log p_c / d b = e_c - p, so the true Fisher of b is p * (1 - p)
    # summed appropriately: F_b[k] = sum_c p_c (delta_ck - p_k)^2 = p_k (1 - p_k).
    stream = _stream()
    model = model_for_stream(ModelSpec(hidden=(), seed=3), stream)
    d = stream[0].train
    f = diagonal_fisher(model, d, fisher="true")
    with torch.no_grad():
        p = torch.softmax(model(d.x), dim=1)
    torch.testing.assert_close(f["head.bias"], (p * (1 - p)).mean(dim=0), rtol=1e-5, atol=1e-7)


def test_fisher_subsample_is_seeded():
    stream = _stream()
    model = model_for_stream(ModelSpec(hidden=(8,)), stream)
    a = diagonal_fisher(model, stream[0].train, n_samples=5, seed=1)
    b = diagonal_fisher(model, stream[0].train, n_samples=5, seed=1)
    c = diagonal_fisher(model, stream[0].train, n_samples=5, seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# ---- penalties ----------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-3, 3), min_size=4, max_size=4), st.floats(0, 5))
def test_quadratic_penalty_matches_formula(shift, omega):
    model = torch.nn.Linear(2, 2)
    anchor = snapshot(model)
    assert (
        float(quadratic_penalty(model, {"weight": torch.full((2, 2), omega)}, anchor).detach())
        == 0.0
    )
    with torch.no_grad():
        model.weight += torch.tensor(shift).reshape(2, 2)
    got = float(quadratic_penalty(model, {"weight": torch.full((2, 2), omega)}, anchor).detach())
    want = omega * sum(s * s for s in shift)
    assert math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-4)


def test_distillation_loss_is_kl_plus_entropy_and_minimal_at_teacher():
    torch.manual_seed(0)
    teacher, student = torch.randn(6, 3), torch.randn(6, 3)
    T = 2.0
    p = torch.softmax(teacher / T, 1)
    kl = (p * (p.log() - torch.log_softmax(student / T, 1))).sum(1).mean()
    entropy = -(p * p.log()).sum(1).mean()
    torch.testing.assert_close(distillation_loss(student, teacher, T), kl + entropy)
    s = teacher.clone().requires_grad_(True)
    distillation_loss(s, teacher, T).backward()
    assert float(s.grad.abs().max()) < 1e-6


# ---- EWC ----------------------------------------------------------------------------------------


def _train(strategy, stream, seed=0):
    model = model_for_stream(ModelSpec(hidden=(8,), seed=seed), stream)
    train_stream(model, stream, strategy, TrainConfig(n_epochs=1, batch_size=16, lr=0.1, seed=seed))
    return model


def test_ewc_online_running_fisher_equals_decayed_sum_of_separate():
    stream = _stream("class-incremental", n_experiences=2)
    sep = make_strategy("ewc", mode="separate")
    onl = make_strategy("ewc", mode="online", gamma=0.5)
    m_sep, m_onl = _train(sep, stream), _train(onl, stream)
    # with one past experience both modes have the same single penalty, hence the same run
    for a, b in zip(m_sep.parameters(), m_onl.parameters(), strict=True):
        assert torch.equal(a, b)
    assert len(sep.penalties_) == 2 and len(onl.penalties_) == 1
    (f1, _), (f2, anchor2) = sep.penalties_
    f_run, anchor_run = onl.penalties_[0]
    for k in f_run:
        torch.testing.assert_close(f_run[k], 0.5 * f1[k] + f2[k])
        assert torch.equal(anchor_run[k], anchor2[k])


def test_ewc_penalty_pulls_toward_anchor():
    stream = _stream("domain-permutation", n_experiences=2)
    naive = _train(make_strategy("naive"), stream)
    ewc = make_strategy("ewc", reg_strength=100.0)
    m = _train(ewc, stream)
    anchor = ewc.penalties_[0][1]
    fisher = ewc.penalties_[0][0]
    dist = lambda model: float(quadratic_penalty(model, fisher, anchor).detach())  # noqa: E731
    assert dist(m) < dist(naive)


# ---- LwF ----------------------------------------------------------------------------------------


def test_lwf_distils_old_classes_or_old_heads():
    ci = _stream("class-incremental", n_experiences=2)
    lwf = make_strategy("lwf")
    _train(lwf, ci)
    assert lwf.groups_ == [tuple(sorted(ci[0].classes + ci[1].classes))]
    ti = _stream("task-incremental", n_experiences=2)
    lwf_t = make_strategy("lwf")
    _train(lwf_t, ti)
    assert lwf_t.groups_ == [ti[0].classes, ti[1].classes]
    assert all(not p.requires_grad for p in lwf_t.teacher_.parameters())


def test_lwf_loss_adds_distillation_after_first_experience():
    stream = _stream()
    lwf = make_strategy("lwf", reg_strength=1.0)
    model = model_for_stream(ModelSpec(hidden=(8,)), stream)
    train_stream(model, stream, lwf, TrainConfig(seed=0), stop_after=1)
    from obliviate.training import batches

    batch = next(batches(stream[1].train, 16, None))
    with torch.no_grad():
        model.head.weight.add_(0.5)  # move away from the teacher
    assert float(lwf.loss(model, batch).detach()) > float(cross_entropy(model, batch).detach())


# ---- replay and its buffers ---------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    memory=st.integers(1, 12),
    sizes=st.lists(st.integers(0, 15), min_size=1, max_size=5),
    seed=st.integers(0, 99),
)
def test_reservoir_never_exceeds_memory(memory, sizes, seed):
    buf = ReservoirBuffer(memory_size=memory, seed=seed)
    next_id, offered = 0, []
    for n in sizes:
        ids = torch.arange(next_id, next_id + n)
        buf.add(torch.randn(n, 3), ids % 4, ids)
        offered += ids.tolist()
        next_id += n
        assert len(buf) == min(memory, len(offered)) <= memory
    stored = buf.filled()["ids"].tolist()
    assert len(set(stored)) == len(stored) and set(stored) <= set(offered)


def test_reservoir_is_uniform():
    n, memory, runs = 20, 5, 1000
    counts = torch.zeros(n)
    for seed in range(runs):
        ids = torch.arange(n)
        buf = ReservoirBuffer(memory_size=memory, seed=seed)  # offered in two batches: 7 then 13
        buf.add(torch.zeros(7, 1), ids[:7] % 2, ids[:7])
        buf.add(torch.zeros(13, 1), ids[7:] % 2, ids[7:])
        counts[buf.filled()["ids"]] += 1
    freq = counts / runs  # each id should be kept with probability 5 / 20
    sd = math.sqrt(0.25 * 0.75 / runs)
    assert float((freq - 0.25).abs().max()) < 4.5 * sd, freq


@settings(max_examples=30, deadline=None)
@given(
    memory=st.integers(1, 20),
    experiences=st.lists(
        st.lists(st.integers(0, 5), min_size=1, max_size=25), min_size=1, max_size=4
    ),
    seed=st.integers(0, 99),
)
def test_class_balanced_quotas(memory, experiences, seed):
    buf = ClassBalancedBuffer(memory_size=memory, seed=seed)
    seen: dict[int, int] = {}
    next_id = 0
    for labels in experiences:
        y = torch.tensor(labels)
        ids = torch.arange(next_id, next_id + len(labels))
        next_id += len(labels)
        buf.add_experience(ids.float().unsqueeze(1), y, ids)
        for c in labels:
            seen[c] = seen.get(c, 0) + 1
        quota = buf.quotas(list(seen))
        assert sum(quota.values()) == memory
        got = buf.filled()
        assert len(buf) <= memory
        for c, q in quota.items():
            stored = got["y"] == c
            # a class keeps min(quota, samples seen of it); stored rows are its own, unique
            assert int(stored.sum()) == min(q, seen[c])
        assert torch.equal(got["x"].squeeze(1).long(), got["ids"])
        assert got["ids"].unique().numel() == got["ids"].numel()


def test_class_balanced_refreshes_returning_classes():
    # domain-incremental: every experience holds every class; later data must enter the memory
    buf = ClassBalancedBuffer(memory_size=20, seed=0)
    y = torch.arange(200) % 2
    buf.add_experience(torch.zeros(200, 1), y, torch.arange(200))
    buf.add_experience(torch.zeros(200, 1), y, torch.arange(200, 400))
    new = (buf.filled()["ids"] >= 200).sum()
    assert 0 < int(new) < 20


def test_replay_memory_holds_past_samples_only_and_is_bounded():
    stream = _stream(n_experiences=2)
    for kind in ("reservoir", "class_balanced"):
        replay = make_strategy("replay", memory_size=10, buffer=kind)
        model = model_for_stream(ModelSpec(hidden=(8,)), stream)
        train_stream(model, stream, replay, TrainConfig(seed=0), stop_after=1)
        ids = replay.memory_.filled()["ids"]
        assert replay.memory_used() == 10 and torch.isin(ids, stream[0].train.ids).all()
        if kind == "class_balanced":
            assert sorted(replay.memory_.filled()["y"].tolist()) == sorted(
                list(stream[0].classes) * 5
            )


# ---- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, needle",
    [
        ("replay", {"memory_size": 0}, "memory_size must be >= 1, got 0"),
        ("replay", {"memory_size": -5}, "got -5"),
        ("replay", {"buffer": "fifo"}, "'fifo'"),
        ("replay", {"replay_batch_size": 0}, "replay_batch_size"),
        ("ewc", {"mode": "both"}, "'both'"),
        ("ewc", {"fisher": "sampled"}, "'sampled'"),
        ("ewc", {"gamma": 1.5}, "gamma must be <= 1"),
        ("ewc", {"reg_strength": -1.0}, "reg_strength"),
        ("ewc", {"n_fisher_samples": 0}, "n_fisher_samples"),
        ("lwf", {"temperature": 0.0}, "temperature must be > 0"),
        ("lwf", {"reg_strength": float("nan")}, "finite"),
    ],
)
def test_bad_hyperparameters(name, params, needle):
    with pytest.raises(ObliviateError, match=needle.replace("(", r"\(")):
        make_strategy(name, **params)


def test_unknown_strategy_lists_valid():
    with pytest.raises(ObliviateError, match="valid:.*ewc.*lwf.*replay"):
        make_strategy("ewcc")


# ---- the conformance suite catches broken strategies --------------------------------------------

CHECKS = {c.__name__: c for c in STRATEGY_CHECKS}


class _LearnsInInit(Strategy):
    def __init__(self) -> None:
        self.seen_ = 0

    def loss(self, model, batch):
        return cross_entropy(model, batch)


class _MutatesInput(Strategy):
    def __init__(self) -> None:
        pass

    def loss(self, model, batch):
        return cross_entropy(model, batch)

    def end(self, model, experience):
        experience.train.x.mul_(1.0001)


class _LeavesEval(Strategy):
    def __init__(self) -> None:
        pass

    def loss(self, model, batch):
        return cross_entropy(model, batch)

    def end(self, model, experience):
        model.eval()


class _Unseeded(Strategy):
    """Draws from torch's global generator outside the training steps (the loop seeds the
    global generator during steps so that a user model's Dropout is reproducible; a draw in a
    hook is still unseeded, and the suite must catch it)."""

    needs_task_boundaries = True

    def __init__(self) -> None:
        pass

    def begin(self, model, experience):
        self.scale_ = 1 + 0.1 * torch.rand(())

    def loss(self, model, batch):
        return cross_entropy(model, batch) * self.scale_


class _FakeNeutral(Strategy):
    neutral_params = {"reg_strength": 0.0}

    def __init__(self, *, reg_strength: float = 1.0) -> None:
        self.reg_strength = reg_strength

    def loss(self, model, batch):
        return cross_entropy(model, batch) * 1.5


class _Overfull(Strategy):
    keeps_memory = True

    def __init__(self, *, memory_size: int = 3) -> None:
        self.memory_size = memory_size

    def loss(self, model, batch):
        return cross_entropy(model, batch)

    def end(self, model, experience):
        self.kept_ = len(experience.train)

    def memory_used(self):
        return getattr(self, "kept_", 0)


class _ChangesParams(Strategy):
    def __init__(self, *, lr_scale: float = 1.0) -> None:
        self.lr_scale = lr_scale

    def loss(self, model, batch):
        return cross_entropy(model, batch)

    def end(self, model, experience):
        self.lr_scale *= 0.5


@pytest.mark.parametrize(
    "cls, check",
    [
        (_LearnsInInit, "check_no_learned_state_before_training"),
        (_MutatesInput, "check_inputs_not_mutated"),
        (_LeavesEval, "check_hooks_restore_mode"),
        (_Unseeded, "check_deterministic"),
        (_FakeNeutral, "check_neutral_equals_naive"),
        (_Overfull, "check_memory_bounded"),
        (_ChangesParams, "check_params_unchanged_by_training"),
    ],
)
def test_suite_catches_broken_strategy(cls, check):
    with pytest.raises(AssertionError):
        CHECKS[check](cls)


def test_not_applicable_is_declared():
    with pytest.raises(NotApplicable):
        CHECKS["check_memory_bounded"](_LeavesEval)


@pytest.mark.parametrize("fisher", ["empirical", "true"])
def test_fisher_non_linear_models_fall_back_to_batched_per_sample_grads(fisher):
    # a CNN has conv parameters: the linear fast path must step aside, the batched path must agree
    tr, te = synthetic_dataset(n_classes=3, n_per_class=6, n_features=16)
    img = lambda d: d.with_x(d.x.reshape(len(d), 1, 4, 4))  # noqa: E731
    stream = build_scenario("joint", img(tr), img(te), n_experiences=1)
    model = model_for_stream(ModelSpec(name="cnn", hidden=(8,), channels=(2, 3), seed=0), stream)
    data = stream[0].train
    fast = diagonal_fisher(model, data, fisher=fisher, chunk_size=5)
    slow = diagonal_fisher(model, data, fisher=fisher, vectorised=False)
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-4, atol=1e-8)
