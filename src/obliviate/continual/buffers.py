"""Replay buffers as plain objects: a reservoir buffer and a class-balanced buffer.

Both hold at most ``memory_size`` samples (features, labels, ids, task ids and optional per-sample
extras such as stored logits) and draw every random choice from their own seed, so a deep copy
of a buffer continues exactly like the original.
"""

from __future__ import annotations

import torch
from torch import Tensor

from obliviate._rng import generator
from obliviate._validation import check_number


class ReservoirBuffer:
    """Reservoir sampling (Vitter, 1985, Algorithm R): every sample seen so far has the same
    probability ``memory_size / n_seen`` of being in the buffer.

    ``extra`` holds one optional tensor per sample (e.g. DER's logits), stored alongside.
    """

    def __init__(self, *, memory_size: int, seed: int = 0) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="ReservoirBuffer")
        self.memory_size, self.seed = memory_size, seed
        self.n_seen = 0
        self.x: Tensor | None = None
        self.y = torch.empty(0, dtype=torch.int64)
        self.ids = torch.empty(0, dtype=torch.int64)
        self.task = torch.empty(0, dtype=torch.int64)
        self.extra: Tensor | None = None
        self._filled = 0

    def __len__(self) -> int:
        return self._filled

    def add(self, x: Tensor, y: Tensor, ids: Tensor, task: Tensor | None = None, extra: Tensor | None = None) -> None:
        """Offer a batch to the reservoir (Algorithm R, one sample at a time)."""
        x, y, ids = x.detach(), y.detach(), ids.detach()
        task = torch.full_like(y, -1) if task is None else task.detach()
        extra = None if extra is None else extra.detach()
        if self.x is None:
            self.x = x.new_empty((self.memory_size, *x.shape[1:]))
            self.y = y.new_empty(self.memory_size)
            self.ids = ids.new_empty(self.memory_size)
            self.task = task.new_empty(self.memory_size)
            if extra is not None:
                self.extra = extra.new_empty((self.memory_size, *extra.shape[1:]))
        gen = generator(self.seed, "reservoir", self.n_seen)
        draws = torch.randint(0, 2**62, (len(y),), generator=gen)
        for k in range(len(y)):
            if self._filled < self.memory_size:
                slot = self._filled
                self._filled += 1
            else:
                slot = int(draws[k] % (self.n_seen + 1))
            self.n_seen += 1
            if slot < self.memory_size:
                self.x[slot], self.y[slot], self.ids[slot], self.task[slot] = x[k], y[k], ids[k], task[k]
                if self.extra is not None and extra is not None:
                    self.extra[slot] = extra[k]

    def filled(self) -> dict[str, Tensor | None]:
        """The stored samples: ``x``, ``y``, ``ids``, ``task`` (-1 = none) and ``extra``."""
        if self.x is None:
            return {"x": None, "y": self.y, "ids": self.ids, "task": self.task, "extra": None}
        f = self._filled
        extra = None if self.extra is None else self.extra[:f]
        return {"x": self.x[:f], "y": self.y[:f], "ids": self.ids[:f], "task": self.task[:f], "extra": extra}

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        """Indices of ``min(n, len)`` distinct stored samples, drawn with ``gen``."""
        f = self._filled
        return torch.randperm(f, generator=gen)[: min(n, f)]


class ClassBalancedBuffer:
    """Equal memory per class seen so far: ``memory_size // n_classes_seen`` each (remainder to
    the lowest class ids). When a new experience arrives every class is trimmed to its new
    quota; new classes fill theirs with a random choice of their samples (seeded).
    """

    def __init__(self, *, memory_size: int, seed: int = 0) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="ClassBalancedBuffer")
        self.memory_size, self.seed = memory_size, seed
        self.per_class: dict[int, dict[str, Tensor]] = {}
        self.n_updates = 0

    def __len__(self) -> int:
        return sum(int(v["y"].numel()) for v in self.per_class.values())

    def add_experience(self, x: Tensor, y: Tensor, ids: Tensor, task: Tensor | None = None) -> None:
        """Update the memory with an experience's data (all of it, as at an experience's end)."""
        task = torch.full_like(y, -1) if task is None else task
        gen = generator(self.seed, "class-balanced", self.n_updates)
        self.n_updates += 1
        classes = sorted(set(self.per_class) | set(int(c) for c in torch.unique(y)))
        base, extra = divmod(self.memory_size, len(classes))
        quota = {c: base + (1 if i < extra else 0) for i, c in enumerate(classes)}
        for c in classes:
            if c in self.per_class:
                kept = self.per_class[c]
                self.per_class[c] = {k: v[: quota[c]] for k, v in kept.items()}
                continue
            rows = (y == c).nonzero().reshape(-1)
            rows = rows[torch.randperm(rows.numel(), generator=gen)[: quota[c]]]
            self.per_class[c] = {"x": x[rows].detach().clone(), "y": y[rows].clone(), "ids": ids[rows].clone(), "task": task[rows].clone()}

    def filled(self) -> dict[str, Tensor | None]:
        """All stored samples, classes in ascending order."""
        if not self.per_class:
            e = torch.empty(0, dtype=torch.int64)
            return {"x": None, "y": e, "ids": e, "task": e, "extra": None}
        parts = [self.per_class[c] for c in sorted(self.per_class)]
        out: dict[str, Tensor | None] = {k: torch.cat([p[k] for p in parts]) for k in ("x", "y", "ids", "task")}
        out["extra"] = None
        return out

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        """Indices (into :meth:`filled`) of ``min(n, len)`` distinct samples."""
        m = len(self)
        return torch.randperm(m, generator=gen)[: min(n, m)]
