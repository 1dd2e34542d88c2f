"""GS-LoRA++: group-sparse LoRA with prototype regularisation (Zhao et al., 2025)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from obliviate._validation import check_number
from obliviate.training import Batch
from obliviate.unlearning import _group_lora as G
from obliviate.unlearning.base import ForgetRequest, Unlearner


class GSLoRAPP(Unlearner):
    """GS-LoRA plus prototype terms: forgotten rows pushed away from their class prototype,
    retained rows pulled to theirs.

    The loss of :class:`~obliviate.unlearning.gs_lora.GSLoRA` (bounded forget loss, retain CE,
    group-sparse penalty over the LoRA groups, merged after training) gains the prototype
    regularisation of GS-LoRA++ (Zhao et al., 2025):

    ``L = L_retain + beta * L_forget + gamma * (L_pro_retain + L_pro_forget)
    + alpha * sum_g ||theta_g||_2``

    with prototypes ``p_c`` = the mean output (logit) vector of the *input* model over the rows of
    class ``c`` (the forget rows for a forgotten class, the retain rows for the others), fixed
    during training, and prototype logits ``s_c(x) = cos(f(x), p_c) / tau``:

    ``L_pro_retain = CE(s(x_r), y_r)``                 pulls retained rows to their prototype;
    ``L_pro_forget = ReLU(BND_pro - CE(s(x_f), y_f))``  moves forgotten rows away from theirs
    (bounded like the forget loss).

    Classes with no rows in the request (forgotten by an earlier request) have no prototype.

    Parameters
    ----------
    rank, lora_alpha, reg_strength, forget_weight, bound, warmup_epochs, n_epochs, lr,
    batch_size, optimizer, retain_fraction, include_conv, seed :
        As for :class:`~obliviate.unlearning.gs_lora.GSLoRA` (``alpha`` = ``reg_strength``,
        ``beta`` = ``forget_weight``, ``BND`` = ``bound``).
    prototype_weight : float >= 0
        ``gamma``, the weight of the prototype terms (0: GS-LoRA).
    prototype_bound : float > 0
        ``BND_pro``: the prototype cross-entropy of forget rows at which their term stops.
    temperature : float > 0
        ``tau`` of the prototype logits.

    Notes
    -----
    - The prototype terms follow the paper's description ("for each forgotten class, move the
      logits away from its original prototype; for the remaining classes, pull the logits
      closer to their respective prototypes"); the exact form here (cosine prototype logits with
      a temperature, CE for the pull, a bounded negative CE for the push) is our
      reconstruction: the papers' equations were not reachable in full here.
    - Prototypes live in logit space (the paper's wording) so any classifier works without a
      feature hook.
    - Every deviation of :class:`~obliviate.unlearning.gs_lora.GSLoRA` applies (proximal group
      soft-thresholding, all linear layers adapted, frozen backbone in eval mode).
    - The paper's practical settings (few-shot, missing classes) are not modelled separately:
      the method sees the retain sample it is given (``retain_fraction``).

    References
    ----------
    Zhao, H., Zhu, F., Ni, B., Zhu, F., Meng, G. & Zhang, Z. (2025). Practical Continual
    Forgetting for Pre-trained Vision Models. arXiv:2501.09705.
    Zhao, H. et al. (2024). Continual Forgetting for Pre-trained Vision Models. CVPR 2024.
    """

    guarantee: ClassVar[Literal["exact", "approximate"]] = "approximate"
    needs: ClassVar[frozenset[str]] = frozenset({"retain"})
    learned_state: ClassVar[tuple[str, ...]] = ("group_norms_", "zeroed_groups_")
    model_requirement: ClassVar[str | None] = G.REQUIREMENT

    def __init__(
        self,
        *,
        rank: int = 4,
        lora_alpha: int = 8,
        reg_strength: float = 0.05,
        forget_weight: float = 1.0,
        bound: float = 3.0,
        prototype_weight: float = 0.5,
        prototype_bound: float = 3.0,
        temperature: float = 0.1,
        warmup_epochs: int = 1,
        n_epochs: int = 4,
        lr: float = 0.01,
        batch_size: int = 32,
        optimizer: str = "adam",
        retain_fraction: float = 0.5,
        include_conv: bool = True,
        seed: int = 0,
    ) -> None:
        o = "GSLoRAPP"
        G.check_hyperparameters(
            o,
            rank=rank,
            lora_alpha=lora_alpha,
            reg_strength=reg_strength,
            forget_weight=forget_weight,
            bound=bound,
            warmup_epochs=warmup_epochs,
            n_epochs=n_epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer=optimizer,
            retain_fraction=retain_fraction,
            include_conv=include_conv,
            seed=seed,
        )
        check_number("prototype_weight", prototype_weight, low=0, owner=o)
        check_number("prototype_bound", prototype_bound, low=0, low_open=True, owner=o)
        check_number("temperature", temperature, low=0, low_open=True, owner=o)
        self.rank = rank
        self.lora_alpha = lora_alpha
        self.reg_strength = reg_strength
        self.forget_weight = forget_weight
        self.bound = bound
        self.prototype_weight = prototype_weight
        self.prototype_bound = prototype_bound
        self.temperature = temperature
        self.warmup_epochs = warmup_epochs
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.retain_fraction = retain_fraction
        self.include_conv = include_conv
        self.seed = seed

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        assert request.retain is not None
        n_classes = request.forget.n_classes
        # prototypes of the input model, before LoRA is attached
        p_forget, has_f = G.class_prototypes(model, request.forget, n_classes)
        p_retain, has_r = G.class_prototypes(model, request.retain, n_classes)
        protos = torch.where(has_r.unsqueeze(1), p_retain, p_forget)
        present = has_f | has_r
        index = torch.cumsum(present.long(), 0) - 1  # class -> row of the prototype table
        protos = protos[present]

        beta, bound, gamma = self.forget_weight, self.bound, self.prototype_weight
        bound_pro, tau = self.prototype_bound, self.temperature

        def loss(m: nn.Module, retain: Batch, forget: Batch) -> Tensor:
            ce = nn.functional.cross_entropy
            z_r, z_f = G.model_logits(m, retain), G.model_logits(m, forget)
            total = ce(z_r, retain.y) + beta * G.bounded_forget_loss(ce(z_f, forget.y), bound)
            if gamma > 0:
                pk = protos.to(z_r.dtype)
                pull = ce(G.prototype_logits(z_r, pk, tau), index[retain.y])
                push = G.bounded_forget_loss(
                    ce(G.prototype_logits(z_f, pk, tau), index[forget.y]), bound_pro
                )
                total = total + gamma * (pull + push)
            return total

        return G.unlearn_request(self, model, request, loss, "gs_lora_pp")


__all__ = ["GSLoRAPP"]
