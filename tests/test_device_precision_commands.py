"""``--device`` / ``--precision`` on ``tune``, ``continual-forget`` and ``shard stream`` (issue 10,
Build 2: every training command takes them), and the Python API's ``forget`` ids handled as the
CLI handles them (an empty set warns, a 2-D array is refused)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from torch import nn

import obliviate.api as ob
from obliviate.cli.main import main
from obliviate.data.datasets import synthetic_arrays
from obliviate.data.forget_sets import EmptyForgetSetWarning
from obliviate.errors import ObliviateError


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, fragment: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err


COMMANDS = (
    ["tune"],
    ["continual-forget"],
    ["shard", "stream", "learn"],
    ["shard", "stream", "forget"],
    ["shard", "stream", "resume"],
)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_training_commands_take_device_and_precision(capsys, command):
    code, out, _ = cli(capsys, *command, "--help")
    assert code == 0
    assert "--device" in out and "--precision" in out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize(
    ("flag", "value"), [("--precision", "fp8"), ("--device", "tpu")], ids=["precision", "device"]
)
def test_a_bad_value_is_one_line_naming_the_flag(capsys, tmp_path, command, flag, value):
    extra = ["--store", str(tmp_path / "s")] if command[0] == "shard" else []
    code, _, err = cli(capsys, *command, *extra, flag, value)
    assert code == 2
    one_line_error(err, f"{flag} {value}")


# ---- tune ------------------------------------------------------------------------------------


def test_tune_trains_at_the_precision_given(capsys, tmp_path):
    pytest.importorskip("optuna")
    from obliviate.experiments import tune as T

    quick = dict(
        dataset="digits", forget="class:3", method="finetune", report_seeds=(0,), n_epochs=2,
        limit=300, n_trials=1, seed=0,
    )  # fmt: skip
    fp32 = T.run(T.TuneSpec(**quick))
    again = T.run(T.TuneSpec(**quick, precision="fp32"))
    bf16 = T.run(T.TuneSpec(**quick, precision="bf16"))
    assert fp32["best"]["value"] == again["best"]["value"]  # fp32: the default, same bits
    assert bf16["spec"]["precision"] == "bf16"
    assert bf16["best"]["value"] != fp32["best"]["value"]  # the originals trained under bf16
    with pytest.raises(ObliviateError, match="precision='fp8'"):
        T.TuneSpec(**quick, precision="fp8")
    # the flag reaches the spec
    out = tmp_path / "r.json"
    code, _, err = cli(
        capsys, "tune", "--quiet", "--method", "finetune", "--n-trials", "1", "--epochs", "1",
        "--report-seeds", "0", "--precision", "bf16", "--cache", str(tmp_path), "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out.read_text())["spec"]["precision"] == "bf16"
    assert 'precision = "bf16"' in T.config_text(bf16)  # a saved configuration says so
    assert "precision" not in T.config_text(fp32)


# ---- continual-forget ------------------------------------------------------------------------


def test_continual_forget_runs_at_bf16_on_cpu(capsys, tmp_path):
    args = ("continual-forget", "--quiet", "--json", "--method", "finetune", "--sequence",
            "class:1", "--limit", "300", "--cache", str(tmp_path))  # fmt: skip
    code, out, err = cli(capsys, *args, "--precision", "bf16", "--device", "cpu")
    assert code == 0, err
    bf16 = json.loads(out)
    assert bf16["spec"]["precision"] == "bf16" and bf16["spec"]["device"] == "cpu"
    assert bf16["provenance"]["bits_context"]["precision"] == "bf16"
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    fp32 = json.loads(out)
    assert fp32["spec"]["precision"] == "fp32"
    # the original trained under bf16 autocast: other bits, so (almost surely) other figures
    assert bf16["requests"][1] != fp32["requests"][1]


def test_continual_forget_spec_file_fields():
    from obliviate.experiments.continual_forget import ContinualForgetSpec

    spec = ContinualForgetSpec.from_dict({"dataset": "digits", "precision": "bf16"})
    assert spec.precision == "bf16" and spec.device == "cpu"
    with pytest.raises(ObliviateError, match="precision"):
        ContinualForgetSpec.from_dict({"dataset": "digits", "precision": "fp8"})


# ---- shard stream: CPU fp32 only (exact deletion is bitwise) ---------------------------------


@pytest.mark.parametrize("command", ["learn", "forget", "resume"])
def test_shard_stream_refuses_bf16_in_one_line_saying_why(capsys, tmp_path, command):
    store = tmp_path / "s"
    code, _, err = cli(
        capsys, "shard", "stream", command, "--store", str(store), "--precision", "bf16"
    )
    assert code == 2
    one_line_error(err, "--precision bf16: the sharded continual engine trains on the CPU at fp32")
    assert "use --precision fp32" in err
    assert not store.exists()  # refused before anything was written


def test_shard_stream_refuses_a_gpu_in_one_line_saying_why(capsys, tmp_path, monkeypatch):
    import torch

    import obliviate.training

    # as on a machine with CUDA: the device exists, and is refused for the exact engine
    monkeypatch.setattr(obliviate.training, "check_device", lambda d, **_: torch.device(d))
    store = tmp_path / "s"
    code, _, err = cli(
        capsys, "shard", "stream", "learn", "--store", str(store), "--device", "cuda"
    )
    assert code == 2
    one_line_error(err, "--device cuda: the sharded continual engine trains on the CPU at fp32")
    assert not store.exists()


def test_shard_stream_learns_with_cpu_fp32_given(capsys, tmp_path):
    store = tmp_path / "s"
    code, out, err = cli(
        capsys, "shard", "stream", "learn", "--store", str(store), "--limit", "200",
        "--n-experiences", "2", "--until", "1", "--epochs", "1", "--shards", "2", "--json",
        "--quiet", "--device", "cpu", "--precision", "fp32",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["n_experiences"] == 1


# ---- Python API forget: ids as the CLI takes them --------------------------------------------


@pytest.fixture(scope="module")
def fitted():
    x, y = synthetic_arrays(n_classes=3, n_per_class=20, n_features=6, seed=0)
    train, _ = ob.dataset(x, y, 1000 + 10 * np.arange(len(y)), test_fraction=0.25)
    factory = lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))  # noqa: E731
    return ob.recipe(factory, n_epochs=1).fit(train), train


def test_api_forget_of_no_id_warns_as_the_cli_does(fitted):
    model, train = fitted
    with pytest.warns(EmptyForgetSetWarning, match="select no training sample of .*identity"):
        _, report = ob.forget(model, train, [], "ssd", evaluate=False)
    assert report["n_forget"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyForgetSetWarning)  # a non-empty set: no warning
        ob.forget(model, train, train.ids[:2], "ssd", evaluate=False)


def test_api_forget_refuses_a_2d_id_array_as_the_cli_does(fitted):
    model, train = fitted
    a, b = train.ids[:2].tolist()
    with pytest.raises(ObliviateError, match=r"ids must be a 1-D array, got shape \[1, 2\]"):
        ob.forget(model, train, np.array([[a, b]]), "ssd", evaluate=False)
    import torch

    with pytest.raises(ObliviateError, match="ids must be a 1-D array"):
        ob.forget(model, train, torch.tensor([[a], [b]]), "ssd", evaluate=False)
    _, report = ob.forget(model, train, np.array([a, b]), "ssd", evaluate=False)
    assert report["forget_ids"] == [a, b]
