"""NegMerge (Kim, Han & Choe, ICML 2025): negate the sign-consensual merge of task vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from obliviate._validation import check_choice, check_number, check_schedule
from obliviate.errors import ObliviateError
from obliviate.training import OPTIMIZERS, accuracy
from obliviate.unlearning._last_layers import global_rng_from
from obliviate.unlearning._ops import clone_model, cross_entropy, run_steps, trainable
from obliviate.unlearning.base import ForgetRequest, Unlearner
from obliviate.unlearning.random_label import retain_sample


def sign_consensus_merge(task_vectors: list[Tensor]) -> Tensor:
    """The NegMerge merge of the task vectors of one parameter (Kim et al., 2025; the method
    section's merging rule and the reference code).

    ``task_vectors``: ``n >= 1`` tensors of one shape, ``tau_i = theta_i - theta_orig``. Each
    element of the result is the mean of the ``tau_i`` where all ``n`` share the same nonzero
    sign, and 0 elsewhere (a zero in any ``tau_i`` breaks the consensus), as in the reference
    code (``|sum_i sign(tau_i)| == n``). Same shape and dtype as the inputs.
    """
    if not task_vectors:
        raise ObliviateError("sign_consensus_merge needs at least one task vector")
    stacked = torch.stack(task_vectors)
    consensus = torch.sign(stacked).sum(dim=0).abs() == len(task_vectors)
    return torch.where(consensus, stacked.mean(dim=0), torch.zeros_like(stacked[0]))


def _check_grid(name: str, values: Sequence[float], *, integer: bool = False) -> None:
    if not isinstance(values, (tuple, list)) or not values:
        raise ObliviateError(
            f"NegMerge: {name} must be a non-empty tuple or list of numbers, got {values!r}"
        )
    for v in values:
        check_number(name, v, low=0, low_open=True, integer=integer, owner="NegMerge")


class NegMerge(Unlearner):
    """Fine-tune on the forget set with several hyperparameters, merge, negate.

    1. For every configuration ``c`` of the grid ``lrs x epoch_grid``, fine-tune a copy of the
       original ``theta_o`` on the forget set (cross-entropy, gradient *descent*) and take its
       task vector ``tau_c = theta_c - theta_o``.
    2. Merge them element-wise by sign consensus (:func:`sign_consensus_merge`): the mean
       where every ``tau_c`` has the same sign, 0 elsewhere.
    3. Return ``theta_o - lambda * tau_merged``, with ``lambda`` (the scaling coefficient) the
       value of ``coefficients`` that minimises forget accuracy while keeping retain accuracy
       at least ``retain_threshold`` times the original's (the reference code's selection rule,
       ``find_optimal_coef`` with a control threshold of 0.95); if no coefficient keeps it,
       the smallest.

    Only parameters are merged; buffers (batch-norm statistics) stay the original's.

    Parameters
    ----------
    lrs : tuple (or list) of float, each > 0
        Learning rates of the fine-tuning grid.
    epoch_grid : tuple (or list) of int, each >= 1
        Epoch counts of the fine-tuning grid (every pair with ``lrs`` is one fine-tuned model).
    coefficients : tuple (or list) of float, each > 0
        Candidate values of the negation coefficient ``lambda``.
    retain_threshold : float in [0, 1]
        Minimum retain accuracy, as a fraction of the original's, when choosing ``lambda``.
    retain_fraction : float in (0, 1]
        Fraction of the retain set on which retain accuracy is measured for that choice.
    batch_size, optimizer, momentum :
        The fine-tuning optimiser (one for every configuration).
    seed : int
        Data order of the fine-tuning runs and the retain sample.

    Attributes
    ----------
    coefficient_ : float
        The chosen ``lambda``.
    consensus_fraction_ : float
        The fraction of parameter elements whose task vectors agree in sign.

    Notes
    -----
    - The paper fine-tunes CLIP/ResNet models with grids over learning rate, epochs and
      augmentation strength and selects ``lambda`` on held-out validation sets of the forget
      and control tasks; here the grid is learning rate x epochs (no augmentation: the data
      are feature vectors), and ``lambda`` is chosen on the forget set and a retain sample,
      the only data a request carries.
    - Buffers are not merged: negating a change of batch-norm running variance can make it
      negative.
    - Defaults were set on the digits MLP, where the original fits its forget set exactly, so
      its task vectors are small and need learning rates well above the original's.

    References
    ----------
    Kim, H. S., Han, D. & Choe, J. (2025). NegMerge: Sign-consensual weight merging for machine
    unlearning. ICML 2025, PMLR 267:30067-30085. arXiv:2410.05583. Checked against the abstract
    only (PMLR page): task vectors of models fine-tuned on the forget set with varying
    hyperparameters, merged keeping only the elements whose signs agree, the merged vector
    negated on the original model. Section and equation numbers not verified against the paper
    (no readable copy of its full text here); reference code named by the abstract:
    github.com/naver-ai/negmerge.
    """

    guarantee: ClassVar[Literal["exact", "approximate"]] = "approximate"
    needs: ClassVar[frozenset[str]] = frozenset({"retain"})
    learned_state: ClassVar[tuple[str, ...]] = ("coefficient_", "consensus_fraction_")

    def __init__(
        self,
        *,
        lrs: tuple[float, ...] = (0.05, 0.1, 0.2),
        epoch_grid: tuple[int, ...] = (2, 5),
        coefficients: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
        retain_threshold: float = 0.95,
        retain_fraction: float = 0.3,
        batch_size: int = 32,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        seed: int = 0,
    ) -> None:
        _check_grid("lrs", lrs)
        _check_grid("epoch_grid", epoch_grid, integer=True)
        _check_grid("coefficients", coefficients)
        check_number("retain_threshold", retain_threshold, low=0, high=1, owner="NegMerge")
        check_number(
            "retain_fraction", retain_fraction, low=0, high=1, low_open=True, owner="NegMerge"
        )
        check_schedule("NegMerge", batch_size=batch_size, momentum=momentum, seed=seed)
        check_choice("optimizer", optimizer, OPTIMIZERS, owner="NegMerge")
        self.lrs = lrs
        self.epoch_grid = epoch_grid
        self.coefficients = coefficients
        self.retain_threshold = retain_threshold
        self.retain_fraction = retain_fraction
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.seed = seed

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        with global_rng_from(self.seed, "negmerge"):  # dropout masks of user models
            return self._run(trainable(model), request)

    def _run(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        assert request.retain is not None
        names = [n for n, _ in model.named_parameters()]
        theta_o = {n: p.detach().clone() for n, p in model.named_parameters()}
        vectors: dict[str, list[Tensor]] = {n: [] for n in names}
        for i, (lr, n_epochs) in enumerate((lr, e) for lr in self.lrs for e in self.epoch_grid):
            ft = clone_model(model)
            run_steps(
                ft,
                request.forget,
                cross_entropy,
                n_epochs=n_epochs,
                batch_size=self.batch_size,
                lr=lr,
                optimizer=self.optimizer,
                momentum=self.momentum,
                seed=self.seed,
                key=("negmerge", i),
            )
            for n, p in ft.named_parameters():
                vectors[n].append(p.detach() - theta_o[n])
        merged = {n: sign_consensus_merge(vectors[n]) for n in names}
        n_total = sum(t.numel() for t in merged.values())
        n_agree = sum(
            int((torch.sign(torch.stack(vectors[n])).sum(0).abs() == len(vectors[n])).sum())
            for n in names
        )
        self.consensus_fraction_ = n_agree / max(n_total, 1)

        sample = retain_sample(request.retain, self.retain_fraction, self.seed, "negmerge")
        base_retain = accuracy(model, sample) if len(sample) else float("nan")
        best: tuple[float, float] | None = None  # (forget accuracy, coefficient)
        for lam in sorted(self.coefficients):
            self._apply(model, theta_o, merged, lam)
            ok = not len(sample) or accuracy(model, sample) >= self.retain_threshold * base_retain
            if ok:
                fa = accuracy(model, request.forget)
                if best is None or fa < best[0]:
                    best = (fa, lam)
        lam = min(self.coefficients) if best is None else best[1]
        self._apply(model, theta_o, merged, lam)
        self.coefficient_ = float(lam)
        return model

    @staticmethod
    @torch.no_grad()
    def _apply(
        model: nn.Module, theta_o: dict[str, Tensor], merged: dict[str, Tensor], lam: float
    ) -> None:
        for n, p in model.named_parameters():
            p.copy_(theta_o[n] - lam * merged[n])
