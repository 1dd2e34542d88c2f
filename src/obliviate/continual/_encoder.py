"""The frozen pretrained encoder of SLDA, L2P and REMIND, and the model surgery they share.

Those methods run on a *frozen* feature extractor pretrained on data disjoint from the stream.
obliviate never downloads weights: :func:`pretrained_encoder` trains the encoder itself, from a
seed, with a recipe (:class:`EncoderRecipe`), and caches the result on disk under
``$OBLIVIATE_CACHE/encoders/`` (default ``~/.cache/obliviate/encoders/``), keyed by a hash of the
recipe and the architecture. The same recipe and architecture give bitwise the same encoder,
trained or read from the cache.

The encoder has the architecture of the model it is loaded into: a copy of the model is
re-initialised from the recipe's seed, given a temporary linear output layer over the pretraining
classes and trained with cross-entropy; its ``features`` part (every parameter and buffer outside
the model's output layers) is then copied into the model. Pretraining sources (``source``):

- ``"fashion-mnist"``: Fashion-MNIST training images (Xiao et al., 2017), disjoint from every
  digit stream (clothing, not digits). Read from ``$OBLIVIATE_DATA`` or Debian's
  ``dataset-fashion-mnist`` package; resized by area averaging to the stream's image size (28x28
  for MNIST, 8x8 for scikit-learn digits, which were made the same way: block averages of larger
  bitmaps) and standardised per pixel on itself. Needs image-shaped samples ``[1, H, W]``.
- ``"blobs"``: generated Gaussian blobs of the stream's sample shape (10 classes); works for any
  input, but the features it teaches carry no knowledge of real data. For tests and smoke runs.

The module also holds the small model surgeries those strategies (and LUCIR / CoPE, which write a
nearest-prototype rule into the output layer) share: :func:`require_model`,
:func:`encoder_parameters`, :func:`set_requires_grad` and :func:`write_head`.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from obliviate._rng import derive_seed, generator
from obliviate._validation import check_choice, check_number
from obliviate.data.dataset import Dataset
from obliviate.data.datasets import load_dataset, synthetic_arrays
from obliviate.errors import ObliviateError
from obliviate.models.base import Model, seeded_init
from obliviate.models.multihead import MultiHead
from obliviate.models.output_layer import feature_model
from obliviate.training import batches

__all__ = [
    "CACHE_ENV",
    "ENCODER_SOURCES",
    "UNSEEN",
    "EncoderRecipe",
    "cache_dir",
    "cached",
    "encoder_key",
    "encoder_parameters",
    "load_encoder",
    "pretrained_encoder",
    "pretraining_data",
    "require_model",
    "set_requires_grad",
    "write_head",
]

ENCODER_SOURCES = ("blobs", "fashion-mnist")
CACHE_ENV = "OBLIVIATE_CACHE"
UNSEEN = -1e9
"""Bias written for classes a prototype rule has not seen (never predicted)."""


@dataclass(frozen=True)
class EncoderRecipe:
    """How the frozen encoder is pretrained: source, sample budget and SGD schedule.

    ``n_samples`` rows of the source (its first rows), ``n_epochs`` of SGD with momentum at
    ``lr`` in batches of ``batch_size``; ``seed`` draws the initialisation and the data order.
    """

    source: str = "blobs"
    n_samples: int = 10000
    n_epochs: int = 3
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("encoder", self.source, ENCODER_SOURCES, owner="EncoderRecipe")
        check_number("n_samples", self.n_samples, low=10, integer=True, owner="EncoderRecipe")
        check_number("n_epochs", self.n_epochs, low=0, integer=True, owner="EncoderRecipe")
        check_number("batch_size", self.batch_size, low=1, integer=True, owner="EncoderRecipe")
        check_number("lr", self.lr, low=0, low_open=True, owner="EncoderRecipe")
        check_number("momentum", self.momentum, low=0, high=1, high_open=True)
        check_number("seed", self.seed, integer=True, owner="EncoderRecipe")


# ---- model requirements and surgery ------------------------------------------------------------


def require_model(
    model: nn.Module, owner: str, *, single_head: bool = False, example: Tensor | None = None
) -> Model:
    """``model`` as an obliviate :class:`Model` (``features(x)`` + a linear output layer): the
    model itself, or for a user's plain module an
    :class:`~obliviate.models.output_layer.OutputLayerView` cut at the ``nn.Linear`` that
    produces its logits (found by tracing one forward pass on ``example`` rows; later calls on
    the same model object need no example). Raises a one-line :class:`ObliviateError` naming
    the requirement otherwise."""
    if not isinstance(model, Model):
        model = feature_model(model, example, owner=owner)
    if single_head and isinstance(model, MultiHead):
        raise ObliviateError(
            f"{owner} is a single-head (class-incremental) method; got a multi-head model. "
            "Use the class-incremental or domain-incremental scenario"
        )
    return model


def encoder_parameters(model: Model) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of everything outside the model's output layer(s), in model order."""
    heads = {id(p) for p in model.head_parameters()}
    return [(n, p) for n, p in model.named_parameters() if id(p) not in heads]


def set_requires_grad(params: list[tuple[str, nn.Parameter]], flags: dict[str, bool]) -> None:
    """Set ``requires_grad`` of each named parameter to ``flags[name]``."""
    for n, p in params:
        p.requires_grad_(flags[n])


@torch.no_grad()
def write_head(model: Model, weight: Tensor, bias: Tensor) -> None:
    """Write a linear rule over the features into the output layer(s): ``logit_c = w_c . h + b_c``.

    ``weight`` ``[n_classes, feature_dim]`` and ``bias`` ``[n_classes]`` in the full label space;
    a multi-head model gets each task's rows in its head.
    """
    head = model.head_parameters()
    weight, bias = weight.to(head[0].dtype), bias.to(head[0].dtype)
    if isinstance(model, MultiHead):
        for t, classes in enumerate(model.task_classes):
            rows = torch.tensor(classes, dtype=torch.int64, device=weight.device)
            head[2 * t].copy_(weight[rows])
            head[2 * t + 1].copy_(bias[rows])
        return
    if len(head) != 2 or head[0].shape != weight.shape:
        raise ObliviateError(
            f"{type(model).__name__}: the output layer must be one nn.Linear with a bias, "
            f"shape {tuple(weight.shape)}"
        )
    head[0].copy_(weight)
    head[1].copy_(bias)


# ---- pretraining data --------------------------------------------------------------------------


def pretraining_data(recipe: EncoderRecipe, sample_shape: tuple[int, ...]) -> Dataset:
    """The recipe's pretraining rows, shaped like the stream's samples and standardised per
    feature on themselves (as obliviate's datasets are)."""
    n = recipe.n_samples
    if recipe.source == "blobs":
        n_features = int(np.prod(sample_shape))
        x, y = synthetic_arrays(
            n_classes=10,
            n_per_class=max(1, n // 10),
            n_features=n_features,
            seed=derive_seed(recipe.seed, "encoder-blobs") % (2**32),
        )
        xt = torch.from_numpy(x).reshape(-1, *sample_shape)
        yt = torch.from_numpy(y)
    else:
        if len(sample_shape) != 3 or sample_shape[0] != 1:
            raise ObliviateError(
                f"encoder='fashion-mnist' needs single-channel images [1, H, W]; the stream's "
                f"samples have shape {tuple(sample_shape)}; use encoder='blobs'"
            )
        train, _ = load_dataset("fashion-mnist", standardized=False, limit=n)
        mean = float(train.x.mean())
        if mean < 0.2:  # Fashion-MNIST's mean pixel is 0.29, MNIST's 0.13
            raise ObliviateError(
                f"the IDX files found for fashion-mnist look like MNIST (mean pixel {mean:.2f}; "
                "Fashion-MNIST's is 0.29): an encoder pretrained on them would not be disjoint "
                "from a digit stream; put Fashion-MNIST in $OBLIVIATE_DATA/fashion-mnist"
            )
        xt = nn.functional.interpolate(train.x, size=tuple(sample_shape[1:]), mode="area")
        yt = train.y
    flat = xt.reshape(len(yt), -1)
    flat = (flat - flat.mean(dim=0)) / flat.std(dim=0).clamp_min(1e-6)
    return Dataset(
        flat.reshape(xt.shape).contiguous(),
        yt,
        torch.arange(len(yt), dtype=torch.int64, device=yt.device),
        int(yt.max()) + 1,
        name=f"encoder:{recipe.source}",
    )


# ---- the encoder -------------------------------------------------------------------------------


def _reset(module: nn.Module) -> None:
    resettable = (
        nn.Linear,
        nn.Conv1d,
        nn.Conv2d,
        nn.Conv3d,
        nn.LayerNorm,
        nn.Embedding,
        nn.modules.batchnorm._NormBase,
    )
    for m in module.modules():
        if isinstance(m, resettable):
            m.reset_parameters()


def _cache_key(recipe: EncoderRecipe, model: Model, sample_shape: tuple[int, ...]) -> str:
    arch = [(n, tuple(t.shape), str(t.dtype)) for n, t in model.state_dict().items()]
    text = repr((asdict(recipe), type(model).__name__, tuple(sample_shape), arch))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_dir() -> Path:
    """Where pretrained encoders are cached: ``$OBLIVIATE_CACHE/encoders`` or
    ``~/.cache/obliviate/encoders``."""
    base = os.environ.get(CACHE_ENV)
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "obliviate"
    return root / "encoders"


def _fit_encoder(
    enc: Model, head: nn.Linear, opt: torch.optim.Optimizer, data: Dataset, recipe: EncoderRecipe
) -> None:
    gen = generator(recipe.seed, "encoder-order")
    for _ in range(recipe.n_epochs):
        for batch in batches(data, recipe.batch_size, gen):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(head(enc.features(batch.x)), batch.y)
            loss.backward()
            opt.step()


def _train_encoder(
    model: Model, recipe: EncoderRecipe, sample_shape: tuple[int, ...]
) -> dict[str, Tensor]:
    data = pretraining_data(recipe, sample_shape)
    # pretrained on the CPU whatever device the model is on: the cache key names no device, so
    # the cached encoder (and every run that loads it) is the same bits everywhere
    enc = copy.deepcopy(model).cpu()
    with seeded_init(derive_seed(recipe.seed, "encoder-init") % (2**62)), torch.device("cpu"):
        _reset(enc)
        head = nn.Linear(enc.feature_dim, data.n_classes)
    keep = [p for _, p in encoder_parameters(enc)]
    for p in keep:
        p.requires_grad_(True)
    opt = torch.optim.SGD(keep + list(head.parameters()), lr=recipe.lr, momentum=recipe.momentum)
    enc.train()
    with torch.enable_grad():
        _fit_encoder(enc, head, opt, data, recipe)
    heads = {id(p) for p in enc.head_parameters()}
    head_names = {n for n, p in enc.named_parameters() if id(p) in heads}
    return {k: v.detach().clone() for k, v in enc.state_dict().items() if k not in head_names}


def cached(key: str, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
    """``compute()``'s tensors, read from ``cache_dir()/key.pt`` when present, else computed and
    written there (atomically). A damaged or unwritable cache only costs time."""
    path = cache_dir() / f"{key}.pt"
    if path.exists():
        try:
            return torch.load(path, weights_only=True, map_location="cpu")
        except (OSError, RuntimeError, EOFError):
            pass
    state = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError:
        pass
    return state


def encoder_key(recipe: EncoderRecipe, model: Model, sample_shape: tuple[int, ...]) -> str:
    """The cache key of an encoder: a hash of the recipe and the architecture."""
    return _cache_key(recipe, model, sample_shape)


def pretrained_encoder(
    model: Model, recipe: EncoderRecipe, sample_shape: tuple[int, ...]
) -> dict[str, Tensor]:
    """The encoder state (every entry of ``model.state_dict()`` outside the output layers) that
    ``recipe`` trains for ``model``'s architecture, from the disk cache or trained now (then
    cached). Deterministic: the same recipe and architecture give bitwise the same tensors."""
    return cached(
        encoder_key(recipe, model, sample_shape),
        lambda: _train_encoder(model, recipe, sample_shape),
    )


def load_encoder(model: Model, recipe: EncoderRecipe, sample_shape: tuple[int, ...]) -> None:
    """Overwrite ``model``'s feature extractor with the pretrained encoder (output layers kept)."""
    state = pretrained_encoder(model, recipe, sample_shape)
    own = model.state_dict()
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)
