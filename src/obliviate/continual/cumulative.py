"""Cumulative training: fine-tune on everything seen so far."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from obliviate.continual.base import Batch, DataView, Strategy, cross_entropy


class Cumulative(Strategy):
    """At experience ``i``, keep training the current model on the union of experiences ``0..i``
    (``data_view = "seen"``): unlimited replay, an upper bound for replay methods.

    Notes
    -----
    - The model is fine-tuned, not retrained from scratch, at every experience (as Avalanche's
      ``Cumulative``); an epoch at experience ``i`` covers every distinct sample of experiences
      ``0..i``.
    - "Everything seen" counts samples, not presentations: on a recurring stream a task that
      comes back brings the same samples (same ids and features), and each is fed once per
      epoch (its latest presentation), not once per occurrence
      (:func:`~obliviate.continual.loop.distinct_training_sets`); a domain-incremental stream's
      transformed copies are distinct samples.

    References
    ----------
    Lomonaco, V. et al. (2021). Avalanche: an end-to-end library for continual learning. CVPR
    Workshops (the ``Cumulative`` baseline).
    van de Ven, G. M., Tuytelaars, T. & Tolias, A. S. (2022). Three types of incremental learning.
    Nature Machine Intelligence 4, 1185-1197.
    """

    needs_task_boundaries: ClassVar[bool] = (
        True  # "seen" re-reads past experiences by their boundaries
    )
    data_view: ClassVar[DataView] = "seen"

    def __init__(self) -> None:
        pass

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return cross_entropy(model, batch)
