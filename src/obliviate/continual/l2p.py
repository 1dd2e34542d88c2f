"""L2P: learning to prompt a frozen pretrained encoder from a pool of keyed prompts (Wang et al.,
2022), adapted to MLP / CNN encoders as additive input prompts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_choice, check_number
from obliviate.continual._encoder import (
    ENCODER_SOURCES,
    EncoderRecipe,
    encoder_parameters,
    load_encoder,
    require_model,
    set_requires_grad,
)
from obliviate.continual.base import Batch, Strategy
from obliviate.data.scenarios import Experience
from obliviate.models.base import Model
from obliviate.models.output_layer import REQUIREMENT, feature_model
from obliviate.training import eval_mode, model_device

__all__ = ["L2P", "PromptPool", "select_prompts"]

MASKED = -1e9


@dataclass
class PromptPool:
    """``keys`` ``[M, d]`` (feature space) and ``prompts`` ``[M, *sample_shape]`` (input space),
    both leaf tensors that require gradients."""

    keys: Tensor
    prompts: Tensor


def select_prompts(query: Tensor, keys: Tensor, n_selected: int) -> tuple[Tensor, Tensor]:
    """Key matching (Wang et al., 2022, Eq. 3): for each query ``q(x)`` ``[B, d]`` the indices
    ``[B, N]`` of the ``N`` keys with the highest cosine similarity ``gamma(q, k)`` (ties to the
    lower index) and those similarities ``[B, N]`` (differentiable in ``keys``)."""
    sim = nn.functional.normalize(query, dim=1) @ nn.functional.normalize(keys, dim=1).T
    idx = torch.sort(sim.detach(), dim=1, descending=True, stable=True).indices[:, :n_selected]
    return idx, sim.gather(1, idx)


def _query(model: Model, x: Tensor) -> Tensor:
    """``q(x)``: the frozen encoder's features of the unprompted input (eval mode, no gradient)."""
    with eval_mode(model), torch.no_grad():  # each submodule's own mode comes back
        return model.features(x).reshape(x.shape[0], -1)


def _prompted(x: Tensor, pool: PromptPool, idx: Tensor) -> Tensor:
    """``x + mean of the selected prompts``."""
    return x + pool.prompts[idx].mean(dim=1)


class _PromptHook:
    """Forward pre-hook: every call ``model(x, task)`` runs on the prompted input (L2P inference:
    query the frozen encoder, match keys, add the selected prompts)."""

    def __init__(self, pool: PromptPool, n_selected: int) -> None:
        self.pool, self.n_selected = pool, n_selected
        self.busy = False  # a user model's features() runs its forward: no prompting inside

    def __call__(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        x = args[0] if args else kwargs.get("x")
        if x is None or self.busy:
            return None
        view = feature_model(module, x, owner="L2P")  # the model itself, or a user model's view
        self.busy = True
        try:
            idx, _ = select_prompts(_query(view, x), self.pool.keys.detach(), self.n_selected)
        finally:
            self.busy = False
        with torch.no_grad():
            x = _prompted(x, PromptPool(self.pool.keys, self.pool.prompts.detach()), idx)
        if args:
            return (x, *args[1:]), kwargs
        return args, {**kwargs, "x": x}


@contextlib.contextmanager
def _unprompted(model: nn.Module) -> Iterator[None]:
    """Inside the block, calls of ``model`` are not prompted by the hook (a user model's
    ``features`` runs its forward, which must see the input L2P gives it)."""
    hooks = [h for h in model._forward_pre_hooks.values() if isinstance(h, _PromptHook)]
    for h in hooks:
        h.busy = True
    try:
        yield
    finally:
        for h in hooks:
            h.busy = False


def _install_hook(model: nn.Module, pool: PromptPool, n_selected: int) -> None:
    """Register the prompting pre-hook once per model; re-point it on later calls."""
    for hook in model._forward_pre_hooks.values():
        if isinstance(hook, _PromptHook):
            hook.pool, hook.n_selected = pool, n_selected
            return
    model.register_forward_pre_hook(_PromptHook(pool, n_selected), with_kwargs=True)


class L2P(Strategy):
    """L2P: a frozen pretrained encoder, a pool of prompts chosen by key-query matching.

    The model's feature extractor is replaced by a frozen encoder pretrained on data disjoint
    from the stream (:mod:`obliviate.continual._encoder`). A pool holds ``M`` prompts with keys
    ``k_m``. For an input ``x`` the query is the frozen encoder's feature ``q(x)``; the ``N``
    keys nearest to it by cosine similarity select their prompts (Eq. 3), which are applied to
    the input, and the output layer classifies the encoder's features of the prompted input.
    The loss (Eq. 5) is::

        L = CE(g(f(x_p)), y) + lambda * sum_{m in K_x} (1 - gamma(q(x), k_m))

    averaged over the batch; the output layer (through the loop's optimiser) and the prompts and
    keys (through this strategy's SGD step) learn, the encoder stays frozen. At prediction the
    model's forward pass performs the same query, matching and prompting (a forward pre-hook
    registered on the model in ``begin``).

    Parameters
    ----------
    pool_size : int, >= 1
        ``M``, prompts in the pool (paper: 10).
    n_selected : int, >= 1
        ``N``, prompts selected per input (paper: 5); at most ``pool_size``.
    reg_strength : float, >= 0
        ``lambda``, the weight of the key-query matching term (paper's code: 0.1).
    prompt_lr : float, > 0
        Learning rate of the plain SGD step on prompts and keys.
    mask_logits : bool
        Train-time logit masking: the cross-entropy only sees the current experience's classes
        (the paper's code does this for class-incremental training).
    encoder : {"blobs", "fashion-mnist"}
        Pretraining data of the frozen encoder.
    encoder_epochs : int, >= 0
        Pretraining epochs of the encoder.
    seed : int
        Seeds the encoder pretraining and the key initialisation.

    Notes
    -----
    - **Prompts on an MLP / CNN.** L2P prepends ``N * L_p`` learnable tokens to a ViT's patch
      tokens. obliviate's encoders have no tokens, so a prompt here is an additive offset of the
      input's shape (visual prompting as an input perturbation, Bahng et al., 2022): the input
      becomes ``x + mean of the N selected prompts``, which the frozen non-linear encoder turns
      into a prompt-specific feature change. Prompts start at zero (the unprompted input); keys
      start uniform in [-1, 1] (seeded), as in the paper's code.
    - The encoder is the model's own architecture pretrained on Fashion-MNIST or generated blobs,
      not an ImageNet ViT; the classifier is the model's output layer.
    - Prompts and keys are updated with plain SGD at ``prompt_lr`` by this strategy (the paper
      trains them with Adam together with the classifier); no diversified selection (the paper's
      optional prompt-frequency penalty, used with task boundaries).

    References
    ----------
    Wang, Z., Zhang, Z., Lee, C.-Y., Zhang, H., Sun, R., Ren, X., Su, G., Perot, V., Dy, J. &
    Pfister, T. (2022). Learning to Prompt for Continual Learning. CVPR 2022, Section 4 (Eq. 3-5).
    Bahng, H., Jahanian, A., Sankaranarayanan, S. & Isola, P. (2022). Exploring Visual Prompts
    for Adapting Large-Scale Models. arXiv:2203.17274.
    """

    needs_task_boundaries: ClassVar[bool] = True  # masks logits to the experience's classes
    freezes_parameters: ClassVar[bool] = True
    model_requirement: ClassVar[str | None] = REQUIREMENT
    learned_state: ClassVar[tuple[str, ...]] = ("pool_", "requires_grad_", "classes_")
    pool_: PromptPool | None = None

    def __init__(
        self,
        *,
        pool_size: int = 10,
        n_selected: int = 5,
        reg_strength: float = 0.1,
        prompt_lr: float = 0.01,
        mask_logits: bool = True,
        encoder: str = "blobs",
        encoder_epochs: int = 3,
        seed: int = 0,
    ) -> None:
        check_number("pool_size", pool_size, low=1, integer=True, owner="L2P")
        check_number("n_selected", n_selected, low=1, high=pool_size, integer=True, owner="L2P")
        check_number("reg_strength", reg_strength, low=0, owner="L2P")
        check_number("prompt_lr", prompt_lr, low=0, low_open=True, owner="L2P")
        check_choice("mask_logits", mask_logits, (True, False), owner="L2P")
        check_choice("encoder", encoder, ENCODER_SOURCES, owner="L2P")
        check_number("encoder_epochs", encoder_epochs, low=0, integer=True, owner="L2P")
        check_number("seed", seed, integer=True, owner="L2P")
        self.pool_size = pool_size
        self.n_selected = n_selected
        self.reg_strength = reg_strength
        self.prompt_lr = prompt_lr
        self.mask_logits = mask_logits
        self.encoder = encoder
        self.encoder_epochs = encoder_epochs
        self.seed = seed

    def begin(self, model: nn.Module, experience: Experience) -> None:
        m = require_model(model, "L2P", example=experience.train.x)
        shape = experience.train.sample_shape
        if self.pool_ is None:
            recipe = EncoderRecipe(
                source=self.encoder, n_epochs=self.encoder_epochs, seed=self.seed
            )
            load_encoder(m, recipe, shape)
            g = generator(self.seed, "l2p")
            keys = torch.rand(self.pool_size, m.feature_dim, generator=g, device=g.device)
            dev = model_device(model)
            self.pool_ = PromptPool(
                keys=(keys * 2 - 1).to(dev).requires_grad_(True),
                prompts=torch.zeros(self.pool_size, *shape, device=dev, requires_grad=True),
            )
        _install_hook(model, self.pool_, self.n_selected)  # the module the loop calls
        self.requires_grad_ = {n: p.requires_grad for n, p in encoder_parameters(m)}
        set_requires_grad(encoder_parameters(m), dict.fromkeys(self.requires_grad_, False))
        self.classes_ = torch.tensor(
            sorted(experience.classes), dtype=torch.int64, device=experience.train.y.device
        )

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        m = require_model(model, "L2P", example=batch.x)
        assert self.pool_ is not None  # created in begin
        with _unprompted(model):
            query = _query(m, batch.x)
            idx, sim = select_prompts(query, self.pool_.keys, self.n_selected)
            out = m.classify(m.features(_prompted(batch.x, self.pool_, idx)), batch.task)
        if self.mask_logits:
            keep = torch.zeros(out.shape[1], dtype=torch.bool, device=out.device)
            keep[self.classes_] = True
            out = out.float().masked_fill(~keep, MASKED)  # -1e9 overflows an fp16 output
        matching = (1.0 - sim).sum(dim=1).mean()
        return nn.functional.cross_entropy(out, batch.y) + self.reg_strength * matching

    @torch.no_grad()
    def adjust_gradients(self, model: nn.Module) -> None:
        assert self.pool_ is not None  # created in begin
        for t in (self.pool_.keys, self.pool_.prompts):
            if t.grad is not None:
                t -= self.prompt_lr * t.grad
                t.grad = None

    def end(self, model: nn.Module, experience: Experience) -> None:
        m = require_model(model, "L2P", example=experience.train.x)
        set_requires_grad(encoder_parameters(m), self.requires_grad_)
        del self.requires_grad_, self.classes_
