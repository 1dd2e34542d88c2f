"""Shared training primitives: the recipe, batching, plain supervised ``fit``, prediction.

Everything that trains (the continual loop, the retrain oracle, the sharded engine) batches and
optimises through these functions, so the same recipe and seed give the same bits everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from obliviate._rng import derive_seed, generator, seed_global
from obliviate._validation import OPTIMIZERS, check_choice, check_number
from obliviate.data.dataset import Dataset
from obliviate.data.streams import ONLINE_BATCH_SIZE
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec, build_model
from obliviate.models.base import Model, logits, seeded_init

if TYPE_CHECKING:
    from obliviate.data.splits import Stream


# ---- device and precision ----------------------------------------------------------------------
#: The training precisions: ``fp32`` (default; plain float32), ``bf16`` (bfloat16 autocast of the
#: forward pass, float32 weights and optimiser), ``fp16`` (float16 autocast plus a dynamic loss
#: scale, :class:`torch.amp.GradScaler`, so small float16 gradients do not flush to zero).
PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}
_PRECISION: ContextVar[str] = ContextVar("obliviate_precision", default="fp32")
DeviceLike = str | torch.device | None


def named(name: str, value: object) -> str:
    """How an error names a value: ``--device tpu`` for a command-line flag (``name`` starting
    with ``--``), ``device='tpu'`` for a Python parameter or spec field."""
    return f"{name} {value!s}" if name.startswith("--") else f"{name}={value!r}"


def check_device(device: str | torch.device, *, name: str = "device") -> torch.device:
    """``device`` (``cpu``, ``cuda``, ``cuda:N``, ``mps`` or a :class:`torch.device`) as a
    :class:`torch.device` that exists on this machine, else a one-line :class:`ObliviateError`
    (a malformed name, CUDA without a CUDA build or with fewer devices, MPS unavailable). The one
    validation of a device for every command, the LLM ones included. ``name``: what the error
    calls the value, the Python parameter or spec field (default, ``device='tpu'``) or the
    command-line flag (``"--device"``: ``--device tpu``)."""
    given = str(device) if isinstance(device, torch.device) else device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ObliviateError(f"{named(name, given)}: give cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and (
        not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()
    ):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ObliviateError(
            f"{named(name, given)}: this machine has "
            + (f"{n} CUDA device(s)" if n else "no CUDA device")
            + f"; use {named(name, 'cpu')}"
            + (f" or cuda:0..cuda:{n - 1}" if n else "")
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ObliviateError(
            f"{named(name, given)}: MPS is not available here; use {named(name, 'cpu')}"
        )
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ObliviateError(f"{named(name, given)}: give cpu, cuda, cuda:N or mps")
    return dev


def check_precision(precision: str, *, name: str = "precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line :class:`ObliviateError`
    naming it as ``name`` (a parameter or spec field, ``precision='fp8'``, or the flag
    ``"--precision"``, ``--precision fp8``)."""
    if precision not in PRECISIONS:
        raise ObliviateError(
            f"{named(name, precision)}: give one of {', '.join(PRECISIONS)} "
            "(fp32: float32; bf16: bfloat16 autocast; fp16: float16 autocast with a grad scaler)"
        )
    return precision


@contextmanager
def precision(name: str) -> Iterator[str]:
    """Every trainer inside the block (``fit``, the continual loop, the unlearners' steps)
    runs its forward pass and loss under ``name``'s autocast (:data:`PRECISIONS`); weights,
    optimiser state, importance estimates and evaluations stay float32. ``fp32`` (the default
    outside any block) changes nothing, bit for bit. Raises :class:`ObliviateError` for an
    unknown name."""
    token = _PRECISION.set(check_precision(name))
    try:
        yield name
    finally:
        _PRECISION.reset(token)


def current_precision() -> str:
    """The precision the trainers use now (``"fp32"`` outside a :func:`precision` block)."""
    return _PRECISION.get()


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (or buffer); CPU for a model with neither.
    Everything obliviate computes for ``model`` (batches, buffers, penalties, stored logits,
    importance estimates) lives there."""
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def data_to(data: Dataset, device: torch.device | str) -> Dataset:
    """``data`` with every tensor on ``device`` (the same object when it is already there).

    Moved once, as a whole, before training: every batch, every strategy hook and every
    unlearner then slices tensors that are already on the device (no per-batch copy). From CPU
    to CUDA the rows go through pinned memory with ``non_blocking=True``."""
    device = torch.device(device)
    if data.x.device == device:
        return data
    pin = device.type == "cuda" and data.x.device.type == "cpu"

    def move(t: Tensor) -> Tensor:
        return (t.pin_memory() if pin else t).to(device, non_blocking=pin)

    task = None if data.task is None else move(data.task)
    return replace(data, x=move(data.x), y=move(data.y), ids=move(data.ids), task=task)


def stream_to(stream: Stream, device: torch.device | str) -> Stream:
    """``stream`` with every experience's train and test set on ``device`` (see :func:`data_to`;
    the same object when already there)."""
    device = torch.device(device)
    if all(e.train.x.device == device and e.test.x.device == device for e in stream.experiences):
        return stream
    exps = tuple(
        replace(e, train=data_to(e.train, device), test=data_to(e.test, device))
        for e in stream.experiences
    )
    return replace(stream, experiences=exps)


def autocast(device: torch.device) -> AbstractContextManager[Any]:
    """The forward-pass context of :func:`current_precision` on ``device``: a no-op for fp32,
    else :class:`torch.autocast` with bfloat16 / float16."""
    name = _PRECISION.get()
    if name == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPE[name])


class Stepper:
    """One trainer's optimisation step under :func:`current_precision`: ``backward(loss)`` then
    ``step()``. fp32 and bf16: ``loss.backward()``, ``opt.step()`` (bitwise the plain loop at
    fp32). fp16: the loss is scaled by a :class:`torch.amp.GradScaler` before ``backward``, and
    the gradients are unscaled right after it, so whatever edits gradients before the step
    (a strategy's ``adjust_gradients``, an unlearner's masks) sees the true gradients; a step
    whose gradients overflowed is skipped and the scale lowered (Micikevicius et al., 2018,
    "Mixed precision training", ICLR)."""

    def __init__(self, opt: torch.optim.Optimizer, device: torch.device) -> None:
        self.opt = opt
        self.device = device
        self.precision = _PRECISION.get()  # fixed for the trainer's life
        self.scaler = torch.amp.GradScaler(device.type) if self.precision == "fp16" else None
        self._plain = nullcontext()  # reusable: an fp32 step builds no context object
        # without a scaler, backward and step are the plain calls themselves (no extra frame
        # per step: bitwise and call for call the hand-written loop)
        self.backward: Callable[[Tensor], None] = (
            Tensor.backward if self.scaler is None else self._scaled_backward
        )
        self.step: Callable[[], object] = opt.step if self.scaler is None else self._scaled_step

    def autocast(self) -> AbstractContextManager[Any]:
        """The forward-pass context of the trainer's precision (a no-op for fp32)."""
        if self.precision == "fp32":
            return self._plain
        return torch.autocast(device_type=self.device.type, dtype=_AUTOCAST_DTYPE[self.precision])

    def _scaled_backward(self, loss: Tensor) -> None:
        assert self.scaler is not None
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)

    def _scaled_step(self) -> None:
        assert self.scaler is not None
        self.scaler.step(self.opt)
        self.scaler.update()


class Batch:
    """One minibatch: features ``x`` (float ``[B, ...]``), labels ``y`` (int64 ``[B]``), sample
    ids ``ids`` (int64 ``[B]``), task ids ``task`` (int64 ``[B]``, or None) and the index of the
    experience it comes from, ``experience``. Read-only (assigning a field raises
    ``AttributeError``); compared by identity.

    A batch cut by :func:`batches` gathers ``ids`` on first access only: most losses never read
    them, and the gather is the one tensor operation per step a hand-written loop does not do
    (``benchmarks/overhead.py``). The values are the same either way.
    """

    __slots__ = ("x", "y", "task", "experience", "_ids", "_all_ids", "_rows")

    x: Tensor
    y: Tensor
    task: Tensor | None
    experience: int
    _ids: Tensor | None
    _all_ids: Tensor | None
    _rows: Tensor | None

    def __init__(
        self, x: Tensor, y: Tensor, ids: Tensor, task: Tensor | None, experience: int
    ) -> None:
        _set = object.__setattr__
        _set(self, "x", x)
        _set(self, "y", y)
        _set(self, "task", task)
        _set(self, "experience", experience)
        _set(self, "_ids", ids)
        _set(self, "_all_ids", None)
        _set(self, "_rows", None)

    @classmethod
    def _cut(
        cls,
        data: Dataset,
        rows: Tensor,
        task: Tensor | None,
        experience: int,
    ) -> Batch:
        """The rows ``rows`` (int64 ``[B]``) of ``data``; ``ids`` gathered when first read."""
        batch = cls.__new__(cls)
        _set = object.__setattr__
        _set(batch, "x", data.x[rows])
        _set(batch, "y", data.y[rows])
        _set(batch, "task", task)
        _set(batch, "experience", experience)
        _set(batch, "_ids", None)
        _set(batch, "_all_ids", data.ids)
        _set(batch, "_rows", rows)
        return batch

    @property
    def ids(self) -> Tensor:
        """Sample ids, int64 ``[B]`` (the user's ids of the batch's rows)."""
        ids = self._ids
        if ids is None:
            ids = self._all_ids[self._rows]  # type: ignore[index]
            object.__setattr__(self, "_ids", ids)
            object.__setattr__(self, "_all_ids", None)
            object.__setattr__(self, "_rows", None)
        return ids

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Batch is read-only: cannot assign {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Batch is read-only: cannot delete {name!r}")

    def __reduce__(self) -> tuple[type[Batch], tuple[object, ...]]:  # copy and pickle
        return (Batch, (self.x, self.y, self.ids, self.task, self.experience))

    def __repr__(self) -> str:
        return (
            f"Batch(n_rows={self.x.shape[0]}, experience={self.experience}, "
            f"task={'None' if self.task is None else 'given'})"
        )


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

    def build(
        self, sample_shape: tuple[int, ...], n_classes: int, *, device: DeviceLike = None
    ) -> Model:
        """A freshly initialised model (init drawn from ``model.seed`` on the CPU, so it is the
        same on every device), moved to ``device`` (default: the CPU)."""
        with torch.device("cpu"):
            model = build_model(self.model, sample_shape, n_classes)
        return model if device is None else model.to(device)

    def fit(
        self,
        data: Dataset,
        n_classes: int | None = None,
        *,
        key: object = "fit",
        device: DeviceLike = None,
    ) -> Model:
        """A new model trained from scratch on ``data``, on ``device`` (default: the CPU)."""
        n = data.n_classes if n_classes is None else n_classes
        model = self.build(data.sample_shape, n, device=device)
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

    def build(
        self, sample_shape: tuple[int, ...] = (), n_classes: int = 0, *, device: DeviceLike = None
    ) -> nn.Module:
        """A fresh model from ``factory()``, its init drawn from ``seed`` only (the shape
        arguments are accepted for :class:`Recipe` compatibility and unused), built on the CPU
        (the same init on every device) and moved to ``device`` (default: left where the
        factory put it)."""
        with seeded_init(self.seed), torch.device("cpu"):
            model = self.factory()
        if not isinstance(model, nn.Module):
            raise ObliviateError(
                f"factory {self.factory_name} returned {type(model).__name__}, not an nn.Module; "
                "it must build and return a fresh model"
            )
        return model if device is None else model.to(device)

    def fit(
        self,
        data: Dataset,
        n_classes: int | None = None,
        *,
        key: object = "fit",
        device: DeviceLike = None,
    ) -> nn.Module:
        """A new model from :meth:`build` trained from scratch on ``data`` by ``train``, on
        ``device`` (default: where the factory puts it).

        A user model may draw from torch's global RNG while training (``nn.Dropout`` masks);
        the training runs with that RNG forked and seeded from ``(train.seed, key)``, so the
        same recipe and data give the same bits with Dropout too (the caller's RNG state is
        left as it was)."""
        n = data.n_classes if n_classes is None else n_classes
        model = self.build(data.sample_shape, n, device=device)
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

    Batches live on ``data``'s device (trainers move ``data`` to the model's device first,
    :func:`data_to`). Batches hold ``batch_size`` rows, the last one the rest; a last batch shorter than
    ``min_rows`` joins the one before it (so with ``min_rows=2``, see :func:`min_batch_rows`,
    no batch holds a single row unless ``data`` does). The order of rows is the same either way.
    """
    n = len(data)
    # the order is drawn on the CPU (the generator's device: the same bits on every device) and
    # moved once to the data's device, where the rows are sliced
    cpu = torch.device("cpu")
    order = (
        torch.randperm(n, generator=gen, device=cpu)
        if gen is not None
        else torch.arange(n, device=cpu)
    ).to(data.x.device)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < min_rows:
        starts.pop()
    for j, start in enumerate(starts):
        stop = starts[j + 1] if j + 1 < len(starts) else n
        idx = order[start:stop]
        task = None if data.task is None else data.task[idx]
        yield Batch._cut(data, idx, task, experience)


LossFn = Callable[[nn.Module, Batch], Tensor]


class Diverged(ObliviateError):
    """A method (an unlearner, a continual strategy) drove the weights to NaN or inf."""


#: Hyperparameters named in a divergence message as the ones to lower, when a method has them.
STEP_PARAMS = ("lr", "n_epochs", "alpha", "reg_strength", "temperature", "n_steps", "noise_scale")


def check_finite(method: Any, model: nn.Module, probe: Dataset | None = None) -> None:
    """Raise :class:`Diverged` when a parameter or floating buffer of ``model`` is NaN or inf,
    or, given ``probe`` rows, when the model's float32 logits on its first 256 rows are (finite
    weights so large that the outputs overflow), naming ``method`` (an unlearner or a strategy:
    anything with ``get_params()``) and its step-size hyperparameters to change. Called by
    ``Unlearner.unlearn`` on every result (probed on the forget rows) and by the continual loop
    after every experience."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    finite = all(bool(torch.isfinite(t).all()) for t in tensors)
    if finite and probe is not None and len(probe) > 0:
        out = predict_logits(model, probe.subset(range(min(len(probe), 256))))
        finite = bool(torch.isfinite(out).all())
    if finite:
        return
    params = method.get_params()
    knobs = ", ".join(f"{k}={params[k]!r}" for k in STEP_PARAMS if k in params)
    raise Diverged(
        f"{type(method).__name__} diverged: the weights or outputs became NaN or inf"
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
    global generator (every built-in one) are unaffected. On CUDA the device generators are
    seeded (:func:`~obliviate._rng.seed_global`) and restored on exit too."""
    g = generator(seed, "global-rng", *keys)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        seed_global(int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)))
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
    the same order), recipe and key give bitwise the same weights (on one device type, at one
    precision and thread count). Training runs on the model's device (``data`` is moved there
    once, :func:`data_to`) at :func:`current_precision`.
    """
    own_loss = loss_fn is not None
    loss_fn = loss_fn or cross_entropy
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ObliviateError(
            f"the {type(model).__name__} model has no trainable parameter (requires_grad is "
            "False everywhere, or it has no parameter); there is nothing to train"
        )
    opt = make_optimizer(params, config)
    gen = generator(config.seed, key)
    device = model_device(model)
    data = data_to(data, device)
    stepper = Stepper(opt, device)
    train_mode(model)
    min_rows = min_batch_rows(model)
    with global_rng_from(config.seed, key):  # dropout masks from the seed too
        for _ in range(config.n_epochs):
            for batch in batches(data, config.batch_size, gen, min_rows=min_rows):
                opt.zero_grad(set_to_none=True)
                with stepper.autocast():
                    loss = (
                        loss_fn(model, batch) if not own_loss else _user_loss(loss_fn, model, batch)
                    )
                stepper.backward(loss)
                stepper.step()
    model.eval()
    return model


def _user_loss(loss_fn: LossFn, model: nn.Module, batch: Batch) -> Tensor:
    """``loss_fn(model, batch)`` of a user's loss, refused in one line when it is not called as
    obliviate calls it or does not return a scalar tensor (instead of a raw error mid-run)."""
    try:
        loss = loss_fn(model, batch)
    except TypeError as exc:
        raise ObliviateError(
            f"loss_fn is called as loss_fn(model, batch) (batch.x, batch.y: see "
            f"obliviate.training.Batch) and failed: {exc}"
        ) from None
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        got = f"shape {list(loss.shape)}" if isinstance(loss, Tensor) else type(loss).__name__
        raise ObliviateError(
            f"loss_fn must return a scalar tensor (mean over the batch), got {got}"
        )
    return loss


def train_mode(model: nn.Module) -> nn.Module:
    """Put ``model`` in training mode for a trainer, except its *frozen* BatchNorm layers: a
    BatchNorm whose affine parameters all have ``requires_grad=False`` stays in eval mode, so its
    running statistics stay frozen with its weights (what torchvision's ``FrozenBatchNorm2d``
    does, and what a user who froze it expects). ``model.train()`` alone would switch such a
    layer back to batch statistics and let its running mean and variance drift. A BatchNorm
    without affine parameters, and every other layer, follows ``model.train()``. Returns
    ``model``."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
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
    """Logits ``[N, n_classes]`` (float32) in eval mode; every submodule's own mode is restored.

    Computed on the model's device (chunks of ``data`` moved there when it lives elsewhere) in
    float32 whatever :func:`current_precision` says; returned on ``data``'s device, next to
    ``data.y``."""
    device = model_device(model)
    with eval_mode(model):
        outs = []
        for start in range(0, len(data), batch_size):
            task = None if data.task is None else data.task[start : start + batch_size]
            outs.append(logits(model, *_on(device, data.x[start : start + batch_size], task)))
        if not outs:  # an empty set still has the model's output shape [0, n_classes]
            task = None if data.task is None else data.task[:0]
            outs.append(logits(model, *_on(device, data.x[:0], task)))
        return torch.cat(outs).to(data.x.device)


def _on(device: torch.device, x: Tensor, task: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if x.device == device:
        return x, task
    return x.to(device), None if task is None else task.to(device)


def accuracy(model: nn.Module, data: Dataset) -> float:
    """Fraction of ``data`` the model classifies correctly (NaN for an empty set)."""
    if len(data) == 0:
        return float("nan")
    return float((predict_logits(model, data).argmax(dim=1) == data.y).float().mean())
