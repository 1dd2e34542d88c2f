"""One sharded-unlearning run as a dict in, dict out: what benchmark grids call.

``run_sharded(spec)`` trains a store (in a temporary folder unless ``store`` is given), deletes
``n_deletions`` random training samples one request at a time, and reports:

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

Spec keys (all optional but ``dataset``): ``dataset``, ``data_dir``, ``limit``, ``split_seed``,
``seed`` (assignment, model init and data order), ``n_shards`` (5), ``n_slices`` (1),
``graph`` ("none"), ``aggregation`` ("softmax"), ``model`` ("mlp"), ``hidden`` ((100,)),
``n_epochs`` (10), ``batch_size`` (32), ``lr`` (0.05), ``optimizer`` ("sgd"), ``momentum`` (0),
``weight_decay`` (0), ``n_deletions`` (3), ``backend`` ("inline"), ``n_workers``, ``store``
(folder to keep the store in), ``train_repeats`` (1), ``check_exactness`` (False: when True the first deletion also
retrains the affected shards from scratch and ``exact`` reports whether the hashes agree).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from obliviate.errors import ObliviateError

RUN_KEYS: dict[str, Any] = {
    "dataset": "digits",
    "data_dir": None,
    "limit": None,
    "split_seed": 0,
    "seed": 0,
    "n_shards": 5,
    "n_slices": 1,
    "graph": "none",
    "aggregation": "softmax",
    "model": "mlp",
    "hidden": (100,),
    "n_epochs": 10,
    "batch_size": 32,
    "lr": 0.05,
    "optimizer": "sgd",
    "momentum": 0.0,
    "weight_decay": 0.0,
    "n_deletions": 3,
    "backend": "inline",
    "n_workers": None,
    "store": None,
    "check_exactness": False,
    "train_repeats": 1,
}


def resolve_spec(spec: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(spec) - set(RUN_KEYS))
    if unknown:
        raise ObliviateError(
            f"run_sharded: unknown key(s) {', '.join(unknown)}; valid: {', '.join(RUN_KEYS)}"
        )
    out = {**RUN_KEYS, **spec}
    hidden = out["hidden"]
    out["hidden"] = (int(hidden),) if isinstance(hidden, int) else tuple(int(h) for h in hidden)
    return out


def run_sharded(spec: dict[str, Any]) -> dict[str, Any]:
    """Train a sharded store, delete random samples one by one, report accuracy and timings."""
    from obliviate.models import ModelSpec
    from obliviate.provenance import provenance
    from obliviate.sharded.sisa import DataSpec, ShardConfig, ShardedStore, load_data
    from obliviate.training import Recipe, TrainConfig

    s = resolve_spec(spec)
    recipe = Recipe(
        model=ModelSpec(name=s["model"], hidden=s["hidden"], seed=s["seed"]),
        train=TrainConfig(
            n_epochs=s["n_epochs"],
            batch_size=s["batch_size"],
            lr=s["lr"],
            optimizer=s["optimizer"],
            momentum=s["momentum"],
            weight_decay=s["weight_decay"],
            seed=s["seed"],
        ),
    )
    config = ShardConfig(
        n_shards=s["n_shards"],
        n_slices=s["n_slices"],
        graph=s["graph"],
        aggregation=s["aggregation"],
        seed=s["seed"],
        recipe=recipe,
    )
    data = DataSpec(
        dataset=s["dataset"], data_dir=s["data_dir"], limit=s["limit"], split_seed=s["split_seed"]
    )
    train, test, _ = load_data(data)
    with tempfile.TemporaryDirectory(prefix="obliviate-sharded-") as tmp:
        folder = Path(s["store"]) if s["store"] else Path(tmp) / "store"
        t0, c0 = time.perf_counter(), time.process_time()
        store = ShardedStore.train(
            folder, data=data, config=config, backend=s["backend"], n_workers=s["n_workers"]
        )
        train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - c0
        train_run_seconds = float(store.ledger.get_meta("train_run_seconds"))
        walls, cpus, runs = [train_seconds], [train_cpu], [train_run_seconds]
        for n in range(int(s["train_repeats"]) - 1):  # identical retrainings, for a steadier time
            t0, c0 = time.perf_counter(), time.process_time()
            with ShardedStore.train(
                Path(tmp) / f"repeat{n}",
                data=data,
                config=config,
                backend=s["backend"],
                n_workers=s["n_workers"],
            ) as again:
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                runs.append(float(again.ledger.get_meta("train_run_seconds")))
        train_seconds, train_cpu = statistics.median(walls), statistics.median(cpus)
        train_run_seconds = statistics.median(runs)
        test_accuracy = store.accuracy(test)
        cost = store.expected_cost()
        rng = np.random.default_rng(s["seed"])
        victims = rng.choice(
            train.ids.numpy(), size=min(s["n_deletions"], len(train) - 1), replace=False
        )
        seconds, cpu, retrain, exact = [], [], [], None
        acc = []
        for n, victim in enumerate(victims.tolist()):
            t0, c0 = time.perf_counter(), time.process_time()
            receipt = store.forget([victim], check_exactness=bool(s["check_exactness"]) and n == 0)
            seconds.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            if receipt["verification"]["exactness"] is not None:
                exact = receipt["verification"]["exactness"]["equal"]
            retrain.append(receipt["timings"]["retrain_seconds"])
            acc.append(receipt["verification"]["removed_accuracy_after"])
        test_after = store.accuracy(test)
        store.ledger.close()
    ideal = s["n_shards"] * 2 * s["n_slices"] / (s["n_slices"] + 1)
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
        "n_shards": s["n_shards"],
        "n_slices": s["n_slices"],
        "graph": s["graph"],
        "spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in s.items()},
        "provenance": provenance(seed=s["seed"]),
    }
