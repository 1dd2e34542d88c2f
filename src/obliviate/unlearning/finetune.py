"""Fine-tuning on the retain set only ("catastrophic forgetting" of the forget set)."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from obliviate._validation import check_schedule
from obliviate.unlearning._ops import cross_entropy, run_steps, trainable
from obliviate.unlearning.base import ForgetRequest, Unlearner


class Finetune(Unlearner):
    """Continue training the original model on the retain set only, for a few epochs.

    The forget set is never shown again; whatever the model forgets of it, it forgets by
    interference, as a continual learner would. Baseline of Warnecke et al. (2023) and of
    Golatkar et al. (2020) ("Fine-tune").

    Parameters
    ----------
    n_epochs : int, >= 1
        Passes over the retain set.
    lr : float, > 0
        Learning rate (plain SGD with ``momentum``; a larger rate than the original's final one
        speeds up forgetting).
    batch_size : int, >= 1
    momentum : float in [0, 1)
    seed : int
        Data order.

    Notes
    -----
    No learning-rate schedule; the papers' settings (tens of epochs on CIFAR) are scaled down
    so that the method costs a few percent of retraining on the small benchmark models.

    References
    ----------
    Golatkar, A., Achille, A. & Soatto, S. (2020). Eternal sunshine of the spotless net:
    selective forgetting in deep networks. CVPR.
    Warnecke, A. et al. (2023). Machine unlearning of features and labels. NDSS.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"retain"})

    def __init__(
        self,
        *,
        n_epochs: int = 2,
        lr: float = 0.05,
        batch_size: int = 32,
        momentum: float = 0.9,
        optimizer: str = "sgd",
        seed: int = 0,
    ) -> None:
        check_schedule(
            "Finetune",
            n_epochs=n_epochs,
            lr=lr,
            batch_size=batch_size,
            momentum=momentum,
            optimizer=optimizer,
            seed=seed,
        )
        self.n_epochs, self.lr, self.batch_size = n_epochs, lr, batch_size
        self.momentum, self.optimizer, self.seed = momentum, optimizer, seed

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        out = trainable(model)
        assert request.retain is not None
        run_steps(
            out,
            request.retain,
            cross_entropy,
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            optimizer=self.optimizer,
            seed=self.seed,
            key="finetune",
        )
        return out
