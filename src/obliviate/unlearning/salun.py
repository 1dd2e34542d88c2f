"""SalUn, saliency unlearning (Fan et al., ICLR 2024): random labels on salient weights only."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from obliviate._validation import check_number, check_schedule
from obliviate.data.dataset import Dataset
from obliviate.models.base import logits
from obliviate.training import batches, eval_mode
from obliviate.unlearning._ops import cross_entropy, run_steps, trainable
from obliviate.unlearning.base import ForgetRequest, Unlearner
from obliviate.unlearning.random_label import relabelled_forget_set, retain_sample


def saliency_mask(
    model: nn.Module, forget: Dataset, fraction: float, batch_size: int = 256
) -> dict[str, Tensor]:
    """Boolean mask per parameter: the top ``fraction`` of all weights by ``|grad|`` of the
    forget loss (Fan et al., eq. 5), one global threshold over every parameter.

    The gradient is that of the summed minibatch-mean cross-entropy over the forget set (rows in
    order), at the current weights. Ties at the threshold are broken by position, so exactly
    ``round(fraction * n_weights)`` entries are selected.
    """
    params = dict(model.named_parameters())
    names = [n for n, p in params.items() if p.requires_grad]
    grads = {n: torch.zeros_like(params[n]) for n in names}
    with eval_mode(model):
        for b in batches(forget, batch_size, None):
            loss = F.cross_entropy(logits(model, b.x, b.task), b.y)
            for n, g in zip(
                names,
                torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True),
                strict=True,
            ):
                if g is not None:
                    grads[n] += g.detach()
    flat = torch.cat([grads[n].abs().reshape(-1) for n in names])
    k = int(round(fraction * flat.numel()))
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        chosen[torch.argsort(flat, descending=True, stable=True)[:k]] = True
    masks, offset = {}, 0
    for n in names:
        size = grads[n].numel()
        masks[n] = chosen[offset : offset + size].reshape(grads[n].shape)
        offset += size
    return masks


class SalUn(Unlearner):
    """Random-label fine-tuning that updates only the weights salient to the forget set.

    1. Saliency (Fan et al., eq. 5): ``m = 1[|grad_theta L_f(theta_0)| >= gamma]`` with the
       threshold ``gamma`` set so that the top ``sparsity`` fraction of all weights is selected.
    2. Unlearning (eq. 6-7, random labelling): fine-tune with cross-entropy on the forget rows
       relabelled with random wrong classes together with the retain rows; after each backward
       pass the gradient is multiplied by ``m``, so ``theta = theta_0 + m * delta``: weights
       outside the mask keep their original bits.

    Parameters
    ----------
    sparsity:
        fraction of weights updated (the paper's default threshold: the top 50 %).
    n_epochs:
        passes over (relabelled forget + retain sample) (the paper: 10 on CIFAR-10).
    lr, batch_size, optimizer, momentum:
        the optimiser (no weight decay: it would move masked-out weights).
    retain_fraction:
        fraction of the retain set mixed in.
    seed:
        draws the random labels, the retain sample and the data order.

    Notes
    -----
    - The random labels exclude each row's true class (the reference code draws from all).
    - ``n_epochs``/``lr``/``retain_fraction`` were set on the retain/forget sets of a small
      digits MLP so the method stays well under the cost of retraining.

    References
    ----------
    Fan, C., Liu, J., Zhang, Y., Wong, E., Wei, D. & Liu, S. (2024). SalUn: Empowering Machine
    Unlearning via Gradient-based Weight Saliency in Both Image Classification and Generation.
    ICLR 2024. arXiv:2310.12508.
    """

    guarantee: ClassVar[Literal["exact", "approximate"]] = "approximate"
    needs: ClassVar[frozenset[str]] = frozenset({"retain"})

    def __init__(
        self,
        *,
        sparsity: float = 0.5,
        n_epochs: int = 2,
        lr: float = 0.02,
        batch_size: int = 32,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        retain_fraction: float = 0.5,
        seed: int = 0,
    ) -> None:
        check_number("sparsity", sparsity, low=0, high=1, low_open=True, owner="SalUn")
        check_schedule(
            "SalUn",
            n_epochs=n_epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer=optimizer,
            momentum=momentum,
            seed=seed,
        )
        check_number("retain_fraction", retain_fraction, low=0, high=1, owner="SalUn")
        self.sparsity = sparsity
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.retain_fraction = retain_fraction
        self.seed = seed

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        out = trainable(model)
        assert request.retain is not None
        masks = saliency_mask(out, request.forget, self.sparsity)
        named = dict(out.named_parameters())
        params = [named[n] for n in masks]

        def apply_mask(m: nn.Module) -> None:
            for n, p in m.named_parameters():
                if p.grad is not None and n in masks:
                    p.grad.mul_(masks[n])

        relabelled = relabelled_forget_set(request, request.forget.n_classes, self.seed, "salun")
        parts = [
            relabelled,
            retain_sample(request.retain, self.retain_fraction, self.seed, "retain"),
        ]
        data = Dataset.concat([p for p in parts if len(p)])
        run_steps(
            out,
            data,
            cross_entropy,
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            seed=self.seed,
            key="salun",
            params=params,
            after_backward=apply_mask,
        )
        return out


__all__ = ["SalUn", "saliency_mask"]
