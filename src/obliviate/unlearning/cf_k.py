"""CF-k (Goel et al., 2022): catastrophic forgetting of the last k layers."""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import nn

from obliviate._validation import check_number, check_schedule
from obliviate.unlearning._last_layers import global_rng_from, tune_last_layers
from obliviate.unlearning._ops import trainable
from obliviate.unlearning.base import ForgetRequest, Unlearner


class CFk(Unlearner):
    """Fine-tune only the last ``k`` layers of the original model on the retain set.

    The first layers are frozen (bitwise unchanged, batch-norm statistics included); the last
    ``k`` keep their trained weights as a starting point and are trained on the retain set
    only, so the forget set is forgotten by interference ("catastrophic forgetting"), in the
    part of the network closest to the output. Goel et al. (2022), the "CF-k" method.

    A layer is a module that owns parameters (``Linear``, ``Conv*``, ``BatchNorm*``, ...); the
    last ``k`` are the last ``k`` such modules in registration order
    (:mod:`obliviate.unlearning._last_layers`). Works on any ``nn.Module``.

    Parameters
    ----------
    k : int, >= 1
        Number of trailing parameterised layers trained (the paper's ``k``). A ``k`` larger
        than the model's layer count raises :class:`ObliviateError` at unlearning time.
    n_epochs : int, >= 1
        Passes over the retain set.
    lr, batch_size, optimizer, momentum, weight_decay :
        The optimiser of the trained layers.
    seed : int
        Data order.

    Notes
    -----
    - What counts as a layer in the paper follows its architectures; here every module that
      owns parameters counts (a batch-norm layer is one layer), which defines ``k`` for any
      user model.
    - The paper trains for the original model's schedule; here ``n_epochs`` (default 5) and
      ``lr`` were set on the digits MLP so that the method costs a fraction of retraining.

    References
    ----------
    Goel, S., Prabhu, A., Sanyal, A., Lim, S.-N., Torr, P. & Kumaraguru, P. (2022). Towards
    adversarial evaluation of inexact machine unlearning. arXiv:2201.06640. Checked against
    the abstract only, which names EU-k and CF-k as its two baseline methods. Section and
    equation numbers not verified against the paper (no readable copy of its full text here).
    """

    guarantee: ClassVar[Literal["exact", "approximate"]] = "approximate"
    needs: ClassVar[frozenset[str]] = frozenset({"retain"})

    def __init__(
        self,
        *,
        k: int = 1,
        n_epochs: int = 5,
        lr: float = 0.01,
        batch_size: int = 32,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        check_number("k", k, low=1, integer=True, owner="CFk")
        check_schedule(
            "CFk",
            n_epochs=n_epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer=optimizer,
            momentum=momentum,
            seed=seed,
        )
        check_number("weight_decay", weight_decay, low=0, owner="CFk")
        self.k = k
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.seed = seed

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        with global_rng_from(self.seed, "cf_k"):  # dropout masks of user models
            return self._run(trainable(model), request)

    def _run(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        assert request.retain is not None
        return tune_last_layers(
            model, request.retain, self.get_params(), owner="CFk", key="cf_k", reinit=False
        )
