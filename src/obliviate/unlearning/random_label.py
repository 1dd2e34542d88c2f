"""Random relabelling (Graves et al., AAAI 2021 "Amnesiac Machine Learning")."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number, check_schedule
from obliviate.data.dataset import Dataset
from obliviate.unlearning._ops import cross_entropy, run_steps, trainable
from obliviate.unlearning.base import ForgetRequest, Unlearner


def random_wrong_labels(y: Tensor, n_classes: int, gen: torch.Generator) -> Tensor:
    """A label for every entry of ``y``, uniform over the ``n_classes - 1`` *wrong* classes."""
    if n_classes < 2:
        raise ValueError(f"random wrong labels need at least 2 classes, got {n_classes}")
    shift = torch.randint(1, n_classes, y.shape, generator=gen, device=gen.device).to(y.device)
    return (y + shift) % n_classes


def relabelled_forget_set(
    request: ForgetRequest, n_classes: int, seed: int, key: object
) -> Dataset:
    """The forget rows with random wrong labels drawn from ``generator(seed, key)`` (ids kept)."""
    forget = request.forget
    return replace(forget, y=random_wrong_labels(forget.y, n_classes, generator(seed, key)))


def retain_sample(retain: Dataset, fraction: float, seed: int, key: object) -> Dataset:
    """A seeded random ``fraction`` of ``retain`` (all of it for 1.0, nothing for 0.0)."""
    if fraction >= 1.0:
        return retain
    n = int(round(fraction * len(retain)))
    order = torch.randperm(len(retain), generator=generator(seed, key), device="cpu")
    return retain.subset(order[:n])


class RandomLabel(Unlearner):
    """Fine-tune on the forget samples relabelled with random *wrong* classes, mixed with retain data.

    Every forget sample gets one label drawn uniformly from the classes other than its own
    (drawn once, from ``seed``); the model is then fine-tuned with cross-entropy on these
    relabelled samples together with a ``retain_fraction`` of the retain set, so it unlearns the
    forget set while the retain data hold the rest in place.

    Parameters
    ----------
    n_epochs:
        passes over (relabelled forget + retain sample); the reference code uses 3.
    lr, batch_size, optimizer, momentum:
        the fine-tuning optimiser.
    retain_fraction:
        fraction of the retain set mixed in (0 = forget samples only, as in the paper's pure
        relabelling; 1 = all, as in the SSD authors' "amnesiac" baseline).
    seed:
        draws the wrong labels, the retain sample and the data order.

    Notes
    -----
    - Graves et al. relabel and train for a few steps, then report a few retain-data epochs to
      repair; here both happen together in one mixed fine-tuning, as the common baseline
      implementations do (e.g. the SSD and SalUn authors' code).
    - Labels are drawn from the wrong classes only (some implementations draw from all classes).
    - The leftover-knowledge linear probe of Zhang et al. (2024) is
      :func:`obliviate.unlearning.probe.probe_accuracy`.

    References
    ----------
    Graves, L., Nagisetty, V. & Ganesh, V. (2021). Amnesiac Machine Learning. AAAI 2021.
    Golatkar, A., Achille, A. & Soatto, S. (2020). Eternal Sunshine of the Spotless Net:
    Selective Forgetting in Deep Networks. CVPR 2020.
    """

    guarantee: ClassVar[Literal["exact", "approximate"]] = "approximate"
    needs: ClassVar[frozenset[str]] = frozenset({"retain"})

    def __init__(
        self,
        *,
        n_epochs: int = 2,
        lr: float = 0.02,
        batch_size: int = 32,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        retain_fraction: float = 0.5,
        seed: int = 0,
    ) -> None:
        check_schedule(
            "RandomLabel",
            n_epochs=n_epochs,
            lr=lr,
            batch_size=batch_size,
            optimizer=optimizer,
            momentum=momentum,
            seed=seed,
        )
        check_number("retain_fraction", retain_fraction, low=0, high=1, owner="RandomLabel")
        self.n_epochs = n_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.retain_fraction = retain_fraction
        self.seed = seed

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        out = trainable(model)
        assert request.retain is not None
        relabelled = relabelled_forget_set(
            request, request.forget.n_classes, self.seed, "random_label"
        )
        parts = [
            relabelled,
            retain_sample(request.retain, self.retain_fraction, self.seed, "retain"),
        ]
        data = Dataset.concat([p for p in parts if len(p)])
        run_steps(
            out,
            data,
            cross_entropy,
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            seed=self.seed,
            key="random_label",
        )
        return out
