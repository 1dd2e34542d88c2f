"""obliviate.api: the user's own model (forward(x) only, BatchNorm, Dropout) and own ids."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import obliviate.api as ob
from obliviate.data.datasets import synthetic_arrays
from obliviate.errors import ObliviateError
from obliviate.training import FactoryRecipe, Recipe, TrainConfig


class UserNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 4)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = synthetic_arrays(n_classes=4, n_per_class=40, n_features=8, seed=0)
    return x, y, 1000 + 10 * np.arange(len(y))


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_dataset_keeps_user_ids(arrays) -> None:
    x, y, ids = arrays
    train, test = ob.dataset(x, y, ids=ids, test_fraction=0.25)
    assert len(train) + len(test) == len(y)
    got = np.sort(np.concatenate([train.ids.numpy(), test.ids.numpy()]))
    assert np.array_equal(got, ids)
    # each row keeps its label under its id
    pos = {int(i): k for k, i in enumerate(ids)}
    assert all(int(y[pos[int(i)]]) == int(c) for i, c in zip(test.ids, test.y, strict=True))


def test_dataset_assigns_ids_and_test_ids_after_them(arrays) -> None:
    x, y, _ = arrays
    train, test = ob.dataset(x[:100], y[:100], x_test=x[100:], y_test=y[100:])
    assert train.ids.tolist() == list(range(100))
    assert test.ids.tolist() == list(range(100, len(y)))


def test_dataset_refuses_clashing_ids(arrays) -> None:
    x, y, ids = arrays
    with pytest.raises(ObliviateError, match="training row and a test row"):
        ob.dataset(x[:100], y[:100], ids[:100], x_test=x[100:], y_test=y[100:], ids_test=ids[:60])


def test_dataset_constant_feature_keeps_scale_one() -> None:
    x = np.stack([np.arange(8.0), np.zeros(8)], axis=1)
    y = np.array([0, 1] * 4)
    _, test = ob.dataset(x, y, x_test=np.array([[3.0, 1.0]]), y_test=np.array([0]))
    assert float(test.x[0, 1]) == pytest.approx(1.0)


def test_learn_on_user_model(arrays) -> None:
    x, y, ids = arrays
    train, test = ob.dataset(x, y, ids)
    stream = ob.stream(train, test, "class-incremental", n_experiences=2, seed=0)
    out = ob.learn(
        ob.build(UserNet, seed=0), stream, "ewc", {"reg_strength": 10.0}, n_epochs=1, seed=0
    )
    assert np.asarray(out["accuracy_matrix"]).shape == (2, 2)
    assert 0.0 <= out["acc"] <= 1.0 and out["strategy"] == "EWC"
    again = ob.learn(
        ob.build(UserNet, seed=0), stream, "ewc", {"reg_strength": 10.0}, n_epochs=1, seed=0
    )
    assert again["accuracy_matrix"] == out["accuracy_matrix"]


def test_forget_user_ids_against_oracle(arrays) -> None:
    x, y, ids = arrays
    train, test = ob.dataset(x, y, ids)
    recipe = ob.recipe(UserNet, n_epochs=2, lr=0.05, seed=0)
    model = recipe.fit(train)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    named = train.ids[:5].tolist()
    unlearned, report = ob.forget(model, train, named, "ssd", test=test, recipe=recipe)
    assert report["forget_ids"] == sorted(named) and report["n_forget"] == 5
    assert report["n_retain"] == len(train) - 5
    for key in ("original", "oracle", "unlearned", "gaps", "js_to_oracle", "relearn_steps"):
        assert key in report
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    assert unlearned is not model


def test_retrain_with_user_factory_is_the_oracle(arrays) -> None:
    x, y, ids = arrays
    train, test = ob.dataset(x, y, ids)
    recipe = ob.recipe(UserNet, n_epochs=1, lr=0.05, seed=3)
    model = recipe.fit(train)
    named = train.ids[10:14]
    retrained, report = ob.forget(model, train, named, "retrain", test=test, recipe=recipe)
    oracle = recipe.fit(train.without_ids(named))
    assert states_equal(retrained, oracle)  # same factory, seed and recipe -> same bits
    assert report["gaps"]["forget_acc"] == 0.0


def test_forget_refuses_bad_requests(arrays) -> None:
    x, y, ids = arrays
    train, test = ob.dataset(x, y, ids)
    recipe = ob.recipe(UserNet, n_epochs=1)
    model = recipe.fit(train)
    with pytest.raises(ObliviateError):  # a test id was never trained on
        ob.forget(model, train, test.ids[:1], "ssd", test=test, recipe=recipe)
    with pytest.raises(ObliviateError):  # a row position is not an id
        ob.forget(model, train, [1], "ssd", test=test, recipe=recipe)
    with pytest.raises(ObliviateError, match="evaluate=True needs recipe"):
        ob.forget(model, train, train.ids[:1], "ssd", test=test)
    _, report = ob.forget(model, train, train.ids[:1], "ssd", evaluate=False)
    assert "oracle" not in report and report["n_forget"] == 1


def test_factory_recipe_contract() -> None:
    with pytest.raises(ObliviateError, match="callable"):
        FactoryRecipe(factory=3)  # type: ignore[arg-type]
    with pytest.raises(ObliviateError, match="not an nn.Module"):
        FactoryRecipe(factory=lambda: 3).build()  # type: ignore[arg-type,return-value]
    r = FactoryRecipe(factory=UserNet, train=TrainConfig(), seed=1)
    assert r.to_dict()["factory"].endswith("UserNet")
    assert states_equal(r.build(), r.build())
    assert not hasattr(r, "model")  # cache keys built from recipe.model fail loudly
    # a built-in Recipe is unchanged (its asdict feeds store config hashes and cache keys)
    assert set(asdict(Recipe())) == {"model", "train"}


def test_stream_from_users_own_split(arrays) -> None:
    x, y, ids = arrays
    train, test = ob.dataset(x, y, ids)
    first, second = train.ids[train.y < 2], train.ids[train.y >= 2]
    stream = ob.stream(train, test, experiences=[(first, test.ids), (second, test.ids)])
    assert len(stream) == 2 and stream[0].classes == (0, 1) and stream[1].classes == (2, 3)
    assert torch.equal(stream[1].train.ids, second)
    out = ob.learn(ob.build(UserNet, seed=0), stream, "naive", n_epochs=1)
    assert np.asarray(out["accuracy_matrix"]).shape == (2, 2)
    with pytest.raises(ObliviateError, match="earlier one"):
        ob.stream(train, test, experiences=[(first, test.ids), (first[:3], test.ids)])
    with pytest.raises(ObliviateError):  # a test id is not a training row
        ob.stream(train, test, experiences=[(test.ids[:3], test.ids)])


def test_arrays_from_torch_dataset_and_loader(arrays) -> None:
    x, y, ids = arrays
    tds = TensorDataset(torch.as_tensor(x), torch.as_tensor(y), torch.as_tensor(ids))
    for source in (tds, DataLoader(tds, batch_size=7, shuffle=False)):
        xa, ya, ia = ob.arrays(source)
        assert np.array_equal(xa, x.astype(np.float32)) and np.array_equal(ya, y)
        assert ia is not None and np.array_equal(ia, ids)
    xa, ya, ia = ob.arrays(TensorDataset(torch.as_tensor(x), torch.as_tensor(y)))
    assert ia is None and xa.shape == x.shape
    train, _ = ob.dataset(*ob.arrays(tds))
    assert set(train.ids.tolist()) <= set(ids.tolist())
    with pytest.raises(ObliviateError, match=r"\(x, y\)"):
        ob.arrays([torch.zeros(3)])


def test_recipe_loss_is_replaceable(arrays) -> None:
    x, y, ids = arrays
    train, _ = ob.dataset(x, y, ids)
    calls = []

    def smoothed(model: nn.Module, batch) -> torch.Tensor:
        calls.append(len(batch.ids))
        return nn.functional.cross_entropy(model(batch.x), batch.y, label_smoothing=0.1)

    plain = ob.recipe(UserNet, n_epochs=1, seed=0).fit(train)
    custom = ob.recipe(UserNet, n_epochs=1, seed=0, loss_fn=smoothed).fit(train)
    assert sum(calls) == len(train)  # every row went through the user's loss, once
    assert not states_equal(plain, custom)
    assert ob.recipe(UserNet, loss_fn=smoothed).to_dict()["loss"].endswith("smoothed")


class _Wrapped(nn.Module):
    """UserNet with a different head: ``how`` = softmax, dict, narrow, shape."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.body = nn.Linear(8 if how != "shape" else 9, 4 if how != "narrow" else 2)

    def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
        out = self.body(x)
        if self.how == "softmax":
            return out.softmax(dim=1)
        if self.how == "dict":
            return {"logits": out}
        return out


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("softmax", "probabilities"),
        ("dict", "returns dict, not a tensor"),
        ("narrow", "2 outputs but the data has 4 classes"),
        ("shape", "fails on rows of the data"),
    ],
)
def test_a_model_that_cannot_classify_the_rows_is_a_one_line_error(arrays, how, message):
    """A softmax in forward trained silently on probabilities (learn acc 0.117), a dict output
    or a wrong input width ended in raw torch errors; the API checks one batch first."""
    x, y, ids = arrays
    train, test = ob.dataset(x, y, ids)
    stream = ob.stream(train, test, "class-incremental", n_experiences=2, seed=0)
    model = _Wrapped(how)
    with pytest.raises(ObliviateError, match=message):
        ob.learn(model, stream, "naive", n_epochs=1)
    with pytest.raises(ObliviateError, match=message):
        ob.forget(model, train, train.ids[:3], "finetune", evaluate=False)


def test_unknown_hyperparameters_and_a_non_stream_are_one_line_errors(arrays):
    x, y, ids = arrays
    train, test = ob.dataset(x, y, ids)
    stream = ob.stream(train, test, "class-incremental", n_experiences=2, seed=0)
    with pytest.raises(ObliviateError, match="ewc has no hyperparameter 'lambda'.*reg_strength"):
        ob.learn(ob.build(UserNet), stream, "ewc", {"lambda": 1.0}, n_epochs=1)
    with pytest.raises(ObliviateError, match="ssd has no hyperparameter 'alpha'"):
        ob.forget(ob.build(UserNet), train, train.ids[:3], "ssd", {"alpha": 1.0}, evaluate=False)
    with pytest.raises(ObliviateError, match="must be an obliviate Stream"):
        ob.learn(ob.build(UserNet), [1, 2], "ewc")  # type: ignore[arg-type]


def test_loss_fn_misuse_and_learn_keeps_the_models_modes(arrays):
    """Found by a tester: a loss with the wrong signature or a per-sample loss ended in raw torch
    errors; learn returned an eval-mode model in training mode; ids as a set or None."""
    import torch.nn.functional as F

    x, y, ids = arrays
    train, test = ob.dataset(x, y, ids)
    bad = ob.recipe(UserNet, loss_fn=lambda out, y: F.cross_entropy(out, y), n_epochs=1)
    with pytest.raises(ObliviateError, match=r"called as loss_fn\(model, batch\)"):
        bad.fit(train)
    per_sample = ob.recipe(
        UserNet, n_epochs=1,
        loss_fn=lambda m, b: F.cross_entropy(m(b.x), b.y, reduction="none"),
    )  # fmt: skip
    with pytest.raises(ObliviateError, match="scalar tensor"):
        per_sample.fit(train)
    model = ob.build(UserNet).eval()
    stream = ob.stream(train, test, "class-incremental", n_experiences=2, seed=0)
    ob.learn(model, stream, "naive", n_epochs=1)
    assert not any(m.training for m in model.modules())
    fitted = ob.recipe(UserNet, n_epochs=1).fit(train)
    _, report = ob.forget(fitted, train, set(train.ids[:3].tolist()), "finetune", evaluate=False)
    assert report["forget_ids"] == sorted(train.ids[:3].tolist())
    with pytest.raises(ObliviateError, match="ids is None"):
        ob.forget(fitted, train, None, "finetune", evaluate=False)  # type: ignore[arg-type]
