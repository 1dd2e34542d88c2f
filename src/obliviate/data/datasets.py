"""Built-in data sources. Each returns a deterministic (train, test) pair of :class:`Dataset`.

Ids are assigned once per source and never change: for sources with a fixed split (MNIST,
Fashion-MNIST, mnist1d) train rows get ``0..N-1`` and test rows ``N..N+M-1``; for sources split
here (digits, npz without a test part, synthetic) a row keeps its original row index.
Standardisation is fitted on the training part only (per feature mean and std).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError

Raw = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]

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
    from mnist1d.data import get_dataset_args, make_dataset

    d = make_dataset(get_dataset_args())
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
    with opener(path, "rb") as f:  # type: ignore[operator]
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ObliviateError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
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


def _npz(path: str) -> Raw:
    p = Path(path).expanduser()
    if not p.exists():
        raise ObliviateError(
            f"npz file {str(p)!r} does not exist; give npz:PATH to a .npz with arrays x and y"
        )
    with np.load(p) as f:
        keys = set(f.files)
        if not {"x", "y"} <= keys:
            raise ObliviateError(f"{p}: needs arrays 'x' and 'y' (found {sorted(keys)})")
        x_test = f["x_test"] if "x_test" in keys else None
        y_test = f["y_test"] if "y_test" in keys else None
        return f["x"], f["y"], x_test, y_test


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


def standardize(train: Dataset, test: Dataset) -> tuple[Dataset, Dataset]:
    """Per-feature standardisation with mean and std fitted on ``train`` only."""
    flat = train.x.reshape(len(train), -1)
    mean = flat.mean(dim=0)
    std = flat.std(dim=0).clamp_min(1e-6)

    def apply(d: Dataset) -> Dataset:
        return d.with_x(((d.x.reshape(len(d), -1) - mean) / std).reshape(d.x.shape))

    return apply(train), apply(test)


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
    if name.startswith("npz:"):
        raw = _npz(name[4:])
        label = "npz"
    elif name in DATASETS:
        raw = DATASETS[name](data_dir)
        label = name
    else:
        valid = ", ".join(list(DATASETS) + ["npz:PATH"])
        raise ObliviateError(f"unknown dataset {name!r}; valid: {valid}")
    x, y, x_test, y_test = raw
    if x_test is None:
        full = Dataset.from_arrays(x, y, name=label)
        tr, te = stratified_split(full.y.numpy(), test_fraction, split_seed)
        train, test = full.subset(tr), full.subset(te)
    else:
        assert y_test is not None
        k = int(max(np.max(y), np.max(y_test))) + 1
        train = Dataset.from_arrays(x, y, n_classes=k, name=label)
        ids = np.arange(len(train), len(train) + len(y_test))
        test = Dataset.from_arrays(x_test, y_test, ids, n_classes=k, name=label)
    if limit is not None:
        train = train.subset(torch.arange(min(limit, len(train))))
    if standardized:
        train, test = standardize(train, test)
    return replace(train, name=label), replace(test, name=label + ":test")


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
