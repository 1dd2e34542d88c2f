"""Every registered LLM unlearner passes the public LLM conformance suite
(:mod:`obliviate.testing.llm`) on the tiny toy; the LoRA variant is in the slow set."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

import torch  # noqa: E402

from obliviate.errors import ObliviateError  # noqa: E402
from obliviate.llm.methods import REGISTRY  # noqa: E402
from obliviate.llm.methods.base import LLMUnlearner, Step  # noqa: E402
from obliviate.llm.train import mean_token_nll  # noqa: E402
from obliviate.testing.llm import (  # noqa: E402
    LLM_CHECKS,
    _nll,
    check_forget_loss_rises,
    check_input_untouched,
    check_llm_unlearner,
    llm_toy,
    make,
)
from obliviate.testing.strategies import NotApplicable  # noqa: E402

FAST = [c for c in LLM_CHECKS if c != "lora_only_adapters_move"]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("check", FAST)
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_llm_conformance(name: str, check: str) -> None:
    try:
        LLM_CHECKS[check](name, "full")
    except NotApplicable as exc:
        pytest.skip(str(exc))


@pytest.mark.slow
@pytest.mark.parametrize("check", list(LLM_CHECKS))
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_llm_conformance_lora(name: str, check: str) -> None:
    try:
        LLM_CHECKS[check](name, "lora")
    except NotApplicable as exc:
        pytest.skip(str(exc))


def test_toy_target_memorises_and_oracle_does_not() -> None:
    toy = llm_toy()
    assert _nll(toy.target, toy.forget) < 0.3
    oracle = make("retrain").unlearn(toy.target, toy.forget, toy.retain, base=toy.base)
    assert _nll(oracle, toy.forget) > 2.0
    assert _nll(oracle, toy.retain) < 0.5


# ---- the suite catches broken methods (meta-tests) --------------------------------------
class _Mutates(LLMUnlearner):
    """Nudges the input model's weights (mutates it), then ascends on a copy."""

    def loss(self, step: Step) -> torch.Tensor:
        return -mean_token_nll(step.lm, step.forget, step.model)

    def unlearn(self, lm, forget, retain=(), *, base=None):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            for p in lm.model.parameters():
                p.add_(0.01)
        return super().unlearn(lm, forget, retain, base=base)


class _DoesNothing(LLMUnlearner):
    """A zero loss: the forget set is not forgotten."""

    def loss(self, step: Step) -> torch.Tensor:
        return sum(p.sum() for p in step.model.parameters() if p.requires_grad) * 0.0


@pytest.mark.parametrize(
    ("broken", "check"),
    [(_Mutates, check_input_untouched), (_DoesNothing, check_forget_loss_rises)],
)
def test_suite_catches_broken_methods(
    monkeypatch: pytest.MonkeyPatch, broken: type[LLMUnlearner], check: object
) -> None:
    monkeypatch.setitem(REGISTRY, "broken", broken)
    try:
        with pytest.raises(AssertionError):
            check("broken")  # type: ignore[operator]
    finally:
        llm_toy.cache_clear()  # _Mutates changed the cached toy's target


def test_unknown_method_or_model_is_one_line() -> None:
    with pytest.raises(ObliviateError, match="nope"):
        check_llm_unlearner("nope")
    with pytest.raises(ObliviateError, match="model="):
        llm_toy("int8")
