"""ER-ACE, X-DER, RWalk, MIR, GSS and BiC: each method's defining equation on hand-computed
tensors, and training on a user-style model (BatchNorm1d + Dropout, ``forward(x)`` only)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from obliviate.continual import make_strategy
from obliviate.continual.bic import BiC, bias_correct, fit_bias_correction
from obliviate.continual.erace import asymmetric_cross_entropy
from obliviate.continual.gss import gradient_scores
from obliviate.continual.loop import train_stream
from obliviate.continual.mir import MIR, interference_scores
from obliviate.continual.rwalk import rwalk_score
from obliviate.continual.xder import cap_logits, margin_constraint
from obliviate.data import build_scenario, load_dataset, synthetic_dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, model_for_stream
from obliviate.training import Batch, TrainConfig

NEW = ("erace", "xder", "rwalk", "mir", "gss", "bic")


# ---- the defining equations ---------------------------------------------------------------------


def test_erace_masks_absent_classes():
    out = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 5.0]], requires_grad=True)
    y = torch.tensor([0, 1])  # class 2 is absent from the batch
    loss = asymmetric_cross_entropy(out, y)
    row0 = -math.log(math.e**1 / (math.e**1 + math.e**2))
    row1 = -math.log(math.e**1 / (math.e**0 + math.e**1))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    loss.backward()
    assert torch.all(out.grad[:, 2] == 0)  # the absent class's logit is neither pushed nor pulled
    # one class present: nothing to separate, the loss is 0
    assert asymmetric_cross_entropy(out.detach(), torch.tensor([2, 2])).item() == 0.0


def test_rwalk_score_is_loss_drop_per_kl():
    s = rwalk_score(
        torch.tensor([2.0, -1.0]), torch.tensor([4.0, 0.0]), torch.tensor([0.5, 1.0]), 0.01
    )
    assert s.tolist() == pytest.approx([2.0 / (0.5 * 4.0 * 0.25 + 0.01), -1.0 / 0.01])


def test_rwalk_importance_is_normalised_fisher_plus_score():
    stream, spec = _tiny()
    strategy = make_strategy("rwalk")
    train_stream(model_for_stream(spec, stream), stream, strategy, TrainConfig(n_epochs=2, lr=0.1))
    for name, imp in strategy.importance_.items():
        fisher = strategy.fisher_[name] / max(float(f.max()) for f in strategy.fisher_.values())
        assert torch.all(imp >= fisher - 1e-7) and torch.all(imp <= fisher + 1 + 1e-6)
    assert max(float(v.max()) for v in strategy.importance_.values()) >= 1.0


def test_mir_picks_largest_loss_increase():
    before = torch.tensor([1.0, 1.0, 1.0, 1.0])
    after = torch.tensor([1.5, 0.9, 3.0, 1.5])
    assert interference_scores(before, after, 2).tolist() == [2, 0]  # tie 0/3 -> lower index
    assert interference_scores(before, after, 9).tolist() == [2, 0, 3, 1]


def test_mir_retrieval_matches_a_real_sgd_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    cx, cy = torch.randn(12, 4), torch.randint(0, 3, (12,))
    mir = MIR(n_candidates=12, replay_batch_size=4, virtual_lr=0.3)
    batch = Batch(x=x, y=y, ids=torch.arange(16), task=None, experience=0)
    chosen = mir._retrieve(model, batch, cx, cy, None)
    stepped = copy.deepcopy(model)
    opt = torch.optim.SGD(stepped.parameters(), lr=0.3)
    nn.functional.cross_entropy(stepped(x), y).backward()
    opt.step()
    with torch.no_grad():
        rise = nn.functional.cross_entropy(stepped(cx), cy, reduction="none") - (
            nn.functional.cross_entropy(model(cx), cy, reduction="none")
        )
    assert set(chosen.tolist()) == set(torch.topk(rise, 4).indices.tolist())


def test_gss_score_is_max_cosine_plus_one():
    g = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    memory = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    c = gradient_scores(g, memory)
    assert c.tolist() == pytest.approx([2.0, 1 + 1 / math.sqrt(2), 1 - 1 / math.sqrt(2)])


def test_gss_memory_is_bounded_and_diverse_samples_enter():
    stream, spec = _tiny()
    strategy = make_strategy("gss", memory_size=20)
    train_stream(model_for_stream(spec, stream), stream, strategy, TrainConfig(n_epochs=1, lr=0.1))
    mem = strategy.memory_
    assert mem["y"].numel() == 20 and mem["score"].shape == (20,)
    assert bool(((mem["score"] >= 0) & (mem["score"] <= 2)).all())
    assert set(mem["y"].tolist()) == {0, 1, 2, 3}  # the second experience's classes got in


def test_bic_correction_and_its_fit():
    out = torch.tensor([[1.0, 2.0, 3.0]])
    q = bias_correct(out, torch.tensor([2]), torch.tensor(0.5), torch.tensor(-1.0))
    assert q.tolist() == [[1.0, 2.0, 0.5]]
    # new classes 2, 3 inflated by +4: the fitted correction must undo the inflation
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(4).repeat(50)
    clean = torch.randn(200, 4, generator=gen) + 3.0 * nn.functional.one_hot(y, 4)
    biased = clean.clone()
    biased[:, 2:] += 4.0
    new, cols = torch.tensor([2, 3]), torch.arange(4)
    alpha, beta = fit_bias_correction(biased, y, new, cols)
    fixed = bias_correct(biased, new, torch.tensor(alpha), torch.tensor(beta))
    ce = nn.functional.cross_entropy
    assert ce(fixed, y) < ce(biased, y) - 0.5
    assert beta < -2.0  # most of the +4 shift is taken back
    assert (fixed.argmax(1) == y).float().mean() > (biased.argmax(1) == y).float().mean()


def test_bic_writes_the_correction_into_the_output_layer():
    stream, spec = _tiny()
    model = model_for_stream(spec, stream)
    strategy = BiC(memory_size=40)
    train_stream(model, stream, strategy, TrainConfig(n_epochs=2, lr=0.1))
    alpha, beta = strategy.corrections_[-1]
    assert strategy.corrections_[0] == (1.0, 0.0) and (alpha, beta) != (1.0, 0.0)
    x = stream[1].test.x
    w, b = strategy.trained_head_
    model.eval()
    with torch.no_grad():
        raw = model.features(x) @ w.T + b
        new = torch.tensor(stream[1].classes)
        want = bias_correct(raw, new, torch.tensor(alpha), torch.tensor(beta))
        assert torch.allclose(model(x), want, atol=1e-5)


def test_bic_refuses_a_model_whose_output_is_not_a_linear_layer():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return 2 * self.fc(x)

    stream, _ = _tiny()
    with pytest.raises(ObliviateError, match="nn.Linear"):
        train_stream(Scaled(), stream, BiC(memory_size=40), TrainConfig(n_epochs=1, lr=0.1))


def test_xder_caps_transplanted_logits_below_the_ground_truth():
    stored = torch.tensor([[5.0, 1.0, 0.0, 0.0], [5.0, 1.0, 0.0, 0.0]])
    fresh = torch.tensor([[9.0, 9.0, 8.0, 2.0], [9.0, 9.0, 4.0, 2.0]])
    out = cap_logits(stored, fresh, torch.tensor([0, 0]), torch.tensor([2, 3]), gamma=0.5)
    scale = 0.5 * 5.0 / 8.0
    want = [5.0, 1.0, 8 * scale, 2 * scale, 5.0, 1.0, 4.0, 2.0]
    assert out.reshape(-1).tolist() == pytest.approx(want)
    assert stored[0, 2] == 0.0  # not modified in place


def test_xder_margin_constraint():
    good = torch.tensor([1.0, 0.0, 2.0])
    bad = torch.tensor([0.5, 0.5, 0.0])
    assert margin_constraint(good, bad, 0.3).item() == pytest.approx(0.8)  # only row 1 violates
    assert margin_constraint(good, bad - 5, 0.3).item() == 0.0


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("erace", {"replay_batch_size": 0}),
        ("xder", {"gamma": 0.0}),
        ("rwalk", {"alpha": 0.0}),
        ("mir", {"virtual_lr": 0.0}),
        ("gss", {"n_candidates": 0}),
        ("bic", {"val_fraction": 1.0}),
    ],
)
def test_bad_hyperparameters_are_refused(name, params):
    with pytest.raises(ObliviateError, match=next(iter(params))):
        make_strategy(name, **params)


# ---- a user-style model on class-incremental digits -----------------------------------------------


class UserNet(nn.Module):
    """What a user brings: batch norm, dropout, ``forward(x)`` only."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(64, 64),
            nn.BatchNorm1d(64),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(64, 10),
        )

    def forward(self, x):
        return self.net(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("name", NEW)
def test_trains_a_user_model_on_class_incremental_digits(name):
    torch.manual_seed(0)  # dropout draws from the global generator
    train, test = load_dataset("digits")
    stream = build_scenario("class-incremental", train, test, n_experiences=5, seed=0)
    strategy = make_strategy(name)
    losses: list[float] = []
    loss = strategy.loss

    def recorded(model, batch):
        value = loss(model, batch)
        losses.append(float(value.detach()))
        return value

    strategy.loss = recorded  # type: ignore[method-assign]
    model = UserNet()
    # batch 30 leaves no one-row last batch (experiences of 284-289 rows): batch norm cannot
    # train on a single row, and the loop does not drop a short last batch
    config = TrainConfig(n_epochs=2, batch_size=30, lr=0.01, momentum=0.9, seed=0)
    result = train_stream(model, stream, strategy, config)
    assert losses and all(math.isfinite(v) for v in losses)
    final = result.accuracy_matrix[-1]
    assert np.isfinite(final).all()
    # chance is 0.1; naive fine-tuning keeps about the last experience's 2 classes (~0.2)
    assert final.mean() > (0.2 if name == "rwalk" else 0.4), final


def _tiny():
    train, test = synthetic_dataset(n_classes=4, n_per_class=40, n_features=8, seed=0)
    stream = build_scenario("class-incremental", train, test, n_experiences=2, seed=0)
    return stream, ModelSpec(hidden=(16,), seed=0)
