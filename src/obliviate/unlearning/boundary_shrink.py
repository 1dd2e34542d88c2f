"""Boundary Shrink (Chen et al., CVPR 2023): relabel the forget set with its nearest wrong class."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from obliviate._rng import derive_seed
from obliviate._validation import check_number, check_schedule
from obliviate.models.base import logits, seeded_init
from obliviate.training import batches, cross_entropy, eval_mode
from obliviate.unlearning._ops import frozen_copy, run_steps, trainable
from obliviate.unlearning.base import ForgetRequest, Unlearner


def nearest_wrong_labels(
    model: nn.Module, x: Tensor, y: Tensor, epsilon: float, task: Tensor | None = None
) -> Tensor:
    """Boundary Shrink's neighbour search: the label of the nearest decision region that is not
    ``y``, found by one FGSM step.

    ``x_adv = x + epsilon * sign(grad_x CE(f(x), y))`` (Goodfellow et al., 2015);
    the label is ``argmax_{c != y} f(x_adv)_c``. ``x``: ``[B, *sample_shape]`` float;
    ``y``: ``[B]`` int64; returns ``[B]`` int64, never equal to ``y``. ``model`` is evaluated in
    eval mode (its mode is restored) and its weights get no gradient.
    """
    with eval_mode(model):
        xa = x.detach().clone().requires_grad_(True)
        loss = F.cross_entropy(logits(model, xa, task), y)
        (gx,) = torch.autograd.grad(loss, [xa])
        with torch.no_grad():
            adv = logits(model, x + epsilon * gx.sign(), task)
            adv[torch.arange(len(y), device=adv.device), y] = -torch.inf
            return adv.argmax(dim=1)


class BoundaryShrink(Unlearner):
    """Fine-tune the forget set towards its nearest wrong classes, shrinking its decision region.

    For every forget row ``(x, y)`` the original model (frozen) gives the *nearest but incorrect*
    label ``y_nbi`` by an FGSM step of size ``epsilon`` (:func:`nearest_wrong_labels`; Chen et
    al.'s "neighbour searching"); the model is then fine-tuned with cross-entropy on
    ``(x, y_nbi)`` (the shrink objective ``min_w sum CE(f(x), y_nbi)``), which
    moves the forget rows just across the nearest boundary instead of to a random class.

    Parameters
    ----------
    epsilon:
        FGSM step in input units (the inputs are standardised features here; the paper's L-inf
        bound is 0.1 on [0, 1] images).
    n_epochs:
        passes over the forget set (paper: 10).
    lr, momentum, batch_size:
        SGD on the forget set (paper code: lr 1e-5, momentum 0.9; see Notes).
    seed:
        data order.

    Notes
    -----
    - The public implementations search with FGSM or a few L-inf PGD steps (bound 0.1 on
      normalised images) and keep ``argmax f(x_adv)`` even when the attack fails (then the
      "nearest" label is the true one); here one FGSM step, as the paper describes, and the
      highest *wrong* class of the adversarial logits, so the label is always wrong.
    - The neighbour labels are computed once from the original model (the reference's attack
      model is a frozen copy of the original too, so its labels are the same every epoch).
    - ``lr`` 1e-3 (``n_epochs`` 10 and momentum 0.9 as in the paper) was set on the retain/forget
      sets of digits with the default MLP (seed 0): the paper's 1e-5 (for CIFAR ResNets) changes
      nothing in 10 epochs of a few steps; 1e-2 forgets class 3 but on random:10 % relabels so
      many rows that retain accuracy falls to 0.31 (1e-3: 0.96).
    - Large forget sets: on MNIST random:10 % (6000 rows, ~1900 steps) the defaults collapse the
      model (retain accuracy 0.15, seed 0); lower ``lr`` or ``n_epochs`` there.
    - The method is defined for class forgetting; on random forgetting every forget row is still
      pushed across its nearest boundary, which is further than the oracle goes (the oracle still
      predicts most random forget rows correctly).

    References
    ----------
    Chen, M., Gao, W., Liu, G., Peng, K. & Wang, C. (2023). Boundary Unlearning: Rapid Forgetting
    of Deep Networks via Shifting the Decision Space. CVPR 2023. arXiv:2303.11570.
    Checked against the abstract only (CVF open-access page): two boundary-shift methods for
    forgetting a whole class, Boundary Shrink and Boundary Expanding. Section and equation
    numbers not verified against the paper (no readable copy of its full text here); the
    neighbour search follows the public implementations described under Notes.
    """

    guarantee: ClassVar[Literal["exact", "approximate"]] = "approximate"
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        epsilon: float = 0.5,
        n_epochs: int = 10,
        lr: float = 0.001,
        momentum: float = 0.9,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        o = "BoundaryShrink"
        check_number("epsilon", epsilon, low=0, low_open=True, owner=o)
        check_schedule(
            o, n_epochs=n_epochs, lr=lr, momentum=momentum, batch_size=batch_size, seed=seed
        )
        self.epsilon = epsilon
        self.n_epochs = n_epochs
        self.lr = lr
        self.momentum = momentum
        self.batch_size = batch_size
        self.seed = seed

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        model = trainable(model)
        forget = request.forget
        original = frozen_copy(model)
        y_nbi = torch.cat(
            [
                nearest_wrong_labels(original, b.x, b.y, self.epsilon, b.task)
                for b in batches(forget, 256, None)
            ]
        )
        # a user model's dropout draws from the global RNG: seed it from ``seed``
        with seeded_init(derive_seed(self.seed, "boundary_shrink", "dropout")):
            run_steps(
                model,
                replace(forget, y=y_nbi),
                cross_entropy,
                n_epochs=self.n_epochs,
                lr=self.lr,
                momentum=self.momentum,
                batch_size=self.batch_size,
                seed=self.seed,
                key="boundary_shrink",
            )
        return model
