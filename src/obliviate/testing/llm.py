"""The LLM unlearner conformance suite: checks every registered causal-LM unlearner must pass.

Each check is a function ``check_*(name, model="full") -> None`` over a registry key of
:data:`obliviate.llm.methods.REGISTRY`; it raises :class:`AssertionError` saying what is wrong,
or :class:`~obliviate.testing.strategies.NotApplicable` when the method's declarations
(``guarantee``, ``needs_retain``, ``supports_lora``) put it outside the check's scope.

They run on one cheap toy (:func:`llm_toy`): a 2-block GPT-2 (width 32) with a word-level
tokenizer, fine-tuned on the facts of :func:`obliviate.llm.data.fictitious_qa` (5 invented
people x 2 attributes + 2 world facts; person 0 is the forget set, person 4 is held out). The
target memorises the forget answers (mean answer NLL about 0.2 nats; the retrain oracle's about
2.8), so unlearning is measurable as
a rise of the forget set's NLL. ``model="lora"`` is the same toy fine-tuned through rank-4 LoRA
adapters (peft) on a frozen base.

Checks (:data:`LLM_CHECKS`):

- ``input_untouched``: the input model's weights, ``requires_grad`` flags and train/eval mode
  are unchanged, and the method's ``get_params()`` too (no learned state on the instance).
- ``returns_lm``: an :class:`~obliviate.llm.models.LM` whose model has the input's class, the
  same parameter names, shapes and dtypes, and the same tokenizer.
- ``same_seed_same_bits``: two fresh instances with the same seed give bitwise equal weights.
- ``empty_request_identity``: an empty forget set returns an equal copy (not the same object).
- ``forget_loss_rises``: the forget set's mean answer NLL rises by at least
  :data:`MIN_FORGET_RISE` nats over the target's; retain-using methods keep the retain NLL below
  the forget NLL.
- ``exact_equals_retraining`` (``guarantee == "exact"``): bitwise equal to fine-tuning the
  base on the retain set alone.
- ``bad_input_one_line``: a bad constructor value (``n_epochs=-1``, ``lr=0``,
  ``batch_size=0``), missing retain data (``needs_retain``) or missing ``base`` (exact) is one
  :class:`~obliviate.errors.ObliviateError` whose message is one line naming the value.
- ``lora_only_adapters_move`` (``model="lora"``, ``supports_lora``): only LoRA parameters
  change, the frozen base's weights are bitwise unchanged.

Usage::

    from obliviate.testing.llm import check_llm_unlearner
    check_llm_unlearner("npo")               # every check on the fully fine-tuned toy
    check_llm_unlearner("npo", model="lora")  # and on LoRA adapters

Needs the optional ``[llm]`` extra (transformers, peft).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch

from obliviate.errors import ObliviateError
from obliviate.llm.data import QAData, fictitious_qa
from obliviate.llm.methods import REGISTRY, LLMUnlearner
from obliviate.llm.models import LM, make_trainable, tiny_gpt2, word_tokenizer
from obliviate.llm.run import TINY_UNLEARN_LR
from obliviate.llm.train import Encoded, encode, fine_tune, mean_token_nll
from obliviate.testing.strategies import NotApplicable

MODELS = ("full", "lora")
MIN_FORGET_RISE = 0.5
"""Nats: the least rise of the forget set's mean answer NLL an unlearner must cause on the toy
(the target's is about 0.2; the retrain oracle's about 2.8; measured on CPU, torch 2.13, the
weakest registered method, simnpo, rises by 0.8)."""

TOY_FIT: dict[str, Any] = {"n_epochs": 40, "lr": 3e-3, "batch_size": 4, "seed": 0}
"""The toy's fine-tuning recipe (also the retrain oracle's, so that it is exact)."""

UNLEARN_EPOCHS = 10


@dataclasses.dataclass(frozen=True, eq=False)
class LLMToy:
    """The toy: data, base (before fine-tuning), target (fine-tuned), encoded splits."""

    data: QAData
    base: LM
    target: LM
    forget: list[Encoded]
    retain: list[Encoded]


def _fresh(lm: LM) -> LM:
    return LM(copy.deepcopy(lm.model), lm.tokenizer, lm.device, lm.prefix)


@lru_cache(maxsize=2)
def llm_toy(model: str = "full") -> LLMToy:
    """Build (once per process and model) the toy described in the module docstring.

    Raises:
        ObliviateError: ``model`` not in :data:`MODELS`.
    """
    if model not in MODELS:
        raise ObliviateError(f"model={model!r}: choose one of {MODELS}")
    data = fictitious_qa(n_people=5, n_attributes=2, n_forget=1, n_holdout=1, n_world=2, seed=0)
    tok = word_tokenizer(data.texts())
    base = tiny_gpt2(tok, n_layer=2, n_embd=32, n_head=2, seed=0)
    if model == "lora":
        # the frozen base knows the retain facts; LoRA adapters then learn all of them
        make_trainable(base, mode="full")
        fine_tune(base, encode(base, data.split("retain")), **TOY_FIT)
        make_trainable(base, mode="lora", top_k=0, lora_rank=4, seed=0)
    else:
        make_trainable(base, mode="full")
    forget = encode(base, data.split("forget"))
    retain = encode(base, [*data.split("retain"), *data.split("world")])
    target = fine_tune(_fresh(base), forget + retain, **TOY_FIT)
    return LLMToy(data=data, base=base, target=target, forget=forget, retain=retain)


def make(name: str, *, seed: int = 0, **overrides: Any) -> LLMUnlearner:
    """The registered method ``name`` with the toy's hyperparameters: the tiny model's lr from
    :data:`~obliviate.llm.run.TINY_UNLEARN_LR` (1e-3 for a method not listed there),
    :data:`UNLEARN_EPOCHS` epochs at batch size 1; the retrain oracle with :data:`TOY_FIT`."""
    cls = REGISTRY[name]
    if cls.guarantee == "exact":
        params: dict[str, Any] = dict(TOY_FIT)
    else:
        params = {
            "n_epochs": UNLEARN_EPOCHS,
            "lr": TINY_UNLEARN_LR.get(name, 1e-3),
            "batch_size": 1,
        }
    params["seed"] = seed
    params.update(overrides)
    return cls(**params)


def _state(lm: LM) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def _flags(lm: LM) -> dict[str, bool]:
    return {k: p.requires_grad for k, p in lm.model.named_parameters()}


def _modes(lm: LM) -> list[bool]:
    return [m.training for m in lm.model.modules()]


def _differ(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    if a.keys() != b.keys():
        return sorted(set(a) ^ set(b))
    return [k for k in a if not torch.equal(a[k], b[k])]


def _nll(lm: LM, seqs: list[Encoded]) -> float:
    with torch.no_grad():
        return float(mean_token_nll(lm, seqs))


def _run(name: str, model: str, *, seed: int = 0, forget: bool = True) -> tuple[LLMToy, LM]:
    toy = llm_toy(model)
    method = make(name, seed=seed)
    out = method.unlearn(toy.target, toy.forget if forget else [], toy.retain, base=toy.base)
    return toy, out


def _needs_lora_support(name: str, model: str) -> None:
    if model == "lora" and not REGISTRY[name].supports_lora:
        raise NotApplicable(f"{name} does not declare supports_lora")


def check_input_untouched(name: str, model: str = "full") -> None:
    _needs_lora_support(name, model)
    toy = llm_toy(model)
    before, flags, modes = _state(toy.target), _flags(toy.target), _modes(toy.target)
    method = make(name)
    params = copy.deepcopy(method.get_params())
    method.unlearn(toy.target, toy.forget, toy.retain, base=toy.base)
    changed = _differ(before, _state(toy.target))
    assert not changed, f"{name}: the input model was mutated ({changed[:3]})"
    assert _flags(toy.target) == flags, f"{name}: the input's requires_grad flags changed"
    assert _modes(toy.target) == modes, f"{name}: the input's train/eval mode changed"
    assert method.get_params() == params, f"{name}: unlearn() changed the method's parameters"
    learned = [k for k in vars(method) if k.endswith("_")]
    assert not learned, f"{name}: unlearn() left learned state on the method: {learned}"


def check_returns_lm(name: str, model: str = "full") -> None:
    _needs_lora_support(name, model)
    toy, out = _run(name, model)
    assert isinstance(out, LM), f"{name}: returned {type(out).__name__}, not LM"
    assert out.model is not toy.target.model, f"{name}: returned the input model itself"
    assert type(out.model) is type(toy.target.model), (
        f"{name}: returned a {type(out.model).__name__}, the input is a "
        f"{type(toy.target.model).__name__}"
    )
    assert out.tokenizer is toy.target.tokenizer, f"{name}: the tokenizer changed"
    a, b = toy.target.model.state_dict(), out.model.state_dict()
    assert a.keys() == b.keys(), f"{name}: parameter names differ"
    bad = [k for k in a if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype]
    assert not bad, f"{name}: shapes/dtypes differ for {bad[:3]}"
    assert not out.model.training, f"{name}: returned a model in training mode"


def check_same_seed_same_bits(name: str, model: str = "full") -> None:
    _needs_lora_support(name, model)
    _, a = _run(name, model, seed=5)
    _, b = _run(name, model, seed=5)
    changed = _differ(_state(a), _state(b))
    assert not changed, f"{name}: the same seed gave different bits ({changed[:3]})"


def check_empty_request_identity(name: str, model: str = "full") -> None:
    _needs_lora_support(name, model)
    toy, out = _run(name, model, forget=False)
    assert out.model is not toy.target.model, f"{name}: an empty request returned the input"
    changed = _differ(_state(toy.target), _state(out))
    assert not changed, f"{name}: an empty request changed the weights ({changed[:3]})"


def check_forget_loss_rises(name: str, model: str = "full") -> None:
    _needs_lora_support(name, model)
    toy, out = _run(name, model)
    before, after = _nll(toy.target, toy.forget), _nll(out, toy.forget)
    assert after >= before + MIN_FORGET_RISE, (
        f"{name}: forget NLL {before:.3f} -> {after:.3f} nats; must rise by >= {MIN_FORGET_RISE}"
    )
    for v in (after, _nll(out, toy.retain)):
        assert torch.isfinite(torch.tensor(v)), f"{name}: a non-finite loss after unlearning"
    if REGISTRY[name].needs_retain:
        kept = _nll(out, toy.retain)
        assert kept < after, f"{name}: retain NLL {kept:.3f} >= forget NLL {after:.3f}"


def check_exact_equals_retraining(name: str, model: str = "full") -> None:
    _needs_lora_support(name, model)
    if REGISTRY[name].guarantee != "exact":
        raise NotApplicable(f"{name} is approximate")
    toy, out = _run(name, model)
    again = fine_tune(_fresh(toy.base), toy.retain, **TOY_FIT)
    changed = _differ(_state(again), _state(out))
    assert not changed, f"{name}: differs from retraining on the retain set ({changed[:3]})"


def _one_line_error(name: str, what: str, call: Callable[[], object], *needles: str) -> None:
    try:
        call()
    except ObliviateError as exc:
        msg = str(exc)
        assert "\n" not in msg and msg, f"{name}: {what}: the error is not one line: {msg!r}"
        missing = [n for n in needles if n not in msg]
        assert not missing, f"{name}: {what}: the message {msg!r} does not name {missing}"
        return
    except Exception as exc:  # noqa: BLE001 - the check reports any other exception type
        raise AssertionError(f"{name}: {what}: raised {type(exc).__name__}: {exc}") from None
    raise AssertionError(f"{name}: {what}: accepted")


def check_bad_input_one_line(name: str, model: str = "full") -> None:
    _needs_lora_support(name, model)
    cls, toy = REGISTRY[name], llm_toy(model)
    _one_line_error(name, "n_epochs=-1", lambda: make(name, n_epochs=-1), "n_epochs", "-1")
    _one_line_error(name, "lr=0", lambda: make(name, lr=0.0), "lr")
    _one_line_error(name, "batch_size=0", lambda: make(name, batch_size=0), "batch_size")
    method = make(name)
    if cls.guarantee == "exact":
        _one_line_error(
            name, "no base", lambda: method.unlearn(toy.target, toy.forget, toy.retain), "base"
        )
    elif cls.needs_retain:
        _one_line_error(
            name, "no retain data", lambda: method.unlearn(toy.target, toy.forget, []), "retain"
        )


def check_lora_only_adapters_move(name: str, model: str = "lora") -> None:
    if model != "lora":
        raise NotApplicable("LoRA check runs on model='lora'")
    _needs_lora_support(name, model)
    toy, out = _run(name, model)
    changed = _differ(_state(toy.target), _state(out))
    assert changed, f"{name}: nothing changed on the LoRA model"
    frozen = [k for k in changed if "lora_" not in k]
    assert not frozen, f"{name}: frozen base weights changed on a LoRA model ({frozen[:3]})"


LLM_CHECKS: dict[str, Callable[..., None]] = {
    "input_untouched": check_input_untouched,
    "returns_lm": check_returns_lm,
    "same_seed_same_bits": check_same_seed_same_bits,
    "empty_request_identity": check_empty_request_identity,
    "forget_loss_rises": check_forget_loss_rises,
    "exact_equals_retraining": check_exact_equals_retraining,
    "bad_input_one_line": check_bad_input_one_line,
    "lora_only_adapters_move": check_lora_only_adapters_move,
}


def check_llm_unlearner(name: str, model: str = "full") -> None:
    """Run every check of :data:`LLM_CHECKS` on the registered method ``name``.

    Raises:
        ObliviateError: ``name`` is not registered or ``model`` unknown.
        AssertionError: the first failing check, with what is wrong.
    """
    if name not in REGISTRY:
        raise ObliviateError(f"LLM method {name!r}: choose one of {sorted(REGISTRY)}")
    if model not in MODELS:
        raise ObliviateError(f"model={model!r}: choose one of {MODELS}")
    for check in LLM_CHECKS.values():
        try:
            check(name, model)
        except NotApplicable:
            continue
