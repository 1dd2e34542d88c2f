"""Public conformance suites: every registered method must pass them.

``check_strategy(cls_or_name)`` runs the strategy checks (``STRATEGY_CHECKS``, one function per
check, for parametrised tests); see :mod:`obliviate.testing.strategies`. ``check_unlearner`` does
the same for unlearners (:mod:`obliviate.testing.unlearners`). Both take ``model="user"`` to run
every check on a user-style model (:class:`obliviate.testing.models.UserCNN`: a plain CNN with
BatchNorm and Dropout whose forward takes ``x`` only); a method may refuse it only with one
ObliviateError it declares (``model_requirement``, or ``needs_task_ids`` for strategies).

Causal-LM unlearners have their own suite, :mod:`obliviate.testing.llm`
(``check_llm_unlearner(name)``; needs the ``[llm]`` extra, so it is not imported here).
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
