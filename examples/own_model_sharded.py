"""Exact sharded training and deletion (SISA) on your own arrays and ids.

    python examples/own_model_sharded.py [--small]

Not yet your own model: the sharded engine builds its shard models from a built-in
``ModelSpec`` (here obliviate's small CNN); your arrays and ids go in through an ``.npz`` file.
The ``__main__`` guard is required by the default process-pool backend (workers re-import this
file); without it ``ShardedStore.train`` refuses at once, before writing anything. The store keeps
its own preprocessing: ``store.predict`` takes your raw rows.
"""

import json
import tempfile

import numpy as np
from _user_data import SMALL, user_arrays

from obliviate.data.datasets import load_dataset
from obliviate.models import ModelSpec
from obliviate.sharded import DataSpec, ShardConfig, ShardedStore
from obliviate.training import Recipe, TrainConfig

if __name__ == "__main__":
    x, y, ids = user_arrays()  # your ids: 1000, 1010, ...
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(f"{tmp}/mydata.npz", x=x, y=y, ids=ids)  # the store speaks your ids
        data = DataSpec(f"npz:{tmp}/mydata.npz")
        train_config = TrainConfig(n_epochs=5 if SMALL else 10, lr=0.05, momentum=0.9)
        config = ShardConfig(
            n_shards=3 if SMALL else 5,
            n_slices=2 if SMALL else 4,
            recipe=Recipe(ModelSpec("cnn", hidden=(64,)), train_config),
        )
        store = ShardedStore.train(f"{tmp}/store", data=data, config=config, backend="inline")
        train, test = load_dataset(data.dataset)  # the store's split and standardisation
        print(f"{len(train)} rows, {config.n_shards} shards: test acc {store.accuracy(test):.3f}")

        # your raw rows (no standardisation on your side): the store applies its own
        _, raw_test = load_dataset(data.dataset, standardized=False)
        raw_acc = float((store.predict(raw_test.x) == raw_test.y).float().mean())
        print(f"predict on raw rows: acc {raw_acc:.3f}")
        assert abs(raw_acc - store.accuracy(test)) < 1e-6

        forget_ids = train.ids[:3].tolist()  # three of your training ids
        receipt = store.forget(forget_ids, request_id="gdpr-42", check_exactness=True)
        print(
            f"deleted {forget_ids}: removed {receipt['n_removed']}, test acc "
            f"{store.accuracy(test):.3f}; verification {json.dumps(receipt['verification'])}"
        )
        assert store.verify()["ok"]
        store.close()
