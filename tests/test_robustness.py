"""Robustness columns (issue #14, item 4): int8 quantisation and related fine-tuning recovery."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from obliviate.experiments.forget import ForgetSpec, prepare, run_forget
from obliviate.training import accuracy, predict_logits
from obliviate.unlearning import robustness as R

SPEC = dict(dataset="digits", n_epochs=5, seed=0)


@pytest.fixture(scope="module")
def class_run():
    return prepare(ForgetSpec(forget="class:3", method="retrain", **SPEC))


@pytest.fixture(scope="module")
def random_run():
    return prepare(ForgetSpec(forget="random:10%", method="retrain", **SPEC))


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_quantize_int8_quantises_linear_layers_and_leaves_the_model(class_run):
    m = class_run.original
    before = copy.deepcopy(m)
    q = R.quantize_int8(m)
    assert _same(m, before)  # untouched
    assert any("quantized" in type(mod).__module__ for mod in q.modules())
    assert not any(type(mod) is nn.Linear for mod in q.modules())
    x = class_run.test
    lf, lq = predict_logits(m, x), predict_logits(q, x)
    assert not torch.equal(lf, lq)  # int8 changes the numbers ...
    agree = (lf.argmax(1) == lq.argmax(1)).float().mean().item()
    assert agree > 0.95  # ... but not the predictions of a well-trained model


def test_quantization_recovery_reads_before_and_after(class_run):
    r = R.quantization_recovery(class_run.original, class_run.request.forget)
    assert r["before"] == accuracy(class_run.original, class_run.request.forget)
    assert r["recovery"] == pytest.approx(r["after"] - r["before"])
    # a change far below the int8 step is undone by quantisation: the quantised model predicts
    # what the quantised original predicts (the failure mode of Zhang et al. 2024)
    nudged = copy.deepcopy(class_run.original)
    with torch.no_grad():
        for p in nudged.parameters():
            p.add_(1e-7 * torch.sign(p))
    qa = R.quantization_recovery(nudged, class_run.request.forget)["after"]
    assert qa == r["after"]


def test_related_samples_class_forgetting_take_the_most_confused_class(class_run):
    p = class_run
    s = R.related_samples(p.original, p.request, k=32, seed=0)
    assert len(s) == 32
    assert not torch.isin(s.ids, p.request.forget.ids).any()
    assert 3 not in s.y.tolist()
    probs = predict_logits(p.original, p.request.forget).softmax(1).mean(0)
    probs[3] = -1
    assert s.y[0].item() == int(probs.argmax())  # the most confused class comes first
    again = R.related_samples(p.original, p.request, k=32, seed=0)
    assert torch.equal(again.ids, s.ids)


def test_related_samples_random_forgetting_draw_retain_rows(random_run):
    p = random_run
    s = R.related_samples(p.original, p.request, k=20, seed=1)
    assert len(s) == 20
    assert torch.isin(s.ids, p.request.retain.ids).all()
    assert not torch.isin(s.ids, p.request.forget.ids).any()


def test_related_finetune_recovery_is_deterministic_and_pure(class_run):
    p = class_run
    s = R.related_samples(p.original, p.request, k=16)
    # an "unlearned" model that only suppresses the forgotten logit with a small bias shift
    suppressed = copy.deepcopy(p.original)
    last = [m for m in suppressed.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():
        last.bias[3] -= 3.0
    snapshot = copy.deepcopy(suppressed)
    a = R.related_finetune_recovery(suppressed, p.request.forget, s, n_steps=5)
    b = R.related_finetune_recovery(suppressed, p.request.forget, s, n_steps=5)
    assert a == b
    assert _same(suppressed, snapshot)
    assert a["before"] == accuracy(suppressed, p.request.forget)
    # no steps: nothing changes
    zero = R.related_finetune_recovery(suppressed, p.request.forget, s, n_steps=0)
    assert zero["recovery"] == 0.0


def test_forget_run_carries_robustness_beside_the_oracle():
    r = run_forget(ForgetSpec(forget="class:3", method="gradient_ascent", robustness=True, **SPEC))
    rb = r["robustness"]
    for key in ("quantization", "related_finetune"):
        assert set(rb[key]) == {"unlearned", "oracle"}
        for who in ("unlearned", "oracle"):
            assert set(rb[key][who]) == {"before", "after", "recovery"}
    assert rb["quantization"]["unlearned"]["before"] == r["unlearned"]["forget_acc"]
    # the oracle never saw class 3: neither attack teaches it the class from other classes' data
    assert rb["quantization"]["oracle"]["after"] <= 0.05
    assert rb["related_finetune"]["oracle"]["after"] <= 0.05
    assert 3 not in rb["related_classes"]
    assert 0 <= rb["probe"]["unlearned"] <= 1 and 0 <= rb["probe"]["oracle"] <= 1
    off = run_forget(ForgetSpec(forget="class:3", method="gradient_ascent", **SPEC))
    assert "robustness" not in off
