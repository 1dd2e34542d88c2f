"""IDX loading (MNIST / Fashion-MNIST format) on tiny generated files."""

import gzip
import struct

import numpy as np
import pytest

from obliviate.data import load_dataset
from obliviate.data.datasets import read_idx
from obliviate.errors import ObliviateError


def _write_idx(path, arr, gz):
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + b"".join(
        struct.pack(">I", d) for d in arr.shape
    )
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads_with_disjoint_ids(tmp_path, gz):
    rng = np.random.default_rng(0)
    xtr, ytr = rng.integers(0, 256, (30, 28, 28)), np.arange(30) % 10
    xte, yte = rng.integers(0, 256, (10, 28, 28)), np.arange(10)
    _write_idx(tmp_path / "train-images-idx3-ubyte", xtr, gz)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", ytr, gz)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", xte, gz)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", yte, gz)
    name = "t10k-labels-idx1-ubyte" + (".gz" if gz else "")
    assert read_idx(tmp_path / name).tolist() == yte.tolist()
    tr, te = load_dataset("fashion-mnist", data_dir=str(tmp_path), standardized=False)
    assert tr.sample_shape == (1, 28, 28) and len(tr) == 30 and len(te) == 10
    assert tr.ids.tolist() == list(range(30)) and te.ids.tolist() == list(range(30, 40))
    np.testing.assert_allclose(tr.x[3, 0].numpy(), xtr[3] / 255.0, rtol=1e-6)


def test_bad_idx_file_is_a_clear_error(tmp_path):
    (tmp_path / "x").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ObliviateError, match="not an IDX file"):
        read_idx(tmp_path / "x")


def test_mnist1d_generation_leaves_the_global_random_state_alone():
    """mnist1d's generator seeds numpy's and Python's global generators; loading must not."""
    import random

    from obliviate.data.datasets import _mnist1d_arrays

    _mnist1d_arrays.cache_clear()
    np.random.seed(1234)
    random.seed(1234)
    expected_np, expected_py = np.random.random(), random.random()
    np.random.seed(1234)
    random.seed(1234)
    _mnist1d_arrays()
    assert (np.random.random(), random.random()) == (expected_np, expected_py)
