"""Device placement: every strategy, every unlearner and the sharded engine create no tensor on
the *default* device by accident.

How (and why not fake tensors): model and data live on the CPU while the default device is
``meta`` (``with torch.device("meta")``), and :class:`DefaultDeviceGuard` — a
``TorchFunctionMode`` inside it — fails on the first torch call that returns or receives a
``meta`` tensor. A factory call without ``device=`` (``torch.zeros(n)``) lands on the default
device, so it fails on the spot, naming the call; every tensor made from the model's or the
data's tensors (``device=x.device``, ``zeros_like``, slicing, ``.new_*``) is a real CPU tensor, so
everything computes for real: accuracies, ``.item()``, reservoir draws, herding, L-BFGS, the
data-dependent control flow of every method. PyTorch's fake-tensor mode (``FakeTensorMode``,
tensors on ``cuda`` without a GPU) cannot run these methods: their data-dependent steps
(``.item()``, ``int(t)``, ``nonzero``, ``tolist`` on stored labels, numpy/sklearn metrics) raise
``DataDependentOutputException``, so it could cover the training step and little else. The meta
default alone is not enough either: indexing a CPU tensor with a ``meta`` index silently returns
uninitialised memory, hence the guard on inputs and outputs.

What it cannot see: a tensor made on the CPU on purpose (``device="cpu"``) and combined with
the model's tensors on a real accelerator; those draws come from CPU generators (the same bits on
every device) and are moved with ``.to(device)`` where they meet the model's tensors;
``benchmarks/device_check.py --device cuda`` runs everything on a GPU when one is lent.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from functools import lru_cache

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from obliviate.continual import STRATEGIES, strategy_class
from obliviate.continual.loop import train_stream
from obliviate.data.datasets import synthetic_dataset
from obliviate.models import ModelSpec
from obliviate.testing.strategies import tiny_setup
from obliviate.training import Recipe, TrainConfig
from obliviate.unlearning import UNLEARNERS, unlearner_class
from obliviate.unlearning.base import ForgetRequest


class DefaultDeviceGuard(TorchFunctionMode):
    """Fail on the first torch call that receives or returns a tensor on ``meta`` (the default
    device of the test), naming the call."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor) and t.device.type == "meta":
                raise AssertionError(f"{_name(func)} got a tensor made on the default device")
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == "meta":
                raise AssertionError(
                    f"{_name(func)} made a tensor on the default device; pass device= "
                    "(the model's or the data's) or use *_like / .new_*"
                )
        return out


def _name(func: object) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))


class on_other_default_device:
    """Inside: the default device is ``meta`` and :class:`DefaultDeviceGuard` is active."""

    def __enter__(self) -> None:
        self._dev = torch.device("meta")
        self._dev.__enter__()
        self._guard = DefaultDeviceGuard()
        self._guard.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._guard.__exit__(*exc)
        self._dev.__exit__(*exc)


def test_guard_catches_a_tensor_on_the_default_device():
    x = torch.ones(3)  # the model's device here: the CPU
    with on_other_default_device():
        assert (x + torch.zeros_like(x)).device.type == "cpu"
        with pytest.raises(AssertionError, match="default device"):
            torch.zeros(3)
        with pytest.raises(AssertionError, match="default device"):
            x[torch.tensor([0])]  # an index on the default device, not only arithmetic


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_creates_nothing_on_the_default_device(name):
    cls = strategy_class(name)
    setup = tiny_setup(cls)
    config = dataclasses.replace(setup.config, n_epochs=1)
    model = setup.model()
    # a small memory fills within the first experience: the replacement paths run too
    params = {"memory_size": 16} if cls.keeps_memory else {}
    with on_other_default_device():
        result = train_stream(model, setup.stream, cls(**params), config)
    assert result.accuracy_matrix.shape == (len(setup.stream), len(setup.stream))


@lru_cache(maxsize=1)
def _unlearning_setup() -> tuple[torch.nn.Module, ForgetRequest]:
    train, _ = synthetic_dataset(n_classes=4, n_per_class=30, n_features=8, seed=0)
    recipe = Recipe(
        ModelSpec("mlp", (16,), seed=0), TrainConfig(n_epochs=2, batch_size=16, lr=0.05)
    )
    model = recipe.fit(train)
    return model, ForgetRequest.from_ids(train, train.ids[:10], recipe)


@pytest.mark.parametrize("name", sorted(UNLEARNERS))
def test_unlearner_creates_nothing_on_the_default_device(name):
    # libraries a method imports lazily make tensors at import time (peft, transformers): not
    # the method's doing, so they are imported before the guard
    for lib in ("peft",):
        with contextlib.suppress(ImportError):
            importlib.import_module(lib)
    model, request = _unlearning_setup()
    unlearner = unlearner_class(name)()
    with on_other_default_device():
        out = unlearner.unlearn(model, request)
    assert all(p.device.type == "cpu" for p in out.parameters())


def test_sharded_train_and_forget_create_nothing_on_the_default_device(tmp_path):
    from obliviate.sharded import DataSpec, ShardConfig, ShardedStore

    recipe = Recipe(ModelSpec("mlp", (16,), seed=0), TrainConfig(n_epochs=1, lr=0.05))
    config = ShardConfig(n_shards=2, n_slices=2, recipe=recipe, seed=0)
    data = DataSpec(dataset="digits", limit=200)
    with on_other_default_device():
        store = ShardedStore.train(tmp_path / "s", data=data, config=config, backend="inline")
        ids = store.ledger.samples(("active",))[:5, 0]
        receipt = store.forget([int(i) for i in ids])
        store.close()
    assert receipt["n_removed"] == 5
