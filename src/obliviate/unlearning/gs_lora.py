"""GS-LoRA: group-sparse LoRA for (continual) forgetting (Zhao et al., CVPR 2024)."""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import Tensor, nn

from obliviate.training import Batch
from obliviate.unlearning import _group_lora as G
from obliviate.unlearning._group_lora import (
    attach_lora,
    group_norms,
    group_sparse_penalty,
    merge,
    prox_group_sparse,
)
from obliviate.unlearning.base import ForgetRequest, Unlearner


class GSLoRA(Unlearner):
    """Forget with LoRA modules trained under a group-sparse penalty, then merged.

    Per request (Zhao et al., 2024, Sec. 3): LoRA factors ``(A_g, B_g)`` are attached to every
    linear layer ``g`` (``W_g' = W_g + (lora_alpha / rank) B_g A_g``; the paper adapts the FFN
    layers of each Transformer block, one group per block) and trained, the rest frozen, on

    ``L = L_data + alpha * L_structure``                                  (the paper's total loss)
    ``L_data = L_retain + beta * L_forget``
    ``L_retain = CE(f(x_r), y_r)``     on retained (rehearsal) rows: the knowledge retention
    ``L_forget = ReLU(BND - CE(f(x_f), y_f))``   the bounded forget loss (zero once CE >= BND)
    ``L_structure = sum_g ||theta_g||_2``, ``theta_g = (A_g, B_g)``       the group lasso

    so the penalty selects a few groups and zeroes the others. After training, the LoRA deltas
    are merged into the weights: the result is a plain model of the input's class, and the
    layers whose group was zeroed keep their original weights bit for bit. Continual forgetting
    applies it request after request to the previous result (fresh LoRA each time, as the paper
    trains one LoRA per task and merges it).

    Parameters
    ----------
    rank : int >= 1
        LoRA rank ``r``.
    lora_alpha : int >= 1
        LoRA scaling numerator (scaling ``lora_alpha / rank``; peft's ``lora_alpha``).
    reg_strength : float >= 0
        ``alpha``, the weight of the group-sparse penalty.
    forget_weight : float > 0
        ``beta``, the weight of the forget loss.
    bound : float > 0
        ``BND``, the forget cross-entropy at which the forget loss stops pushing (nats).
    warmup_epochs : int >= 0
        Epochs trained without the group-sparse penalty before it switches on.
    n_epochs, lr, batch_size, optimizer :
        The optimiser of the LoRA factors (passes over the larger of the retain sample and the
        forget set; every step pairs a retain batch with a forget batch, the smaller set cycled).
    retain_fraction : float in (0, 1]
        Fraction of the retain set used as rehearsal data.
    include_conv : bool
        Also adapt ``nn.Conv1d``/``nn.Conv2d`` layers (one group each).
    seed : int
        Draws the LoRA init, the retain sample and the data order.

    Notes
    -----
    - The penalty is minimised by its proximal operator (group soft-thresholding with threshold
      ``lr * alpha`` after every optimiser step) instead of adding ``alpha * L_structure`` to the
      loss and back-propagating its subgradient (the paper): the same objective, but groups reach
      exact zeros, so "a zeroed group leaves its layer unchanged" holds bit for bit. With Adam
      the proximal step is the usual heuristic split (exact proximal gradient with SGD), and
      the threshold must beat Adam's per-coordinate steps: on a 4-layer digits MLP groups are
      zeroed from ``reg_strength`` about 5 (the default 0.05 zeroes none there).
    - The paper adapts the FFN layers of Transformer blocks; obliviate's models are MLPs/CNNs,
      so every ``nn.Linear`` (output layer included) is a group.
    - The equations were reconstructed from the papers' text as reachable here (abstract and
      method summary: LoRA on FFN layers, group lasso over LoRA groups, bounded ``BND`` forget
      loss, rehearsal retain CE); there is no separate distillation term.
    - The backbone runs in eval mode during training (frozen BatchNorm statistics, no dropout).
    - Defaults (``n_epochs``, ``lr``, ``bound``, ``reg_strength``) were set on digits (train
      split: forget and retain accuracy), not on test data; the paper's ``BND`` suits its face
      transformer's CosFace logits, not a small MLP.
    - peft (:class:`~peft.tuners.lora.LoraModel`) provides the LoRA layers and the merge.

    References
    ----------
    Zhao, H., Ni, B., Wang, H., Fan, J., Zhu, F., Wang, Y., Chen, Y., Meng, G. & Zhang, Z.
    (2024). Continual Forgetting for Pre-trained Vision Models. CVPR 2024. arXiv:2403.11530.
    Hu, E. J. et al. (2022). LoRA: Low-Rank Adaptation of Large Language Models. ICLR 2022.
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
        warmup_epochs: int = 1,
        n_epochs: int = 4,
        lr: float = 0.01,
        batch_size: int = 32,
        optimizer: str = "adam",
        retain_fraction: float = 0.5,
        include_conv: bool = True,
        seed: int = 0,
    ) -> None:
        o = "GSLoRA"
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
        self.rank = rank
        self.lora_alpha = lora_alpha
        self.reg_strength = reg_strength
        self.forget_weight = forget_weight
        self.bound = bound
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
        beta, bound = self.forget_weight, self.bound

        def loss(m: nn.Module, retain: Batch, forget: Batch) -> Tensor:
            ce = nn.functional.cross_entropy
            l_retain = ce(G.model_logits(m, retain), retain.y)
            l_forget = G.bounded_forget_loss(ce(G.model_logits(m, forget), forget.y), bound)
            return l_retain + beta * l_forget

        return G.unlearn_request(self, model, request, loss, "gs_lora")


__all__ = [
    "GSLoRA",
    "attach_lora",
    "group_norms",
    "group_sparse_penalty",
    "merge",
    "prox_group_sparse",
]
