"""Gradient-space helpers shared by GEM, A-GEM, PackNet and HFT (functions, not mixins):
flat gradients over a model's trainable parameters and per-experience episodic memories.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from obliviate.data.dataset import Dataset
from obliviate.models.base import logits


def trainable_params(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` for every parameter with ``requires_grad``, in model order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def flat_grad(params: list[nn.Parameter]) -> Tensor:
    """The concatenated ``.grad`` of ``params`` (zeros where a gradient is None)."""
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    )


def write_flat_grad(params: list[nn.Parameter], flat: Tensor) -> None:
    """Write a flat gradient back into ``.grad``; a None gradient stays None where ``flat`` is 0."""
    start = 0
    for p in params:
        n = p.numel()
        part = flat[start : start + n].reshape(p.shape).to(p.dtype)
        start += n
        if p.grad is None:
            if bool(part.any()):
                p.grad = part.clone()
        else:
            p.grad.copy_(part)


def loss_gradient(
    model: nn.Module, params: list[nn.Parameter], x: Tensor, y: Tensor, task: Tensor | None
) -> Tensor:
    """Flat gradient of the mean cross-entropy on ``(x, y)``; ``.grad`` is left untouched."""
    loss = nn.functional.cross_entropy(logits(model, x, task), y)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).reshape(-1)
            for g, p in zip(grads, params, strict=True)
        ]
    )


# ---- episodic memories, one per experience ------------------------------------------------
def memory_quotas(memory_size: int, n_memories: int) -> list[int]:
    """Equal shares of ``memory_size`` over ``n_memories`` experiences (remainder to the oldest)."""
    base, extra = divmod(memory_size, n_memories)
    return [base + (1 if i < extra else 0) for i in range(n_memories)]


def add_experience_memory(
    memories: list[Dataset], data: Dataset, memory_size: int, gen: torch.Generator
) -> None:
    """Append a random sample of ``data`` as a new per-experience memory, in place.

    Every memory then holds at most its equal share of ``memory_size`` (older memories keep a
    prefix of their stored, already shuffled rows), so the total never exceeds ``memory_size``.
    """
    quotas = memory_quotas(memory_size, len(memories) + 1)
    for i, q in enumerate(quotas[:-1]):
        if len(memories[i]) > q:
            memories[i] = memories[i].subset(torch.arange(q, device=memories[i].x.device))
    order = torch.randperm(len(data), generator=gen, device=gen.device)[: quotas[-1]]
    memories.append(data.subset(order))
