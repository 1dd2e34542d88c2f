"""Group-sparse LoRA: what GS-LoRA and GS-LoRA++ share (Zhao et al., CVPR 2024; 2025).

LoRA modules (Hu et al., 2022: ``W' = W + s * B A``, ``A`` ``[r, in]``, ``B`` ``[out, r]``,
``s = lora_alpha / r``) are attached to a model's ``nn.Linear`` (and optionally ``nn.Conv1d`` /
``nn.Conv2d``) layers through peft's :class:`~peft.tuners.lora.LoraModel`; one *group* is the
``(A, B)`` pair of one layer. The group-sparse (group lasso) penalty is
``sum_g ||theta_g||_2`` with ``||theta_g||_2 = sqrt(||A_g||_F^2 + ||B_g||_F^2)`` (GS-LoRA, the
structure loss), minimised here by its proximal operator (group soft-thresholding), which sets
whole groups exactly to zero. After training the LoRA deltas are merged into the weights
(peft's ``merge_and_unload``) and a zeroed group's layer keeps its original bits.

peft is imported inside the functions (it imports transformers: seconds), so importing this
module stays light.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from obliviate._rng import generator, seed_global
from obliviate._validation import check_number, check_schedule
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.models.base import logits
from obliviate.training import Batch, predict_logits
from obliviate.unlearning._ops import run_paired_steps
from obliviate.unlearning.random_label import retain_sample

REQUIREMENT = "at least one nn.Linear layer (LoRA targets; nn.Conv1d/nn.Conv2d too if asked)"
"""What GS-LoRA needs of a model, in words (for listings)."""

_ADAPTER = "default"


@dataclass
class LoraGroup:
    """One LoRA group: the adapted layer's name (in ``model.named_modules()``), its ``A`` and
    ``B`` factors (peft's ``lora_A`` / ``lora_B`` weights) and the base layer."""

    name: str
    a: nn.Parameter
    b: nn.Parameter
    base: nn.Module

    def params(self) -> list[nn.Parameter]:
        return [self.a, self.b]


def check_hyperparameters(
    owner: str,
    *,
    rank: int,
    lora_alpha: int,
    reg_strength: float,
    forget_weight: float,
    bound: float,
    warmup_epochs: int,
    n_epochs: int,
    lr: float,
    batch_size: int,
    optimizer: str,
    retain_fraction: float,
    include_conv: bool,
    seed: int,
) -> None:
    """The checks of the hyperparameters GS-LoRA and GS-LoRA++ share, errors naming ``owner``:
    ``rank``, ``lora_alpha`` integers >= 1; ``reg_strength`` >= 0; ``forget_weight``, ``bound``
    > 0; ``warmup_epochs`` integer >= 0; the schedule (``n_epochs``, ``lr``, ``batch_size``,
    ``optimizer``, ``seed``: :func:`~obliviate._validation.check_schedule`);
    ``retain_fraction`` in (0, 1]; ``include_conv`` a bool. Raises
    :class:`~obliviate.errors.ObliviateError` (one line) at the first bad value."""
    check_number("rank", rank, low=1, integer=True, owner=owner)
    check_number("lora_alpha", lora_alpha, low=1, integer=True, owner=owner)
    check_number("reg_strength", reg_strength, low=0, owner=owner)
    check_number("forget_weight", forget_weight, low=0, low_open=True, owner=owner)
    check_number("bound", bound, low=0, low_open=True, owner=owner)
    check_number("warmup_epochs", warmup_epochs, low=0, integer=True, owner=owner)
    check_schedule(
        owner, n_epochs=n_epochs, lr=lr, batch_size=batch_size, optimizer=optimizer, seed=seed
    )
    check_number("retain_fraction", retain_fraction, low=0, high=1, low_open=True, owner=owner)
    if not isinstance(include_conv, bool):
        raise ObliviateError(f"{owner} include_conv must be true or false, got {include_conv!r}")


def lora_targets(model: nn.Module, *, include_conv: bool) -> list[str]:
    """Names of the layers LoRA is attached to: every ``nn.Linear`` (and ``nn.Conv1d`` /
    ``nn.Conv2d`` when ``include_conv``), in ``named_modules`` order. Raises
    :class:`ObliviateError` when there is none."""
    kinds: tuple[type[nn.Module], ...] = (nn.Linear,)
    if include_conv:
        kinds = (nn.Linear, nn.Conv1d, nn.Conv2d)
    names = [n for n, m in model.named_modules() if n and type(m) in kinds]
    if not names:
        raise ObliviateError(
            f"GS-LoRA needs {REQUIREMENT}; {type(model).__name__} has none. Use a model with "
            "linear layers, or another unlearner"
        )
    return names


def attach_lora(
    model: nn.Module,
    names: list[str],
    *,
    rank: int,
    lora_alpha: int,
    seed: int,
    key: object,
) -> tuple[object, list[LoraGroup]]:
    """Attach LoRA (rank ``rank``, scaling ``lora_alpha / rank``) to the layers ``names`` of
    ``model`` in place (peft's :class:`~peft.tuners.lora.LoraModel`; ``A`` Kaiming-uniform from
    ``seed`` and ``key``, ``B`` zero, so the adapted model starts equal to ``model``); every other
    parameter is frozen. Returns (the peft wrapper, the groups in ``names`` order)."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel

    pattern = "^(?:" + "|".join(re.escape(n) for n in names) + ")$"
    config = LoraConfig(
        r=rank, lora_alpha=lora_alpha, target_modules=pattern, lora_dropout=0.0, bias="none"
    )
    g = generator(seed, "gs-lora-init", key)
    # peft draws A from the global generator, on the CPU (the same bits on every device), and
    # moves each adapter to its layer's device
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        seed_global(int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)))
        wrapper = LoraModel(model, config, _ADAPTER)
    modules = dict(model.named_modules())
    groups = []
    for n in names:
        m = modules[n]
        groups.append(
            LoraGroup(
                name=n,
                a=m.lora_A[_ADAPTER].weight,
                b=m.lora_B[_ADAPTER].weight,
                base=m.get_base_layer(),
            )
        )
    for p in model.parameters():
        p.requires_grad_(False)
    for grp in groups:
        for p in grp.params():
            p.requires_grad_(True)
    return wrapper, groups


def group_norms(groups: list[LoraGroup]) -> Tensor:
    """``[G]`` float: ``||theta_g||_2 = sqrt(||A_g||_F^2 + ||B_g||_F^2)`` per group."""
    return torch.stack(
        [torch.sqrt(g.a.pow(2).sum() + g.b.pow(2).sum()) for g in groups]  # differentiable
    )


def group_sparse_penalty(groups: list[LoraGroup]) -> Tensor:
    """The group-sparse (group lasso) penalty ``sum_g ||theta_g||_2`` (GS-LoRA's structure
    loss), a scalar tensor (differentiable away from zero groups)."""
    return group_norms(groups).sum()


@torch.no_grad()
def prox_group_sparse(groups: list[LoraGroup], threshold: float) -> None:
    """The proximal operator of ``threshold * sum_g ||theta_g||_2``, in place:
    ``theta_g <- max(0, 1 - threshold / ||theta_g||_2) * theta_g`` (group soft-thresholding;
    a group whose norm is at most ``threshold`` becomes exactly zero)."""
    for g in groups:
        norm = float(torch.sqrt(g.a.pow(2).sum() + g.b.pow(2).sum()))
        scale = 0.0 if norm <= threshold else 1.0 - threshold / norm
        g.a.mul_(scale)
        g.b.mul_(scale)


def merge(wrapper: object, model: nn.Module, groups: list[LoraGroup]) -> nn.Module:
    """Merge every group into its layer (peft's ``merge_and_unload``) and return the plain model
    (``model``'s class, its original module tree). A group that is exactly zero leaves its
    layer's weights bit for bit as they were."""
    zero = [g for g in groups if not bool(g.a.any()) or not bool(g.b.any())]
    kept = [
        {k: v.detach().clone() for k, v in g.base.state_dict().items()} for g in zero
    ]  # restored after the merge: W + 0 could flip the sign of a -0.0 weight
    out = wrapper.merge_and_unload()  # type: ignore[attr-defined]
    if out is not model:  # pragma: no cover - peft returns the wrapped model itself
        raise ObliviateError("peft returned another model object from merge_and_unload")
    for g, state in zip(zero, kept, strict=True):
        g.base.load_state_dict(state)
    for p in out.parameters():
        p.requires_grad_(True)
    return out.eval()


def bounded_forget_loss(ce: Tensor, bound: float) -> Tensor:
    """``ReLU(BND - CE)``: GS-LoRA's bounded forget loss; zero once the forget cross-entropy
    reaches ``bound`` (the unbounded ``-CE`` would diverge)."""
    return F.relu(bound - ce)


def train_group_sparse(
    model: nn.Module,
    groups: list[LoraGroup],
    retain: Dataset,
    forget: Dataset,
    loss_fn: Callable[[nn.Module, Batch, Batch], Tensor],
    *,
    reg_strength: float,
    warmup_epochs: int,
    n_epochs: int,
    lr: float,
    batch_size: int,
    optimizer: str,
    seed: int,
    key: str,
) -> None:
    """Minimise ``loss_fn(model, retain_batch, forget_batch) + reg_strength * sum_g ||theta_g||``
    over the LoRA factors only: ``n_epochs`` passes over the larger of ``retain`` and ``forget``
    (each step paired with a batch of the other, cycled), the penalty applied by its proximal
    operator (threshold ``lr * reg_strength``) after every step of the epochs after the first
    ``warmup_epochs``. The frozen backbone runs in eval mode (BatchNorm statistics and dropout
    as at inference)."""
    params = [p for g in groups for p in g.params()]
    threshold = lr * reg_strength
    retain_main = len(retain) >= len(forget)  # an epoch is a pass over the larger set
    main, other = (retain, forget) if retain_main else (forget, retain)
    n_warm = warmup_epochs * -(-len(main) // batch_size)  # steps without the penalty (approx.)
    state = {"steps": 0}

    def step_loss(m: nn.Module, a: Batch, b: Batch) -> Tensor:
        m.eval()  # only the LoRA factors learn; no BatchNorm statistic moves
        if state["steps"] > n_warm and threshold > 0:
            prox_group_sparse(groups, threshold)  # the proximal step after the previous step
        state["steps"] += 1
        return loss_fn(m, a, b) if retain_main else loss_fn(m, b, a)

    run_paired_steps(
        model,
        main,
        other,
        step_loss,
        n_epochs=n_epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        seed=seed,
        key=key,
        params=params,
    )
    if state["steps"] > n_warm and threshold > 0:
        prox_group_sparse(groups, threshold)  # after the last step


@torch.no_grad()
def class_prototypes(model: nn.Module, data: Dataset, n_classes: int) -> tuple[Tensor, Tensor]:
    """Per-class mean output (logit) vector of ``model`` over ``data``: (``[n_classes, C]``
    float prototypes, ``[n_classes]`` bool: the class has rows in ``data``)."""
    z = predict_logits(model, data).float()
    protos = torch.zeros(n_classes, z.shape[1], dtype=z.dtype, device=z.device)
    counts = torch.zeros(n_classes, dtype=z.dtype, device=z.device)
    y = data.y.to(z.device)
    protos.index_add_(0, y, z)
    counts.index_add_(0, y, torch.ones_like(y, dtype=z.dtype))
    present = counts > 0
    protos[present] /= counts[present].unsqueeze(1)
    return protos, present


def prototype_logits(z: Tensor, protos: Tensor, temperature: float) -> Tensor:
    """``[B, K]``: cosine similarity of each output row ``z`` ``[B, C]`` to each prototype
    ``protos`` ``[K, C]``, divided by ``temperature``."""
    return F.normalize(z, dim=1) @ F.normalize(protos, dim=1).T / temperature


def model_logits(m: nn.Module, b: Batch) -> Tensor:
    return logits(m, b.x, b.task)


__all__ = [
    "REQUIREMENT",
    "LoraGroup",
    "attach_lora",
    "check_hyperparameters",
    "bounded_forget_loss",
    "class_prototypes",
    "group_norms",
    "group_sparse_penalty",
    "lora_targets",
    "merge",
    "model_logits",
    "prototype_logits",
    "prox_group_sparse",
    "train_group_sparse",
]


def unlearn_request(
    method: Any,
    model: nn.Module,
    request: Any,
    loss: Callable[[nn.Module, Batch, Batch], Tensor],
    key: str,
) -> nn.Module:
    """The GS-LoRA procedure both :class:`~obliviate.unlearning.gs_lora.GSLoRA` and
    :class:`~obliviate.unlearning.gs_lora_pp.GSLoRAPP` run, with their own ``loss``: LoRA on
    ``model``'s target layers (seeded), a retain sample of ``method.retain_fraction``, group-sparse
    training (:func:`train_group_sparse`), the group norms recorded on ``method``
    (``group_norms_``, ``zeroed_groups_``) and the merged plain model returned."""
    names = lora_targets(model, include_conv=method.include_conv)
    wrapper, groups = attach_lora(
        model, names, rank=method.rank, lora_alpha=method.lora_alpha, seed=method.seed, key=key
    )
    retain = retain_sample(request.retain, method.retain_fraction, method.seed, key)
    if len(retain) == 0:
        retain = request.retain
    train_group_sparse(
        model,
        groups,
        retain,
        request.forget,
        loss,
        reg_strength=method.reg_strength,
        warmup_epochs=method.warmup_epochs,
        n_epochs=method.n_epochs,
        lr=method.lr,
        batch_size=method.batch_size,
        optimizer=method.optimizer,
        seed=method.seed,
        key=key,
    )
    norms = group_norms(groups).detach().cpu()
    method.group_norms_ = {g.name: float(n) for g, n in zip(groups, norms, strict=True)}
    method.zeroed_groups_ = [g.name for g, n in zip(groups, norms, strict=True) if n == 0]
    return merge(wrapper, model, groups)
