"""Joint training: the upper bound of continual learning."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from obliviate.continual.base import Batch, DataView, Strategy, cross_entropy


class Joint(Strategy):
    """Train once on the union of every experience's training data (``data_view = "all"``).

    Not a continual method: it breaks the stream's order on purpose and gives the reference the
    continual strategies are measured against (the "offline"/"joint" upper bound of, e.g.,
    Lopez-Paz & Ranzato, 2017; van de Ven et al., 2022). The loop feeds all the data at the first
    experience and nothing afterwards, so rows ``i > 0`` of the accuracy matrix repeat row 0.

    Notes
    -----
    - The recipe (epochs, batch size, lr) is the stream's recipe applied once to all the data,
      so joint sees every distinct sample of the stream once per epoch.
    - "All the data" counts samples, not presentations: on a recurring stream, where a task
      comes back with the same samples (same ids and features), each enters once (its latest
      presentation), not once per occurrence
      (:func:`~obliviate.continual.loop.distinct_training_sets`). A sample presented three times
      is not three samples. Copies that share ids but not features (a domain-incremental
      stream's permuted or rotated versions) are distinct samples and all enter.

    References
    ----------
    Lopez-Paz, D. & Ranzato, M. (2017). Gradient Episodic Memory for continual learning. NeurIPS.
    van de Ven, G. M., Tuytelaars, T. & Tolias, A. S. (2022). Three types of incremental learning.
    Nature Machine Intelligence 4, 1185-1197.
    """

    data_view: ClassVar[DataView] = "all"

    def __init__(self) -> None:
        pass

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return cross_entropy(model, batch)
