"""``obliviate tune`` (issue #14, item 3): disjoint splits, reproducibility, divergence, bad input,
named configurations."""

from __future__ import annotations

import math

import pytest
import torch

from obliviate.cli.main import main
from obliviate.data.datasets import load_dataset
from obliviate.data.forget_sets import request_ids
from obliviate.errors import ObliviateError
from obliviate.experiments import tune as T
from obliviate.experiments.configs import dumps_config, load_config, shipped
from obliviate.experiments.forget import ForgetSpec, make_method
from obliviate.unlearning.finetune import Finetune

pytest.importorskip("optuna")


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# ---- splits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("forget", ["class:3", "random:10%", "subclass:2:20"])
def test_splits_never_touch_reported_forget_sets_or_test(digits, forget):
    train, test = digits
    seeds = (0, 1, 2)
    s = T.tuning_splits(train, forget, seed=0, report_seeds=seeds)
    reported = torch.unique(torch.cat([request_ids(train, forget, seed=k) for k in seeds]))
    for part in (s.tune_train, s.validation, s.request.forget, s.request.retain):
        assert not torch.isin(part.ids, reported).any()
        assert torch.isin(part.ids, train.ids).all()  # training rows only
    assert not torch.isin(s.validation.ids, s.tune_train.ids).any()
    assert torch.isin(s.request.forget.ids, s.tune_train.ids).all()
    # every training row is excluded, held out or in the tuning training set
    assert len(s.tune_train) + len(s.validation) + len(reported) == len(train)
    # the reported test split's features are not among the validation rows
    assert not any(torch.equal(s.validation.x[0], x) for x in test.x)
    if forget.startswith("class:"):
        assert s.val_forget_spec == "class:4"
        assert set(s.request.forget.y.tolist()) == {4}
    # deterministic in the seed, different across seeds
    again = T.tuning_splits(train, forget, seed=0, report_seeds=seeds)
    assert torch.equal(again.validation.ids, s.validation.ids)
    second = T.tuning_splits(train, forget, seed=0, report_seeds=seeds, index=1)
    assert torch.equal(second.validation.ids, s.validation.ids)  # only the forget set moves
    assert not torch.equal(second.request.forget.ids, s.request.forget.ids)
    assert not torch.isin(second.request.forget.ids, reported).any()
    other = T.tuning_splits(train, forget, seed=1, report_seeds=seeds)
    assert not torch.equal(other.validation.ids, s.validation.ids)


def test_check_disjoint_catches_a_leak(digits):
    train, _ = digits
    s = T.tuning_splits(train, "random:5%", seed=0, report_seeds=(0,))
    leaked = T.TuningSplits(
        s.tune_train, s.validation, s.request, s.val_forget_spec,
        torch.cat([s.excluded_ids, s.validation.ids[:1]]), s.train_ids,
    )  # fmt: skip
    with pytest.raises(ObliviateError, match="reported forget row"):
        T.check_disjoint(leaked)
    overlap = T.TuningSplits(
        s.tune_train, s.tune_train, s.request, s.val_forget_spec, s.excluded_ids, s.train_ids
    )
    with pytest.raises(ObliviateError, match="share rows"):
        T.check_disjoint(overlap)


def test_validation_forget_spec_kinds():
    assert T.validation_forget_spec("class:9", [9], 10) == "class:0"
    assert T.validation_forget_spec("class:1,2", [1, 2], 10) == "class:3,4"
    assert T.validation_forget_spec("random:50", [], 10) == "random:50"
    # the i-th validation forget set of a multi-seed search: the following classes, cyclically
    assert [T.validation_forget_spec("class:3", [3], 10, i) for i in range(3)] == [
        "class:4", "class:5", "class:6",
    ]  # fmt: skip
    assert T.validation_forget_spec("class:9", [9], 10, 9) == "class:0"
    with pytest.raises(ObliviateError, match="cannot draw"):
        T.validation_forget_spec("ids:1,2", [], 10)


def test_search_spaces_are_valid_for_their_methods():
    for method, space in T.SEARCH_SPACES.items():
        names = set(make_method(ForgetSpec(method=method)).get_params())
        assert set(space) <= names, method
        for kind, low, high in space.values():
            assert kind in ("log", "float", "int")
            assert isinstance(high, str) or low < high
    assert set(T.search_space("boundary_expand")) == {"lr", "n_epochs"}  # the fallback
    with pytest.raises(ObliviateError, match="nothing to tune"):
        T.search_space("retrain")


# ---- the search ------------------------------------------------------------------------------

QUICK = dict(
    dataset="digits", forget="class:3", method="finetune", report_seeds=(0,), n_epochs=3, limit=500
)


def test_tune_is_reproducible_and_scores_the_objective():
    a = T.run(T.TuneSpec(**QUICK, n_trials=3, seed=0))
    b = T.run(T.TuneSpec(**QUICK, n_trials=3, seed=0))
    assert [t["params"] for t in a["trials"]] == [t["params"] for t in b["trials"]]
    assert [t["value"] for t in a["trials"]] == [t["value"] for t in b["trials"]]
    assert a["trials"][0]["params"] == {"lr": 0.05, "n_epochs": 2}  # trial 0: the defaults
    for t in a["trials"]:
        if t["state"] == "complete":
            assert t["value"] == pytest.approx(sum(abs(v) for v in t["gaps"].values()))
            assert len(t["per_seed"]) == 1 and t["per_seed"][0] == t["gaps"]
    assert a["best"]["value"] == min(t["value"] for t in a["trials"] if t["value"] is not None)


def test_diverged_trials_are_pruned_not_fatal(monkeypatch):
    original = Finetune._unlearn

    def blow_up(self, model, request):  # NaN weights above lr 0.05: check_finite -> Diverged
        out = original(self, model, request)
        if self.lr > 0.05:
            with torch.no_grad():
                next(out.parameters()).fill_(math.nan)
        return out

    monkeypatch.setattr(Finetune, "_unlearn", blow_up)
    monkeypatch.setitem(
        T.SEARCH_SPACES, "finetune", {"lr": ("log", 0.01, 1.0), "n_epochs": ("int", 1, 2)}
    )
    r = T.run(T.TuneSpec(**QUICK, n_trials=6, seed=0, n_seeds=2))  # two originals a trial
    states = {t["state"] for t in r["trials"]}
    assert states == {"complete", "pruned"}
    for t in r["trials"]:
        diverged = t["params"]["lr"] > 0.05
        assert (t["state"] == "pruned") == diverged
        assert t["note"].startswith("diverged") == diverged
    assert r["best"]["params"]["lr"] <= 0.05

    def always_nan(self, model, request):
        out = original(self, model, request)
        with torch.no_grad():
            next(out.parameters()).fill_(math.inf)
        return out

    monkeypatch.setattr(Finetune, "_unlearn", always_nan)
    with pytest.raises(ObliviateError, match="diverged or was invalid"):
        T.run(T.TuneSpec(**QUICK, n_trials=2, seed=0))


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--method", "nope", "--n-trials", "1"], "unknown unlearner 'nope'"),
        (["--budget", "0"], "budget must be a number of seconds > 0"),
        (["--n-trials", "0"], "n_trials must be an integer >= 1"),
        (["--n-trials", "1", "--n-seeds", "0"], "n_seeds must be an integer >= 1"),
        (["--method", "retrain", "--n-trials", "1"], "nothing to tune"),
        (["--forget", "ids:1,2", "--n-trials", "1"], "cannot draw a validation forget set"),
        (["--n-trials", "1", "--protocol", "nope"], "protocol must be one of"),
        (["--n-trials", "1", "--protocol", "draw"], "protocol 'draw' needs a generated dataset"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, args, fragment):
    code, out, err = cli(capsys, "tune", "--quiet", *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err


def test_tune_requires_a_bound():
    with pytest.raises(ObliviateError, match="--n-trials N and/or --budget"):
        T.TuneSpec(**QUICK, n_trials=None)


# ---- named configurations --------------------------------------------------------------------


def test_shipped_scrub_mnist1d_configuration_loads():
    assert "scrub@mnist1d" in shipped()
    cfg = load_config("scrub@mnist1d")
    assert cfg["method"] == "scrub" and cfg["dataset"] == "mnist1d"
    assert set(cfg["params"]) == set(T.SEARCH_SPACES["scrub"])
    # tuned on independent draws of mnist1d (the reported problem on other rows), no reported row
    assert cfg["tune"]["forget"] == "class:3" and cfg["tune"]["protocol"] == "draw"
    assert len(cfg["tune"]["draw_seeds"]) == cfg["tune"]["n_seeds"] == 3
    assert "val_forgets" not in cfg["tune"] and "report_seeds_excluded" not in cfg["tune"]
    spec = ForgetSpec(dataset="mnist1d", method="scrub", config="scrub@mnist1d", params={"lr": 0.5})
    params = make_method(spec).get_params()
    assert params["lr"] == 0.5  # params override the configuration
    assert params["n_epochs"] == cfg["params"]["n_epochs"]
    assert spec.to_dict()["config"] == "scrub@mnist1d"  # results say which was used


def test_configuration_errors_and_round_trip(tmp_path):
    with pytest.raises(ObliviateError, match="for method 'scrub', not 'ssd'"):
        ForgetSpec(method="ssd", config="scrub@mnist1d")
    with pytest.raises(ObliviateError, match="unknown configuration 'nope@x'"):
        ForgetSpec(method="scrub", config="nope@x")
    path = tmp_path / "c.toml"
    path.write_text(dumps_config("finetune", "digits", {"lr": 0.01, "n_epochs": 3}, {"seed": 0}))
    spec = ForgetSpec(method="finetune", config=str(path))
    assert make_method(spec).get_params()["lr"] == 0.01


def test_forget_cli_config_errors_are_one_line(capsys):
    code, _, err = cli(capsys, "forget", "--method", "ssd", "--config", "scrub@mnist1d", "--quiet")
    assert code == 2 and err.count("\n") == 1 and "use --method scrub" in err


def test_a_configuration_is_refused_where_it_would_report_on_its_tuning_split(tmp_path):
    """Found by a tester: a carve-protocol configuration ran silently on class:4 (one of the
    classes its values were scored on), on digits, and on seeds whose forget sets tuning did not
    exclude. A draw-protocol one (the shipped scrub@mnist1d) used no reported row: any forget
    request and seed of its dataset may use it."""
    from obliviate.experiments.forget import ForgetSpec

    carved = tmp_path / "scrub@mnist1d-carve.toml"
    tune = {
        "forget": "class:3", "protocol": "carve", "val_forget": "class:4",
        "val_forgets": ["class:4", "class:5", "class:6"], "report_seeds_excluded": list(range(10)),
    }  # fmt: skip
    carved.write_text(dumps_config("scrub", "mnist1d", {"lr": 0.001}, tune))
    ok = {"method": "scrub", "config": str(carved), "dataset": "mnist1d"}
    ForgetSpec(**ok, forget="class:3", seed=2)
    with pytest.raises(ObliviateError, match="tuned by scoring forget sets"):
        ForgetSpec(**ok, forget="class:4")
    with pytest.raises(ObliviateError, match="tuned on dataset 'mnist1d', not 'digits'"):
        ForgetSpec(**{**ok, "dataset": "digits"}, forget="class:3")
    with pytest.raises(ObliviateError, match="seed 10"):
        ForgetSpec(**ok, forget="random:10%", seed=10)
    shipped_ok = {"method": "scrub", "config": "scrub@mnist1d", "dataset": "mnist1d"}
    ForgetSpec(**shipped_ok, forget="class:4", seed=11)
    with pytest.raises(ObliviateError, match="tuned on dataset 'mnist1d', not 'digits'"):
        ForgetSpec(**{**shipped_ok, "dataset": "digits"}, forget="class:3")


# ---- the draw protocol (generated datasets) --------------------------------------------------


@pytest.fixture(scope="module")
def mnist1d_draw():
    import random

    import numpy as np

    np_state, py_state = np.random.get_state(), random.getstate()
    d = T.independent_draw("mnist1d", 0, 0)
    # the generator seeds numpy's and Python's global generators: restored
    assert random.getstate() == py_state
    after = np.random.get_state()
    assert after[0] == np_state[0] and (after[1] == np_state[1]).all() and after[2] == np_state[2]
    return d


def test_a_tuning_draw_is_the_reported_problem_on_other_rows(mnist1d_draw):
    """Found by measuring: the carved tuning problem (2885 rows without the reported class,
    the next classes as forget sets) was not the reported one (4000 rows, class 3): the shipped
    SCRUB setting kept 0.95-0.98 retain accuracy there and 0.52 on the reported split. A draw has
    the reported sizes, class balance and standardisation, and none of its rows."""
    train, test = load_dataset("mnist1d")
    d_train, d_val = mnist1d_draw
    assert (len(d_train), len(d_val)) == (len(train), len(test))
    assert d_train.n_classes == train.n_classes and d_train.sample_shape == train.sample_shape
    assert int(d_train.ids.min()) == T.DRAW_ID_OFFSET
    assert not torch.isin(d_train.ids, torch.cat([train.ids, test.ids])).any()
    assert not torch.isin(d_val.ids, d_train.ids).any()
    # standardised on its own training rows, as the loader does for the reported draw
    assert d_train.x.reshape(len(d_train), -1).mean(0).abs().max() < 1e-4
    assert torch.bincount(d_train.y).min() > 350  # balanced like the reported (394-411 a class)
    assert not torch.equal(d_train.x[:5], train.x[:5])
    forget = request_ids(d_train, "class:3")
    assert abs(len(forget) - len(request_ids(train, "class:3"))) < 40


def test_a_draw_that_repeats_a_reported_row_is_refused(monkeypatch):
    from obliviate.data.datasets import DATASETS

    x, y, x_test, y_test = DATASETS["mnist1d"](None)  # the reported rows, raw

    def leaky(seed):  # a "draw" holding one reported test row
        return x[:100].copy() + 1.0, y[:100], x_test[:2], y_test[:2]

    monkeypatch.setitem(T.GENERATORS, "mnist1d", (leaky, 42))
    with pytest.raises(ObliviateError, match="repeats a reported row"):
        T.independent_draw("mnist1d", 0)


def test_draw_seeds_and_protocol_choice():
    seeds = [T.draw_seed(0, i) for i in range(3)]
    assert seeds == [T.draw_seed(0, i) for i in range(3)] and len(set(seeds)) == 3
    assert T.GENERATORS["mnist1d"][1] not in seeds and T.draw_seed(1, 0) != seeds[0]
    assert T.TuneSpec(dataset="mnist1d", n_trials=1).resolved_protocol() == "draw"
    assert T.TuneSpec(dataset="mnist1d", n_trials=1, protocol="carve").resolved_protocol() == (
        "carve"
    )
    assert T.TuneSpec(dataset="digits", n_trials=1).resolved_protocol() == "carve"
    with pytest.raises(ObliviateError, match="protocol 'draw' needs a generated dataset"):
        T.TuneSpec(dataset="digits", n_trials=1, protocol="draw")
    with pytest.raises(ObliviateError, match="protocol must be one of"):
        T.TuneSpec(n_trials=1, protocol="nope")
    with pytest.raises(ObliviateError, match="no seeded generator"):
        T.independent_draw("digits", 0)


def test_tiny_budget_tune_of_scrub_on_mnist1d_lands_near_the_oracle():
    """Issue #14 acceptance on a CI budget: SCRUB on (an 800-row cut of) mnist1d, 11 trials on
    an independent draw (about 10 s). SCRUB's defaults (trial 0) collapse the retain accuracy
    there (-0.71); the chosen setting must complete (no divergence), beat the defaults by far
    and sit near the oracle on every figure. Deterministic (seeded TPE, fixed trial count,
    CPU); an objective that ignored a gap, a sampler that did not search or a search that kept
    the defaults fails it."""
    spec = T.TuneSpec(
        dataset="mnist1d", forget="class:3", method="scrub", n_trials=11, seed=0, limit=800
    )
    r = T.run(spec)
    assert r["protocol"] == "draw" and r["splits"]["n_tune_train"] == 800
    defaults, best = r["trials"][0], r["best"]
    assert defaults["params"]["lr"] == 0.03  # trial 0: SCRUB's defaults
    assert r["trials"][best["number"]]["state"] == "complete"
    assert defaults["state"] == "pruned" or best["value"] < defaults["value"] - 0.3
    gaps = best["gaps"]
    assert best["per_seed"] == [gaps]  # one tuning problem: its gaps are the mean
    assert abs(gaps["forget_acc"]) <= 0.1 and abs(gaps["retain_acc"]) <= 0.1
    assert abs(gaps["val_acc"]) <= 0.1 and abs(gaps["mia_auc"]) <= 0.15
    assert best["value"] <= 0.2
    text = T.config_text(r)
    assert 'protocol = "draw"' in text and "val_forgets" not in text


def test_a_budget_stops_after_the_running_trial():
    r = T.run(T.TuneSpec(**QUICK, n_trials=None, budget=1e-9, seed=0))
    assert len(r["trials"]) == 1 and r["trials"][0]["params"] == {"lr": 0.05, "n_epochs": 2}
