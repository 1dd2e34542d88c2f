"""iCaRL: incremental classifier and representation learning (Rebuffi et al., 2017)."""

from __future__ import annotations

import copy
import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual._encoder import require_model
from obliviate.continual.base import Batch, Strategy, deleted_rows
from obliviate.data.dataset import Dataset, as_id_tensor
from obliviate.data.scenarios import Experience
from obliviate.errors import ObliviateError
from obliviate.models.base import Model, logits
from obliviate.models.multihead import MultiHead
from obliviate.models.output_layer import REQUIREMENT
from obliviate.training import eval_mode, model_device

__all__ = ["ICaRL", "herding", "nme_weights", "purge_exemplars"]

UNSEEN = -1e9
"""Bias given to classes without exemplars in the nearest-mean classifier (never predicted)."""


def purge_exemplars(exemplars: dict[int, Dataset], ids: Tensor) -> dict[int, Dataset]:
    """Each class's exemplars without the rows whose ids are in ``ids`` (int64 ``[K]``), in
    their (herding) order; a class left without exemplars is dropped."""
    out: dict[int, Dataset] = {}
    for c, ex in exemplars.items():
        kept = ex.subset(~deleted_rows(ex.ids, ids))
        if len(kept):
            out[c] = kept
    return out


def herding(features: Tensor, m: int) -> Tensor:
    """Indices of ``min(m, N)`` rows chosen by herding (iCaRL Algorithm 4), in selection order.

    Features are L2-normalised; ``mu`` is their mean; the ``k``-th pick is the unpicked row
    ``x`` minimising ``|| mu - (phi(x) + sum_{j<k} phi(p_j)) / k ||``. Ties go to the lower index.
    """
    phi = nn.functional.normalize(features.detach().reshape(features.shape[0], -1).double(), dim=1)
    mu = phi.mean(dim=0)
    taken = torch.zeros(phi.shape[0], dtype=torch.bool, device=phi.device)
    running = torch.zeros_like(mu)
    picks: list[int] = []
    for k in range(1, min(m, phi.shape[0]) + 1):
        dist = (mu - (running + phi) / k).norm(dim=1)
        dist[taken] = math.inf
        i = int(torch.argmin(dist))
        picks.append(i)
        taken[i] = True
        running += phi[i]
    return torch.tensor(picks, dtype=torch.int64, device=features.device)


def nme_weights(
    class_features: dict[int, Tensor], n_classes: int, feature_dim: int
) -> tuple[Tensor, Tensor]:
    """Weights and bias of a linear layer that computes the nearest-mean-of-exemplars rule.

    With ``mu_c`` the re-normalised mean of the normalised exemplar features of class ``c``,
    ``argmin_c || phi(x)/||phi(x)|| - mu_c || = argmax_c phi(x) . mu_c`` (both sides unit norm),
    so row ``c`` of the weights is ``mu_c`` with bias 0; classes without exemplars get bias
    :data:`UNSEEN`.
    """
    dev = next(iter(class_features.values())).device if class_features else None
    weight = torch.zeros(n_classes, feature_dim, device=dev)
    bias = torch.full((n_classes,), UNSEEN, device=dev)
    for c, feats in class_features.items():
        mean = nn.functional.normalize(feats.reshape(feats.shape[0], -1), dim=1).mean(dim=0)
        weight[c] = nn.functional.normalize(mean, dim=0)
        bias[c] = 0.0
    return weight, bias


class ICaRL(Strategy):
    """iCaRL: herding exemplars, sigmoid distillation, nearest-mean-of-exemplars classification.

    Representation learning (Algorithm 3): the experience's data plus the stored exemplars are
    trained with a sum of binary cross-entropies over the classes seen so far, whose targets are
    the one-hot label on the experience's classes and the previous model's sigmoid outputs
    ``q`` on the old classes (distillation)::

        - sum_{y new} [d_y log g_y(x) + (1 - d_y) log(1 - g_y(x))]
        - sum_{y old} [q_y log g_y(x) + (1 - q_y) log(1 - g_y(x))],   g = sigmoid(logits)

    Exemplar management (Algorithms 4-5): the total memory is fixed at ``memory_size``; with
    ``t`` classes seen each keeps ``m = memory_size // t`` exemplars: old sets are cut to their
    first ``m`` (herding order is priority order), new classes choose ``m`` by :func:`herding`.

    Classification (Algorithm 1): nearest mean of exemplars in the normalised feature space.

    Parameters
    ----------
    memory_size : int, >= 1
        ``K``, the total number of exemplars (samples).
    seed : int
        Seeds the choice of exemplars mixed into each minibatch.

    Notes
    -----
    - **How predictions follow NME.** At ``end`` the strategy keeps a copy of the trained output
      layer and writes the nearest-mean classifier into the model's output layer
      (:func:`nme_weights`: row ``c`` = unit class mean, bias 0, which is exactly the NME rule);
      at the next ``begin`` it puts the trained layer back before training continues. So between
      experiences (and after the last) the model's ordinary forward pass *is* the NME classifier,
      and every evaluation sees it. Multi-head models get NME within each task's head.
    - **Exemplars in minibatches.** The paper trains on the union of the new data and the
      exemplars. The loop feeds the experience's batches, so each batch of ``B`` samples gets
      ``ceil(B * |P| / |X|)`` exemplars drawn at random (``|P|`` exemplars, ``|X|`` experience
      samples): over an epoch the exemplars are seen about once, as in the union.
    - Classes that recur in a later experience (domain-incremental streams) are "new" there:
      herding re-selects their exemplars among the experience's samples and the old exemplars,
      and they are not distilled.
    - The loss sums the binary cross-entropies over classes and averages over the batch; no data
      augmentation, no flipped images in the class means, no weight decay schedule.
    - ``memory_size`` smaller than the number of classes seen raises an error at ``end``.

    References
    ----------
    Rebuffi, S.-A., Kolesnikov, A., Sperl, G. & Lampert, C. H. (2017). iCaRL: Incremental
    Classifier and Representation Learning. CVPR 2017, Algorithms 1-5.
    """

    model_requirement: ClassVar[str | None] = REQUIREMENT
    needs_task_boundaries: ClassVar[bool] = True
    keeps_memory: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = (
        "exemplars_",
        "trained_head_",
        "n_steps_",
        "new_classes_",
        "old_classes_",
        "columns_",
        "old_model_",
        "memory_",
        "replay_ratio_",
    )
    exemplars_: dict[int, Dataset] | None = None
    trained_head_: list[Tensor] | None = None
    old_model_: nn.Module | None = None

    def __init__(self, *, memory_size: int = 200, seed: int = 0) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="ICaRL")
        check_number("seed", seed, integer=True, owner="ICaRL")
        self.memory_size = memory_size
        self.seed = seed

    # ---- state -----------------------------------------------------------------------------
    def memory_used(self) -> int:
        return sum(int(v.y.numel()) for v in (self.exemplars_ or {}).values())

    def _memory(self) -> Dataset | None:
        if not self.exemplars_:
            return None
        return Dataset.concat([self.exemplars_[c] for c in sorted(self.exemplars_)])

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64) from the exemplars and recompute the
        class means of the nearest-mean classifier (in ``model``'s output layer) from the kept
        exemplars, as :meth:`end` computes them (features in eval mode; a class left without
        exemplars is dropped and gets bias -1e9, never predicted). The exemplars keep their
        herding order (herding is not rerun: the kept ones were chosen as the best
        approximation of the class mean among the samples of their time).

        Raises :class:`~obliviate.errors.ObliviateError` when an exemplar is removed and no
        ``model`` is given (or one without a linear output layer). See
        :meth:`~obliviate.continual.base.Strategy.purge`.
        """
        ids = as_id_tensor(ids)
        if not self.exemplars_:
            return
        kept = purge_exemplars(self.exemplars_, ids)
        if sum(len(v) for v in kept.values()) == self.memory_used():
            return
        if model is None:
            raise ObliviateError(
                "ICaRL.purge: the model's output layer holds the exemplars' class means; pass "
                "model= (the model being trained) so they are recomputed"
            )
        example = next(iter(self.exemplars_.values())).x
        m = require_model(model, "ICaRL", example=example)
        self.exemplars_ = kept
        with torch.no_grad(), eval_mode(m):
            _write_nme(m, {c: m.features(ex.x) for c, ex in kept.items()})

    # ---- hooks -----------------------------------------------------------------------------
    def begin(self, model: nn.Module, experience: Experience) -> None:
        m = require_model(model, "ICaRL", example=experience.train.x)  # a user model: a view
        if self.exemplars_ is None:
            self.exemplars_ = {}
            self.trained_head_ = None
            self.n_steps_ = 0
        if self.trained_head_ is not None:
            with torch.no_grad():
                for p, saved in zip(m.head_parameters(), self.trained_head_, strict=True):
                    p.copy_(saved)
        new = set(experience.classes)
        seen = set(self.exemplars_)
        dev = model_device(model)
        self.new_classes_ = torch.tensor(sorted(new), dtype=torch.int64, device=dev)
        self.old_classes_ = torch.tensor(sorted(seen - new), dtype=torch.int64, device=dev)
        self.columns_ = torch.tensor(sorted(seen | new), dtype=torch.int64, device=dev)
        self.old_model_ = None
        if self.old_classes_.numel():
            old = copy.deepcopy(model).eval()
            for p in old.parameters():
                p.requires_grad_(False)
            self.old_model_ = old
        self.memory_ = self._memory()
        self.replay_ratio_ = self.memory_used() / max(len(experience.train), 1)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        x, y, task = batch.x, batch.y, batch.task
        memory = self.memory_
        if memory is not None and self.replay_ratio_ > 0:
            n = min(len(memory), math.ceil(x.shape[0] * self.replay_ratio_))
            idx = torch.randperm(
                len(memory),
                generator=generator(self.seed, "icarl", self.n_steps_),
                device="cpu",
            )[:n].to(memory.x.device)
            x, y = torch.cat([x, memory.x[idx]]), torch.cat([y, memory.y[idx]])
            if task is not None and memory.task is not None:
                task = torch.cat([task, memory.task[idx]])
        self.n_steps_ += 1
        out = logits(model, x, task)
        target = torch.zeros_like(out)
        target[torch.arange(y.shape[0], device=y.device), y] = 1.0
        if self.old_model_ is not None:
            with torch.no_grad():
                q = torch.sigmoid(logits(self.old_model_, x, task)[:, self.old_classes_])
            target[:, self.old_classes_] = q
        cols = self.columns_
        bce = nn.functional.binary_cross_entropy_with_logits(
            out[:, cols], target[:, cols], reduction="none"
        )
        return bce.sum(dim=1).mean()

    @torch.no_grad()
    def end(self, model: nn.Module, experience: Experience) -> None:
        model = require_model(model, "ICaRL", example=experience.train.x)
        assert self.exemplars_ is not None  # created in begin
        seen = sorted(set(self.exemplars_) | set(experience.classes))
        m = self.memory_size // len(seen)
        if m < 1:
            raise ObliviateError(
                f"ICaRL: memory_size={self.memory_size} is smaller than the {len(seen)} classes "
                "seen; give at least one exemplar per class"
            )
        with eval_mode(model):  # each submodule's own mode comes back
            for c in list(self.exemplars_):
                self.exemplars_[c] = self.exemplars_[c].subset(
                    torch.arange(
                        min(m, len(self.exemplars_[c])), device=self.exemplars_[c].x.device
                    )
                )
            data = experience.train
            for c in experience.classes:
                pool = data.subset(data.y == c)
                if c in self.exemplars_:
                    pool = Dataset.concat([pool, self.exemplars_[c]])
                if len(pool) == 0:
                    continue
                chosen = herding(model.features(pool.x), m)
                self.exemplars_[c] = pool.subset(chosen)
            self.trained_head_ = [p.detach().clone() for p in model.head_parameters()]
            feats = {c: model.features(ex.x) for c, ex in self.exemplars_.items()}
            _write_nme(model, feats)
        self.old_model_ = None
        del self.new_classes_, self.old_classes_, self.columns_, self.memory_, self.replay_ratio_


def _write_nme(model: Model, feats: dict[int, Tensor]) -> None:
    """Put the nearest-mean-of-exemplars classifier into the model's output layer(s)."""
    weight, bias = nme_weights(feats, model.n_classes, model.feature_dim)
    head = model.head_parameters()
    if isinstance(model, MultiHead):
        for t, classes in enumerate(model.task_classes):
            rows = torch.tensor(classes, dtype=torch.int64, device=weight.device)
            head[2 * t].copy_(weight[rows])
            head[2 * t + 1].copy_(bias[rows])
        return
    head[0].copy_(weight)
    head[1].copy_(bias)
