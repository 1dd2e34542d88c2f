"""Built-in data sources. Each returns a deterministic (train, test) pair of :class:`Dataset`.

Ids are assigned once per source and never change: for sources with a fixed split (MNIST,
Fashion-MNIST, mnist1d) train rows get ``0..N-1`` and test rows ``N..N+M-1``; for sources split
here (digits, npz without a test part, synthetic) a row keeps its original row index.
Standardisation is fitted on the training part only (per feature mean and std).
"""

from __future__ import annotations

import gzip
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError

Raw = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None] | dict[str, np.ndarray]
"""A source's arrays: ``(x, y, x_test, y_test)`` (the tests may be ``None``), or a dict with
``x``, ``y`` and optionally ``ids``, ``x_test``, ``y_test``, ``ids_test`` (the user's own ids)."""

RAW_KEYS = ("x", "y", "ids", "x_test", "y_test", "ids_test")


def _as_arrays(raw: Raw, source: str) -> dict[str, np.ndarray]:
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - set(RAW_KEYS))
        if unknown or not {"x", "y"} <= set(raw):
            raise ObliviateError(
                f"dataset {source!r}: the loader returned keys {sorted(raw)}; expected x, y and "
                f"optionally {', '.join(RAW_KEYS[2:])}"
            )
        return {k: v for k, v in raw.items() if v is not None}
    if not isinstance(raw, tuple) or len(raw) != 4:
        raise ObliviateError(
            f"dataset {source!r}: the loader must return (x, y, x_test, y_test) or a dict"
        )
    x, y, x_test, y_test = raw
    out = {"x": x, "y": y}
    if x_test is not None:
        if y_test is None:
            raise ObliviateError(f"dataset {source!r}: the loader returned x_test without y_test")
        out |= {"x_test": x_test, "y_test": y_test}
    return out


DATA_ENV = "OBLIVIATE_DATA"
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


# ---- sources -------------------------------------------------------------------------------
def _digits(data_dir: str | None) -> Raw:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0, d.target, None, None


@lru_cache(maxsize=1)
def _mnist1d_arrays() -> Raw:
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    # mnist1d's generator seeds numpy's and Python's global random state: give the caller's back
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return (
        d["x"].astype(np.float32),
        d["y"].astype(np.int64),
        d["x_test"].astype(np.float32),
        d["y_test"].astype(np.int64),
    )


def _mnist1d(data_dir: str | None) -> Raw:
    return _mnist1d_arrays()


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped): big-endian header, then raw bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ObliviateError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ObliviateError(f"{path}: unknown IDX dtype code {data[2]:#x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=dtypes[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ObliviateError(f"{path}: header says {shape} but the file holds {arr.size} values")
    return arr.reshape(shape)


def _find_idx_folder(name: str, data_dir: str | None) -> Path:
    candidates: list[Path] = []
    base = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    if base:
        root = Path(base).expanduser()
        candidates += [root, root / name, root / name.replace("-", "_")]
    if name == "fashion-mnist":  # where Debian's dataset-fashion-mnist package puts its files
        candidates.append(Path("/usr/share/datasets/fashion-mnist"))
    for folder in candidates:
        if all((folder / f).exists() or (folder / (f + ".gz")).exists() for f in IDX_FILES):
            return folder
    where = (
        ", ".join(str(c) for c in candidates) or "nowhere (no --data-dir and no $" + DATA_ENV + ")"
    )
    raise ObliviateError(
        f"{name}: no folder with its IDX files; looked in {where}. Put the four files "
        f"{', '.join(f + '[.gz]' for f in IDX_FILES)} in a folder and pass --data-dir DIR "
        f"or set {DATA_ENV}=DIR"
    )


def _idx_source(name: str) -> Callable[[str | None], Raw]:
    def load(data_dir: str | None) -> Raw:
        folder = _find_idx_folder(name, data_dir)

        def get(stem: str) -> np.ndarray:
            p = folder / stem
            return read_idx(p if p.exists() else folder / (stem + ".gz"))

        xtr, ytr, xte, yte = (get(f) for f in IDX_FILES)
        scale = np.float32(1.0 / 255.0)
        return (
            xtr.reshape(-1, 1, 28, 28).astype(np.float32) * scale,
            ytr.astype(np.int64),
            xte.reshape(-1, 1, 28, 28).astype(np.float32) * scale,
            yte.astype(np.int64),
        )

    return load


def synthetic_arrays(
    *,
    n_classes: int = 4,
    n_per_class: int = 60,
    n_features: int = 8,
    spread: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs: class ``c`` is centred on a random unit-scale mean, noise ``spread``."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 3.0, size=(n_classes, n_features))
    x = np.concatenate([m + spread * rng.normal(size=(n_per_class, n_features)) for m in means])
    y = np.repeat(np.arange(n_classes), n_per_class)
    return x.astype(np.float32), y.astype(np.int64)


def _synthetic(data_dir: str | None) -> Raw:
    x, y = synthetic_arrays(n_classes=10, n_per_class=100, n_features=20, seed=0)
    return x, y, None, None


NPZ_HINT = (
    "a valid file is a numpy .npz archive holding numeric arrays x [N, ...] and y [N] "
    "(optional ids, x_test, y_test, ids_test); save one with numpy.savez(path, x=..., y=...)"
)


def _check_npz_archive(p: Path) -> None:
    """Refuse a file that is not an npz archive (a zip of ``.npy`` members) before numpy reads
    it: numpy would take a text file for a pickle and advise unpickling it."""
    try:
        with p.open("rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise ObliviateError(f"cannot read npz file {str(p)!r}: {exc.strerror or exc}") from None
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return
    what = "a single .npy array" if head.startswith(b"\x93NUMPY") else "not an npz archive"
    raise ObliviateError(f"{str(p)!r} is {what}; {NPZ_HINT}")


def _npz(path: str) -> Raw:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ObliviateError(
            f"npz file {str(p)!r} does not exist; give npz:PATH to a .npz with arrays x and y"
        )
    _check_npz_archive(p)
    try:
        with np.load(p, allow_pickle=False) as f:
            keys = set(f.files)
            if not {"x", "y"} <= keys:
                raise ObliviateError(f"{p}: needs arrays 'x' and 'y' (found {sorted(keys)})")
            arrays = {k: f[k] for k in RAW_KEYS if k in keys}
    except ObliviateError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        text = str(exc)
        why = (
            "it holds object arrays (e.g. strings), which are never unpickled"
            if "pickle" in text
            else " ".join(text.split())[:160]
        )
        raise ObliviateError(
            f"{p} is not a readable .npz of numeric arrays ({why}); {NPZ_HINT}"
        ) from None
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise ObliviateError(f"{p}: give both x_test and y_test, or neither")
    if "x_test" in arrays:
        shape, shape_test = arrays["x"].shape[1:], arrays["x_test"].shape[1:]
        if shape != shape_test:
            raise ObliviateError(
                f"{p}: x rows have shape {shape} but x_test rows {shape_test}; they must match"
            )
    if "ids_test" in arrays and "x_test" not in arrays:
        raise ObliviateError(f"{p}: ids_test given without x_test and y_test")
    return arrays


DATASETS: dict[str, Callable[[str | None], Raw]] = {
    "digits": _digits,
    "mnist1d": _mnist1d,
    "mnist": _idx_source("mnist"),
    "fashion-mnist": _idx_source("fashion-mnist"),
    "synthetic": _synthetic,
}
"""Built-in sources by name; ``npz:PATH`` loads user arrays (x, y[, ids, x_test, y_test])."""

DATASET_HELP = {
    "digits": "scikit-learn digits, 1797 8x8 images, 10 classes (embedded)",
    "mnist1d": "MNIST-1D generated offline, 4000/1000 x 40, 10 classes (embedded)",
    "mnist": "MNIST IDX files from --data-dir / $OBLIVIATE_DATA, 60000/10000 28x28",
    "fashion-mnist": "Fashion-MNIST IDX files (Debian dataset-fashion-mnist or --data-dir)",
    "synthetic": "Gaussian blobs, 1000 x 20, 10 classes (tests)",
    "npz:PATH": "your arrays: x, y, optional ids, x_test, y_test",
}


# ---- splitting and standardisation ---------------------------------------------------------
def stratified_split(
    y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: row indices (train, test), each sorted."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        rows = rows[rng.permutation(rows.size)]
        n_test = int(round(test_fraction * rows.size))
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


@dataclass(frozen=True, eq=False)
class Standardization:
    """The loader's preprocessing: per-feature ``(x - mean) / scale``, fitted on a training split
    (:func:`fit_standardization`; see :func:`standardize` for the std and constant features).

    ``mean``, ``scale``: float32 ``[D]`` (``D`` features per row, flattened). Apply it with
    :meth:`apply` to raw rows ``[N, ...]`` whose flattened width is ``D``.
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, ...]`` raw rows -> standardised rows of the same shape (float32). Raises
        :class:`ObliviateError` when a row does not have ``D`` features."""
        try:
            x = torch.as_tensor(np.asarray(x, dtype=np.float32), device="cpu")
        except (TypeError, ValueError) as exc:
            raise ObliviateError(f"input rows must be numbers: {exc}") from None
        if x.ndim and x.shape[0] == 0:
            return x.clone()  # no rows
        flat = x.reshape(x.shape[0], -1) if x.ndim else x.reshape(1, -1)
        if flat.shape[1] != self.mean.numel():
            raise ObliviateError(
                f"input rows have {flat.shape[1]} features; this standardisation expects "
                f"{self.mean.numel()} (the width it was fitted on)"
            )
        return ((flat - self.mean) / self.scale).reshape(x.shape)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready (float32 values are exact as Python floats)."""
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> Standardization:
        return cls(
            torch.tensor(d["mean"], dtype=torch.float32, device="cpu"),
            torch.tensor(d["scale"], dtype=torch.float32, device="cpu"),
        )


def fit_standardization(train: Dataset) -> Standardization:
    """The :class:`Standardization` :func:`standardize` fits on ``train`` (raw rows)."""
    flat = train.x.reshape(len(train), -1)
    mean = flat.mean(dim=0)
    std = flat.std(dim=0) if len(train) > 1 else torch.zeros_like(mean)
    return Standardization(mean, torch.where(std < 1e-6, torch.ones_like(std), std))


def standardize(train: Dataset, test: Dataset) -> tuple[Dataset, Dataset]:
    """Per-feature standardisation with mean and std fitted on ``train`` only.

    The std is torch's default, the unbiased one (``ddof = 1``): it is what every figure of this
    project was measured with, and it differs from scikit-learn's ``StandardScaler``
    (``ddof = 0``) by the factor ``sqrt(N / (N - 1))`` (1.0003 on digits), which no model
    notices. A feature that is constant in the training split (std below ``1e-6``) keeps scale
    1, as in ``StandardScaler``: it is only centred, so a test row that differs there stays
    finite and small instead of being divided by ~0.
    """
    fitted = fit_standardization(train)

    def apply(d: Dataset) -> Dataset:
        return d.with_x(((d.x.reshape(len(d), -1) - fitted.mean) / fitted.scale).reshape(d.x.shape))

    return apply(train), apply(test)


def _n_classes(y: np.ndarray, y_test: np.ndarray, name: str) -> int:
    for arr in (y, y_test):
        if np.asarray(arr).dtype.kind not in "iubf" or np.asarray(arr).size == 0:
            # from_arrays names the problem precisely
            Dataset.from_arrays(np.zeros((max(len(arr), 1), 1)), np.asarray(arr), name=name)
    return int(max(np.max(y), np.max(y_test))) + 1


def load_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    standardized: bool = True,
    limit: int | None = None,
) -> tuple[Dataset, Dataset]:
    """Load a named source as (train, test).

    ``split_seed`` fixes the train/test split for sources without one (kept apart from the run
    seed, so every run of a benchmark sees the same split). ``limit`` keeps the first ``limit``
    training rows (after the split), for quick runs.
    """
    raw: Raw
    if name.startswith("npz:"):
        raw = _npz(name[4:])
        label = "npz"
    elif name in DATASETS:
        raw = DATASETS[name](data_dir)
        label = name
    else:
        valid = ", ".join(list(DATASETS) + ["npz:PATH"])
        raise ObliviateError(f"unknown dataset {name!r}; valid: {valid}")
    arrays = _as_arrays(raw, name)
    x, y, ids = arrays["x"], arrays["y"], arrays.get("ids")
    if "x_test" not in arrays:
        full = Dataset.from_arrays(x, y, ids, name=label)
        tr, te = stratified_split(full.y.numpy(), test_fraction, split_seed)
        if len(te) == 0 or len(tr) == 0:
            raise ObliviateError(
                f"dataset {name!r}: a {test_fraction:.0%} stratified test split of {len(full)} "
                f"rows ({len(full) // max(full.n_classes, 1)} per class on average) leaves an "
                "empty part; give more rows per class, or your own x_test and y_test"
            )
        train, test = full.subset(tr), full.subset(te)
    else:
        x_test, y_test = arrays["x_test"], arrays["y_test"]
        k = _n_classes(y, y_test, name)
        train = Dataset.from_arrays(x, y, ids, n_classes=k, name=label)
        ids_test = arrays.get("ids_test")
        if ids_test is None:  # after every training id, so the two never collide
            start = int(train.ids.max()) + 1
            ids_test = np.arange(start, start + len(y_test))
        test = Dataset.from_arrays(x_test, y_test, ids_test, n_classes=k, name=label)
        clash = np.intersect1d(train.ids.numpy(), test.ids.numpy())
        if clash.size:
            raise ObliviateError(
                f"dataset {name!r}: id {int(clash[0])} names a training row and a test row; "
                "ids must be unique across both"
            )
    if limit is not None:
        train = train.subset(torch.arange(min(limit, len(train)), device="cpu"))
    if standardized:
        train, test = standardize(train, test)
    return replace(train, name=label), replace(test, name=label + ":test")


def loader_standardization(
    name: str,
    *,
    data_dir: str | None = None,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    limit: int | None = None,
) -> Standardization:
    """The standardisation :func:`load_dataset` applies to ``name`` with these arguments (fitted
    on the same raw training split), so raw rows of that source can be preprocessed exactly as
    the loader does: ``loader_standardization("mnist", data_dir=d).apply(raw_rows)``."""
    train, _ = load_dataset(
        name,
        data_dir=data_dir,
        test_fraction=test_fraction,
        split_seed=split_seed,
        standardized=False,
        limit=limit,
    )
    return fit_standardization(train)


def synthetic_dataset(
    *,
    n_classes: int = 4,
    n_per_class: int = 60,
    n_features: int = 8,
    seed: int = 0,
    test_fraction: float = 0.25,
) -> tuple[Dataset, Dataset]:
    """A small standardised Gaussian-blob (train, test) pair for tests."""
    x, y = synthetic_arrays(
        n_classes=n_classes, n_per_class=n_per_class, n_features=n_features, seed=seed
    )
    full = Dataset.from_arrays(x, y, n_classes=n_classes, name="synthetic")
    tr, te = stratified_split(y, test_fraction, seed)
    return standardize(full.subset(tr), full.subset(te).renamed("synthetic:test"))
