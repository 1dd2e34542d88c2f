"""Ray on a cluster of two nodes on this machine (``ray.cluster_utils.Cluster``): ``obliviate
bench --backend ray --address`` spreads runs over both nodes with the metrics of the inline
backend; the sharded engine joins the cluster through ``$RAY_ADDRESS`` and writes the inline
checkpoints bit for bit; a Ray worker's torch threads follow its task's CPU allocation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from obliviate import parallel
from obliviate.bench import results as store
from obliviate.bench import runner
from obliviate.bench.specs import load_spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # a two-node Ray cluster: tens of s

SPEC = """\
name = "two-nodes"
seeds = [0, 1, 2, 3]
[[learn]]
datasets = ["digits"]
scenarios = ["class-incremental"]
strategies = ["naive"]
n_experiences = 2
n_epochs = 1
limit = 200
"""


@pytest.fixture(scope="module")
def cluster():
    cluster_utils = pytest.importorskip(
        "ray.cluster_utils", reason="ray is not installed (pip install 'obliviate[distributed]')"
    )
    c = cluster_utils.Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 1, "include_dashboard": False},
    )
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    try:
        yield c
    finally:
        c.shutdown()


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("obliviate")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "obliviate.cli.main"]


def test_bench_with_address_spreads_over_both_nodes(cluster, tmp_path):
    spec = tmp_path / "grid.toml"
    spec.write_text(SPEC)
    _, runs = load_spec(spec)
    runner.run_grid(runs, tmp_path / "inline", backend="inline")
    done = subprocess.run(
        [*_cli(), "bench", str(spec), "--out", str(tmp_path / "ray"), "--quiet"]
        + ["--backend", "ray", "--address", cluster.address, "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    on_ray = store.read(tmp_path / "ray")
    assert len(on_ray) == 4 and all(r["status"] == "ok" for r in on_ray)
    nodes = {r["timings"]["node"] for r in on_ray}
    assert len(nodes) == 2, json.dumps([r["timings"] for r in on_ray])  # 1 CPU per node
    inline = {r["key"]: store.strip_timings(r["metrics"]) for r in store.read(tmp_path / "inline")}
    assert {r["key"]: store.strip_timings(r["metrics"]) for r in on_ray} == inline


def test_sharded_engine_joins_the_cluster_through_ray_address(cluster, tmp_path, monkeypatch):
    from obliviate.models import ModelSpec
    from obliviate.sharded import DataSpec, ShardConfig, ShardedStore
    from obliviate.training import Recipe, TrainConfig

    data = DataSpec(dataset="digits", limit=160)
    config = ShardConfig(
        n_shards=2,
        n_slices=2,
        graph="ring:1",
        seed=4,
        recipe=Recipe(ModelSpec(hidden=(8,)), TrainConfig(n_epochs=1, batch_size=16, lr=0.05)),
    )
    with ShardedStore.train(tmp_path / "inline", data=data, config=config, backend="inline") as a:
        rows = a.ledger.samples()
        victim = [int(rows[rows[:, 2] == 0][0, 0])]
        a.forget(victim)
        expected = {k: v["sha256"] for k, v in a.ledger.current_checkpoints().items()}
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    with ShardedStore.train(
        tmp_path / "ray", data=data, config=config, backend="ray", n_workers=2
    ) as b:
        assert len(b.forget(victim)["retrained"]) == 2  # both shards retrain, on the cluster
        assert {k: v["sha256"] for k, v in b.ledger.current_checkpoints().items()} == expected
    threads = parallel.map_jobs(parallel.probe, [0, 1, 2, 3], "ray", 2)
    assert {t["threads"] for t in threads} == {1}  # num_cpus=1 per task: one torch thread
    assert [t["job"] for t in threads] == [0, 1, 2, 3]
