"""A collapsed unlearned model is flagged against the oracle: in the evaluation result, as one
``warning:`` line of ``obliviate forget``, and as a CollapseWarning of the Python API; and the
forget run times the method after an untimed warm-up."""

from __future__ import annotations

import math
import warnings
from typing import ClassVar

import pytest
import torch
from _benchmarks import load
from torch import nn

import obliviate.api as ob
from obliviate.cli.main import main
from obliviate.data import synthetic_dataset
from obliviate.experiments import forget as forget_run
from obliviate.unlearning.base import ForgetRequest, Unlearner
from obliviate.unlearning.evaluate import (
    CollapseWarning,
    chance_accuracy,
    collapse,
    evaluate_unlearning,
)

TRAIN, TEST = synthetic_dataset(n_classes=3, n_per_class=40, n_features=4, seed=0)


class _Constant(Unlearner):
    """Sets the model to predict class 0 everywhere: the caricature of a collapsed method."""

    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        pass

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        assert isinstance(model, nn.Linear)
        with torch.no_grad():
            model.weight.zero_()
            model.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
        return model


class _Keep(Unlearner):
    """Returns the model unchanged (keeps its retain accuracy)."""

    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        pass

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        return model


def _factory() -> nn.Module:
    return nn.Linear(4, 3)


def _recipe() -> object:
    return ob.recipe(_factory, n_epochs=20, lr=0.1, seed=0)


def test_the_rule_is_half_way_from_chance_to_the_oracle() -> None:
    c = collapse(0.54, 1.0, 0.1)
    assert c["threshold"] == pytest.approx(0.55)
    assert c["collapsed"] is True
    assert collapse(0.56, 1.0, 0.1)["collapsed"] is False
    # an oracle at chance gives no yardstick, an empty retain set no figure
    assert collapse(0.05, 0.1, 0.1)["collapsed"] is False
    assert collapse(float("nan"), 1.0, 0.1)["collapsed"] is False
    # chance is the best constant predictor's accuracy, not 1 / n_classes
    imbalanced, _ = synthetic_dataset(n_classes=2, n_per_class=10, n_features=4, seed=0)
    rows = torch.cat([torch.nonzero(imbalanced.y == 0).reshape(-1), torch.tensor([0, 1])])
    sub = imbalanced.subset(torch.unique(rows))
    assert chance_accuracy(sub) == pytest.approx(float((sub.y == 0).sum()) / len(sub))
    assert math.isnan(chance_accuracy(sub.subset([])))


def test_the_evaluation_reports_collapsed_with_its_figures() -> None:
    recipe = _recipe()
    original = recipe.fit(TRAIN)
    request = ForgetRequest.from_ids(TRAIN, TRAIN.ids[TRAIN.y == 2], recipe)
    oracle = recipe.fit(request.retain, n_classes=3)
    broken = _Constant().unlearn(original, request)
    result = evaluate_unlearning(original, oracle, broken, request, TEST, relearn_cap=0)
    c = result["collapse"]
    assert result["collapsed"] is True and c["collapsed"] is True
    assert c["retain_acc"] == pytest.approx(result["unlearned"]["retain_acc"])
    assert c["oracle_retain_acc"] == pytest.approx(result["oracle"]["retain_acc"])
    assert c["chance"] == pytest.approx(0.5)  # classes 0 and 1 left, 40 rows each
    assert c["retain_acc"] < c["threshold"] < c["oracle_retain_acc"]
    fine = evaluate_unlearning(original, oracle, oracle, request, TEST, relearn_cap=0)
    assert fine["collapsed"] is False


def test_the_api_warns_once_with_a_named_warning_class() -> None:
    recipe = _recipe()
    original = recipe.fit(TRAIN)
    ids = TRAIN.ids[TRAIN.y == 2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, report = ob.forget(original, TRAIN, ids, _Constant(), test=TEST, recipe=recipe)
    collapsed = [w for w in caught if issubclass(w.category, CollapseWarning)]
    assert report["collapsed"] is True
    assert len(collapsed) == 1
    text = str(collapsed[0].message)
    assert "\n" not in text and "collapsed" in text and "oracle" in text
    assert ob.CollapseWarning is CollapseWarning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, report = ob.forget(original, TRAIN, ids, _Keep(), test=TEST, recipe=recipe)
    assert report["collapsed"] is False
    assert not [w for w in caught if issubclass(w.category, CollapseWarning)]


def test_the_cli_prints_one_warning_line(tmp_path, capsys) -> None:
    common = ["forget", "--dataset", "digits", "--forget", "class:3", "--method", "jit"]
    common += ["--epochs", "2", "--relearn-cap", "0", "--cache", str(tmp_path), "--json"]
    # lr=1 wrecks the MLP (retain accuracy ~0.12 against the oracle's ~0.92)
    assert main([*common, "--set", "lr=1.0"]) == 0
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1, err
    assert "jit collapsed on seed 0" in lines[0] and "oracle" in lines[0]
    assert main([*common, "--set", "lr=1e-5"]) == 0  # barely moves: not collapsed
    assert "collapsed" not in capsys.readouterr().err


def test_the_method_is_timed_after_the_warm_up(monkeypatch) -> None:
    events: list[str] = []
    real_warm_up = forget_run.warm_up

    def spy_warm_up(*args: object, **kwargs: object) -> None:
        events.append("warm_up")
        real_warm_up(*args, **kwargs)

    real_counter = forget_run.time.perf_counter

    def spy_counter() -> float:
        events.append("clock")
        return real_counter()

    class _Spy(_Keep):
        def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
            events.append("unlearn")
            return model

    monkeypatch.setattr(forget_run, "warm_up", spy_warm_up)
    monkeypatch.setattr(forget_run.time, "perf_counter", spy_counter)
    monkeypatch.setattr(forget_run, "make_method", lambda spec, seed=None: _Spy())
    spec = forget_run.ForgetSpec(dataset="digits", forget="class:3", method="finetune", n_epochs=1)
    forget_run.run(spec)
    first_unlearn = events.index("unlearn")
    assert "warm_up" in events[:first_unlearn]
    # the clock starts after the warm-up, just before the method
    assert events[events.index("warm_up") + 1 : first_unlearn] == ["clock"]


def test_the_warm_up_moves_no_state() -> None:
    recipe = _recipe()
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    forget_run.warm_up(model, TRAIN, recipe.train)
    assert torch.equal(torch.rand(3), expected)  # the global generator did not move
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_bench_table_marks_collapsed_methods(tmp_path) -> None:
    import json

    table = load("unlearning_bench_table")

    def rec(method: str, seed: int, collapsed: bool) -> dict:
        acc = {"retain_acc": 0.1 if collapsed else 0.9, "forget_acc": 0.0, "test_acc": 0.5}
        model = {**acc, "mia_auc": 0.5}
        return {
            "key": f"{method}-{seed}",
            "kind": "forget",
            "run": {"dataset": "d", "forget": "class:3", "method": method, "seed": seed},
            "status": "ok",
            "metrics": {
                "n_forget": 10,
                "unlearned": model,
                "oracle": {**model, "retain_acc": 0.9},
                "relearn_steps": 1,
                "relearn_steps_oracle": 1,
                "cpu_seconds": 1.0,
                "oracle_cpu_seconds": 2.0,
                "collapsed": collapsed,
            },
        }

    recs = [rec("retrain", 0, False), rec("retrain", 1, False)]
    recs += [rec("jit", 0, True), rec("jit", 1, False)]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    lines = table.tables(table.load(path)).splitlines()
    jit = next(ln for ln in lines if ln.startswith("| `jit`"))
    retrain = next(ln for ln in lines if ln.startswith("| `retrain`"))
    assert "collapsed 1/2" in jit and "collapsed" not in retrain
