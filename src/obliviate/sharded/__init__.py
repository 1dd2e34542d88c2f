"""Exact unlearning by sharded training: SISA shards × slices, SAFE shard graphs, a SQLite ledger,
deletion receipts, crash-safe checkpoints, local-pool and Ray backends.

Entry points: :class:`ShardedStore` (train / forget / status / verify / predict),
:class:`ShardedContinual` (sharded continual learning: learn a stream, forget exactly inside it),
``obliviate shard ...`` on the command line. One benchmark-grid run (train, delete, time) is
the ``sharded`` experiment kind, :func:`obliviate.experiments.run_sharded`.
"""

from obliviate.sharded.continual import ShardedContinual
from obliviate.sharded.graph import expected_cost, neighbourhoods
from obliviate.sharded.sisa import DataSpec, ShardConfig, ShardedStore, assign

__all__ = [
    "DataSpec",
    "ShardConfig",
    "ShardedContinual",
    "ShardedStore",
    "assign",
    "expected_cost",
    "neighbourhoods",
]
