"""The model cache of forget runs: an entry carries and is checked against what it is (its key
and content hash), and the key holds everything that determines the bits (thread count too)."""

from __future__ import annotations

import shutil

import pytest
import torch

from obliviate.data import synthetic_dataset
from obliviate.errors import ObliviateError
from obliviate.experiments import forget as forget_kind
from obliviate.models import ModelSpec
from obliviate.provenance import bits_context, provenance
from obliviate.training import Recipe, TrainConfig

RECIPE = Recipe(ModelSpec(hidden=(8,), seed=0), TrainConfig(n_epochs=1, batch_size=32, seed=0))
TRAIN, _ = synthetic_dataset(n_classes=3, n_per_class=30, n_features=4)
RETAIN = TRAIN.subset(TRAIN.y != 1)


def _train(cache, data=TRAIN, kind="original"):
    forget_kind._MEMO.clear()
    model, _, _ = forget_kind.trained(RECIPE, data, 3, str(cache), kind)
    return model


@pytest.fixture
def filled(tmp_path):
    _train(tmp_path / "cache")
    _train(tmp_path / "cache", RETAIN, "oracle")
    return {p.name.split("-")[0]: p for p in (tmp_path / "cache").glob("*.pt")}


def test_an_entry_copied_over_another_is_refused(filled):
    shutil.copyfile(filled["oracle"], filled["original"])  # the case
    with pytest.raises(ObliviateError, match="holds another model.*delete"):
        _train(filled["original"].parent)


def test_an_altered_entry_is_refused(filled):
    blob = torch.load(filled["original"], weights_only=True)
    name = next(iter(blob["state"]))
    blob["state"][name] = blob["state"][name] + 1
    torch.save(blob, filled["original"])
    with pytest.raises(ObliviateError, match="altered"):
        _train(filled["original"].parent)


def test_a_truncated_entry_names_the_file_to_delete(filled):
    original = filled["original"]
    original.write_bytes(original.read_bytes()[:100])
    with pytest.raises(ObliviateError, match=f"unreadable.*delete '{original}'"):
        _train(original.parent)


def test_a_good_entry_gives_the_same_weights(filled):
    fresh = forget_kind.trained(RECIPE, TRAIN, 3, None, "original")[0]
    cached = _train(filled["original"].parent)
    for a, b in zip(fresh.state_dict().values(), cached.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_cache_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ObliviateError, match="is a file"):
        _train(tmp_path / "file")


def test_the_thread_count_is_part_of_the_key_and_the_provenance(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _train(tmp_path / "c")
        assert provenance()["bits_context"]["num_threads"] == 1
        torch.set_num_threads(2)
        _train(tmp_path / "c")
        assert provenance()["bits_context"]["num_threads"] == 2
    finally:
        torch.set_num_threads(before)
    assert len(list((tmp_path / "c").glob("original-*.pt"))) == 2  # never shared
    assert set(bits_context()) >= {"torch", "num_threads", "cpu_capability"}


def test_a_result_says_whether_retraining_was_timed_now_or_earlier(tmp_path, capsys):
    from obliviate.cli.main import main

    spec = forget_kind.ForgetSpec(
        dataset="digits",
        forget="class:3",
        method="ssd",
        limit=200,
        n_epochs=1,
        cache_dir=str(tmp_path / "cache"),
    )
    forget_kind._MEMO.clear()
    assert forget_kind.run(spec)["oracle_timed"] == "now"
    forget_kind._MEMO.clear()  # a new process: the oracle (and its seconds) come from the cache
    assert forget_kind.run(spec)["oracle_timed"] == "earlier"
    forget_kind._MEMO.clear()
    args = ["forget", "--dataset", "digits", "--forget", "class:3", "--method", "ssd"]
    args += ["--epochs", "1", "--cache", str(tmp_path / "cli-cache")]
    assert main(args) == 0
    assert "from the cache" not in " ".join(capsys.readouterr().out.split())
    forget_kind._MEMO.clear()
    assert main(args) == 0
    assert "retraining's time from the cache" in " ".join(capsys.readouterr().out.split())


def test_the_reused_note_names_the_seeds_and_skips_empty_forget_sets():
    from obliviate.cli.forget import reused_note

    def run(seed, timed, n_forget=10):
        return {"spec": {"seed": seed}, "oracle_timed": timed, "n_forget": n_forget}

    assert reused_note([run(0, "now"), run(3, "now")]) == ""
    assert "time from the cache" in reused_note([run(0, "earlier"), run(3, "earlier")])
    assert "time for seed 0 from the cache" in reused_note([run(0, "earlier"), run(3, "now")])
    assert "for seeds 0, 1 from" in reused_note(
        [run(0, "earlier"), run(1, "earlier"), run(2, "now")]
    )
    # nothing to forget: the oracle is the original, so there is no retraining time to speak of
    assert reused_note([run(0, "earlier", n_forget=0)]) == ""


def test_the_cache_gives_back_the_training_seconds_unrounded(tmp_path):
    forget_kind._MEMO.clear()
    _, seconds, cpu = forget_kind.trained(RECIPE, TRAIN, 3, str(tmp_path), "original")
    forget_kind._MEMO.clear()
    _, again, cpu_again = forget_kind.trained(RECIPE, TRAIN, 3, str(tmp_path), "original")
    assert (again, cpu_again) == (seconds, cpu)  # float64 in the entry (was float32: 8th digit)


def test_an_empty_forget_set_reports_no_speed_up(tmp_path, capsys):
    from obliviate.cli.main import main

    args = ["forget", "--dataset", "digits", "--forget", "random:0", "--method", "ssd"]
    assert main([*args, "--epochs", "1", "--cache", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "no speed-up: nothing to forget" in out and "speed-up vs retraining" not in out
    spec = forget_kind.ForgetSpec(dataset="digits", forget="random:0", method="ssd", n_epochs=1)
    result = forget_kind.run(spec)
    assert result["speedup"] is None and result["speedup_cpu"] is None  # the JSON agrees
