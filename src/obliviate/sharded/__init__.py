"""Exact unlearning by sharded training: SISA shards × slices, SAFE shard graphs, a SQLite ledger,
deletion receipts, crash-safe checkpoints, local-pool and Ray backends.

Entry points: :class:`ShardedStore` (train / forget / status / verify / predict),
:func:`run_sharded` (one benchmark-grid run), ``obliviate shard ...`` on the command line.
"""

from obliviate.sharded.graph import expected_cost, neighbourhoods
from obliviate.sharded.run import RUN_KEYS, run_sharded
from obliviate.sharded.sisa import DataSpec, ShardConfig, ShardedStore, assign

__all__ = [
    "RUN_KEYS",
    "DataSpec",
    "ShardConfig",
    "ShardedStore",
    "assign",
    "expected_cost",
    "neighbourhoods",
    "run_sharded",
]
