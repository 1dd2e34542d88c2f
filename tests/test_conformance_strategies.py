"""Every registered strategy x every conformance check (obliviate.testing), on obliviate's MLP
and on a user-style model (a plain CNN with BatchNorm and Dropout whose forward takes x only)."""

import pytest

from obliviate.continual import STRATEGIES, strategy_class
from obliviate.testing import STRATEGY_CHECKS, NotApplicable
from obliviate.testing.strategies import (
    check_deterministic,
    check_finite_gradients,
    check_hooks_restore_mode,
    run_check,
)

# (strategy, check name) -> reason. One line each; keep it short and justified.
EXEMPT: dict[tuple[str, str], str] = {}

# on the user-style model the default run keeps the checks that exercise the model the most
# (a full training run each); the rest run with -m slow
USER_FAST = (check_deterministic, check_hooks_restore_mode, check_finite_gradients)
USER_SLOW = tuple(c for c in STRATEGY_CHECKS if c not in USER_FAST)

# strategies that refuse the user-style model, and why (declared: model_requirement or
# needs_task_ids; obliviate list shows it). Keep this list short.
REFUSE_USER_MODEL = {
    "packnet": "needs task ids; a user model gets them only through forward(x, task)",
    "pnn": "adds lateral columns to obliviate's multi-head MLP",
}


def _run(name, check, model):
    if (name, check.__name__) in EXEMPT:
        pytest.skip(EXEMPT[(name, check.__name__)])
    try:
        run_check(check, strategy_class(name), model)
    except NotApplicable as why:
        if model == "user" and "refuses a user-style model" in str(why):
            assert name in REFUSE_USER_MODEL, f"{name} refuses the user-style model: {why}"
        pytest.skip(f"not applicable: {why}")


@pytest.mark.parametrize("check", STRATEGY_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_conformance(name, check):
    _run(name, check, "builtin")


@pytest.mark.parametrize("check", USER_FAST, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_conformance_user_model(name, check):
    _run(name, check, "user")


@pytest.mark.slow
@pytest.mark.parametrize("check", USER_SLOW, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_conformance_user_model_all_checks(name, check):
    _run(name, check, "user")


@pytest.mark.parametrize("name", sorted(REFUSE_USER_MODEL))
def test_refusals_of_the_user_model_are_declared(name):
    cls = strategy_class(name)
    assert cls.model_requirement is not None or cls.needs_task_ids
