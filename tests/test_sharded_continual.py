"""Sharded continual learning (the exact path of a Forget inside a stream): after a deletion every
shard's checkpoints equal, sha256 for sha256, a store that learned the stream without those ids
from the start; crash safety under SIGKILL; refusals that record nothing."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from obliviate.data.datasets import load_dataset
from obliviate.data.scenarios import build_scenario
from obliviate.data.splits import Experience, Stream
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec
from obliviate.sharded.continual import ShardedContinual
from obliviate.sharded.ledger import Ledger
from obliviate.sharded.snapshot import decode
from obliviate.sharded.store import FAILPOINT_ENV, checkpoint_path
from obliviate.training import Recipe, TrainConfig

RECIPE = Recipe(
    ModelSpec(hidden=(16,), seed=1), TrainConfig(n_epochs=1, batch_size=16, lr=0.05, seed=3)
)
PARAMS = {
    "naive": {},
    "replay": {"memory_size": 30},
    "derpp": {"memory_size": 40},
    "ewc": {"reg_strength": 10.0},
}


@pytest.fixture(scope="module")
def stream() -> Stream:
    train, test = load_dataset("digits", limit=600)
    return build_scenario("class-incremental", train, test, n_experiences=5, seed=0)


def make(path: Path, stream: Stream, strategy: str = "replay", n_slices: int = 1):
    return ShardedContinual.create(
        path,
        n_shards=3,
        strategy=strategy,
        strategy_params=PARAMS[strategy],
        n_classes=stream.n_classes,
        sample_shape=stream.sample_shape,
        recipe=RECIPE,
        n_slices=n_slices,
        seed=2,
    )


def without(exp: Experience, ids: np.ndarray) -> Experience:
    keep = torch.as_tensor(~np.isin(exp.train.ids.numpy(), ids))
    return Experience(exp.index, exp.train.subset(keep), exp.test, exp.classes, exp.task_id)


def reference(path: Path, stream: Stream, ids: np.ndarray, n: int, **kw) -> dict:
    """Checkpoint hashes of a store that learned the first ``n`` experiences without ``ids``."""
    with make(path, stream, **kw) as ref:
        for exp in stream.experiences[:n]:
            ref.learn(without(exp, ids))
        return ref.checkpoint_hashes()


def some_ids(stream: Stream, picks: dict[int, int]) -> np.ndarray:
    """``picks[i]`` ids from experience ``i`` (the first ones in row order)."""
    return np.concatenate([stream[i].train.ids.numpy()[:n] for i, n in picks.items()])


@pytest.mark.parametrize(
    ("strategy", "n_slices"),
    [("naive", 1), ("replay", 1), ("derpp", 1), ("ewc", 1), ("replay", 2)],
)
def test_forget_equals_the_stream_learned_without_the_ids(tmp_path, stream, strategy, n_slices):
    ids = some_ids(stream, {1: 2, 3: 1})
    with make(tmp_path / "a", stream, strategy, n_slices) as store:
        for exp in stream.experiences:
            store.learn(exp)
        before = store.checkpoint_hashes()
        receipt = store.forget(ids, request_id="r1")
        after = store.checkpoint_hashes()
        assert store.verify()["ok"], store.verify()["problems"]
        assert store.status()["samples"]["deleted"] == len(ids)
    expected = reference(tmp_path / "b", stream, ids, 5, strategy=strategy, n_slices=n_slices)
    assert after == expected  # every shard, every experience, every slice
    assert after != before
    assert receipt["status"] == "done" and receipt["n_removed"] == len(ids)
    # stages before a shard's rollback point were kept, not recomputed
    for k, point in receipt["rolled_back_to"].items():
        first = point["experience"] * n_slices + point["slice"]
        kept = [key for key in after if key[0] == int(k) and key[1] * n_slices + key[2] < first]
        assert all(after[key] == before[key] for key in kept)
    assert receipt["unaffected_shards"] == [
        k for k in range(3) if str(k) not in receipt["rolled_back_to"]
    ]


def test_learn_after_forget_and_a_second_forget(tmp_path, stream):
    """Forget after experience 2, learn more, forget again: still the stream without all of them."""
    first, second = some_ids(stream, {0: 2, 1: 1}), some_ids(stream, {3: 2})
    with make(tmp_path / "a", stream) as store:
        for exp in stream.experiences[:3]:
            store.learn(exp)
        store.forget(first)
        for exp in stream.experiences[3:]:
            store.learn(exp)
        receipt = store.forget(second, check_exactness=True)
        got = store.checkpoint_hashes()
        # the deleted ids are gone from every file of the store (rows and replay buffers)
        gone = np.concatenate([first, second])
        for meta in store.experiences():
            rows = torch.load(checkpoint_path(store.path, meta["data_sha256"]), weights_only=True)
            assert not np.isin(rows["ids"].numpy(), gone).any()
        for sha in set(got.values()):
            strategy, _ = decode(
                checkpoint_path(store.path, sha).read_bytes(), store.build_shard_model(0)
            )
            if strategy.memory_ is not None:
                assert not np.isin(strategy.memory_.filled()["ids"].numpy(), gone).any()
        # a repeated request returns the stored receipt, nothing redone
        assert store.forget(second) == receipt
    assert receipt["verification"]["exactness"]["equal"] is True
    assert got == reference(tmp_path / "b", stream, np.concatenate([first, second]), 5)


def test_a_forget_with_nothing_left_to_delete_keeps_the_model_version(tmp_path, stream):
    """Ids an earlier request already deleted, asked for again under a new request id: a receipt,
    no retraining, and the model version (and every checkpoint) unchanged."""
    ids = some_ids(stream, {0: 2})
    with make(tmp_path / "a", stream) as store:
        for exp in stream.experiences[:2]:
            store.learn(exp)
        first = store.forget(ids, request_id="first")
        hashes = store.checkpoint_hashes()
        again = store.forget(ids, request_id="again")
        assert again["retrained"] == [] and again["n_already_deleted"] == len(ids)
        assert again["model_version_before"] == again["model_version_after"]
        assert again["model_version_after"] == first["model_version_after"]
        assert store.status()["model_version"] == first["model_version_after"]
        assert store.checkpoint_hashes() == hashes


def test_refusals_record_nothing(tmp_path, stream):
    with make(tmp_path / "a", stream) as store:
        store.learn(stream[0])
        n_events = len(store.ledger.events())
        with pytest.raises(ObliviateError, match="never learned"):
            store.forget([int(stream[1].train.ids[0])])  # in the stream, not yet learned
        with pytest.raises(ObliviateError, match="never learned"):
            store.forget([10**9])
        with pytest.raises(ObliviateError, match="no ids"):
            store.forget([])
        with pytest.raises(ObliviateError, match="learned before"):
            store.learn(stream[0])
        with pytest.raises(ObliviateError, match="all"):
            store.forget(store.learned_ids())
        assert len(store.ledger.events()) == n_events
        assert store.ledger.requests() == []
        assert store.status()["samples"] == {
            "active": len(stream[0].train),
            "pending": 0,
            "deleted": 0,
        }
        assert store.verify()["ok"]
        x = stream[0].test.x
        assert store.predict_proba(x).shape == (len(x), stream.n_classes)
        assert store.predict(x).dtype == torch.int64
    with pytest.raises(ObliviateError, match="data_view"):
        ShardedContinual.create(
            tmp_path / "c",
            n_shards=2,
            strategy="cumulative",
            n_classes=10,
            sample_shape=stream.sample_shape,
        )
    with pytest.raises(ObliviateError, match="n_slices=1"):
        ShardedContinual.create(
            tmp_path / "d",
            n_shards=2,
            strategy="gdumb",
            n_classes=10,
            sample_shape=stream.sample_shape,
            n_slices=2,
        )
    with pytest.raises(ObliviateError, match="not a sharded continual store"):
        ShardedContinual(tmp_path / "e")


def test_a_damaged_checkpoint_is_refused_before_recording(tmp_path, stream):
    with make(tmp_path / "a", stream) as store:
        for exp in stream.experiences[:3]:
            store.learn(exp)
        ids = some_ids(stream, {2: 1})
        rows = store.ledger.rows_of(ids, ("active",))
        k = int(rows[0, 1])
        base = store.checkpoint_hashes()[(k, 1, 0)]  # the checkpoint the replay builds on
        path = checkpoint_path(store.path, base)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        with pytest.raises(ObliviateError, match="corrupted"):
            store.forget(ids)
        assert store.ledger.requests() == []
        report = store.verify()
        assert not report["ok"] and any("altered" in p for p in report["problems"])


# ---- crash safety ------------------------------------------------------------------------
def _forget_and_die(path: str, ids: list[int], point: str) -> None:
    os.environ[FAILPOINT_ENV] = point
    ShardedContinual(path).forget(ids, request_id="r1")
    os._exit(0)  # not reached when the failpoint fires


@pytest.mark.integration
def test_sigkill_mid_deletion_then_resume_equals_the_stream_without_the_ids(tmp_path, stream):
    ids = some_ids(stream, {1: 1, 2: 1, 4: 1})
    with make(tmp_path / "base", stream) as store:
        for exp in stream.experiences:
            store.learn(exp)
    expected = reference(tmp_path / "ref", stream, ids, 5)
    ctx = multiprocessing.get_context("fork")
    for point in ("submitted", "checkpoint_written:3", "before_commit", "after_commit"):
        path = tmp_path / point.replace(":", "-")
        shutil.copytree(tmp_path / "base", path)
        child = ctx.Process(target=_forget_and_die, args=(str(path), ids.tolist(), point))
        child.start()
        child.join(120)
        assert child.exitcode == -9, (point, child.exitcode)  # killed by its failpoint
        with ShardedContinual(path) as store:
            committed = point == "after_commit"
            assert store.status()["samples"]["deleted"] == (len(ids) if committed else 0)
            assert [r["status"] for r in store.ledger.requests()] == (
                ["done"] if committed else ["running"]
            )
            store.recover()  # what any next command does first
            assert store.checkpoint_hashes() == expected, point
            assert store.verify()["ok"], store.verify()["problems"]
            assert store.receipt("r1")["n_removed"] == len(ids)
            live = {c["sha256"] for c in store.ledger.current_checkpoints().values()}
            live |= {m["data_sha256"] for m in store.experiences()}
            assert {f.stem for f in (path / "checkpoints").glob("*.pt")} == live
            assert not list((path / "checkpoints").glob(".tmp-*"))


def test_a_killed_learn_records_nothing(tmp_path, stream):
    with make(tmp_path / "a", stream) as store:
        store.learn(stream[0])
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_learn_and_die, args=(str(tmp_path / "a"), stream[1]))
    child.start()
    child.join(120)
    assert child.exitcode == -9
    with ShardedContinual(tmp_path / "a") as store:
        assert len(store.experiences()) == 1
        store.learn(stream[1])  # learning it again works and cleans up
        assert store.verify()["ok"]
        assert store.checkpoint_hashes() == reference(tmp_path / "b", stream, np.zeros(0), 2)
    Ledger(tmp_path / "a" / "ledger.sqlite").close()


def _learn_and_die(path: str, exp: Experience) -> None:
    os.environ[FAILPOINT_ENV] = "checkpoint_written:2"
    ShardedContinual(path).learn(exp)
    os._exit(0)


def test_cli_learn_forget_verify(tmp_path, capsys):
    import json

    from obliviate.cli.main import main

    store = str(tmp_path / "s")
    common = ["--limit", "300", "--epochs", "1", "--n-experiences", "5", "--hidden", "16"]
    learn = ["shard", "stream", "learn", "--store", store, "--json"]
    assert main([*learn, *common, "--until", "2"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["n_experiences"] == 2 and len(status["test_accuracy_seen"]) == 2
    assert main([*learn, "-q"]) == 0  # the rest of the stream
    got = capsys.readouterr()
    assert json.loads(got.out)["n_experiences"] == 5 and got.err == ""
    assert main(["shard", "stream", "status", "--store", store]) == 0  # a table, not a dict
    text = capsys.readouterr().out
    assert "5 experience(s) learned" in text and not text.lstrip().startswith("{")
    with ShardedContinual(store) as st:
        some = int(st.learned_ids()[0])
    out = tmp_path / "receipt.json"
    forget = ["shard", "stream", "forget", "--store", store, "--ids", str(some), "--json", "-o"]
    assert main([*forget, str(out)]) == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["status"] == "done" and receipt["n_removed"] == 1
    assert json.loads(out.read_text()) == receipt
    assert main(["shard", "stream", "forget", "--store", store, "--ids", "123456789"]) == 2
    assert "never learned" in capsys.readouterr().err
    assert main(["shard", "stream", "verify", "--store", store]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def _exact_after_forget(tmp_path: Path, stream: Stream, strategy: str) -> None:
    recipe = Recipe(
        ModelSpec(hidden=(16,), seed=1), TrainConfig(n_epochs=1, batch_size=16, lr=0.05, seed=3)
    )
    ids = some_ids(stream, {0: 1, 1: 2})
    kw = {"n_shards": 2, "strategy": strategy, "recipe": recipe, "seed": 0}
    with ShardedContinual.for_stream(tmp_path / "a", stream, **kw) as store:
        for exp in stream.experiences[:3]:
            store.learn(exp)
        store.forget(ids)
        got = store.checkpoint_hashes()
        assert store.verify()["ok"]
    with ShardedContinual.for_stream(tmp_path / "b", stream, **kw) as ref:
        for exp in stream.experiences[:3]:
            ref.learn(without(exp, ids))
        assert got == ref.checkpoint_hashes(), strategy


def test_task_incremental_multi_head_with_a_model_copy_in_the_state(tmp_path):
    """LwF keeps a copy of the (multi-head) model in its state: checkpointed and exact too."""
    train, test = load_dataset("digits", limit=400)
    stream = build_scenario("task-incremental", train, test, n_experiences=5, seed=0)
    _exact_after_forget(tmp_path, stream, "lwf")
    with ShardedContinual(tmp_path / "a") as store:
        assert store.task_classes == stream.task_classes
        x, task = stream[0].test.x, stream[0].test.task
        assert store.predict(x, task).shape == (len(x),)


def _every_strategy() -> list[str]:
    from obliviate.continual import STRATEGIES

    return sorted(set(STRATEGIES) - {"cumulative", "joint"})  # data_view "seen" / "all"


@pytest.mark.slow
@pytest.mark.parametrize("strategy", _every_strategy())
def test_every_strategy_forgets_exactly(tmp_path, strategy):
    from obliviate.continual import strategy_class

    train, test = load_dataset("digits", limit=400)
    scenario = (
        "task-incremental" if strategy_class(strategy).needs_task_ids else "class-incremental"
    )
    stream = build_scenario(scenario, train, test, n_experiences=5, seed=0)
    _exact_after_forget(tmp_path, stream, strategy)


def test_snapshot_keeps_modes_references_and_refuses_foreign_objects():
    from obliviate.continual import make_strategy
    from obliviate.models import build_model
    from obliviate.sharded.snapshot import encode

    spec = ModelSpec(hidden=(8,), seed=0)
    model = build_model(spec, (64,), 10)
    first = next(model.parameters())
    first.requires_grad_(False)
    next(iter(model.children())).eval()
    strategy = make_strategy("ewc")
    strategy.anchor_ref_ = [first]  # a reference to the model's own parameter
    strategy.table_ = {"ids": {3, 1, 2}, "arr": np.arange(3), "gen": torch.Generator()}
    blob = encode(model, strategy)
    assert encode(model, strategy) == blob  # same objects -> same bytes
    fresh = build_model(ModelSpec(hidden=(8,), seed=1), (64,), 10)
    back, _ = decode(blob, fresh)
    got = next(fresh.parameters())
    assert back.anchor_ref_[0] is got and not got.requires_grad
    assert [m.training for m in fresh.modules()] == [m.training for m in model.modules()]
    assert torch.equal(got, first)
    assert back.table_["ids"] == {1, 2, 3} and back.table_["arr"].tolist() == [0, 1, 2]
    assert back.get_params() == strategy.get_params()
    strategy.hook_ = lambda: None
    with pytest.raises(ObliviateError, match="hook_"):
        encode(model, strategy)


def test_a_deletion_that_empties_an_experience(tmp_path, stream):
    """With slices, a deletion that leaves a shard no rows in an experience also undoes that
    experience's ``begin`` on the shard (the stream without the ids never calls it)."""

    def head(exp: Experience, n: int) -> Experience:
        return Experience(
            exp.index, exp.train.subset(torch.arange(n)), exp.test, exp.classes, exp.task_id
        )

    from obliviate.sharded.config import assign

    # experience 1: two rows of shard 0, both in slice 1 (its slice 0 is empty), one elsewhere
    rows = stream[1].train
    shard, slice_ = assign(rows.ids.numpy(), 3, 2, 2)
    mine = np.nonzero((shard == 0) & (slice_ == 1))[0][:2]
    other = np.nonzero(shard == 1)[0][:1]
    middle = Experience(
        1, rows.subset(torch.as_tensor(np.concatenate([mine, other]))), rows, (), None
    )
    exps = [head(stream[0], 30), middle, head(stream[2], 30)]
    ids = rows.ids.numpy()[mine]
    with make(tmp_path / "a", stream, "replay", n_slices=2) as store:
        for exp in exps:
            store.learn(exp)
        store.forget(ids)
        got = store.checkpoint_hashes()
        assert store.experiences()[1]["n_rows"] == 1 and store.verify()["ok"]
    with make(tmp_path / "b", stream, "replay", n_slices=2) as ref:
        for exp in exps:
            ref.learn(without(exp, ids))
        assert got == ref.checkpoint_hashes()


def test_verify_finds_an_edited_ledger(tmp_path, stream):
    with make(tmp_path / "a", stream) as store:
        for exp in stream.experiences[:2]:
            store.learn(exp)
        hashes = store.checkpoint_hashes()
        assert store.verify()["ok"]
        other = hashes[(1, 0, 0)]  # point shard 0's last checkpoint at another live file
        store.ledger.db.execute(
            "UPDATE checkpoints SET sha256 = ? WHERE shard = 0 AND slice = 1 AND current = 1",
            (other,),
        )
        problems = store.verify()["problems"]
        assert any("event log" in p for p in problems)


@pytest.mark.slow  # ~12 s, mostly starting the pool
@pytest.mark.integration
def test_a_process_pool_gives_the_same_bits(tmp_path, stream):
    ids = some_ids(stream, {1: 2})
    kw = {
        "n_shards": 3,
        "strategy": "replay",
        "strategy_params": PARAMS["replay"],
        "recipe": RECIPE,
        "seed": 2,
    }
    with ShardedContinual.for_stream(
        tmp_path / "a", stream, backend="local", n_workers=2, **kw
    ) as store:
        for exp in stream.experiences[:3]:
            store.learn(exp)
        store.forget(ids)
        got = store.checkpoint_hashes()
    assert got == reference(tmp_path / "b", stream, ids, 3)
    with pytest.raises(ObliviateError, match="backend"):
        ShardedContinual(tmp_path / "a", backend="gpu-cluster")


def test_library_default_recipe_is_the_clis(tmp_path):
    """``ShardedContinual.create`` without a recipe trains what ``shard stream learn`` trains
    without recipe options (it used ``Recipe()``: one epoch at lr 0.01)."""
    from obliviate.cli.main import main

    stream = build_scenario(
        "class-incremental", *load_dataset("digits", limit=300), n_experiences=5, seed=0
    )
    assert main(["shard", "stream", "learn", "--store", str(tmp_path / "cli"), "--limit", "300",
                 "--until", "1", "-q", "--json"]) == 0  # fmt: skip
    with ShardedContinual.for_stream(tmp_path / "lib", stream, n_shards=3, strategy="replay") as a:
        a.learn(stream.experiences[0])
        with ShardedContinual(tmp_path / "cli") as b:
            assert a.config.recipe == b.config.recipe
            assert a.checkpoint_hashes() == b.checkpoint_hashes()
