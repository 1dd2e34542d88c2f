"""Where shard (re)training runs: :mod:`obliviate.parallel` (``inline``, ``local`` or ``ray``).

A job is a picklable :class:`~obliviate.sharded.jobs.ShardJob`; running it is a pure function of
the job (it reads the data and one checkpoint, writes checkpoint files, and never touches the
ledger), so every backend returns the same checkpoints bit for bit. This module only names the
shared implementation for the store: ``run_jobs`` is :func:`obliviate.parallel.map_jobs`, so
the ``local`` backend is the warm local pool: its workers outlive a request and keep the
dataset they loaded (:func:`obliviate.sharded.config.load_data` caches it per process), and
``ray`` joins the cluster at ``$RAY_ADDRESS`` when one is set.
"""

from __future__ import annotations

from obliviate.parallel import BACKENDS, default_workers
from obliviate.parallel import map_jobs as run_jobs

__all__ = ["BACKENDS", "default_workers", "run_jobs"]
