"""Every registered strategy x every conformance check (obliviate.testing)."""

import pytest

from obliviate.continual import STRATEGIES, strategy_class
from obliviate.testing import STRATEGY_CHECKS, NotApplicable

# (strategy, check name) -> reason. One line each; keep it short and justified.
EXEMPT: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("check", STRATEGY_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategy_conformance(name, check):
    if (name, check.__name__) in EXEMPT:
        pytest.skip(EXEMPT[(name, check.__name__)])
    try:
        check(strategy_class(name))
    except NotApplicable as why:
        pytest.skip(f"not applicable: {why}")
