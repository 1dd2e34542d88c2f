"""Unlearner.unlearn is concrete around _unlearn: copy, identity, cleared figures by construction."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from torch import nn

from obliviate.data import synthetic_dataset
from obliviate.errors import ObliviateError
from obliviate.testing.unlearners import check_contract_structure, check_learned_state_declared
from obliviate.unlearning.base import ForgetRequest, Unlearner

TRAIN, _ = synthetic_dataset(n_classes=3, n_per_class=10, n_features=4, seed=0)


class _ZeroesInPlace(Unlearner):
    """Writes zeros into the model it is handed and records how many rows it forgot."""

    needs: ClassVar[frozenset[str]] = frozenset({"retain"})
    learned_state: ClassVar[tuple[str, ...]] = ("n_forgotten_",)

    def __init__(self) -> None:
        pass

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        self.n_forgotten_ = len(request.forget)
        return model


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(4, 3)


def test_the_input_is_never_mutated_even_when_the_method_works_in_place():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = _ZeroesInPlace().unlearn(model, ForgetRequest.from_ids(TRAIN, TRAIN.ids[:3]))
    assert out is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(bool((p == 0).all()) for p in out.parameters())


def test_empty_request_is_an_independent_copy_and_clears_the_figures():
    u, model = _ZeroesInPlace(), _model()
    u.unlearn(model, ForgetRequest.from_ids(TRAIN, TRAIN.ids[:3]))
    assert u.learned() == {"n_forgotten_": 3}
    out = u.unlearn(model, ForgetRequest.from_ids(TRAIN, []))
    assert u.learned() == {"n_forgotten_": None}
    assert out is not model and all(
        torch.equal(a, b) for a, b in zip(out.parameters(), model.parameters(), strict=True)
    )
    with torch.no_grad():
        next(out.parameters()).add_(1.0)  # shares no storage with the input
    assert not torch.equal(next(out.parameters()), next(model.parameters()))


def test_the_request_is_checked_before_the_method_runs():
    req = ForgetRequest.from_ids(TRAIN, TRAIN.ids[:3])
    with pytest.raises(ObliviateError, match="retain"):
        _ZeroesInPlace().unlearn(_model(), ForgetRequest(forget=req.forget, train=TRAIN))
    overlap = ForgetRequest(forget=req.forget, retain=TRAIN, train=TRAIN)
    with pytest.raises(ObliviateError, match="both the forget and the retain set"):
        _ZeroesInPlace().unlearn(_model(), overlap)


def test_learned_state_names_must_end_in_an_underscore():
    with pytest.raises(TypeError, match="must end in '_'"):

        class _Bad(Unlearner):  # noqa: F841 - defining the class is the test
            learned_state: ClassVar[tuple[str, ...]] = ("figures",)

            def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
                return model


def test_the_suite_catches_an_override_and_undeclared_figures():
    class _Overrides(_ZeroesInPlace):
        def unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:  # type: ignore[misc]
            return model

    class _Undeclared(_ZeroesInPlace):
        learned_state: ClassVar[tuple[str, ...]] = ()

    with pytest.raises(AssertionError, match="overrides unlearn"):
        check_contract_structure(_Overrides)
    with pytest.raises(AssertionError, match="without declaring"):
        check_learned_state_declared(_Undeclared)
