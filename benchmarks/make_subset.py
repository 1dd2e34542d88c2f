"""Write the first rows of a built-in image dataset as an ``npz:`` file for quick unlearning grids.

Usage::

    python benchmarks/make_subset.py mnist --data-dir DIR --n-train 2000 --n-test 2000 \
        --out results/mnist_2k.npz

Keeps the first ``--n-train`` training rows and the first ``--n-test`` test rows of the canonical
split (uint8 pixels as float32, shape ``[N, 1, 28, 28]``; ``ids`` are the original row indices,
test ids offset by the training-set size), so ``load_dataset("npz:OUT")`` standardises them with
the training rows' statistics exactly as ``load_dataset(name, limit=n_train)`` does. The test
subset exists because evaluating on all 10 000 test rows dominates a forget run on a shared
2-core CPU (about 75 of the 94 wall seconds of one CNN ``retrain`` run at 2000 training rows).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from obliviate.data.datasets import DATASETS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=["mnist", "fashion-mnist"])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    x, y, x_test, y_test = DATASETS[args.dataset](args.data_dir)
    n, m = min(args.n_train, len(y)), min(args.n_test, len(y_test))
    np.savez(
        args.out,
        x=np.asarray(x[:n], dtype=np.float32),
        y=np.asarray(y[:n], dtype=np.int64),
        ids=np.arange(n),
        x_test=np.asarray(x_test[:m], dtype=np.float32),
        y_test=np.asarray(y_test[:m], dtype=np.int64),
        ids_test=np.arange(len(y), len(y) + m),
    )
    counts = np.bincount(np.asarray(y[:n]), minlength=10).tolist()
    print(f"{args.out}: {n} train rows (per class {counts}), {m} test rows, x {np.shape(x[:n])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
