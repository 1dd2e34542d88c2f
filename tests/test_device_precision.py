"""Device and precision: validation, fp32 bits unchanged, bf16/fp16 on the CPU, the precision in
the bits context, device-independent state. (Placement of every method:
tests/test_device_placement.py; every method on a device against CPU fp32:
tests/test_device_check.py.)"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from obliviate.cli.main import main
from obliviate.continual import make_strategy
from obliviate.continual.loop import train_stream
from obliviate.data.datasets import synthetic_dataset
from obliviate.data.scenarios import build_scenario
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, model_for_stream
from obliviate.provenance import bits_context, provenance
from obliviate.training import (
    Recipe,
    Stepper,
    TrainConfig,
    accuracy,
    check_device,
    check_precision,
    current_precision,
    precision,
)

RECIPE = Recipe(ModelSpec("mlp", (16,), seed=0), TrainConfig(n_epochs=3, batch_size=16, lr=0.1))


def _data():
    return synthetic_dataset(n_classes=4, n_per_class=40, n_features=8, seed=0)


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(x, y) for x, y in zip(sa.values(), sb.values(), strict=True))


@pytest.mark.parametrize(
    ("device", "match"),
    [
        ("cuda:1", "cuda:1': this machine has no CUDA device; use device='cpu'"),
        ("tpu", "give cpu, cuda, cuda:N or mps"),
        ("gpu0", "give cpu, cuda, cuda:N or mps"),
    ],
)
def test_an_unusable_device_is_a_one_line_error(device, match):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ObliviateError, match=match):
        check_device(device)


def test_cpu_devices_are_accepted():
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(torch.device("cpu")) == torch.device("cpu")


def test_an_unknown_precision_is_refused():
    with pytest.raises(ObliviateError, match="fp32, bf16, fp16"):
        check_precision("fp8")
    with pytest.raises(ObliviateError):
        with precision("half"):
            pass


@pytest.mark.parametrize(
    "args",
    [
        ["learn", "--dataset", "digits", "--device", "cuda:1"],
        ["forget", "--dataset", "digits", "--precision", "fp8"],
        ["events", "--device", "npu"],
    ],
)
def test_cli_refuses_a_bad_device_or_precision_before_work(capsys, args):
    if torch.cuda.is_available() and "cuda:1" in args and torch.cuda.device_count() > 1:
        pytest.skip("this machine has cuda:1")
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_fp32_precision_block_changes_no_bit():
    train, _ = _data()
    plain = RECIPE.fit(train)
    with precision("fp32"):
        again = RECIPE.fit(train)
    assert _same(plain, again)
    assert current_precision() == "fp32"


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_mixed_precision_trains_on_the_cpu(name):
    train, test = _data()
    ref = RECIPE.fit(train)
    with precision(name):
        assert current_precision() == name
        model = RECIPE.fit(train)
    assert current_precision() == "fp32"
    assert not _same(ref, model)  # autocast did act
    assert all(
        p.dtype == torch.float32 and bool(torch.isfinite(p).all()) for p in model.parameters()
    )
    assert abs(accuracy(model, test) - accuracy(ref, test)) <= 0.1


def test_fp16_scaler_hands_true_gradients_to_gradient_editors():
    torch.manual_seed(0)
    lin = nn.Linear(8, 3)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))
    ref = copy.deepcopy(lin)
    with torch.autocast("cpu", dtype=torch.float16):
        nn.functional.cross_entropy(ref(x), y).backward()
    with precision("fp16"):
        stepper = Stepper(torch.optim.SGD(lin.parameters(), lr=0.1), torch.device("cpu"))
    assert stepper.scaler is not None
    with stepper.autocast():
        loss = nn.functional.cross_entropy(lin(x), y)
    stepper.backward(loss)  # scaled backward, then unscaled: what adjust_gradients sees
    for p, q in zip(lin.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-2, atol=1e-3)
    before = [p.detach().clone() for p in lin.parameters()]
    stepper.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, lin.parameters(), strict=True))


def test_the_loop_runs_a_strategy_in_bf16_and_keeps_state_on_the_cpu():
    train, test = _data()
    stream = build_scenario("class-incremental", train, test, n_experiences=2)
    model = model_for_stream(ModelSpec("mlp", (16,), seed=0), stream)
    with precision("bf16"):
        res = train_stream(model, stream, make_strategy("ewc"), RECIPE.train)
    assert res.accuracy_matrix.shape == (2, 2)
    assert all(t.device.type == "cpu" for t in res.state.model_state.values())


def test_precision_and_device_are_in_the_bits_context_and_provenance():
    assert bits_context()["precision"] == "fp32" and bits_context()["device"] == "cpu"
    assert bits_context(precision="bf16") != bits_context()
    rec = provenance(seed=0, device="cpu", precision="fp16")
    assert rec["bits_context"]["precision"] == "fp16"


def test_forget_cache_keys_differ_by_precision(tmp_path):
    from obliviate.experiments.forget import trained

    train, _ = _data()
    trained(RECIPE, train, train.n_classes, str(tmp_path), "original")
    trained(RECIPE, train, train.n_classes, str(tmp_path), "original", precision="bf16")
    entries = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(entries) == 2, entries


def test_a_sharded_store_keeps_the_precision_it_was_trained_at(tmp_path):
    from obliviate.sharded import DataSpec, ShardConfig, ShardedStore

    config = ShardConfig(n_shards=2, n_slices=1, recipe=RECIPE, seed=0)
    data = DataSpec(dataset="digits", limit=120)
    with ShardedStore.train(
        tmp_path / "s", data=data, config=config, backend="inline", precision="bf16"
    ) as store:
        assert store.precision == "bf16"
    with ShardedStore(tmp_path / "s", backend="inline") as again:
        assert again.precision == "bf16"
    if not torch.cuda.is_available():
        with pytest.raises(ObliviateError, match="use device='cpu'"):
            ShardedStore(tmp_path / "s", device="cuda:3")


class _DeviceTensor(torch.Tensor):
    """A tensor that, like one on a CUDA device, cannot be turned into a numpy array until it
    is copied to the CPU."""

    def numpy(self, *args, **kwargs):  # type: ignore[override]
        raise TypeError("can't convert cuda:0 device type tensor to numpy")

    def cpu(self, *args, **kwargs):  # type: ignore[override]
        return self.as_subclass(torch.Tensor).clone()


def test_sharded_training_copies_device_positions_to_the_cpu(tmp_path, monkeypatch):
    # Found on an H200: with the rows on the GPU, the shard job called .numpy() on the row
    # positions of a CUDA tensor and every SISA training on cuda failed (TypeError).
    from obliviate.data.dataset import Dataset
    from obliviate.sharded import DataSpec, ShardConfig, ShardedStore

    on_device = Dataset.positions

    def positions(self, ids):  # type: ignore[no-untyped-def]
        return on_device(self, ids).as_subclass(_DeviceTensor)

    monkeypatch.setattr(Dataset, "positions", positions)
    config = ShardConfig(
        n_shards=2, n_slices=2, recipe=Recipe(train=TrainConfig(n_epochs=1, lr=0.05)), seed=0
    )
    store = ShardedStore.train(
        tmp_path / "store",
        data=DataSpec(dataset="digits", limit=200),
        config=config,
        backend="inline",
    )
    ids = store.ledger.samples(("active",))[:5, 0]
    store.forget([int(i) for i in ids])
    active = set(store.ledger.samples(("active",))[:, 0].tolist())
    assert active and not active & {int(i) for i in ids}
    store.close()
