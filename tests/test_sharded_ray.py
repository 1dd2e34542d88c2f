"""The Ray backend gives the same checkpoints, bit for bit, as the local pool and in-process runs."""

from __future__ import annotations

import pytest

from obliviate.models import ModelSpec
from obliviate.sharded import DataSpec, ShardConfig, ShardedStore
from obliviate.training import Recipe, TrainConfig

pytestmark = pytest.mark.integration  # a local Ray cluster

DATA = DataSpec(dataset="digits", limit=160)
CONFIG = ShardConfig(
    n_shards=2,
    n_slices=2,
    graph="ring:1",
    seed=4,
    recipe=Recipe(ModelSpec(hidden=(8,)), TrainConfig(n_epochs=1, batch_size=16, lr=0.05)),
)


@pytest.mark.slow  # starting a local Ray instance takes tens of seconds on a small machine
def test_ray_backend_equals_inline(tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("ray is not installed (optional extra: pip install 'obliviate[distributed]')")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        _compare(tmp_path)
    finally:
        ray.shutdown()


def _compare(tmp_path):
    with ShardedStore.train(
        tmp_path / "inline", data=DATA, config=CONFIG, backend="inline"
    ) as inline:
        rows = inline.ledger.samples()
        victim = [int(rows[rows[:, 2] == 0][0, 0])]
        inline.forget(victim)
        expected = {k: v["sha256"] for k, v in inline.ledger.current_checkpoints().items()}
    with ShardedStore.train(
        tmp_path / "ray", data=DATA, config=CONFIG, backend="ray", n_workers=2
    ) as on_ray:
        receipt = on_ray.forget(victim)
        assert len(receipt["retrained"]) == 2  # ring over two shards: both retrain, on Ray
        assert {k: v["sha256"] for k, v in on_ray.ledger.current_checkpoints().items()} == expected
