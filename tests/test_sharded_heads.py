"""Per-shard heads on a frozen backbone (SAFE's design for classifiers): deleting ids equals
training the heads without them, bitwise; only the affected heads retrain; the backbone runs
once per training row and never trains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from obliviate.data import synthetic_dataset
from obliviate.errors import ObliviateError
from obliviate.models.base import seeded_init
from obliviate.sharded.heads import ShardedHeads


class Backbone(nn.Module):
    """A user's frozen trunk: 16 features -> 24, counting the rows it has seen."""

    def __init__(self) -> None:
        super().__init__()
        with seeded_init(7):
            self.net = nn.Sequential(nn.Linear(16, 24), nn.Tanh())
        for p in self.parameters():
            p.requires_grad_(False)
        self.n_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n_rows += x.shape[0]
        return self.net(x)


@pytest.fixture(scope="module")
def data() -> tuple:
    torch.set_num_threads(1)
    return synthetic_dataset(n_classes=4, n_per_class=40, n_features=16, seed=0)


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
        for x, y in zip(a, b, strict=True)
    )


PARAMS = {"n_shards": 3, "n_slices": 2, "n_epochs": 5, "lr": 1e-2, "batch_size": 16, "seed": 0}


def _adapter(d: int, c: int) -> nn.Module:
    # a user's own head: a LayerNorm then the classifier
    return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, c))


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"graph": "ring:1"},
        {"hidden": 8, "n_slices": 3, "optimizer": "sgd"},
        {"head_factory": _adapter},
    ],
)
def test_deletion_equals_training_without_the_ids(data: tuple, extra: dict) -> None:
    train, _ = data
    params = {**PARAMS, **extra}
    heads = ShardedHeads(**params).fit(Backbone(), train)
    before = [{k: v.clone() for k, v in s.items()} for s in heads.head_states()]
    gone = train.ids[[3, 50, 51]]
    out = heads.forget(gone)
    fresh = ShardedHeads(**params).fit(Backbone(), train.without_ids(gone))
    assert _same(heads.head_states(), fresh.head_states())
    # only the shards whose neighbourhood held a deleted id were retrained; the others kept bits
    assert out["n_removed"] == 3 and out["retrained"]
    for k in range(params["n_shards"]):
        if k not in out["retrained"]:
            assert _same([before[k]], [heads.head_states()[k]])
    # later checkpoints too: a second deletion still equals training without all of them
    more = train.ids[[7]]
    heads.forget(more)
    again = ShardedHeads(**params).fit(Backbone(), train.without_ids(torch.cat([gone, more])))
    assert _same(heads.head_states(), again.head_states())


def test_one_id_without_graph_retrains_one_head_from_its_slice(data: tuple) -> None:
    train, _ = data
    heads = ShardedHeads(**PARAMS).fit(Backbone(), train)
    one = int(train.ids[10])
    row = heads.samples_[heads.samples_[:, 0] == one][0]
    out = heads.forget([one])
    assert out["retrained"] == {int(row[1]): int(row[2])}


def test_backbone_runs_once_per_row_and_never_trains(data: tuple) -> None:
    train, test = data
    backbone = Backbone()
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    heads = ShardedHeads(**PARAMS).fit(backbone, train)
    assert backbone.n_rows == len(train) == heads.n_backbone_rows_
    heads.forget(train.ids[:5])
    assert backbone.n_rows == len(train)  # deletion reuses the stored features
    assert all(torch.equal(state[k], v) for k, v in backbone.state_dict().items())
    proba = heads.predict_proba(test.x)
    assert proba.shape == (len(test), 4) and proba.dtype == torch.float32
    assert torch.allclose(proba.sum(-1), torch.ones(len(test)))
    acc = float((heads.predict(test.x) == test.y).float().mean())
    assert acc > 0.6, acc  # 4 separable classes: far above chance (0.25)


def test_same_seed_same_bits(data: tuple) -> None:
    train, _ = data
    a = ShardedHeads(**PARAMS).fit(Backbone(), train)
    b = ShardedHeads(**PARAMS).fit(Backbone(), train)
    assert _same(a.head_states(), b.head_states())
    c = ShardedHeads(**{**PARAMS, "seed": 1}).fit(Backbone(), train)
    assert not _same(a.head_states(), c.head_states())


def test_bad_input_is_one_line(data: tuple) -> None:
    train, _ = data
    for bad in (
        {"n_shards": 0},
        {"n_slices": True},
        {"hidden": -1},
        {"lr": 0.0},
        {"head_factory": 3},
        {"head_factory": _adapter, "hidden": 4},
    ):
        with pytest.raises(ObliviateError) as exc:
            ShardedHeads(**{**PARAMS, **bad})
        assert "\n" not in str(exc.value)
    with pytest.raises(ObliviateError, match="not fitted"):
        ShardedHeads(**PARAMS).forget([1])
    heads = ShardedHeads(**PARAMS).fit(Backbone(), train)
    n = heads.samples_.shape[0]
    with pytest.raises(ObliviateError, match="999999"):
        heads.forget([999999])
    assert heads.samples_.shape[0] == n  # a refused request changes nothing
    heads.forget(train.ids[:1])
    with pytest.raises(ObliviateError, match="not live"):
        heads.forget(train.ids[:1])  # already deleted
    with pytest.raises(ObliviateError, match="remaining"):
        heads.forget(train.ids[1:])
    with pytest.raises(ObliviateError, match=r"\[N, D\]"):
        ShardedHeads(**PARAMS).fit(nn.Unflatten(1, (4, 4)), train)
    with pytest.raises(ObliviateError, match="n_shards"):
        ShardedHeads(**{**PARAMS, "n_shards": 500}).fit(Backbone(), train)
    with pytest.raises(ObliviateError, match="nn.Module"):
        ShardedHeads(**PARAMS, head_factory=lambda d, c: "head").fit(Backbone(), train)


def test_heads_on_a_frozen_language_model() -> None:
    """A classifier on top of a tiny GPT-2 (which attribute a question asks about): deleting
    questions equals training the heads without them, bitwise; the LM runs once per row."""
    pytest.importorskip("transformers")
    from obliviate.data.dataset import Dataset
    from obliviate.llm.data import fictitious_qa
    from obliviate.llm.models import PooledEncoder, encode_texts, tiny_gpt2, word_tokenizer

    torch.set_num_threads(1)
    qa = fictitious_qa(n_people=8, n_attributes=3, n_forget=1, n_holdout=1, n_world=0, seed=0)
    items = [it for it in qa.items if it.split != "world"]
    lm = tiny_gpt2(word_tokenizer(qa.texts()), n_layer=2, n_embd=32, n_head=2, seed=0)
    attrs = sorted({it.attribute for it in items})
    train = Dataset(
        x=encode_texts(lm, [it.question for it in items]),
        y=torch.tensor([attrs.index(it.attribute) for it in items]),
        ids=torch.tensor([it.id for it in items]),
        n_classes=len(attrs),
        name="qa-attribute",
    )
    encoder = PooledEncoder(lm)
    calls = []
    encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    params = {**PARAMS, "n_epochs": 30}
    heads = ShardedHeads(**params).fit(encoder, train)
    assert sum(calls) == len(train)
    gone = train.ids[[0, 5]]
    heads.forget(gone)
    assert sum(calls) == len(train)  # deletion reuses the stored features
    fresh = ShardedHeads(**params).fit(PooledEncoder(lm), train.without_ids(gone))
    assert _same(heads.head_states(), fresh.head_states())
    acc = float((heads.predict(train.x) == train.y).float().mean())
    assert acc > 0.9, acc  # the question's wording names the attribute
    assert not any(p.requires_grad for p in lm.model.parameters())


def test_get_params_are_the_constructor_arguments() -> None:
    heads = ShardedHeads(**PARAMS)
    assert heads.get_params() == {
        **PARAMS,
        "graph": "none",
        "hidden": 0,
        "optimizer": "adam",
        "weight_decay": 0.0,
        "head_factory": None,
    }


def test_save_load_then_forget_equals_forget_in_memory(data: tuple, tmp_path) -> None:
    train, test = data
    backbone = Backbone()
    a = ShardedHeads(**PARAMS).fit(backbone, train)
    path = a.save(tmp_path / "heads.pt")
    b = ShardedHeads.load(path, backbone)
    assert _same(a.head_states(), b.head_states())
    assert torch.equal(a.predict_proba(test.x), b.predict_proba(test.x))
    gone = train.ids[[2, 9]]
    a.forget(gone)
    b.forget(gone)
    assert _same(a.head_states(), b.head_states())
    with pytest.raises(ObliviateError, match="backbone"):
        ShardedHeads.load(path, Backbone().requires_grad_(False).apply(_shift))
    with pytest.raises(ObliviateError, match="head_factory"):
        ShardedHeads.load(path, backbone, head_factory=_adapter)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ObliviateError, match="junk"):
        ShardedHeads.load(tmp_path / "junk.pt", backbone)


def _shift(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        with torch.no_grad():
            m.bias.add_(1.0)
