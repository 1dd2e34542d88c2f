"""The online protocol through the public entry points: one pass, small batches, scenario params."""

import pytest

from obliviate.cli.main import main
from obliviate.data.streams import ONLINE_BATCH_SIZE
from obliviate.errors import ObliviateError
from obliviate.experiments import LearnSpec, run_learn


def test_online_scenario_forces_a_single_pass_with_small_batches():
    spec = LearnSpec(
        dataset="synthetic",
        scenario="online",
        n_experiences=2,
        strategy="der",
        n_epochs=7,
        batch_size=64,
        scenario_params={"blurry": 0.2},
    )
    r = spec.resolved()
    assert r.n_epochs == 1 and r.batch_size == ONLINE_BATCH_SIZE
    out = run_learn(spec)
    n_train = 800  # synthetic: 1000 rows, 20 % test
    # one pass: ceil(n_i / 10) steps per experience (not 7 epochs' worth)
    assert n_train / ONLINE_BATCH_SIZE <= out["n_steps"] <= n_train / ONLINE_BATCH_SIZE + 2
    assert out["spec"]["n_epochs"] == 1 and out["spec"]["scenario_params"] == {"blurry": 0.2}


def test_scenario_params_are_validated():
    with pytest.raises(ObliviateError, match="no parameter 'nope'"):
        LearnSpec(scenario="online", scenario_params={"nope": 1})
    assert main(["learn", "--scenario", "online", "--scenario-set", "blurry=x", "--quiet"]) == 2
    assert (
        main(
            ["learn", "--scenario", "class-incremental", "--scenario-set", "blurry=0.1", "--quiet"]
        )
        == 2
    )
