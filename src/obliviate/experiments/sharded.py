"""Run kind ``sharded``: train a sharded (SISA) store, delete samples, time it.

:func:`run` (also exported as ``run_sharded``) trains a store (in a temporary folder unless
``store`` is given), deletes ``n_deletions`` random training samples one request at a time, and
reports:

``test_accuracy``            ensemble accuracy on the test split after training.
``test_accuracy_after``      the same after the deletions.
``train_seconds``            wall time of training every shard from scratch (= full retraining);
                             the median over ``train_repeats`` identical trainings.
``deletion_seconds``         mean wall time of one ``forget`` of one sample, ledger and checkpoint
                             I/O included (the mean, not the median: the ideal speed-up is a ratio
                             to the *expected* deletion cost); ``deletion_seconds_all`` lists them.
``retrain_seconds``          mean time spent retraining inside those deletions (running the
                             shard jobs: model build, checkpoint load, training, checkpoint write).
``train_run_seconds``        the same measure for the initial training (all shard jobs).
``retrain_speedup``          ``train_run_seconds / retrain_seconds``: the speed-up without the
                             ledger, receipt and verification overheads.
``speedup``                  ``train_seconds / deletion_seconds``.
``train_cpu_seconds``, ``deletion_cpu_seconds``, ``cpu_speedup``  the same in CPU time of this
                             process (``time.process_time``; robust to other load on the machine,
                             blind to I/O waits and to worker processes: use the inline backend).
``ideal_speedup``            ``S * 2R / (R + 1)`` (SISA's ideal, plain graph, equal shards).
``fraction_of_ideal``        ``speedup / ideal_speedup``.
``expected_cost``            expected fraction of full training one random deletion re-runs
                             (from the store's actual assignment and graph); ``1/expected_cost``
                             is the speed-up its compute alone predicts (``expected_speedup``).
``n_train``, ``n_shards``, ``n_slices``, ``graph``, ``spec``, ``provenance``.

Unset recipe fields take the sharded defaults (:mod:`obliviate.recipes`: MLP(100),
SGD lr 0.05, batch 32, 10 epochs), the same for every dataset.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from obliviate import recipes
from obliviate.errors import ObliviateError
from obliviate.experiments import _spec as S
from obliviate.models import ModelSpec
from obliviate.parallel import BACKENDS
from obliviate.provenance import provenance
from obliviate.sharded import DataSpec, ShardConfig, ShardedStore
from obliviate.sharded.config import load_data
from obliviate.sharded.subjects import import_subjects, read_mapping
from obliviate.training import Recipe, TrainConfig

SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("test_accuracy", "test acc"),
    ("deletion_seconds", "deletion s"),
    ("train_seconds", "train s"),
    ("speedup", "speed-up"),
)
"""The figures ``obliviate report`` / ``compare`` show: (dotted result key, column name)."""

METHOD_KEYS: tuple[str, ...] = ("dataset", "n_shards", "n_slices", "graph")
METHOD_FIELD: str | None = None
SHARED_MODELS_IGNORE: tuple[str, ...] | None = None


def label(run: Mapping[str, Any]) -> str:
    return (
        f"S={run['n_shards']} R={run.get('n_slices', 1)} {run.get('graph', 'none')} "
        f"{run['dataset']}"
    )


def _aggregation(name: str, value: Any) -> None:
    if value not in ("softmax", "vote"):
        raise ObliviateError(f"{name} must be one of 'softmax', 'vote'; got {value!r}")


def _backend(name: str, value: Any) -> None:

    if value not in BACKENDS:
        raise ObliviateError(f"{name}: unknown backend {value!r}; valid: {', '.join(BACKENDS)}")


@dataclass(frozen=True)
class ShardedSpec:
    """One sharded-unlearning run (the keys of the module docstring's result aside).

    ``dataset``, ``data_dir``, ``limit``, ``split_seed`` (train/test split of datasets without
    a fixed one): the data; ``seed``: shard assignment, model init and data order;
    ``n_shards`` S, ``n_slices`` R, ``graph`` (``none``, ``ring:K``, ...), ``aggregation``
    (``softmax`` or ``vote``): the store; ``model`` ... ``weight_decay``: the recipe of every
    shard (``None``: the sharded defaults); ``n_deletions``: single-sample deletions timed;
    ``backend`` / ``n_workers``: where shards train (:mod:`obliviate.parallel`); ``store``:
    folder to keep the store in (default: a temporary one); ``exclude_ids``: training ids left
    out as if they never existed (``obliviate shard train --exclude-ids``); ``subjects``: a
    subject -> ids file stored in the ledger after training (``--subjects``); ``train_repeats``: identical
    trainings timed (median); ``check_exactness``: the first deletion also retrains the
    affected shards from scratch and ``exact`` reports whether the hashes agree.
    """

    dataset: str = S.option("digits", check=S.dataset, alias="datasets", required=True)
    data_dir: str | None = S.option(None)
    limit: int | None = S.option(None, check=S.positive_int)
    split_seed: int = S.option(0, check=S.any_int)
    seed: int = S.option(0, check=S.any_int, alias="seeds")
    device: str = S.option("cpu", check=S.device)
    precision: str = S.option("fp32", check=S.precision)
    n_shards: int = S.option(5, check=S.positive_int, required=True)
    n_slices: int = S.option(1, check=S.positive_int)
    graph: str = S.option("none", check=S.graph, alias="graphs")
    aggregation: str = S.option("softmax", check=_aggregation)
    model: str | None = S.option(None, check=S.model)
    hidden: tuple[int, ...] | None = S.option(None, check=S.widths)
    n_epochs: int | None = S.option(None, check=S.nonnegative_int)
    batch_size: int | None = S.option(None, check=S.positive_int)
    lr: float | None = S.option(None, check=S.positive_number)
    optimizer: str | None = S.option(None, check=S.optimizer)
    momentum: float | None = S.option(None, check=S.momentum)
    weight_decay: float | None = S.option(None, check=S.nonnegative_number)
    n_deletions: int = S.option(3, check=S.nonnegative_int)
    backend: str = S.option("inline", check=_backend)
    n_workers: int | None = S.option(None, check=S.positive_int)
    store: str | None = S.option(None)
    exclude_ids: tuple[int, ...] | None = S.option(None)
    subjects: str | None = S.option(None)
    check_exactness: bool = S.option(False)
    train_repeats: int = S.option(1, check=S.positive_int)

    def __post_init__(self) -> None:
        if isinstance(self.hidden, int) and not isinstance(self.hidden, bool):
            object.__setattr__(self, "hidden", (self.hidden,))
        S.validate(self)

    def resolved(self) -> ShardedSpec:
        """A copy with every recipe field set (the sharded defaults for the unset ones)."""
        if S.is_resolved(self):
            return self
        filled = recipes.fill(
            "sharded", self.dataset, {k: getattr(self, k) for k in recipes.TRAIN_FIELDS}
        )
        return S.mark_resolved(replace(self, **filled))

    def to_dict(self) -> dict[str, Any]:
        return S.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardedSpec:
        return S.from_dict(cls, data, "sharded")


Spec = ShardedSpec


def run(spec: ShardedSpec | Mapping[str, Any]) -> dict[str, Any]:
    """Train a sharded store, delete random samples one by one, report accuracy and timings.
    ``spec`` may be a dict of :class:`ShardedSpec` fields (unknown keys raise)."""
    import numpy as np

    if not isinstance(spec, ShardedSpec):
        spec = ShardedSpec.from_dict(spec)
    s = spec.resolved()
    recipe = Recipe(
        model=ModelSpec(name=s.model, hidden=s.hidden, seed=s.seed),  # type: ignore[arg-type]
        train=TrainConfig(
            n_epochs=s.n_epochs,  # type: ignore[arg-type]
            batch_size=s.batch_size,  # type: ignore[arg-type]
            lr=s.lr,  # type: ignore[arg-type]
            optimizer=s.optimizer,  # type: ignore[arg-type]
            momentum=s.momentum,  # type: ignore[arg-type]
            weight_decay=s.weight_decay,  # type: ignore[arg-type]
            seed=s.seed,
        ),
    )
    config = ShardConfig(
        n_shards=s.n_shards,
        n_slices=s.n_slices,
        graph=s.graph,
        aggregation=s.aggregation,
        seed=s.seed,
        recipe=recipe,
    )
    data = DataSpec(dataset=s.dataset, data_dir=s.data_dir, limit=s.limit, split_seed=s.split_seed)
    train, test, _ = load_data(data)
    mapping = read_mapping(Path(s.subjects)) if s.subjects is not None else None
    with tempfile.TemporaryDirectory(prefix="obliviate-sharded-") as tmp:
        folder = Path(s.store) if s.store else Path(tmp) / "store"
        t0, c0 = time.perf_counter(), time.process_time()
        excluded = list(s.exclude_ids) if s.exclude_ids is not None else None
        store = ShardedStore.train(
            folder,
            data=data,
            config=config,
            exclude_ids=excluded,
            backend=s.backend,
            n_workers=s.n_workers,
            device=s.device,
            precision=s.precision,
        )
        train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        if mapping is not None:
            import_subjects(store.ledger, mapping)
        train_run_seconds = float(store.ledger.get_meta("train_run_seconds"))
        walls, cpus, runs = [train_seconds], [train_cpu], [train_run_seconds]
        for n in range(int(s.train_repeats) - 1):  # identical retrainings, for a steadier time
            t0, c0 = time.perf_counter(), time.process_time()
            with ShardedStore.train(
                Path(tmp) / f"repeat{n}",
                data=data,
                config=config,
                exclude_ids=excluded,
                backend=s.backend,
                n_workers=s.n_workers,
                device=s.device,
                precision=s.precision,
            ) as again:
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                runs.append(float(again.ledger.get_meta("train_run_seconds")))
        train_seconds, train_cpu = statistics.median(walls), statistics.median(cpus)
        train_run_seconds = statistics.median(runs)
        test_accuracy = store.accuracy(test)
        cost = store.expected_cost()
        rng = np.random.default_rng(s.seed)
        pool = train.ids.numpy()
        if excluded is not None:
            pool = pool[~np.isin(pool, excluded)]
        victims = rng.choice(pool, size=min(s.n_deletions, len(pool) - 1), replace=False)
        seconds, cpu, retrain, exact = [], [], [], None
        acc = []
        for n, victim in enumerate(victims.tolist()):
            t0, c0 = time.perf_counter(), time.process_time()
            receipt = store.forget([victim], check_exactness=bool(s.check_exactness) and n == 0)
            seconds.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            if receipt["verification"]["exactness"] is not None:
                exact = receipt["verification"]["exactness"]["equal"]
            retrain.append(receipt["timings"]["retrain_seconds"])
            acc.append(receipt["verification"]["removed_accuracy_after"])
        test_after = store.accuracy(test)
        store.ledger.close()
    ideal = s.n_shards * 2 * s.n_slices / (s.n_slices + 1)
    deletion = statistics.fmean(seconds) if seconds else float("nan")
    speedup = train_seconds / deletion if seconds else float("nan")
    return {
        "test_accuracy": test_accuracy,
        "test_accuracy_after": test_after,
        "train_seconds": train_seconds,
        "deletion_seconds": deletion,
        "deletion_seconds_all": seconds,
        "retrain_seconds": statistics.fmean(retrain) if retrain else float("nan"),
        "train_run_seconds": train_run_seconds,
        "retrain_speedup": train_run_seconds / statistics.fmean(retrain)
        if retrain
        else float("nan"),
        "speedup": speedup,
        "train_cpu_seconds": train_cpu,
        "deletion_cpu_seconds": statistics.fmean(cpu) if cpu else float("nan"),
        "cpu_speedup": train_cpu / statistics.fmean(cpu) if cpu else float("nan"),
        "ideal_speedup": ideal,
        "fraction_of_ideal": speedup / ideal,
        "expected_cost": cost,
        "expected_speedup": 1.0 / cost if cost > 0 else float("inf"),
        "removed_accuracy_after": acc,
        "exact": exact,
        "n_train": len(train),
        "n_shards": s.n_shards,
        "n_slices": s.n_slices,
        "graph": s.graph,
        "spec": s.to_dict(),
        "provenance": provenance(seed=s.seed, device=s.device, precision=s.precision),
    }


run_sharded = run

__all__ = ["SUMMARY_COLUMNS", "ShardedSpec", "Spec", "label", "run", "run_sharded"]
