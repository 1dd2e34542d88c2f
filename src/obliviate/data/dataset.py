"""The dataset type: features, labels and a stable int64 id for every row."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from obliviate.errors import ObliviateError

INT64_RANGE = (-(2**63), 2**63 - 1)


def as_id_tensor(ids: Tensor | np.ndarray | Sequence[int]) -> Tensor:
    """Ids as a 1-D int64 CPU tensor (any shape is flattened).

    The one gate every user-given id passes: integer values only (a float array is accepted
    when every value is a whole number), within int64. Raises :class:`ObliviateError` naming
    the first bad value otherwise — ids are never truncated or wrapped silently.
    """
    if isinstance(ids, Tensor) and ids.dtype == torch.int64:
        return ids.reshape(-1).cpu()
    try:
        arr = np.asarray(ids.cpu() if isinstance(ids, Tensor) else ids)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ObliviateError(f"ids must be integers: {exc}") from None
    arr = arr.reshape(-1)
    if arr.dtype.kind == "O":  # Python ints of any size, or anything else
        bad = next((v for v in arr.tolist() if not _is_int64(v)), None)
        if bad is not None:
            raise ObliviateError(
                f"id {bad!r} is not an integer within int64 ({INT64_RANGE[0]}..{INT64_RANGE[1]})"
            )
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "b":  # True/False are not sample ids (True would be id 1)
        raise ObliviateError(
            "ids must be integers, got booleans (a mask?); pass the ids it selects"
        )
    elif arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > INT64_RANGE[1]:
            raise ObliviateError(f"id {int(arr.max())} is outside int64; ids must fit in int64")
    elif arr.dtype.kind == "f":
        whole = np.isfinite(arr) & (np.mod(arr, 1) == 0) & (np.abs(arr) < 2.0**63)
        if not whole.all():
            raise ObliviateError(
                f"id {arr[~whole][0]!r} is not a whole number; ids are integers (nothing is "
                "rounded or truncated)"
            )
    else:
        raise ObliviateError(f"ids must be integers, got values of type {arr.dtype}")
    return torch.from_numpy(np.ascontiguousarray(arr.astype(np.int64)))


def _is_int64(v: object) -> bool:
    return (
        isinstance(v, int | np.integer)
        and not isinstance(v, bool)
        and INT64_RANGE[0] <= int(v) <= INT64_RANGE[1]
    )


@dataclass(frozen=True, eq=False)
class Dataset:
    """Rows of ``x`` (float32, ``[N, *sample_shape]``), labels ``y`` (int64, ``[N]``) and ``ids``.

    ``ids`` are unique int64 values that identify a row for its whole life: they survive every
    split, subset, permutation and concatenation, and everything that forgets speaks them.
    ``task`` optionally holds a task id per row (task-incremental scenarios).

    Build one from user arrays with :meth:`from_arrays`, which validates everything; internal
    subsets skip the (costly) finiteness check because their parent passed it.
    """

    x: Tensor
    y: Tensor
    ids: Tensor
    n_classes: int
    task: Tensor | None = None
    name: str = ""

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if self.y.shape != (n,) or self.ids.shape != (n,):
            raise ObliviateError(
                f"dataset {self.name!r}: x has {n} rows but y has shape {tuple(self.y.shape)} "
                f"and ids {tuple(self.ids.shape)}; give one label and one id per row"
            )
        if self.task is not None and self.task.shape != (n,):
            raise ObliviateError(f"dataset {self.name!r}: task must have one entry per row")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray | Tensor,
        y: np.ndarray | Tensor,
        ids: np.ndarray | Tensor | None = None,
        *,
        n_classes: int | None = None,
        name: str = "arrays",
    ) -> Dataset:
        """Validate user arrays and wrap them. ``ids`` default to ``0..N-1``."""
        try:
            xt = torch.as_tensor(np.asarray(x, dtype=np.float32), device="cpu")
        except (ValueError, TypeError) as exc:
            raise ObliviateError(
                f"dataset {name!r}: features must be numbers ({exc}); convert x to a float array"
            ) from None
        y_np = np.asarray(y)
        if y_np.ndim != 1:
            raise ObliviateError(f"dataset {name!r}: labels must be 1-D, got shape {y_np.shape}")
        if y_np.dtype.kind not in "iubf":
            raise ObliviateError(
                f"dataset {name!r}: labels must be integers 0..n_classes-1, got {y_np.dtype} "
                "values; map class names to integers first (np.unique(y, return_inverse=True))"
            )
        if y_np.size and not np.all(np.isfinite(y_np) & np.equal(np.mod(y_np, 1), 0)):
            raise ObliviateError(f"dataset {name!r}: labels must be integers, got {y_np.dtype}")
        yt = torch.as_tensor(y_np.astype(np.int64), device="cpu")
        if xt.ndim < 2 or xt.shape[0] != yt.shape[0]:
            raise ObliviateError(
                f"dataset {name!r}: x must be [N, features...] with N = len(y) = {yt.shape[0]}, "
                f"got shape {tuple(xt.shape)}"
            )
        if xt.shape[0] == 0:
            raise ObliviateError(f"dataset {name!r} is empty; give at least one row")
        bad = ~torch.isfinite(xt.reshape(xt.shape[0], -1)).all(dim=1)
        if bad.any():
            row = int(bad.nonzero()[0, 0])
            raise ObliviateError(
                f"dataset {name!r}: features contain NaN or inf ({int(bad.sum())} rows, first "
                f"row {row}); clean or impute them first"
            )
        k = int(yt.max()) + 1 if n_classes is None else int(n_classes)
        if int(yt.min()) < 0 or int(yt.max()) >= k:
            off = int(yt.min()) if int(yt.min()) < 0 else int(yt.max())
            raise ObliviateError(
                f"dataset {name!r}: label {off} is outside the class range 0..{k - 1}; "
                "labels must be 0..n_classes-1"
            )
        it = (
            torch.arange(xt.shape[0], dtype=torch.int64, device=xt.device)
            if ids is None
            else as_id_tensor(ids)
        )
        if it.numel() != xt.shape[0]:
            raise ObliviateError(f"dataset {name!r}: {it.numel()} ids for {xt.shape[0]} rows")
        if torch.unique(it).numel() != it.numel():
            raise ObliviateError(f"dataset {name!r}: ids must be unique")
        return cls(x=xt, y=yt, ids=it, n_classes=k, name=name)

    # ---- views --------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.sample_shape))

    def subset(self, index: Tensor | np.ndarray | Sequence[int]) -> Dataset:
        """Rows chosen by an integer index or a boolean mask (order follows ``index``)."""
        if isinstance(index, Tensor):
            idx = index.to(self.x.device)
        else:
            idx = torch.as_tensor(np.asarray(index), device=self.x.device)
        if idx.dtype == torch.bool:
            idx = idx.nonzero().reshape(-1)
        idx = idx.to(torch.int64)
        task = None if self.task is None else self.task[idx]
        return replace(self, x=self.x[idx], y=self.y[idx], ids=self.ids[idx], task=task)

    def positions(self, ids: Tensor | np.ndarray | Sequence[int]) -> Tensor:
        """Row positions of ``ids``; unknown ids raise an error that names them."""
        want = as_id_tensor(ids).to(self.ids.device)
        order = torch.argsort(self.ids)
        sorted_ids = self.ids[order]
        pos = torch.searchsorted(sorted_ids, want).clamp(max=max(len(self) - 1, 0))
        found = sorted_ids[pos] == want if len(self) else torch.zeros_like(want, dtype=torch.bool)
        if not bool(found.all()):
            missing = want[~found]
            shown = ", ".join(str(int(i)) for i in missing[:10])
            more = f" (and {missing.numel() - 10} more)" if missing.numel() > 10 else ""
            raise ObliviateError(
                f"{missing.numel()} id(s) are not in dataset {self.name!r}: {shown}{more}; "
                "ids must name rows that were trained on"
            )
        return order[pos]

    def select_ids(self, ids: Tensor | np.ndarray | Sequence[int]) -> Dataset:
        """The rows with these ids, in the order given."""
        return self.subset(self.positions(ids))

    def without_ids(self, ids: Tensor | np.ndarray | Sequence[int]) -> Dataset:
        """All rows except those with these ids (unknown ids are an error)."""
        keep = torch.ones(len(self), dtype=torch.bool, device=self.ids.device)
        keep[self.positions(ids)] = False
        return self.subset(keep)

    def with_x(self, x: Tensor) -> Dataset:
        """Same rows with transformed features (ids and labels untouched)."""
        return replace(self, x=x)

    def with_task(self, task_id: int) -> Dataset:
        task = torch.full((len(self),), int(task_id), dtype=torch.int64, device=self.x.device)
        return replace(self, task=task)

    def renamed(self, name: str) -> Dataset:
        return replace(self, name=name)

    @staticmethod
    def concat(parts: Sequence[Dataset], name: str | None = None) -> Dataset:
        """Rows of all parts, in order. Ids must stay unique."""
        if not parts:
            raise ObliviateError("cannot concatenate zero datasets")
        tasks = [p.task for p in parts]
        task = None if any(t is None for t in tasks) else torch.cat(tasks)  # type: ignore[arg-type]
        out = Dataset(
            x=torch.cat([p.x for p in parts]),
            y=torch.cat([p.y for p in parts]),
            ids=torch.cat([p.ids for p in parts]),
            n_classes=max(p.n_classes for p in parts),
            task=task,
            name=parts[0].name if name is None else name,
        )
        return out

    def fingerprint(self) -> str:
        """:func:`data_fingerprint` of this dataset."""
        return data_fingerprint(self)


def data_fingerprint(data: Dataset) -> str:
    """sha256 (64 hex digits) of a dataset's rows: its ids (int64), labels (int64) and features
    (float32), in row order, as raw bytes. Equal rows in equal order give equal fingerprints;
    a sharded store keeps it to refuse data that differs from what it was trained on, and the
    unlearning cache keys trained models by it."""
    import hashlib

    h = hashlib.sha256()
    for t in (data.ids, data.y, data.x):
        h.update(np.ascontiguousarray(t.numpy()).tobytes())
    return h.hexdigest()
