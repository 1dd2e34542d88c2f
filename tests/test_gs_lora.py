"""GS-LoRA / GS-LoRA++ (group-sparse LoRA unlearners) and the continual-forget run kind."""

import math

import pytest
import torch
from torch import nn

from obliviate.data import synthetic_dataset
from obliviate.errors import ObliviateError
from obliviate.experiments.continual_forget import (
    ContinualForgetSpec,
    aggregate,
    parse_sequence,
    run,
)
from obliviate.models import ModelSpec
from obliviate.training import Recipe, TrainConfig
from obliviate.unlearning import make_unlearner
from obliviate.unlearning.base import ForgetRequest
from obliviate.unlearning.gs_lora import (
    GSLoRA,
    attach_lora,
    group_norms,
    group_sparse_penalty,
    merge,
    prox_group_sparse,
)
from obliviate.unlearning.gs_lora_pp import GSLoRAPP


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


@pytest.fixture(scope="module")
def toy():
    train, _ = synthetic_dataset(n_classes=3, n_per_class=80, n_features=12, seed=0)
    recipe = Recipe(
        ModelSpec("mlp", (32,), seed=0),
        TrainConfig(n_epochs=15, batch_size=16, lr=3e-3, optimizer="adam", seed=0),
    )
    model = recipe.fit(train, n_classes=3)
    ids = train.ids[train.y == 2]
    return model, ForgetRequest.from_ids(train, ids, recipe)


def test_group_sparse_penalty_matches_a_hand_computation():
    net = _net()
    _, groups = attach_lora(net, ["1", "3"], rank=2, lora_alpha=2, seed=0, key="t")
    values = [(0.5, -1.0), (2.0, 0.25)]  # every entry of A, of B per group
    with torch.no_grad():
        for g, (a, b) in zip(groups, values, strict=True):
            g.a.fill_(a)
            g.b.fill_(b)
    # group 1: A [2, 6], B [5, 2]; group 2: A [2, 5], B [3, 2]
    hand = math.sqrt(12 * 0.25 + 10 * 1.0) + math.sqrt(10 * 4.0 + 6 * 0.0625)
    assert float(group_sparse_penalty(groups).detach()) == pytest.approx(hand, rel=1e-6)
    norms = group_norms(groups).tolist()
    assert norms == pytest.approx([math.sqrt(13.0), math.sqrt(40.375)], rel=1e-6)
    # the proximal step: a group under the threshold becomes exactly zero, the other shrinks
    prox_group_sparse(groups, threshold=4.0)
    assert not groups[0].a.any() and not groups[0].b.any()
    scale = 1 - 4.0 / math.sqrt(40.375)
    assert float(groups[1].a[0, 0].detach()) == pytest.approx(2.0 * scale, rel=1e-6)
    assert float(groups[1].b[0, 0].detach()) == pytest.approx(0.25 * scale, rel=1e-6)


def test_a_zero_group_leaves_its_layer_unchanged_and_the_merge_is_plain():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    wrapper, groups = attach_lora(net, ["1", "3"], rank=2, lora_alpha=2, seed=0, key="t")
    with torch.no_grad():
        groups[0].b.fill_(0.3)  # group "1" moves its layer
        groups[1].a.zero_()  # group "3" is zero
        groups[1].b.zero_()
    out = merge(wrapper, net, groups)
    assert type(out) is nn.Sequential and out is net
    assert not any("lora" in n for n, _ in out.named_modules())
    after = out.state_dict()
    assert list(after) == list(before)
    assert torch.equal(after["3.weight"], before["3.weight"])
    assert torch.equal(after["3.bias"], before["3.bias"])
    assert not torch.equal(after["1.weight"], before["1.weight"])


def test_merged_model_is_a_plain_model_of_the_same_class(toy):
    model, request = toy
    for name in ("gs_lora", "gs_lora_pp"):
        u = make_unlearner(name, n_epochs=1)
        out = u.unlearn(model, request)
        assert type(out) is type(model)
        assert [n for n, _ in out.named_modules()] == [n for n, _ in model.named_modules()]
        assert list(out.state_dict()) == list(model.state_dict())
        assert all(p.requires_grad for p in out.parameters())
        assert set(u.learned()["group_norms_"]) == {"body.1", "head"}


def test_penalty_strong_enough_zeroes_every_group_and_leaves_the_model_unchanged(toy):
    model, request = toy
    u = GSLoRA(reg_strength=1e6, warmup_epochs=0, n_epochs=1)
    out = u.unlearn(model, request)
    assert sorted(u.learned()["zeroed_groups_"]) == ["body.1", "head"]
    for (k, a), b in zip(model.state_dict().items(), out.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_forget_and_prototype_terms_forget_the_class(toy):
    model, request = toy
    forget_x = request.forget
    for u in (GSLoRA(n_epochs=15), GSLoRAPP(n_epochs=15)):
        out = u.unlearn(model, request)
        with torch.no_grad():
            pred = out(forget_x.x, forget_x.task).argmax(1)
        assert float((pred == forget_x.y).float().mean()) < 0.2, type(u).__name__


def test_bad_input_errors():
    with pytest.raises(ObliviateError, match="rank"):
        GSLoRA(rank=0)
    with pytest.raises(ObliviateError, match="bound"):
        GSLoRAPP(bound=0.0)
    with pytest.raises(ObliviateError, match="temperature"):
        GSLoRAPP(temperature=-1.0)
    with pytest.raises(ObliviateError, match="include_conv"):
        GSLoRA(include_conv="yes")
    train, _ = synthetic_dataset(n_classes=2, n_per_class=20, n_features=4, seed=0)

    class NoLinear(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(4, 2))

        def forward(self, x):
            return x @ self.w

    request = ForgetRequest.from_ids(train, train.ids[:3])
    with pytest.raises(ObliviateError, match="nn.Linear"):
        GSLoRA().unlearn(NoLinear(), request)
    for bad in ("class:1,class:1", "class:1,dog:2", "", "class:-1"):
        with pytest.raises(ObliviateError):
            parse_sequence(bad)
    with pytest.raises(ObliviateError, match="sequence"):
        ContinualForgetSpec(sequence="random:5%")
    with pytest.raises(ObliviateError, match="not a class of digits"):
        run(ContinualForgetSpec(sequence="class:1,class:12", limit=200))


def test_sequence_runner_shapes():
    spec = ContinualForgetSpec(
        sequence="class:0,class:1",
        method="gs_lora",
        params={"n_epochs": 1},
        limit=300,
        n_epochs=5,
    )
    seen = []
    res = run(spec, echo=seen.append)
    assert [r["request"] for r in res["requests"]] == [0, 1, 2]
    assert [r["forgotten"] for r in res["requests"]] == [[], [0], [0, 1]]
    assert len(seen) == 3 and res["final"] is res["requests"][-1]
    first, last = res["requests"][0], res["requests"][-1]
    assert first["forgotten_acc"] is None and first["remaining_acc"] is not None
    assert set(last["per_class"]) == {"0", "1"}
    assert set(last["learned"]["group_norms_"]) == {"body.1", "head"}
    assert last["oracle_forgotten_acc"] == 0.0  # the oracle never saw classes 0 and 1
    for k in ("forgotten_acc", "remaining_acc", "oracle_remaining_acc", "seconds"):
        assert isinstance(last[k], float)
    agg = aggregate([res, res])
    assert len(agg) == 3 and agg[2]["std"]["forgotten_acc"] == 0.0
    assert agg[2]["mean"]["remaining_acc"] == pytest.approx(last["remaining_acc"])
    assert ContinualForgetSpec.from_dict(spec.to_dict()) == spec
