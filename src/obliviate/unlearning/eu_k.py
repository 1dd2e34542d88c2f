"""EU-k (Goel et al., 2022): "exact unlearning" of the last k layers: re-initialise, retrain."""

from __future__ import annotations

from typing import ClassVar, Literal

from torch import nn

from obliviate._validation import check_number, check_schedule
from obliviate.unlearning._last_layers import global_rng_from, tune_last_layers
from obliviate.unlearning._ops import trainable
from obliviate.unlearning.base import ForgetRequest, Unlearner


class EUk(Unlearner):
    """Re-initialise the last ``k`` layers and train them from scratch on the retain set.

    The first layers are frozen (bitwise unchanged, batch-norm statistics included); the last
    ``k`` are re-drawn by their own ``reset_parameters`` (from ``seed``) and trained on the
    retain set only, so nothing of the forget set can remain *in those layers*. Goel et al.
    (2022), the "EU-k" method.

    A layer is a module that owns parameters (``Linear``, ``Conv*``, ``BatchNorm*``, ...); the
    last ``k`` are the last ``k`` such modules in registration order
    (:mod:`obliviate.unlearning._last_layers`). Works on any ``nn.Module`` whose last ``k``
    layers have ``reset_parameters`` (every ``torch.nn`` layer does).

    The guarantee is **approximate**: the layers before the last ``k`` were trained on the
    forget set and keep whatever they learnt of it, so the whole model is not what retraining
    without the forget set would give (the paper's "exact" applies to the last ``k`` layers
    only, given the frozen features). With ``k`` equal to the model's layer count every layer
    is re-drawn and trained on the retain set, but from a different initialisation and schedule
    than the original recipe's, so even then the result is not bitwise the retrained oracle.

    Parameters
    ----------
    k : int, >= 1
        Number of trailing parameterised layers re-initialised and trained (the paper's ``k``).
        A ``k`` larger than the model's layer count raises :class:`ObliviateError` at
        unlearning time.
    n_epochs : int, >= 1
        Passes over the retain set.
    lr, batch_size, optimizer, momentum, weight_decay :
        The optimiser of the trained layers.
    seed : int
        The new initialisation and the data order.

    Notes
    -----
    - What counts as a layer in the paper follows its architectures; here every module that
      owns parameters counts (a batch-norm layer is one layer), which defines ``k`` for any
      user model.
    - The paper retrains with the original schedule; here ``n_epochs`` (default 10) and ``lr``
      were set on the digits MLP so that the method costs a fraction of retraining.

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
        n_epochs: int = 10,
        lr: float = 0.01,
        batch_size: int = 32,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        seed: int = 0,
    ) -> None:
        check_number("k", k, low=1, integer=True, owner="EUk")
        check_schedule(
            "EUk",
            n_epochs=n_epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer=optimizer,
            momentum=momentum,
            seed=seed,
        )
        check_number("weight_decay", weight_decay, low=0, owner="EUk")
        self.k = k
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.seed = seed

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        with global_rng_from(self.seed, "eu_k"):  # dropout masks of user models
            return self._run(trainable(model), request)

    def _run(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        assert request.retain is not None
        return tune_last_layers(
            model, request.retain, self.get_params(), owner="EUk", key="eu_k", reinit=True
        )
