"""Record each training example's correctness at every presentation (for forgetting events)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from obliviate.data.dataset import Dataset
from obliviate.models.base import logits
from obliviate.training import Batch, TrainConfig, fit


@dataclass(frozen=True)
class PresentationLog:
    """``correct[k, p]``: was example ``ids[k]`` correct at its ``p``-th presentation."""

    ids: np.ndarray
    correct: np.ndarray


class _Recorder:
    """A loss function for :func:`obliviate.training.fit` that also records, for every example
    of the batch, whether the model classified it correctly before this step's update."""

    def __init__(self, data: Dataset, n_epochs: int) -> None:
        order = torch.argsort(data.ids)
        self.sorted_ids = data.ids[order].cpu()
        self.correct = np.zeros((len(data), n_epochs), dtype=bool)
        self.seen = np.zeros(len(data), dtype=np.int64)

    def __call__(self, model: nn.Module, batch: Batch) -> Tensor:
        out = logits(model, batch.x, batch.task)
        # the log lives on the CPU (numpy); the batch may be on an accelerator
        rows = torch.searchsorted(self.sorted_ids, batch.ids.cpu()).numpy()
        hit = (out.detach().argmax(dim=1) == batch.y).cpu().numpy()
        self.correct[rows, self.seen[rows]] = hit
        self.seen[rows] += 1
        return nn.functional.cross_entropy(out, batch.y)


def record_presentations(model: nn.Module, data: Dataset, config: TrainConfig) -> PresentationLog:
    """Train ``model`` in place on ``data`` (plain :func:`~obliviate.training.fit`, one
    presentation per example per epoch) and log each example's correctness at each presentation.

    The log is sorted by id. As in Toneva et al. (Sec. 2), correctness is the prediction for the
    example at the moment it is presented in a minibatch, i.e. the forward pass of that step,
    before the update (our models have no dropout or batch-norm, so train and eval mode agree).
    """
    recorder = _Recorder(data, config.n_epochs)
    fit(model, data, config, loss_fn=recorder, key="events")
    return PresentationLog(ids=recorder.sorted_ids.numpy(), correct=recorder.correct)
