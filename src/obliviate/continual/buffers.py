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
from obliviate.continual.base import deleted_rows


class ReservoirBuffer:
    """Reservoir sampling (Vitter, 1985, Algorithm R): every sample seen so far has the same
    probability ``memory_size / n_seen`` of being in the buffer.

    ``extra`` holds one optional tensor per sample (e.g. DER's logits), stored alongside (in
    float32 when floating, whatever precision the forward pass ran at).
    Storage is allocated for ``memory_size`` rows at the first ``add`` and zero-filled, so slots
    not yet used hold zeros (never leftover memory).
    """

    def __init__(self, *, memory_size: int, seed: int = 0) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="ReservoirBuffer")
        self.memory_size, self.seed = memory_size, seed
        self.n_seen = 0
        self.x: Tensor | None = None
        self.y = torch.empty(0, dtype=torch.int64, device="cpu")  # until the first add
        self.ids = torch.empty(0, dtype=torch.int64, device="cpu")
        self.task = torch.empty(0, dtype=torch.int64, device="cpu")
        self.extra: Tensor | None = None
        self._filled = 0

    def __len__(self) -> int:
        return self._filled

    def add(
        self,
        x: Tensor,
        y: Tensor,
        ids: Tensor,
        task: Tensor | None = None,
        extra: Tensor | None = None,
    ) -> None:
        """Offer a batch to the reservoir (Algorithm R, one sample at a time)."""
        x, y, ids = x.detach(), y.detach(), ids.detach()
        task = torch.full_like(y, -1) if task is None else task.detach()
        extra = None if extra is None else extra.detach()
        if extra is not None and extra.is_floating_point():
            extra = extra.float()  # logits from an autocast forward are stored in float32
        if self.x is None:
            self.x = x.new_zeros((self.memory_size, *x.shape[1:]))
            self.y = y.new_zeros(self.memory_size)
            self.ids = ids.new_zeros(self.memory_size)
            self.task = task.new_zeros(self.memory_size)
            if extra is not None:
                self.extra = extra.new_zeros((self.memory_size, *extra.shape[1:]))
        gen = generator(self.seed, "reservoir", self.n_seen)
        draws = torch.randint(0, 2**62, (len(y),), generator=gen, device=gen.device)
        for k in range(len(y)):
            if self._filled < self.memory_size:
                slot = self._filled
                self._filled += 1
            else:
                slot = int(draws[k] % (self.n_seen + 1))
            self.n_seen += 1
            if slot < self.memory_size:
                self.x[slot], self.y[slot], self.ids[slot], self.task[slot] = (
                    x[k],
                    y[k],
                    ids[k],
                    task[k],
                )
                if self.extra is not None and extra is not None:
                    self.extra[slot] = extra[k]

    def filled(self) -> dict[str, Tensor | None]:
        """The stored samples: ``x``, ``y``, ``ids``, ``task`` (-1 = none) and ``extra``."""
        if self.x is None:
            return {"x": None, "y": self.y, "ids": self.ids, "task": self.task, "extra": None}
        f = self._filled
        extra = None if self.extra is None else self.extra[:f]
        return {
            "x": self.x[:f],
            "y": self.y[:f],
            "ids": self.ids[:f],
            "task": self.task[:f],
            "extra": extra,
        }

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        """Indices of ``min(n, len)`` distinct stored samples, drawn with ``gen``."""
        f = self._filled
        return torch.randperm(f, generator=gen, device=gen.device)[: min(n, f)]

    def purge(self, ids: Tensor) -> int:
        """Remove every stored row whose id is in ``ids`` (int64 ``[K]``); return how many.

        The kept rows move to the front in their slot order, into freshly zeroed storage (no
        deleted row survives in an unused slot), with their ``extra`` tensors. The count of
        offered samples ``n_seen`` drops by the number of rows removed, so the buffer continues
        as Algorithm R after a stream that never offered them: the next offered samples first
        fill the freed slots, then replace with probability ``memory_size / n_seen``. (Deleted
        samples that were offered but not stored are not known to the buffer and stay counted;
        a count is no sample.) Deterministic: no random draw.
        """
        f = self._filled
        if self.x is None or f == 0:
            return 0
        gone = deleted_rows(self.ids[:f], ids)
        n_gone = int(gone.sum())
        if n_gone == 0:
            return 0
        keep = (~gone).nonzero().reshape(-1)
        k = int(keep.numel())
        for name in ("x", "y", "ids", "task", "extra"):
            old = getattr(self, name)
            if old is None:
                continue
            new = torch.zeros_like(old)
            new[:k] = old[keep]
            setattr(self, name, new)
        self._filled = k
        self.n_seen -= n_gone
        return n_gone


class ClassBalancedBuffer:
    """Equal memory per class seen so far: ``memory_size // n_classes_seen`` each (remainder to
    the lowest class ids). Each class's share is a uniform random sample of every sample of that
    class offered so far (reservoir sampling per class), so a class that comes back in a later
    experience (domain-incremental streams) refreshes its share. When new classes arrive, every
    stored class is trimmed to its new quota by a uniform random choice (seeded).
    """

    def __init__(self, *, memory_size: int, seed: int = 0) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="ClassBalancedBuffer")
        self.memory_size, self.seed = memory_size, seed
        self.per_class: dict[int, dict[str, Tensor]] = {}
        self.n_seen: dict[int, int] = {}
        self.n_updates = 0

    def __len__(self) -> int:
        return sum(int(v["y"].numel()) for v in self.per_class.values())

    def quotas(self, classes: list[int]) -> dict[int, int]:
        """Samples allowed per class when ``classes`` have been seen."""
        classes = sorted(classes)
        base, extra = divmod(self.memory_size, len(classes))
        return {c: base + (1 if i < extra else 0) for i, c in enumerate(classes)}

    def add_experience(self, x: Tensor, y: Tensor, ids: Tensor, task: Tensor | None = None) -> None:
        """Update the memory with an experience's data (all of it, as at an experience's end)."""
        task = torch.full_like(y, -1) if task is None else task
        gen = generator(self.seed, "class-balanced", self.n_updates)
        self.n_updates += 1
        quota = self.quotas(list(set(self.per_class) | set(int(c) for c in torch.unique(y))))
        for c in sorted(quota):
            kept = self.per_class.get(c)
            if kept is not None and kept["y"].numel() > quota[c]:
                keep = (
                    torch.randperm(kept["y"].numel(), generator=gen, device=gen.device)[: quota[c]]
                    .sort()
                    .values
                )
                kept = {k: v[keep] for k, v in kept.items()}
            rows = (y == c).nonzero().reshape(-1)
            n_before = self.n_seen.get(c, 0)
            self.n_seen[c] = n_before + int(rows.numel())
            if kept is None:
                kept = {
                    "x": x[rows[:0]].detach().clone(),
                    "y": y[rows[:0]].clone(),
                    "ids": ids[rows[:0]].clone(),
                    "task": task[rows[:0]].clone(),
                }
            # Algorithm R within the class: sample j (0-based among the class's samples) goes in
            # while there is room, otherwise replaces slot r ~ U{0..j} if r < quota.
            slots = [int(i) for i in range(kept["y"].numel())]
            chosen: dict[int, int] = {}  # slot -> row of the new data
            draws = torch.randint(0, 2**62, (int(rows.numel()),), generator=gen, device=gen.device)
            size = len(slots)
            for k, r in enumerate(rows.tolist()):
                j = n_before + k
                if size < quota[c]:
                    chosen[size] = r
                    size += 1
                else:
                    slot = int(draws[k] % (j + 1))
                    if slot < quota[c]:
                        chosen[slot] = r
            new = {key: val.clone() for key, val in kept.items()}
            grow = size - kept["y"].numel()
            if grow:
                pad = rows[:1].expand(grow)
                new = {
                    "x": torch.cat([new["x"], x[pad].detach()]),
                    "y": torch.cat([new["y"], y[pad]]),
                    "ids": torch.cat([new["ids"], ids[pad]]),
                    "task": torch.cat([new["task"], task[pad]]),
                }
            if chosen:
                where = torch.tensor(sorted(chosen), device=y.device)
                src = torch.tensor([chosen[s] for s in sorted(chosen)], device=y.device)
                new["x"][where] = x[src].detach()
                new["y"][where], new["ids"][where], new["task"][where] = y[src], ids[src], task[src]
            self.per_class[c] = new

    def filled(self) -> dict[str, Tensor | None]:
        """All stored samples, classes in ascending order."""
        if not self.per_class:
            e = torch.empty(0, dtype=torch.int64, device="cpu")  # nothing stored yet
            return {"x": None, "y": e, "ids": e, "task": e, "extra": None}
        parts = [self.per_class[c] for c in sorted(self.per_class)]
        out: dict[str, Tensor | None] = {
            k: torch.cat([p[k] for p in parts]) for k in ("x", "y", "ids", "task")
        }
        out["extra"] = None
        return out

    def sample(self, n: int, gen: torch.Generator) -> Tensor:
        """Indices (into :meth:`filled`) of ``min(n, len)`` distinct samples."""
        m = len(self)
        return torch.randperm(m, generator=gen, device=gen.device)[: min(n, m)]

    def purge(self, ids: Tensor) -> int:
        """Remove every stored row whose id is in ``ids`` (int64 ``[K]``); return how many.

        Each class keeps its other rows in order; its count of offered samples drops by the
        rows removed (as :meth:`ReservoirBuffer.purge`). A class left with no row is dropped
        from the memory (and from the quotas of the next update), as if it had never been
        stored. Deterministic: no random draw.
        """
        n_gone = 0
        for c in sorted(self.per_class):
            kept = self.per_class[c]
            gone = deleted_rows(kept["ids"], ids)
            n = int(gone.sum())
            if n == 0:
                continue
            n_gone += n
            if n == int(gone.numel()):
                del self.per_class[c]
                del self.n_seen[c]
                continue
            self.per_class[c] = {k: v[~gone].clone() for k, v in kept.items()}
            self.n_seen[c] -= n
        return n_gone
