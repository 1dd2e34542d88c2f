"""Exact deletion through sharded adapters on a frozen tiny GPT-2 (SAFE): deleting ids equals
training the adapters without them, bitwise, also after a SIGKILL mid-deletion and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch  # noqa: E402

from obliviate.errors import ObliviateError  # noqa: E402
from obliviate.llm.data import QAData, fictitious_qa  # noqa: E402
from obliviate.llm.models import tiny_gpt2, word_tokenizer  # noqa: E402
from obliviate.llm.sharded import FAILPOINT_ENV, AdapterStore, SafeConfig  # noqa: E402

CONFIG = SafeConfig(n_shards=3, n_slices=2, top_k=1, n_epochs=3, lr=1e-2, batch_size=4)


@pytest.fixture(scope="module")
def setup() -> tuple:
    torch.set_num_threads(1)
    full = fictitious_qa(n_people=7, n_attributes=2, n_forget=1, n_holdout=1, n_world=0)
    data = QAData(tuple(it for it in full.items if it.split != "holdout"))
    base = tiny_gpt2(word_tokenizer(full.texts()), n_embd=32, seed=0)
    return base, data


def _store(tmp_path, name, setup, config=CONFIG, exclude=()):
    base, data = setup
    return AdapterStore.train(
        tmp_path / name, base=base, data=data, config=config, exclude_ids=exclude
    )


def test_deletion_equals_training_without_the_ids(tmp_path, setup) -> None:
    _, data = setup
    store = _store(tmp_path, "a", setup)
    before = store.ledger.current_checkpoints()
    gone = data.ids("forget")  # both facts of the forget person
    receipt = store.forget(gone, check_exactness=True)
    assert receipt["verification"]["exactness"]["equal"] is True
    after = store.ledger.current_checkpoints()
    owners = {int(k) for k in store.ledger.rows_of(gone, ("deleted",))[:, 1]}
    assert {r["shard"] for r in receipt["retrained"]} == owners
    for k in receipt["unaffected_shards"]:
        assert all(before[(k, r)] == after[(k, r)] for r in range(CONFIG.n_slices))
    fresh = _store(tmp_path, "b", setup, exclude=gone)
    assert store.final_checkpoints() == fresh.final_checkpoints()
    assert store.verify() == {"ok": True, "problems": []}
    assert store.forget(gone) == receipt  # the same request: the same receipt, no work
    with pytest.raises(ObliviateError, match="never trained"):
        store.forget([123_456])
    cache = store.status()["prefix_cache"]
    assert cache["n_frozen_blocks"] == 1 and cache["n_reused"] > 5 * cache["n_computed"]


def test_shard_graph_and_lora_adapters_are_exact(tmp_path, setup) -> None:
    _, data = setup
    config = SafeConfig(
        n_shards=4, n_slices=2, graph="ring:1", adapter="lora", top_k=1, lora_rank=2,
        n_epochs=2, lr=1e-2, batch_size=4,
    )  # fmt: skip
    store = _store(tmp_path, "g", setup, config)
    gone = [data.ids("retain")[0]]
    receipt = store.forget(gone)
    owner = int(store.ledger.rows_of(gone, ("deleted",))[0, 1])
    assert {r["shard"] for r in receipt["retrained"]} == {(owner - 1) % 4, owner, (owner + 1) % 4}
    fresh = _store(tmp_path, "h", setup, config, exclude=gone)
    assert store.final_checkpoints() == fresh.final_checkpoints()


def test_ensemble_combines_next_token_distributions(tmp_path, setup) -> None:
    base, data = setup
    store = _store(tmp_path, "e", setup)
    seqs = [e.ids for e in list(store.encoded.values())[:3]]
    for combine in ("mean", "logmean"):
        logp = store.scorer(combine)._combined(seqs)
        assert torch.allclose(logp.exp().sum(-1), torch.ones(logp.shape[:2]), atol=1e-5)
    a, b = store.scorer("mean")._combined(seqs), store.scorer("logmean")._combined(seqs)
    assert not torch.allclose(a, b)
    prompts = [e.ids[: e.n_prompt] for e in list(store.encoded.values())[:2]]
    assert len(store.scorer().generate(prompts, 4)) == 2


class _Crash(Exception):
    pass


def test_crash_mid_deletion_then_resume_is_exact(tmp_path, setup, monkeypatch) -> None:
    """In-process stand-in for a kill: stop at the failpoints (the SIGKILL run is slow-marked)."""
    import obliviate.llm.sharded as sharded

    _, data = setup
    store = _store(tmp_path, "c", setup)
    gone = data.ids("forget")

    for point in ("checkpoint_written", "before_commit"):

        def stop(name: str, point: str = point) -> None:
            if name == point:
                raise _Crash(name)

        monkeypatch.setattr(sharded, "_failpoint", stop)
        with pytest.raises(_Crash):
            store.forget(gone)
        monkeypatch.undo()
        assert [r["status"] for r in store.ledger.requests()] == ["running"]
        assert not store.verify()["ok"]
    (receipt,) = store.resume()
    assert receipt["n_removed"] == len(gone)
    fresh = _store(tmp_path, "c2", setup, exclude=gone)
    assert store.final_checkpoints() == fresh.final_checkpoints()
    assert store.verify()["ok"]


@pytest.mark.slow
@pytest.mark.integration
def test_sigkill_mid_deletion_then_resume_is_exact(tmp_path, setup) -> None:
    from obliviate.cli.main import main

    _, data = setup
    store = _store(tmp_path, "k", setup)
    gone = data.ids("forget")
    store.close()
    code = (
        "import sys; from obliviate.llm.sharded import AdapterStore;"
        f"AdapterStore(sys.argv[1]).forget({gone!r})"
    )
    for point in ("checkpoint_written:2", "before_commit:1"):
        env = dict(os.environ, **{FAILPOINT_ENV: point})
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "k")], env=env)
        assert proc.returncode == -signal.SIGKILL
        reopened = AdapterStore(tmp_path / "k", base=setup[0])
        assert [r["status"] for r in reopened.ledger.requests()] == ["running"]
        assert not reopened.verify()["ok"]
        reopened.close()
    assert main(["llm", "sharded", "resume", "--store", str(tmp_path / "k")]) == 0
    done = AdapterStore(tmp_path / "k", base=setup[0])
    assert done.verify()["ok"]
    fresh = _store(tmp_path, "k2", setup, exclude=gone)
    assert done.final_checkpoints() == fresh.final_checkpoints()
    status = json.loads(json.dumps(done.status()))
    assert status["n_deleted"] == len(gone) and status["version"] == 1


def test_cli_sharded_train_forget_verify(tmp_path, capsys) -> None:
    from obliviate.cli.main import main

    store = str(tmp_path / "cli")
    args = [
        "--store",
        store,
        "--people",
        "5",
        "--attributes",
        "2",
        "--shards",
        "2",
        "--epochs",
        "2",
    ]
    assert main(["llm", "sharded", "train", *args, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["n_active"] > 0 and status["prefix_cache"]["n_frozen_blocks"] == 1
    person = AdapterStore(store).data.entities("forget")[0]
    assert main(["llm", "sharded", "forget", "--store", store, "--entities", person]) == 0
    receipt = json.loads(capsys.readouterr().out)
    assert receipt["status"] == "done" and receipt["n_removed"] == 2
    assert main(["llm", "sharded", "verify", "--store", store]) == 0
    assert main(["llm", "sharded", "forget", "--store", store, "--ids", "999999"]) == 2


def test_grouping_by_entity_retrains_one_shard_per_person(tmp_path, setup) -> None:
    _, data = setup
    config = SafeConfig(n_shards=3, n_slices=2, top_k=1, n_epochs=1, group_by_entity=True)
    store = _store(tmp_path, "p", setup, config)
    person = data.entities("retain")[0]
    gone = [it.id for it in data.items if it.entity == person]
    receipt = store.forget(gone)
    assert len(receipt["retrained"]) == 1
    fresh = _store(tmp_path, "p2", setup, config, exclude=gone)
    assert store.final_checkpoints() == fresh.final_checkpoints()


def test_a_refused_train_leaves_no_half_built_store(tmp_path, capsys) -> None:
    """A bad --top-k was refused only after the folder and ledger were written, so a retry on the
    same folder failed with "already an adapter store"."""
    from obliviate.cli.main import main

    store = tmp_path / "st"
    args = ["llm", "sharded", "train", "--store", str(store), "--people", "5", "--attributes", "2"]
    assert main([*args, "--top-k", "5", "--epochs", "1"]) == 2
    assert "top_k=5" in capsys.readouterr().err
    assert not store.exists() or not any(store.iterdir())
