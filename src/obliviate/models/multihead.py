"""Multi-head wrapper for task-incremental learning."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from obliviate.models.base import Model

MASKED = -1e9
"""Logit given to classes outside a sample's task (finite, so losses stay finite)."""


class MultiHead(Model):
    """A shared trunk with one linear head per task.

    Head ``t`` scores only the classes of task ``t``; its scores are placed at those classes'
    positions in a full ``[B, n_classes]`` logit tensor and every other class gets ``MASKED``.
    Without task ids (``task=None``) all heads are evaluated and concatenated (each class belongs
    to exactly one task), which is the single-head view of the same weights.
    """

    def __init__(self, trunk: Model, task_classes: Sequence[Sequence[int]]) -> None:
        super().__init__()
        trunk.head = nn.Identity()  # the trunk's own head is replaced by the task heads
        self.trunk = trunk
        self.task_classes = [tuple(int(c) for c in cs) for cs in task_classes]
        self.n_classes = trunk.n_classes
        self.feature_dim = trunk.feature_dim
        self.heads = nn.ModuleList(
            nn.Linear(trunk.feature_dim, len(cs)) for cs in self.task_classes
        )
        for t, cs in enumerate(self.task_classes):
            self.register_buffer(
                f"classes_{t}", torch.tensor(cs, dtype=torch.int64), persistent=False
            )

    def features(self, x: Tensor) -> Tensor:
        return self.trunk.features(x)

    def classify(self, h: Tensor, task: Tensor | None = None) -> Tensor:
        # at least float32: MASKED (-1e9) overflows float16 (an fp16 autocast forward)
        dtype = torch.promote_types(h.dtype, torch.float32)
        out = h.new_full((h.shape[0], self.n_classes), MASKED, dtype=dtype)
        for t, head in enumerate(self.heads):
            cls = getattr(self, f"classes_{t}")
            if task is None:
                out[:, cls] = head(h).to(dtype)
                continue
            rows = (task == t).nonzero().reshape(-1)
            if rows.numel():
                out[rows.unsqueeze(1), cls.unsqueeze(0)] = head(h[rows]).to(dtype)
        return out

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())
