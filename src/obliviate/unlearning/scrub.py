"""SCRUB (Kurmanji et al., NeurIPS 2023): max-min teacher-student unlearning."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from obliviate._rng import generator
from obliviate._validation import check_number, check_schedule
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.models.base import logits
from obliviate.training import (
    TrainConfig,
    accuracy,
    batches,
    global_rng_from,
    make_optimizer,
    min_batch_rows,
    train_mode,
)
from obliviate.unlearning._ops import frozen_copy, kl_to_teacher, trainable
from obliviate.unlearning.base import ForgetRequest, Unlearner


def rewind_index(forget_errors: Sequence[float], target: float) -> int:
    """SCRUB+R's checkpoint choice: the index of the forget error closest to ``target``.

    ``forget_errors[i]``: the forget-set error (in [0, 1]) of the checkpoint after epoch
    ``i + 1``; ``target``: the reference error (:func:`rewind_reference`). Ties go to the
    *earliest* checkpoint, as in the authors' code (``min(enumerate(acc_fs), key=lambda x:
    abs(x[1] - acc_fvs[-1]))``, whose Python ``min`` keeps the first minimum; repository
    ``meghdadk/SCRUB``, ``MIA_experiments.ipynb``, commit 98ffb11): among checkpoints equally
    close to the reference, the one fewest steps from the original. Raises
    :class:`ObliviateError` for no checkpoints.
    """
    if len(forget_errors) == 0:
        raise ObliviateError("rewind_index needs at least one checkpoint error")
    gaps = [abs(float(e) - float(target)) for e in forget_errors]
    return gaps.index(min(gaps))


def forget_distribution_rows(validation: Dataset, forget: Dataset) -> Dataset:
    """The rows of ``validation`` whose label is one of ``forget``'s labels.

    The authors' "forget validation set" (``meghdadk/SCRUB``, ``MIA_experiments.ipynb``,
    commit 98ffb11: ``fgt_cls = np.unique(forget_loader.dataset.targets)``, validation rows
    whose target is in ``fgt_cls``): the held-out rows from the forget set's class
    distribution. For a random or selective forget set that covers every class this is the
    whole validation set; for class forgetting, the held-out rows of the forgotten classes.
    """
    keep = torch.isin(validation.y, torch.unique(forget.y.to(validation.y.device)))
    return validation.subset(torch.nonzero(keep).reshape(-1).cpu())


def rewind_reference(model: nn.Module, validation: Dataset, forget: Dataset) -> float:
    """SCRUB+R's reference forget error: ``model``'s error (in [0, 1]) on the rows of
    ``validation`` from the forget set's classes (:func:`forget_distribution_rows`).

    ``model`` is the SCRUB model after the last epoch (the authors take ``acc_fvs[-1]``, the
    error after the final epoch). Raises :class:`ObliviateError` when no validation row has a
    label of the forget set.
    """
    rows = forget_distribution_rows(validation, forget)
    if len(rows) == 0:
        labels = sorted({int(v) for v in forget.y.tolist()})
        raise ObliviateError(
            f"SCRUB: rewind=True found no held-out row with a forget-set label ({labels}) in "
            f"the {len(validation)} validation rows; supply held-out rows of those classes, "
            "or pass rewind_target=<error in [0, 1]>"
        )
    return 1.0 - accuracy(model, rows)


class SCRUB(Unlearner):
    """Alternate *max* steps on the forget set and *min* steps on the retain set.

    The student starts as the original model; the teacher is the original, frozen. With
    ``d(x) = KL(teacher(x) || student(x))`` on temperature-softened outputs (Kurmanji et al.,
    eq. 1), each epoch ``e`` runs (eq. 3 and Algorithm 1)

    - if ``e < msteps``: one pass over the forget set minimising ``-d(x)`` (move away from the
      teacher on the forget set);
    - one pass over the retain set minimising ``alpha d(x) + gamma CE(student(x), y)`` (stay
      close to the teacher and accurate on the retain set).

    With ``rewind=True`` (SCRUB+R, the paper's variant for user privacy, Sec. "SCRUB and
    Rewind") a checkpoint is kept after every epoch, and the one whose forget-set error is
    closest to a reference error is returned (:func:`rewind_index`; ties: the earliest): a
    forget error "just high enough", like that of a model that never saw the forget set, rather
    than suspiciously high (which a membership-inference attack would notice). The reference
    is ``rewind_target`` when given; otherwise, as in the authors' code, the error of the final
    SCRUB model (after the last epoch) on the held-out rows ``request.validation`` whose labels
    are among the forget set's (:func:`rewind_reference`). ``obliviate forget`` supplies those
    rows (a seeded 20 % per class of the test split, which its reported metrics then exclude).

    Parameters
    ----------
    n_epochs:
        total epochs (the reference code: 3 for class forgetting; here 5, see Notes).
    msteps:
        epochs that include a max pass (the reference code: 2; ``msteps <= n_epochs``).
    alpha, gamma:
        weights of the KL and the cross-entropy in the min step (reference code: 0.001, 0.99).
    temperature:
        distillation temperature (reference code: 4).
    lr, momentum, weight_decay, optimizer:
        one optimiser shared by both steps (reference code: SGD, momentum 0.9, weight decay 5e-4).
    batch_size, forget_batch_size:
        minibatch sizes of the min and max passes.
    seed:
        data order.
    rewind:
        SCRUB+R: return the epoch checkpoint whose forget error is closest to the reference.
    rewind_target:
        a fixed reference forget error in [0, 1] (only with ``rewind=True``); ``None`` (default):
        measure it on ``request.validation`` (the paper's procedure). With neither, unlearning
        raises :class:`ObliviateError` saying how to supply held-out rows.

    Attributes
    ----------
    forget_errors_ : list of float
        With ``rewind``: the forget-set error (in [0, 1]) after each epoch 1..``n_epochs``.
    rewind_epoch_ : int
        With ``rewind``: the epoch (1-based) of the returned checkpoint.
    rewind_reference_ : float
        With ``rewind``: the reference error used (``rewind_target``, or the measured one).
    n_validation_rows_ : int
        With ``rewind`` and a measured reference: the held-out rows it was measured on.

    Notes
    -----
    - SCRUB+R candidates are the states after epochs 1..``n_epochs``. The authors' list of
      forget errors also holds the original's (measured before epoch 1), but the checkpoint
      it would load (``..._step0.pt``) is never saved, so choosing it fails there; here the
      original is not a candidate.
    - The authors' held-out set is a seeded 20 % per class of the *training* set, removed
      before the original is trained and distinct from the test set (``datasets.py``,
      ``get_loaders``, commit 98ffb11). ``obliviate forget`` trains its original on the whole
      training split (shared by every method), so it carves the held-out rows from the test
      split instead and reports every metric of that run on the remaining test rows, so that
      the rows the rewind was calibrated on never score it.
    - The reference code's learning-rate decay epochs (after epoch 3) never trigger within its
      3-epoch class-forgetting runs and are omitted.
    - ``lr`` 0.03 and ``n_epochs`` 5 were set on the retain/forget sets of a small digits MLP:
      the reference's 5e-4 (and even 0.01) left forget accuracy ~0.99; 0.03 with 3 epochs forgot
      but cost ~2 retain points, which two more min-only epochs recover. Batch sizes follow the
      reference (retain 128, forget 32).
    - The reference's ``max`` epochs run for ``e <= msteps``; here ``e < msteps`` so that
      ``msteps`` counts max passes exactly.

    References
    ----------
    Kurmanji, M., Triantafillou, P., Hayes, J. & Triantafillou, E. (2023). Towards Unbounded
    Machine Unlearning. NeurIPS 2023. arXiv:2302.09880.
    """

    guarantee: ClassVar[Literal["exact", "approximate"]] = "approximate"
    needs: ClassVar[frozenset[str]] = frozenset({"retain"})
    learned_state: ClassVar[tuple[str, ...]] = (
        "forget_errors_",
        "rewind_epoch_",
        "rewind_reference_",
        "n_validation_rows_",
    )

    def __init__(
        self,
        *,
        n_epochs: int = 5,
        msteps: int = 2,
        alpha: float = 0.001,
        gamma: float = 0.99,
        temperature: float = 4.0,
        lr: float = 0.03,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        optimizer: str = "sgd",
        batch_size: int = 128,
        forget_batch_size: int = 32,
        seed: int = 0,
        rewind: bool = False,
        rewind_target: float | None = None,
    ) -> None:
        check_schedule(
            "SCRUB",
            n_epochs=n_epochs,
            lr=lr,
            momentum=momentum,
            optimizer=optimizer,
            batch_size=batch_size,
            seed=seed,
        )
        check_number("msteps", msteps, low=0, high=n_epochs, integer=True, owner="SCRUB")
        check_number("alpha", alpha, low=0, owner="SCRUB")
        check_number("gamma", gamma, low=0, owner="SCRUB")
        check_number("temperature", temperature, low=0, low_open=True, owner="SCRUB")
        check_number("weight_decay", weight_decay, low=0, owner="SCRUB")
        check_number("forget_batch_size", forget_batch_size, low=1, integer=True, owner="SCRUB")
        if not isinstance(rewind, bool):
            raise ObliviateError(f"SCRUB: rewind must be True or False, got {rewind!r}")
        if rewind_target is not None:
            check_number("rewind_target", rewind_target, low=0, high=1, owner="SCRUB")
            if not rewind:
                raise ObliviateError(
                    f"SCRUB: rewind_target={rewind_target!r} has no effect without rewind=True; "
                    "pass rewind=True to rewind to it, or drop rewind_target"
                )
        self.n_epochs = n_epochs
        self.msteps = msteps
        self.alpha = alpha
        self.gamma = gamma
        self.temperature = temperature
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.forget_batch_size = forget_batch_size
        self.seed = seed
        self.rewind = rewind
        self.rewind_target = rewind_target

    @property
    def uses_validation(self) -> bool:
        """Whether :meth:`unlearn` measures the rewind reference on ``request.validation``."""
        return self.rewind and self.rewind_target is None

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        assert request.retain is not None
        if self.uses_validation and (request.validation is None or len(request.validation) == 0):
            raise ObliviateError(
                "SCRUB: rewind=True without rewind_target needs held-out rows to measure the "
                "reference forget error: pass ForgetRequest(validation=<rows the original never "
                "trained on>) (obliviate forget does), or set rewind_target=<error in [0, 1]>"
            )
        out = trainable(model)
        teacher = frozen_copy(model)
        cfg = TrainConfig(
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            seed=self.seed,
        )
        opt = make_optimizer([p for p in out.parameters() if p.requires_grad], cfg)
        gen_max, gen_min = (
            generator(self.seed, "scrub", "max"),
            generator(self.seed, "scrub", "min"),
        )
        checkpoints: list[dict[str, torch.Tensor]] = []
        errors: list[float] = []
        train_mode(out)
        rows = min_batch_rows(out)  # no one-row batch for BatchNorm
        try:
            with global_rng_from(self.seed, "scrub"):  # dropout masks from the seed too
                for epoch in range(self.n_epochs):
                    if epoch < self.msteps:
                        for b in batches(
                            request.forget, self.forget_batch_size, gen_max, min_rows=rows
                        ):
                            with torch.no_grad():
                                t = logits(teacher, b.x, b.task)
                            opt.zero_grad(set_to_none=True)
                            (
                                -kl_to_teacher(logits(out, b.x, b.task), t, self.temperature)
                            ).backward()
                            opt.step()
                    for b in batches(request.retain, self.batch_size, gen_min, min_rows=rows):
                        with torch.no_grad():
                            t = logits(teacher, b.x, b.task)
                        s = logits(out, b.x, b.task)
                        loss = self.alpha * kl_to_teacher(
                            s, t, self.temperature
                        ) + self.gamma * F.cross_entropy(s, b.y)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                    if self.rewind:  # SCRUB+R: the checkpoint after this epoch and its forget error
                        checkpoints.append(
                            {k: v.detach().clone() for k, v in out.state_dict().items()}
                        )
                        errors.append(1.0 - accuracy(out, request.forget))
        finally:
            out.eval()
        if self.rewind:
            if self.rewind_target is None:
                assert request.validation is not None
                reference = rewind_reference(out, request.validation, request.forget)
                self.n_validation_rows_ = len(
                    forget_distribution_rows(request.validation, request.forget)
                )
            else:
                reference = float(self.rewind_target)
            best = rewind_index(errors, reference)
            out.load_state_dict(checkpoints[best])
            self.forget_errors_ = errors
            self.rewind_epoch_ = best + 1
            self.rewind_reference_ = reference
        return out
