"""Public conformance suites: every registered method must pass them.

``check_strategy(cls_or_name)`` runs the strategy checks (``STRATEGY_CHECKS``, one function per
check, for parametrised tests); see :mod:`obliviate.testing.strategies`.
"""

from obliviate.testing.strategies import STRATEGY_CHECKS, NotApplicable, check_strategy, tiny_setup
from obliviate.testing.unlearners import UNLEARNER_CHECKS, check_unlearner, toy_setup

__all__ = [
    "STRATEGY_CHECKS",
    "UNLEARNER_CHECKS",
    "NotApplicable",
    "check_strategy",
    "check_unlearner",
    "tiny_setup",
    "toy_setup",
]
