"""Forget-set specs, run_forget (caching, JSON keys, oracle identity) and the forget CLI."""

import json
import math

import numpy as np
import pytest
import torch

from obliviate.cli.main import main
from obliviate.data import synthetic_dataset
from obliviate.data.forget_sets import EmptyForgetSetWarning, forget_ids
from obliviate.errors import ObliviateError
from obliviate.experiments import ForgetSpec, run_forget
from obliviate.metrics import bin_scores
from obliviate.unlearning.base import build_request

TRAIN, _ = synthetic_dataset(n_classes=4, n_per_class=50, n_features=6, seed=0)


def test_forget_spec_kinds(tmp_path):
    ids = forget_ids(TRAIN, "random:10", seed=0)
    assert ids.numel() == 10 and torch.equal(ids, forget_ids(TRAIN, "random:10", seed=0))
    assert not torch.equal(ids, forget_ids(TRAIN, "random:10", seed=1))
    assert forget_ids(TRAIN, "random:10%").numel() == round(0.1 * len(TRAIN))
    cls = forget_ids(TRAIN, "class:2")
    assert cls.numel() == int((TRAIN.y == 2).sum()) and bool((TRAIN.select_ids(cls).y == 2).all())
    assert forget_ids(TRAIN, "class:1,2").numel() == int(((TRAIN.y == 1) | (TRAIN.y == 2)).sum())
    sub = forget_ids(TRAIN, "subclass:3:5", seed=0)
    assert sub.numel() == 5 and bool((TRAIN.select_ids(sub).y == 3).all())
    assert forget_ids(TRAIN, "subclass:3:50%").numel() == round(0.5 * int((TRAIN.y == 3).sum()))
    chosen = TRAIN.ids[[0, 5, 7]]
    (tmp_path / "ids.txt").write_text("# ids\n" + "\n".join(str(int(i)) for i in chosen) + "\n\n")
    np.save(tmp_path / "ids.npy", chosen.numpy())
    for f in ("ids.txt", "ids.npy"):
        assert torch.equal(forget_ids(TRAIN, f"source:{tmp_path / f}"), torch.sort(chosen).values)
    assert torch.equal(
        forget_ids(TRAIN, "ids:" + ",".join(str(int(i)) for i in chosen)), torch.sort(chosen).values
    )


@pytest.mark.parametrize(
    "bad",
    [
        "random",
        "random:x",
        "class:9",
        "subclass:1",
        "nope:1",
        "random:101%",
        f"random:{len(TRAIN) + 1}",
        "source:/no/such/file",
    ],
)
def test_bad_specs_raise(bad):
    with pytest.raises(ObliviateError):
        forget_ids(TRAIN, bad)


def test_request_validation():
    never = int(TRAIN.ids.max()) + 1
    with pytest.raises(ObliviateError, match="not in dataset"):
        build_request(TRAIN, f"ids:{never}")
    with pytest.raises(ObliviateError, match="forgets all"):
        build_request(TRAIN, "random:100%")
    with pytest.warns(EmptyForgetSetWarning):
        req = build_request(TRAIN, "random:0")
    assert len(req.forget) == 0 and len(req.retain) == len(TRAIN)
    req = build_request(TRAIN, "class:0")
    assert len(req.forget) + len(req.retain) == len(TRAIN)
    assert not bool(torch.isin(req.forget.ids, req.retain.ids).any())


RECIPE = {
    "model": "mlp",
    "hidden": (16,),
    "n_epochs": 3,
    "batch_size": 32,
    "lr": 3e-3,
    "optimizer": "adam",
}


def spec(method: str, cache, **kw) -> ForgetSpec:
    return ForgetSpec(
        dataset="synthetic",
        forget="class:2",
        method=method,
        seed=0,
        **RECIPE,
        relearn_cap=5,
        cache_dir=str(cache),
        **kw,
    )


def test_run_forget_keys_cache_and_retrain_is_oracle(tmp_path):
    r = run_forget(spec("retrain", tmp_path))
    for who in ("original", "oracle", "unlearned"):
        assert {"retain_acc", "forget_acc", "test_acc", "mia_auc"} <= set(r[who])
    for key in ("js_to_oracle", "relearn_steps", "seconds", "speedup", "spec", "provenance"):
        assert key in r
    assert r["unlearned"] == r["oracle"] and r["js_to_oracle"]["forget"] == 0.0
    cached = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert (
        len(cached) == 2 and cached[0].startswith("oracle-") and cached[1].startswith("original-")
    )
    again = run_forget(spec("finetune", tmp_path, params={"n_epochs": 1}))
    assert again["original"] == r["original"] and again["oracle"] == r["oracle"]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == cached  # reused, nothing retrained
    json.dumps(again)  # JSON-ready


def test_run_forget_quality(tmp_path):
    r = run_forget(spec("gradient_ascent", tmp_path, quality=3))
    q = r["quality"]
    # F is the mean challenge score of the per-example epsilons (inf: separated, scores 0),
    # reported beside the noise floor of exact unlearning at the same N (independent seeds)
    eps = [math.inf if e is None else e for e in q["epsilons"]]
    assert q["F"] == pytest.approx(float(np.mean(bin_scores(eps))))
    assert len(eps) == r["n_forget"] and q["n_models"] == q["n_oracles"] == 3
    assert 0.0 <= q["noise_floor"]["F"] <= 1.0 and "disjoint seeds" in q["protocol"]
    assert q["score"] == pytest.approx(
        q["F"]
        * q["retain_acc_unlearned"]
        / q["retain_acc_oracle"]
        * q["test_acc_unlearned"]
        / q["test_acc_oracle"]
    )


def test_forget_cli_json_and_errors(tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(
        [
            "forget",
            "--dataset",
            "synthetic",
            "--forget",
            "random:5%",
            "--method",
            "neggrad_plus",
            "--epochs",
            "2",
            "--relearn-cap",
            "5",
            "--cache",
            str(tmp_path),
            "--json",
            str(out),
            "--set",
            "alpha=0.5",
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    assert data["spec"]["params"] == {"alpha": 0.5} and data["spec"]["forget"] == "random:5%"
    assert main(["forget", "--method", "nope"]) == 2
    assert (
        main(
            ["forget", "--dataset", "synthetic", "--forget", "ids:999999", "--cache", str(tmp_path)]
        )
        == 2
    )
    assert main(["forget", "--method", "finetune", "--set", "lr=abc"]) == 2
    assert "error:" in capsys.readouterr().err
