"""`obliviate llm` follows the CLI conventions and refuses what it cannot do (issue 12's small
defects): a dtype the model cannot run in, a boolean JSONL id, a status that said "ready" while a
killed deletion was still "running", a table cut at 80 columns when piped, a silent GGUF
conversion."""

from __future__ import annotations

import fcntl
import json
import os
import sys

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch  # noqa: E402

from obliviate.cli.main import main  # noqa: E402
from obliviate.errors import ObliviateError  # noqa: E402
from obliviate.llm import sharded  # noqa: E402
from obliviate.llm.data import QAData, fictitious_qa, load_jsonl  # noqa: E402
from obliviate.llm.models import tiny_gpt2, word_tokenizer  # noqa: E402
from obliviate.llm.sharded import AdapterStore, SafeConfig  # noqa: E402

CONFIG = SafeConfig(n_shards=2, n_slices=1, top_k=1, n_epochs=1, lr=1e-2, batch_size=4)


@pytest.fixture(scope="module")
def setup() -> tuple:
    torch.set_num_threads(1)
    full = fictitious_qa(n_people=5, n_attributes=2, n_forget=1, n_holdout=1, n_world=0)
    data = QAData(tuple(it for it in full.items if it.split != "holdout"))
    base = tiny_gpt2(word_tokenizer(full.texts()), n_embd=16, seed=0)
    return base, data


@pytest.mark.parametrize(
    ("dtype", "message"),
    [("int8", "choose float32, bfloat16, float16"), ("bfloat16", "float32 only")],
)
def test_a_dtype_the_tiny_model_cannot_use_is_refused(dtype, message, capsys) -> None:
    assert main(["llm", "forget", "--dtype", dtype, "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


@pytest.mark.parametrize("value", ["true", "false"])
def test_a_boolean_jsonl_id_is_refused(tmp_path, value) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(f'{{"id": {value}, "question": "Q?", "answer": "A"}}\n')
    with pytest.raises(ObliviateError, match="boolean; give an integer id"):
        load_jsonl(path)


def test_status_says_interrupted_after_a_killed_deletion_and_busy_under_a_lock(
    tmp_path, setup, monkeypatch, capsys
) -> None:
    base, data = setup
    store = AdapterStore.train(tmp_path / "s", base=base, data=data, config=CONFIG)
    assert store.status()["state"] == "ready"

    class _Crash(Exception):
        pass

    def crash(name: str) -> None:  # the process "dies" after recording the request as running
        if name == "before_commit":
            raise _Crash(name)

    monkeypatch.setattr(sharded, "_failpoint", crash)
    with pytest.raises(_Crash):
        store.forget(data.ids("forget"))
    monkeypatch.undo()
    assert [r["status"] for r in store.ledger.requests()] == ["running"]
    assert store.status()["state"] == "interrupted"  # no process holds the store's lock

    fd = os.open(tmp_path / "s" / ".lock", os.O_RDONLY)  # another process working on it
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert store.status()["state"] == "busy"
    finally:
        os.close(fd)
    store.close()

    capsys.readouterr()
    assert main(["llm", "sharded", "status", "--store", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "state interrupted" in out and "obliviate llm sharded resume" in out
    assert not out.lstrip().startswith("{")  # text, not a dict
    assert main(["llm", "sharded", "status", "--store", str(tmp_path / "s"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == "interrupted"


def test_receipt_out_in_a_missing_folder_is_refused_before_the_deletion(
    tmp_path, setup, capsys
) -> None:
    base, data = setup
    AdapterStore.train(tmp_path / "s", base=base, data=data, config=CONFIG).close()
    gone = str(data.ids("forget")[0])
    args = ["llm", "sharded", "forget", "--store", str(tmp_path / "s"), "--ids", gone]
    assert main([*args, "--out", str(tmp_path / "missing" / "r.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with AdapterStore(tmp_path / "s", base=base) as st:
        assert st.ledger.requests() == []  # nothing was recorded
    assert main([*args, "--output", str(tmp_path / "r.json")]) == 0  # the old name still works
    assert "deprecated" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["status"] == "done"


def test_smollm2_conversion_says_what_it_does(tmp_path, monkeypatch, capsys) -> None:
    from obliviate.llm import models

    monkeypatch.setattr(models, "cache_dir", lambda: tmp_path)
    monkeypatch.setattr(models, "smollm2_gguf", lambda: tmp_path / models.SMOLLM2_GGUF)

    class _Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise _Stop

    import transformers

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", stop)
    with pytest.raises(_Stop):
        models.smollm2_folder()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("converting SmolLM2") and "once" in err[0]


def test_tables_are_not_cut_when_piped(monkeypatch) -> None:
    from obliviate.cli._common import console

    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert console().width >= 200
