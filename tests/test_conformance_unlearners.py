"""Every registered unlearner x every conformance check (obliviate.testing)."""

import warnings

import pytest

from obliviate.testing import UNLEARNER_CHECKS, NotApplicable
from obliviate.unlearning import UNLEARNERS, unlearner_class

# (unlearner, check name) -> reason. One line each; keep it short and justified.
EXEMPT: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("check", UNLEARNER_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", sorted(UNLEARNERS))
def test_unlearner_conformance(name, check):
    if (name, check.__name__) in EXEMPT:
        pytest.skip(EXEMPT[(name, check.__name__)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            check(unlearner_class(name))
        except NotApplicable as why:
            pytest.skip(f"not applicable: {why}")
