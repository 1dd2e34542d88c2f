"""NegGrad: gradient ascent on the forget set's loss."""

from __future__ import annotations

from torch import Tensor, nn

from obliviate._validation import check_number, check_schedule
from obliviate.training import Batch
from obliviate.unlearning._ops import cross_entropy, run_steps, trainable
from obliviate.unlearning.base import ForgetRequest, Unlearner


class GradientAscent(Unlearner):
    """Maximise the cross-entropy on the forget set (gradient ascent, "NegGrad").

    Each step takes a minibatch of the forget set and steps *up* its loss,
    ``w <- w + lr * grad CE(w; forget batch)``. Needs nothing beyond the forget set, and knows
    no stopping point: too many steps destroy the model, so the defaults are short.

    Parameters
    ----------
    n_epochs : int, >= 1
        Passes over the forget set.
    lr : float, > 0
        Ascent step size (plain SGD).
    batch_size : int, >= 1
    max_loss : float, > 0
        The ascent stops for a batch once its mean loss exceeds ``max_loss`` (a guard against
        divergence; ``inf`` disables it).
    seed : int
        Data order.

    Notes
    -----
    ``max_loss`` is an addition to the plain method (the papers stop by step count only).

    References
    ----------
    Golatkar, A., Achille, A. & Soatto, S. (2020). Eternal sunshine of the spotless net. CVPR.
    Thudi, A., Deza, G., Chandrasekaran, V. & Papernot, N. (2022). Unrolling SGD: understanding
    factors influencing machine unlearning. EuroS&P.
    """

    def __init__(
        self,
        *,
        n_epochs: int = 5,
        lr: float = 0.1,
        batch_size: int = 32,
        max_loss: float = 5.0,
        seed: int = 0,
    ) -> None:
        check_schedule("GradientAscent", n_epochs=n_epochs, lr=lr, batch_size=batch_size, seed=seed)
        if max_loss != float("inf"):
            check_number("max_loss", max_loss, low=0, low_open=True, owner="GradientAscent")
        self.n_epochs, self.lr, self.batch_size, self.max_loss, self.seed = (
            n_epochs,
            lr,
            batch_size,
            max_loss,
            seed,
        )

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        out = trainable(model)
        max_loss = self.max_loss

        def loss(m: nn.Module, batch: Batch) -> Tensor:
            ce = cross_entropy(m, batch)
            return -ce if float(ce.detach()) < max_loss else ce * 0.0

        run_steps(
            out,
            request.forget,
            loss,
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            key="gradient_ascent",
        )
        return out
