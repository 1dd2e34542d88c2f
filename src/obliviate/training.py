"""Shared training primitives: the recipe, batching, plain supervised ``fit``, prediction.

Everything that trains (the continual loop, the retrain oracle, the sharded engine) batches and
optimises through these functions, so the same recipe and seed give the same bits everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from obliviate._rng import derive_seed, generator
from obliviate._validation import OPTIMIZERS, check_choice, check_number
from obliviate.data.dataset import Dataset
from obliviate.data.streams import ONLINE_BATCH_SIZE
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, build_model
from obliviate.models.base import Model, logits, seeded_init


@dataclass(frozen=True, eq=False)
class Batch:
    """One minibatch: features, labels, sample ids, task ids (or None) and the experience index."""

    x: Tensor
    y: Tensor
    ids: Tensor
    task: Tensor | None
    experience: int


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe. ``seed`` drives data order (model init has its own seed)."""

    n_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("n_epochs", self.n_epochs, low=0, integer=True)
        check_number("batch_size", self.batch_size, low=1, integer=True)
        check_number("lr", self.lr, low=0, low_open=True)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_number("momentum", self.momentum, low=0, high=1, high_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("seed", self.seed, integer=True)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def online_config(config: TrainConfig) -> TrainConfig:
    """The online protocol's training recipe: ``config`` with one epoch (a single pass) and, if
    it uses more, at most :data:`~obliviate.data.streams.ONLINE_BATCH_SIZE` samples per batch.

    A :class:`~obliviate.data.scenarios.Stream` cannot set the loop's epochs; whoever runs an
    online stream (the CLI, experiments, benchmarks) passes its recipe through this function.
    """
    return replace(config, n_epochs=1, batch_size=min(config.batch_size, ONLINE_BATCH_SIZE))


@dataclass(frozen=True)
class Recipe:
    """How a model is made and trained: architecture spec plus optimisation recipe.

    The original model, the retrain oracle and every shard of the sharded engine are trained by
    a recipe, so "same recipe and seed" has one meaning everywhere.
    """

    model: ModelSpec = ModelSpec()
    train: TrainConfig = TrainConfig()

    def build(self, sample_shape: tuple[int, ...], n_classes: int) -> Model:
        """A freshly initialised model (init drawn from ``model.seed``)."""
        return build_model(self.model, sample_shape, n_classes)

    def fit(self, data: Dataset, n_classes: int | None = None, *, key: object = "fit") -> Model:
        """A new model trained from scratch on ``data``."""
        model = self.build(data.sample_shape, data.n_classes if n_classes is None else n_classes)
        fit(model, data, self.train, key=key)
        return model


@dataclass(frozen=True)
class FactoryRecipe:
    """How a *user's* model is made and trained: a zero-argument ``factory`` returning a fresh
    ``nn.Module`` (any classifier whose ``forward`` takes ``x``; built inside
    :func:`~obliviate.models.base.seeded_init` with ``seed``, so every call gives the same
    initial weights), plus the optimisation recipe ``train``.

    It has :class:`Recipe`'s ``build`` and ``fit``, so the retrain oracle and
    :class:`~obliviate.unlearning.retrain.Retrain` rebuild a user model exactly as they rebuild a
    built-in one. It is a separate type, not a ``Recipe`` field, so that ``asdict`` of a
    ``Recipe`` (store config hashes, model cache keys) stays bitwise what it was, and a factory
    recipe reaching code that keys a cache on ``recipe.model`` fails (it has no ``model``)
    instead of silently sharing the key of a built-in architecture; :meth:`to_dict` names the
    factory by its qualified name for provenance.

    Raises :class:`ObliviateError` when ``factory`` is not callable or does not return an
    ``nn.Module``.
    """

    factory: Callable[[], nn.Module]
    train: TrainConfig = TrainConfig()
    seed: int = 0
    loss_fn: Callable[[nn.Module, Batch], Tensor] | None = None
    """The training loss ``loss_fn(model, batch) -> scalar``; ``None``: :func:`cross_entropy`."""

    def __post_init__(self) -> None:
        if not callable(self.factory):
            raise ObliviateError(
                f"factory must be a zero-argument callable returning a fresh nn.Module, got "
                f"{type(self.factory).__name__}; pass e.g. `lambda: MyNet()`"
            )
        check_number("seed", self.seed, integer=True)

    @property
    def factory_name(self) -> str:
        f = self.factory
        return f"{getattr(f, '__module__', '?')}.{getattr(f, '__qualname__', repr(f))}"

    def to_dict(self) -> dict[str, object]:
        loss = None if self.loss_fn is None else getattr(self.loss_fn, "__qualname__", "?")
        return {
            "factory": self.factory_name,
            "seed": self.seed,
            "train": self.train.to_dict(),
            "loss": loss,
        }

    def build(self, sample_shape: tuple[int, ...] = (), n_classes: int = 0) -> nn.Module:
        """A fresh model from ``factory()``, its init drawn from ``seed`` only (the shape
        arguments are accepted for :class:`Recipe` compatibility and unused)."""
        with seeded_init(self.seed):
            model = self.factory()
        if not isinstance(model, nn.Module):
            raise ObliviateError(
                f"factory {self.factory_name} returned {type(model).__name__}, not an nn.Module; "
                "it must build and return a fresh model"
            )
        return model

    def fit(self, data: Dataset, n_classes: int | None = None, *, key: object = "fit") -> nn.Module:
        """A new model from :meth:`build` trained from scratch on ``data`` by ``train``.

        A user model may draw from torch's global RNG while training (``nn.Dropout`` masks);
        the training runs with that RNG forked and seeded from ``(train.seed, key)``, so the
        same recipe and data give the same bits with Dropout too (the caller's RNG state is
        left as it was)."""
        model = self.build(data.sample_shape, data.n_classes if n_classes is None else n_classes)
        with seeded_init(derive_seed(self.train.seed, key, "global-rng")):
            fit(model, data, self.train, loss_fn=self.loss_fn, key=key)
        return model


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """A fresh optimiser over ``params`` as the recipe says."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def batches(
    data: Dataset,
    batch_size: int,
    gen: torch.Generator | None,
    experience: int = 0,
    *,
    min_rows: int = 1,
) -> Iterator[Batch]:
    """Minibatches of ``data`` in a random order drawn from ``gen`` (in order when ``gen`` is None).

    Batches hold ``batch_size`` rows, the last one the rest; a last batch shorter than
    ``min_rows`` joins the one before it (so with ``min_rows=2``, see :func:`min_batch_rows`,
    no batch holds a single row unless ``data`` does). The order of rows is the same either way.
    """
    n = len(data)
    order = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < min_rows:
        starts.pop()
    for j, start in enumerate(starts):
        stop = starts[j + 1] if j + 1 < len(starts) else n
        idx = order[start:stop]
        task = None if data.task is None else data.task[idx]
        yield Batch(data.x[idx], data.y[idx], data.ids[idx], task, experience)


LossFn = Callable[[nn.Module, Batch], Tensor]


class Diverged(ObliviateError):
    """A method (an unlearner, a continual strategy) drove the weights to NaN or inf."""


#: Hyperparameters named in a divergence message as the ones to lower, when a method has them.
STEP_PARAMS = ("lr", "n_epochs", "alpha", "reg_strength", "temperature", "n_steps", "noise_scale")


def check_finite(method: Any, model: nn.Module) -> None:
    """Raise :class:`Diverged` when a parameter or floating buffer of ``model`` is NaN or inf,
    naming ``method`` (an unlearner or a strategy: anything with ``get_params()``) and its
    step-size hyperparameters to change. Called by ``Unlearner.unlearn`` on every result and by
    the continual loop after every experience."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    if all(bool(torch.isfinite(t).all()) for t in tensors):
        return
    params = method.get_params()
    knobs = ", ".join(f"{k}={params[k]!r}" for k in STEP_PARAMS if k in params)
    raise Diverged(
        f"{type(method).__name__} diverged: the weights became NaN or inf"
        + (f" with {knobs}" if knobs else "")
        + "; lower the learning rate (lr) or the number of steps and run again"
    )


@contextmanager
def global_rng_from(seed: int, *keys: object) -> Iterator[None]:
    """Inside, torch's global CPU generator is seeded from ``(seed, *keys)``; on exit it is
    restored, so the caller's random stream is untouched. Dropout (and anything else of a
    user's model that draws from the global generator) then gives the same masks, and bits, for
    the same seed. Every trainer runs under it: the loop (per experience), ``fit``,
    ``run_steps``/``run_paired_steps`` and the unlearners. Models that draw nothing from the
    global generator (every built-in one) are unaffected."""
    g = generator(seed, "global-rng", *keys)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
        yield


def min_batch_rows(model: nn.Module) -> int:
    """The fewest rows a training batch of ``model`` may hold: 2 when a BatchNorm layer is in
    training mode (it normalises over the batch, and one row has no variance: PyTorch raises
    "Expected more than 1 value per channel"), else 1. Passed as ``batches(min_rows=...)`` by
    every trainer, so whether a run works never depends on ``len(data) % batch_size``; for
    models without BatchNorm (every built-in one) the batches are unchanged."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            return 2
    return 1


def cross_entropy(model: nn.Module, batch: Batch) -> Tensor:
    """Mean cross-entropy of ``model`` on ``batch`` (its task head when ``batch.task`` is set):
    the plain training loss, a scalar tensor. The one implementation; continual strategies and
    unlearners import it from here."""
    return nn.functional.cross_entropy(logits(model, batch.x, batch.task), batch.y)


def fit(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    loss_fn: LossFn | None = None,
    key: object = "fit",
) -> nn.Module:
    """Train ``model`` in place on ``data`` for ``config.n_epochs`` epochs and return it.

    The data order comes from ``generator(config.seed, key)``: the same model, data (same rows in
    the same order), recipe and key give bitwise the same weights.
    """
    loss_fn = loss_fn or cross_entropy
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, config)
    gen = generator(config.seed, key)
    model.train()
    min_rows = min_batch_rows(model)
    with global_rng_from(config.seed, key):  # dropout masks from the seed too
        for _ in range(config.n_epochs):
            for batch in batches(data, config.batch_size, gen, min_rows=min_rows):
                opt.zero_grad(set_to_none=True)
                loss_fn(model, batch).backward()
                opt.step()
    model.eval()
    return model


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; afterwards every submodule gets back its *own*
    mode. ``model.train(was_training)`` would instead put every submodule in the top module's
    mode, e.g. turn a BatchNorm the user froze (``bn.eval()``) back to training, so its running
    statistics drift. Use this wherever a helper switches modes."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


@torch.no_grad()
def predict_logits(model: nn.Module, data: Dataset, batch_size: int = 4096) -> Tensor:
    """Logits ``[N, n_classes]`` in eval mode; every submodule's own mode is restored."""
    with eval_mode(model):
        outs = []
        for start in range(0, len(data), batch_size):
            task = None if data.task is None else data.task[start : start + batch_size]
            outs.append(logits(model, data.x[start : start + batch_size], task))
        if not outs:  # an empty set still has the model's output shape [0, n_classes]
            task = None if data.task is None else data.task[:0]
            outs.append(logits(model, data.x[:0], task))
        return torch.cat(outs)


def accuracy(model: nn.Module, data: Dataset) -> float:
    """Fraction of ``data`` the model classifies correctly (NaN for an empty set)."""
    if len(data) == 0:
        return float("nan")
    return float((predict_logits(model, data).argmax(dim=1) == data.y).float().mean())
