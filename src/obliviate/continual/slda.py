"""SLDA: deep streaming linear discriminant analysis on frozen features (Hayes & Kanan, 2020)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._validation import check_choice, check_number
from obliviate.continual._encoder import (
    ENCODER_SOURCES,
    UNSEEN,
    EncoderRecipe,
    encoder_parameters,
    load_encoder,
    require_model,
    set_requires_grad,
    write_head,
)
from obliviate.continual.base import Batch, Strategy, deleted_rows
from obliviate.data.dataset import as_id_tensor
from obliviate.data.scenarios import Experience
from obliviate.errors import ObliviateError
from obliviate.models.base import Model
from obliviate.models.output_layer import REQUIREMENT
from obliviate.training import eval_mode, model_device

__all__ = ["SLDA", "lda_classifier", "streaming_update"]


def streaming_update(
    mean: Tensor, count: Tensor, sigma: Tensor, n_updates: int, z: Tensor, y: Tensor
) -> int:
    """Feed samples ``z`` ``[B, d]`` with labels ``y`` ``[B]`` one at a time into the running
    class means ``mean`` ``[C, d]``, class counts ``count`` ``[C]`` and shared covariance
    ``sigma`` ``[d, d]`` (all float64, updated in place); return the new number of updates ``t``.

    Hayes & Kanan (2020), Section 3, for a sample ``(z_t, y)`` after ``t`` updates::

        Delta_t  = t / (t + 1) * (z_t - mu_y)(z_t - mu_y)^T
        Sigma   <- (t * Sigma + Delta_t) / (t + 1)
        mu_y    <- (c_y * mu_y + z_t) / (c_y + 1),    c_y <- c_y + 1

    (``mu_y`` in ``Delta_t`` is the class mean before the update.) The means are updated
    sample by sample; the covariance recursion is summed in one step, since
    ``(t + 1) Sigma_{t+1} = t Sigma_t + Delta_t`` unrolls to
    ``T Sigma_T = t0 Sigma_t0 + sum_t t / (t + 1) d_t d_t^T`` (equal up to float64 rounding).
    """
    t0 = n_updates
    diffs = torch.empty_like(z)
    for i in range(z.shape[0]):
        c = int(y[i])
        diffs[i] = z[i] - mean[c]
        mean[c] += diffs[i] / (count[c] + 1)
        count[c] += 1
    steps = torch.arange(t0, t0 + z.shape[0], dtype=z.dtype, device=z.device)
    weights = steps / (steps + 1)
    total = t0 + z.shape[0]
    sigma.mul_(t0).add_(diffs.T @ (diffs * weights.reshape(-1, 1))).div_(max(total, 1))
    return total


def lda_classifier(
    mean: Tensor, count: Tensor, sigma: Tensor, shrinkage: float
) -> tuple[Tensor, Tensor]:
    """Weights ``[C, d]`` and biases ``[C]`` of the LDA rule (Hayes & Kanan, 2020, Eq. 3-4)::

        Lambda = [(1 - eps) Sigma + eps I]^-1,   w_c = Lambda mu_c,   b_c = -1/2 mu_c . Lambda mu_c

    Classes never seen (``count == 0``) get bias :data:`UNSEEN` so they are never predicted.
    """
    d = sigma.shape[0]
    precision = torch.linalg.inv(
        (1 - shrinkage) * sigma + shrinkage * torch.eye(d, dtype=sigma.dtype, device=sigma.device)
    )
    weight = mean @ precision  # precision is symmetric: rows are (Lambda mu_c)^T
    bias = -0.5 * (weight * mean).sum(dim=1)
    bias = torch.where(count > 0, bias, torch.full_like(bias, UNSEEN))
    return weight, bias


class SLDA(Strategy):
    """Deep SLDA: a frozen pretrained encoder and a streaming LDA output layer.

    The model's feature extractor is replaced by a frozen encoder pretrained on data disjoint
    from the stream (:mod:`obliviate.continual._encoder`); nothing is learned by gradient
    descent. Every training sample updates the class means and the shared covariance of its
    features once (:func:`streaming_update`), and the model's output layer is set to the LDA
    rule (:func:`lda_classifier`) after every batch and at the end of each experience, so the
    model's ordinary forward pass is the SLDA classifier.

    Parameters
    ----------
    shrinkage : float, in (0, 1)
        ``epsilon``, the shrinkage of the covariance towards the identity (paper: 1e-4).
    encoder : {"blobs", "fashion-mnist"}
        Pretraining data of the frozen encoder (:data:`~obliviate.continual._encoder.ENCODER_SOURCES`):
        ``"fashion-mnist"`` for image streams (MNIST, digits), ``"blobs"`` (generated) for
        anything else and for tests.
    encoder_epochs : int, >= 0
        Pretraining epochs of the encoder (:class:`~obliviate.continual._encoder.EncoderRecipe`).
    seed : int
        Seed of the encoder's pretraining (initialisation and data order).

    Notes
    -----
    - The paper's encoder is an ImageNet-pretrained ResNet-18 (its first 100 classes, "base
      initialisation"); here it is the model's own architecture pretrained on Fashion-MNIST or
      generated blobs, never on the stream.
    - The loop feeds each experience ``n_epochs`` times; SLDA sees every training sample once
      (later epochs are skipped: a sample already fed is not fed again), so it stays a single
      pass as in the paper. The loss is a zero with a zero gradient for the output layer (the
      optimiser has nothing to learn).
    - The covariance starts at zero (the paper's streaming setting without a base-initialised
      covariance); the update uses the total count ``t`` as in the paper and its code, which is
      the exact pooled within-class covariance only while a single class is seen.
    - Statistics are kept in float64; a multi-head model gets each task's rows of the rule.
    - Deletion (:meth:`purge`): the running statistics cannot be downdated exactly (the
      covariance recursion weighs each sample by the means and the count at its time), so
      SLDA records every fed sample's encoder features (float32, exactly the values it fed:
      ``N x d`` floats for ``N`` fed samples, not in the paper) with its id and label, and a
      purge recomputes the means, counts and covariance by the same recursion over the kept
      samples in their feed order: the statistics of the stream that never held the deleted
      samples, fed in the same order.

    References
    ----------
    Hayes, T. L. & Kanan, C. (2020). Lifelong Machine Learning with Deep Streaming Linear
    Discriminant Analysis. CVPR Workshops 2020, Section 3 (Eq. 1-4).
    """

    model_requirement: ClassVar[str | None] = REQUIREMENT
    needs_task_boundaries: ClassVar[bool] = False
    freezes_parameters: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = (
        "mean_",
        "count_",
        "sigma_",
        "n_updates_",
        "features_",
        "feature_ids_",
        "feature_y_",
        "fed_",
        "requires_grad_",
    )
    mean_: Tensor | None = None

    def __init__(
        self,
        *,
        shrinkage: float = 1e-4,
        encoder: str = "blobs",
        encoder_epochs: int = 3,
        seed: int = 0,
    ) -> None:
        check_number(
            "shrinkage", shrinkage, low=0, high=1, low_open=True, high_open=True, owner="SLDA"
        )
        check_choice("encoder", encoder, ENCODER_SOURCES, owner="SLDA")
        check_number("encoder_epochs", encoder_epochs, low=0, integer=True, owner="SLDA")
        check_number("seed", seed, integer=True, owner="SLDA")
        self.shrinkage = shrinkage
        self.encoder = encoder
        self.encoder_epochs = encoder_epochs
        self.seed = seed

    def _setup(self, model: Model, sample_shape: tuple[int, ...]) -> None:
        recipe = EncoderRecipe(source=self.encoder, n_epochs=self.encoder_epochs, seed=self.seed)
        load_encoder(model, recipe, sample_shape)
        d = model.feature_dim
        dev = model_device(model)
        self.mean_ = torch.zeros(model.n_classes, d, dtype=torch.float64, device=dev)
        self.count_ = torch.zeros(model.n_classes, dtype=torch.float64, device=dev)
        self.sigma_ = torch.zeros(d, d, dtype=torch.float64, device=dev)
        self.n_updates_ = 0
        # every fed sample's features (float32, as fed), id and label, in feed order
        self.features_ = self.mean_.new_zeros((0, d), dtype=torch.float32)
        self.feature_ids_ = self.mean_.new_zeros(0, dtype=torch.int64)
        self.feature_y_ = self.mean_.new_zeros(0, dtype=torch.int64)
        write_head(model, *lda_classifier(self.mean_, self.count_, self.sigma_, self.shrinkage))

    def begin(self, model: nn.Module, experience: Experience) -> None:
        m = require_model(model, "SLDA", example=experience.train.x)
        if self.mean_ is None:
            self._setup(m, experience.train.sample_shape)
        self.fed_ = torch.zeros(
            0, dtype=torch.int64, device=experience.train.ids.device
        )  # ids fed during this experience
        self.requires_grad_ = {n: p.requires_grad for n, p in encoder_parameters(m)}
        set_requires_grad(encoder_parameters(m), dict.fromkeys(self.requires_grad_, False))

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64): drop their recorded features, then
        recompute the class means, counts and shared covariance from zero with
        :func:`streaming_update` over the kept samples in feed order (one call; float64) and
        write the LDA rule into ``model``'s output layer.

        Raises :class:`~obliviate.errors.ObliviateError` when a fed sample is removed and no
        ``model`` (the model being trained) is given. See
        :meth:`~obliviate.continual.base.Strategy.purge`.
        """
        ids = as_id_tensor(ids)
        if self.mean_ is None:
            return
        keep = ~deleted_rows(self.feature_ids_, ids)
        if bool(keep.all()):
            return
        if model is None:
            raise ObliviateError(
                "SLDA.purge: the model's output layer holds the LDA rule of the class means; "
                "pass model= (the model being trained) so it is recomputed"
            )
        m = require_model(model, "SLDA")  # the model SLDA trained: its output layer is known
        self.features_ = self.features_[keep].clone()
        self.feature_ids_ = self.feature_ids_[keep].clone()
        self.feature_y_ = self.feature_y_[keep].clone()
        self.mean_ = torch.zeros_like(self.mean_)
        self.count_ = torch.zeros_like(self.count_)
        self.sigma_ = torch.zeros_like(self.sigma_)
        self.n_updates_ = streaming_update(
            self.mean_, self.count_, self.sigma_, 0, self.features_.double(), self.feature_y_
        )
        write_head(m, *lda_classifier(self.mean_, self.count_, self.sigma_, self.shrinkage))

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        m = require_model(model, "SLDA", example=batch.x)
        assert self.mean_ is not None  # created in begin
        new = ~torch.isin(batch.ids, self.fed_)
        if bool(new.any()):
            # frozen encoder: batch norm uses its pretrained statistics (modes restored per module)
            with eval_mode(m), torch.no_grad():
                z = m.features(batch.x[new]).reshape(int(new.sum()), -1).double()
            self.n_updates_ = streaming_update(
                self.mean_, self.count_, self.sigma_, self.n_updates_, z, batch.y[new]
            )
            self.fed_ = torch.cat([self.fed_, batch.ids[new]])
            self.features_ = torch.cat([self.features_, z.float()])
            self.feature_ids_ = torch.cat([self.feature_ids_, batch.ids[new]])
            self.feature_y_ = torch.cat([self.feature_y_, batch.y[new]])
            write_head(m, *lda_classifier(self.mean_, self.count_, self.sigma_, self.shrinkage))
        return sum(p.sum() * 0.0 for p in m.head_parameters())  # type: ignore[return-value]

    def end(self, model: nn.Module, experience: Experience) -> None:
        m = require_model(model, "SLDA", example=experience.train.x)
        assert self.mean_ is not None  # created in begin
        write_head(m, *lda_classifier(self.mean_, self.count_, self.sigma_, self.shrinkage))
        set_requires_grad(encoder_parameters(m), self.requires_grad_)
        del self.requires_grad_, self.fed_
