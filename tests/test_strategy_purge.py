"""Deletion-aware strategies (issue 11, item 2): ``Strategy.purge``, the buffers' purge, the
conformance check ``check_purge_removes_deleted`` (and that it catches injected bugs), and the
statistics recomputed from the kept samples (iCaRL's class means, SLDA's means and covariance)."""

import dataclasses

import pytest
import torch
from torch import nn

from obliviate.continual import strategy_class
from obliviate.continual.buffers import ClassBalancedBuffer, ReservoirBuffer
from obliviate.continual.icarl import ICaRL, nme_weights
from obliviate.continual.loop import train_stream
from obliviate.continual.slda import SLDA, lda_classifier, streaming_update
from obliviate.errors import ObliviateError
from obliviate.testing import NotApplicable, tiny_setup
from obliviate.testing.strategies import check_purge_removes_deleted, run_check
from obliviate.training import eval_mode


# check_purge_removes_deleted runs for every strategy in tests/test_conformance_strategies.py
# (it is in STRATEGY_CHECKS); here: the user-style model, for the strategies that store samples.
@pytest.mark.parametrize("name", ["replay", "der", "gdumb", "gem", "xder", "gss", "fpf", "mir"])
def test_purge_check_on_a_user_model(name):
    try:
        run_check(check_purge_removes_deleted, strategy_class(name), "user")
    except NotApplicable as why:
        pytest.skip(str(why))


# ---- the buffers ----------------------------------------------------------------------------


def _samples(n, start=0):
    x = torch.arange(start, start + n, dtype=torch.float32).reshape(-1, 1).repeat(1, 3) + 0.5
    return x, torch.arange(n) % 3, torch.arange(start, start + n, dtype=torch.int64)


def test_reservoir_purge_removes_rows_and_keeps_a_valid_state():
    buf = ReservoirBuffer(memory_size=10, seed=3)
    x, y, ids = _samples(40)
    buf.add(x, y, ids, extra=x * 2)
    stored = buf.filled()["ids"].clone()
    gone = stored[::3]
    assert buf.purge(torch.cat([gone, torch.tensor([999])])) == gone.numel()
    left = buf.filled()
    assert len(buf) == 10 - gone.numel() and buf.n_seen == 40 - gone.numel()
    assert not torch.isin(left["ids"], gone).any()
    assert torch.equal(left["ids"], stored[~torch.isin(stored, gone)])  # order kept
    assert torch.equal(left["extra"], left["x"] * 2)  # rows stay aligned
    assert not torch.isin(buf.x[:, 0] - 0.5, gone.float()).any()  # unused slots hold no trace
    assert torch.equal(buf.x[len(buf) :], torch.zeros_like(buf.x[len(buf) :]))
    # later add() calls: the freed slots fill first, then Algorithm R continues
    x2, y2, ids2 = _samples(gone.numel() + 20, start=100)
    buf.add(x2, y2, ids2, extra=x2 * 2)
    assert len(buf) == 10 and buf.n_seen == 40 + 20
    assert torch.equal(buf.filled()["extra"], buf.filled()["x"] * 2)


def test_reservoir_purge_is_deterministic():
    def run():
        buf = ReservoirBuffer(memory_size=8, seed=1)
        x, y, ids = _samples(30)
        buf.add(x, y, ids)
        buf.purge(buf.filled()["ids"][1::2])
        x2, y2, ids2 = _samples(30, start=50)
        buf.add(x2, y2, ids2)
        return buf.filled()

    a, b = run(), run()
    assert all(torch.equal(a[k], b[k]) for k in ("x", "y", "ids", "task"))


def test_class_balanced_purge_drops_rows_and_empty_classes():
    buf = ClassBalancedBuffer(memory_size=9, seed=0)
    x, y, ids = _samples(30)
    buf.add_experience(x, y, ids)
    stored = buf.filled()
    class0 = stored["ids"][stored["y"] == 0]
    one_of_1 = stored["ids"][stored["y"] == 1][:1]
    n_seen_1 = buf.n_seen[1]
    assert buf.purge(torch.cat([class0, one_of_1])) == class0.numel() + 1
    assert 0 not in buf.per_class and 0 not in buf.n_seen  # the class is gone
    assert buf.n_seen[1] == n_seen_1 - 1
    assert not torch.isin(buf.filled()["ids"], torch.cat([class0, one_of_1])).any()
    x2, y2, ids2 = _samples(12, start=200)
    buf.add_experience(x2, y2, ids2)  # a later update works; quotas over the classes present
    assert len(buf) <= 9 and set(buf.per_class) == {0, 1, 2}


def test_purge_rejects_ids_that_are_not_integers():
    with pytest.raises(ObliviateError):
        strategy_class("naive")().purge(torch.tensor([1.5]))
    with pytest.raises(ObliviateError):
        strategy_class("replay")().purge(["a"])


# ---- the check catches injected bugs --------------------------------------------------------


def _fails(name, match):
    with pytest.raises(AssertionError, match=match):
        check_purge_removes_deleted(strategy_class(name))


def test_check_catches_a_purge_that_does_nothing(monkeypatch):
    monkeypatch.setattr(ReservoirBuffer, "purge", lambda self, ids: 0)
    _fails("replay", "deleted")


def test_check_catches_features_left_behind(monkeypatch):
    real = ReservoirBuffer.purge

    def ids_only(self, ids):  # removes the ids but leaves the old features in the buffer
        x = self.x
        n = real(self, ids)
        self.x = x
        return n

    monkeypatch.setattr(ReservoirBuffer, "purge", ids_only)
    _fails("replay", "row of a deleted sample")


def test_check_catches_stored_logits_left_behind(monkeypatch):
    real = ReservoirBuffer.purge

    def keep_extra(self, ids):  # compacts everything but DER's stored logits
        extra = self.extra
        n = real(self, ids)
        self.extra = extra
        return n

    monkeypatch.setattr(ReservoirBuffer, "purge", keep_extra)
    _fails("der", "row of a deleted sample")


def test_check_catches_a_per_sample_tensor_left_unfiltered(monkeypatch):
    from obliviate.continual.remind import REMIND

    real = REMIND.purge

    def keep_codes(self, ids, model=None):  # filters ids and labels, forgets the codes
        codes = self.memory_codes_
        real(self, ids, model)
        self.memory_codes_ = codes

    monkeypatch.setattr(REMIND, "purge", keep_codes)
    _fails("remind", "not filtered with its ids")


def test_check_catches_a_purge_that_removes_too_much(monkeypatch):
    monkeypatch.setattr(ClassBalancedBuffer, "purge", lambda self, ids: self.per_class.clear() or 0)
    _fails("bic", "not asked to remove|emptied")


def test_check_catches_a_strategy_without_purge(monkeypatch):
    from obliviate.continual.base import Strategy
    from obliviate.continual.gem import GEM

    monkeypatch.setattr(GEM, "purge", Strategy.purge)
    _fails("gem", "deleted")


# ---- statistics recomputed from the kept samples ---------------------------------------------


def _trained(cls, **params):
    setup = tiny_setup(cls)
    strategy, model = cls(**params), setup.model()
    train_stream(model, setup.stream, strategy, setup.config)
    return setup, strategy, model


def _icarl_means_match(strategy: ICaRL, model) -> bool:
    """The model's nearest-mean classifier equals the class means of the kept exemplars,
    recomputed here from their features."""
    with torch.no_grad(), eval_mode(model):
        feats = {c: model.features(ex.x) for c, ex in strategy.exemplars_.items()}
        weight, bias = nme_weights(feats, model.n_classes, model.feature_dim)
    head = model.head_parameters()
    return torch.allclose(head[0], weight, atol=1e-6) and torch.equal(head[1], bias)


def test_icarl_purge_recomputes_the_class_means():
    _, strategy, model = _trained(ICaRL, memory_size=20)
    assert _icarl_means_match(strategy, model)
    ex = strategy.exemplars_
    some = min(ex)
    gone = torch.cat([ex[some].ids[:2], ex[max(ex)].ids])  # a whole class goes too
    buggy = ICaRL(memory_size=20)  # an injected bug: exemplars dropped, means not recomputed
    kept = {c: d.subset(~torch.isin(d.ids, gone)) for c, d in ex.items()}
    buggy.exemplars_ = {c: d for c, d in kept.items() if len(d)}
    assert not _icarl_means_match(buggy, model)
    with pytest.raises(ObliviateError, match="model="):
        strategy.purge(gone)  # the means live in the model: refused, nothing changed
    assert sum(len(d) for d in strategy.exemplars_.values()) == 20
    strategy.purge(gone, model=model)
    assert max(ex) not in strategy.exemplars_
    assert not any(torch.isin(d.ids, gone).any() for d in strategy.exemplars_.values())
    assert _icarl_means_match(strategy, model)
    assert float(model.head_parameters()[1][max(ex)].detach()) < -1e8  # never predicted


def _without(setup, gone):
    stream = setup.stream
    exps = tuple(
        dataclasses.replace(e, train=e.train.subset(~torch.isin(e.train.ids, gone))) for e in stream
    )
    return dataclasses.replace(setup, stream=dataclasses.replace(stream, experiences=exps))


def test_slda_purge_recomputes_means_and_covariance_exactly():
    setup, strategy, model = _trained(SLDA)
    gone = strategy.feature_ids_[::3].clone()
    with pytest.raises(ObliviateError, match="model="):
        strategy.purge(gone)
    strategy.purge(gone, model=model)
    assert not torch.isin(strategy.feature_ids_, gone).any()
    # the recorded features are the kept samples' own, as fed
    data = torch.cat([e.train.x for e in setup.stream])
    ids = torch.cat([e.train.ids for e in setup.stream])
    order = torch.argsort(ids)
    rows = order[torch.searchsorted(ids[order], strategy.feature_ids_)]
    with torch.no_grad(), eval_mode(model):
        assert torch.equal(strategy.features_, model.features(data[rows]))
    # means and counts: those of a run that never saw the deleted samples
    other = SLDA()
    other_model = _without(setup, gone).model()
    train_stream(other_model, _without(setup, gone).stream, other, setup.config)
    assert torch.equal(strategy.count_, other.count_)
    assert torch.allclose(strategy.mean_, other.mean_, atol=1e-10)
    # the covariance: the paper's recursion over the kept samples in feed order
    mean, count = torch.zeros_like(strategy.mean_), torch.zeros_like(strategy.count_)
    sigma = torch.zeros_like(strategy.sigma_)
    z, y = strategy.features_.double(), strategy.feature_y_
    for i in range(z.shape[0]):  # one sample at a time, as the paper writes it
        streaming_update(mean, count, sigma, i, z[i : i + 1], y[i : i + 1])
    assert torch.allclose(strategy.sigma_, sigma, atol=1e-10)
    assert torch.allclose(strategy.mean_, mean, atol=1e-12)
    weight, bias = lda_classifier(strategy.mean_, strategy.count_, strategy.sigma_, 1e-4)
    head = model.head_parameters()
    assert torch.allclose(head[0], weight.float()) and torch.allclose(head[1], bias.float())


def test_naive_purge_changes_nothing():
    _, strategy, model = _trained(strategy_class("naive"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strategy.purge(torch.tensor([1, 2, 3]), model=model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model, nn.Module)
