"""LUCIR: a unified classifier learned incrementally via rebalancing (Hou et al., 2019)."""

from __future__ import annotations

import copy
import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual._encoder import UNSEEN, require_model, write_head
from obliviate.continual.base import Batch, Strategy
from obliviate.continual.icarl import herding, purge_exemplars
from obliviate.data.dataset import Dataset, as_id_tensor
from obliviate.data.scenarios import Experience
from obliviate.errors import ObliviateError
from obliviate.models.base import Model
from obliviate.models.output_layer import REQUIREMENT
from obliviate.training import eval_mode, model_device

__all__ = ["LUCIR", "cosine_logits", "less_forget_loss", "margin_ranking_loss"]


def cosine_logits(features: Tensor, weight: Tensor, scale: Tensor | float) -> Tensor:
    """``eta * <theta_c / |theta_c|, f(x) / |f(x)|>`` for every class ``c`` (Eq. 4), ``[B, C]``."""
    f = nn.functional.normalize(features, dim=1)
    return scale * (f @ nn.functional.normalize(weight, dim=1).T)


def less_forget_loss(features: Tensor, old_features: Tensor) -> Tensor:
    """``L_dis^G = mean_x (1 - <f*(x)/|f*(x)|, f(x)/|f(x)|>)`` (Eq. 6): the old model's
    normalised features ``f*`` (detached) against the current ones."""
    cos = (
        nn.functional.normalize(features, dim=1)
        * nn.functional.normalize(old_features.detach(), dim=1)
    ).sum(dim=1)
    return (1.0 - cos).mean()


def margin_ranking_loss(
    cosines: Tensor, y: Tensor, new_classes: Tensor, margin: float, k: int
) -> Tensor:
    """Inter-class separation (Eq. 8) on the rows of ``cosines`` ``[B, C]`` (un-scaled cosine
    scores) whose label is *not* in ``new_classes`` (the old-class exemplars)::

        L_mr = mean over old rows x and the K hardest new classes k of
               max(m - <theta_y, f(x)> + <theta_k, f(x)>, 0)

    Zero (with a gradient) when the batch holds no old-class sample.
    """
    old = ~torch.isin(y, new_classes)
    if not bool(old.any()) or new_classes.numel() == 0:
        return cosines.sum() * 0.0
    rows = cosines[old]
    gt = rows.gather(1, y[old].reshape(-1, 1))
    hard = rows[:, new_classes].topk(min(k, new_classes.numel()), dim=1).values
    return torch.clamp(margin - gt + hard, min=0.0).mean()


class LUCIR(Strategy):
    """LUCIR: cosine normalisation, less-forget constraint and inter-class separation.

    The model's output layer is read as class embeddings ``theta_c`` and scored by cosine
    similarity with a learnable scale ``eta`` (Eq. 4). From the second experience on, with
    ``f*`` the frozen model of the previous experience, the loss of a batch (current samples
    plus exemplars) is (Eq. 9)::

        L = CE(eta * cos(theta, f(x)), y) + lambda * L_dis^G + L_mr

    with the less-forget constraint ``L_dis^G`` (Eq. 6, :func:`less_forget_loss`), its adaptive
    weight ``lambda = lambda_base * sqrt(|C_o| / |C_n|)`` (Eq. 7; old and new class counts) and
    the margin ranking loss ``L_mr`` on the exemplars (Eq. 8, :func:`margin_ranking_loss`).
    Exemplars: a fixed total of ``memory_size`` samples, chosen per class by herding (as iCaRL).

    Prediction: after every step the output layer holds ``eta * theta_c / |theta_c|`` with zero
    bias (classes not yet seen get a bias of -1e9), so the model's forward pass gives
    ``eta * <theta_c / |theta_c|, f(x)>``, the cosine classifier times the positive per-sample
    factor ``|f(x)|``: the same ranking of classes (the paper's "CNN" classifier).

    Parameters
    ----------
    memory_size : int, >= 1
        Total exemplars (samples); ``memory_size // n_classes_seen`` per class.
    lambda_base : float, >= 0
        ``lambda_base`` of Eq. 7 (paper: 5).
    margin : float, >= 0
        ``m`` of Eq. 8 (paper: 0.5).
    n_hard : int, >= 1
        ``K``, hard negative classes per exemplar in Eq. 8 (paper: 2).
    scale_lr : float, > 0
        Learning rate of the plain SGD step on ``eta`` (initialised to 1, as in the paper's code).
        The paper trains ``eta`` with the network's SGD (lr 0.1, momentum 0.9: an effective step
        of 0.1 / (1 - 0.9) = 1.0); the default 1.0 is that step without momentum.
    seed : int
        Seeds the exemplars mixed into each batch.

    Notes
    -----
    - The feature extractor ends in the model's last ReLU (the paper removes it so features may
      be negative); ``eta`` is a scalar owned by the strategy and updated by its own SGD step in
      ``adjust_gradients`` (the loop's optimiser holds only the model's parameters).
    - The output layer's bias is unused by the cosine classifier: it is frozen during training
      and holds 0 for seen classes and -1e9 for unseen ones.
    - Exemplars are mixed into each batch as in :class:`~obliviate.continual.icarl.ICaRL`
      (``ceil(B * |P| / |X|)`` per batch); memory is a fixed total (iCaRL's rule), not the paper's
      fixed 20 per class; no class-balanced finetuning (CBF) stage; new class embeddings are
      initialised as the model's (no weight imprinting).
    - Single-head (class-incremental) models only; ``L_mr`` is averaged over exemplars and ``K``
      as in the paper's code.

    References
    ----------
    Hou, S., Pan, X., Loy, C. C., Wang, Z. & Lin, D. (2019). Learning a Unified Classifier
    Incrementally via Rebalancing. CVPR 2019, Section 3 (Eq. 4-9).
    """

    model_requirement: ClassVar[str | None] = REQUIREMENT + " (single-head)"
    needs_task_boundaries: ClassVar[bool] = True
    keeps_memory: ClassVar[bool] = True
    freezes_parameters: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = (
        "exemplars_",
        "scale_",
        "n_steps_",
        "old_model_",
        "new_classes_",
        "columns_",
        "lambda_",
        "bias_grad_",
        "memory_",
        "replay_ratio_",
    )
    exemplars_: dict[int, Dataset] | None = None
    old_model_: Model | None = None

    def __init__(
        self,
        *,
        memory_size: int = 200,
        lambda_base: float = 5.0,
        margin: float = 0.5,
        n_hard: int = 2,
        scale_lr: float = 1.0,
        seed: int = 0,
    ) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="LUCIR")
        check_number("lambda_base", lambda_base, low=0, owner="LUCIR")
        check_number("margin", margin, low=0, owner="LUCIR")
        check_number("n_hard", n_hard, low=1, integer=True, owner="LUCIR")
        check_number("scale_lr", scale_lr, low=0, low_open=True, owner="LUCIR")
        check_number("seed", seed, integer=True, owner="LUCIR")
        self.memory_size = memory_size
        self.lambda_base = lambda_base
        self.margin = margin
        self.n_hard = n_hard
        self.scale_lr = scale_lr
        self.seed = seed

    def memory_used(self) -> int:
        ex = {} if self.exemplars_ is None else self.exemplars_
        return sum(int(v.y.numel()) for v in ex.values())

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64) from the exemplars; a class left
        without exemplars is dropped (it is no longer an old class: not distilled, and its
        output is masked from the next experience on). The cosine classifier's weights are
        trained (influence, left to the unlearner). See
        :meth:`~obliviate.continual.base.Strategy.purge`."""
        ids = as_id_tensor(ids)
        if self.exemplars_ is not None:
            self.exemplars_ = purge_exemplars(self.exemplars_, ids)

    # ---- hooks -------------------------------------------------------------------------------
    def begin(self, model: nn.Module, experience: Experience) -> None:
        m = require_model(model, "LUCIR", single_head=True, example=experience.train.x)
        if self.exemplars_ is None:
            self.exemplars_ = {}
            self.scale_ = torch.ones((), device=model_device(model), requires_grad=True)
            self.n_steps_ = 0
        new = set(experience.classes)
        old = set(self.exemplars_) - new
        dev = model_device(model)
        self.new_classes_ = torch.tensor(sorted(new), dtype=torch.int64, device=dev)
        self.columns_ = torch.tensor(sorted(old | new), dtype=torch.int64, device=dev)
        self.lambda_ = self.lambda_base * math.sqrt(len(old) / max(len(new), 1))
        self.old_model_ = None
        if old:
            teacher = copy.deepcopy(m).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
            self.old_model_ = teacher
        bias = m.head_parameters()[1]
        self.bias_grad_ = bias.requires_grad
        bias.requires_grad_(False)
        self._write(m)
        parts = [self.exemplars_[c] for c in sorted(self.exemplars_)]
        self.memory_ = Dataset.concat(parts) if parts else None
        self.replay_ratio_ = self.memory_used() / max(len(experience.train), 1)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        m = require_model(model, "LUCIR", single_head=True, example=batch.x)
        self._write(m)
        x, y = batch.x, batch.y
        if self.memory_ is not None and self.replay_ratio_ > 0:
            n = min(len(self.memory_), math.ceil(x.shape[0] * self.replay_ratio_))
            gen = generator(self.seed, "lucir", self.n_steps_)
            idx = torch.randperm(len(self.memory_), generator=gen, device=gen.device)[:n]
            x, y = torch.cat([x, self.memory_.x[idx]]), torch.cat([y, self.memory_.y[idx]])
        self.n_steps_ += 1
        f = m.features(x)
        weight = m.head_parameters()[0]
        cos = cosine_logits(f, weight, 1.0)[:, self.columns_]
        target = torch.searchsorted(self.columns_, y)
        loss = nn.functional.cross_entropy(self.scale_ * cos, target)
        if self.old_model_ is not None:
            with torch.no_grad():
                f_old = self.old_model_.features(x)
            loss = loss + self.lambda_ * less_forget_loss(f, f_old)
            new_cols = torch.searchsorted(self.columns_, self.new_classes_)
            loss = loss + margin_ranking_loss(cos, target, new_cols, self.margin, self.n_hard)
        return loss

    def adjust_gradients(self, model: nn.Module) -> None:
        grad = self.scale_.grad
        if grad is not None:
            with torch.no_grad():
                self.scale_ -= self.scale_lr * grad
            self.scale_.grad = None

    @torch.no_grad()
    def end(self, model: nn.Module, experience: Experience) -> None:
        m = require_model(model, "LUCIR", single_head=True, example=experience.train.x)
        assert self.exemplars_ is not None  # created in begin
        seen = sorted(set(self.exemplars_) | set(experience.classes))
        per_class = self.memory_size // len(seen)
        if per_class < 1:
            raise ObliviateError(
                f"LUCIR: memory_size={self.memory_size} is smaller than the {len(seen)} classes "
                "seen; give at least one exemplar per class"
            )
        self._write(m, seen=seen)
        with eval_mode(m):  # each submodule's own mode comes back
            for c in list(self.exemplars_):
                keep = torch.arange(
                    min(per_class, len(self.exemplars_[c])), device=self.exemplars_[c].x.device
                )
                self.exemplars_[c] = self.exemplars_[c].subset(keep)
            data = experience.train
            for c in experience.classes:
                pool = data.subset(data.y == c)
                if c in self.exemplars_:
                    pool = Dataset.concat([pool, self.exemplars_[c]])
                if len(pool):
                    self.exemplars_[c] = pool.subset(herding(m.features(pool.x), per_class))
        m.head_parameters()[1].requires_grad_(self.bias_grad_)
        self.old_model_ = None
        del self.new_classes_, self.columns_, self.lambda_, self.memory_, self.replay_ratio_
        del self.bias_grad_

    # ---- internals ---------------------------------------------------------------------------
    @torch.no_grad()
    def _write(self, model: Model, seen: list[int] | None = None) -> None:
        """Unit rows times ``eta`` and bias 0 / -1e9 (seen / unseen) into the output layer."""
        weight = model.head_parameters()[0]
        dev = weight.device
        cols = self.columns_ if seen is None else torch.tensor(seen, dtype=torch.int64, device=dev)
        bias = torch.full((weight.shape[0],), UNSEEN, device=dev)
        bias[cols] = 0.0
        write_head(model, nn.functional.normalize(weight, dim=1) * self.scale_.detach(), bias)
