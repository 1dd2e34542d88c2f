"""The unlearner conformance suite: checks every registered unlearner must pass.

Each check is a function ``check_*(cls) -> None`` that raises :class:`AssertionError` with a
message saying what is wrong, or :class:`NotApplicable` when the unlearner's declarations
(``guarantee``, ``needs``; :mod:`obliviate.unlearning.base`) put it outside the check's scope.

They run on one cheap toy (:func:`toy_setup`): 4 Gaussian classes in 64 dimensions (300 training
rows), 30 of which carry a wrong label. An MLP with 64 hidden units trained for 20 epochs fits
most of those 30 labels (it memorises them: 80 % of them), while the retrained oracle, which
never saw them, predicts their true class (0 % on the wrong labels). So forgetting them is measurable: forget accuracy (on the wrong labels) must
fall from the original's towards the oracle's, while retain accuracy holds.

``toy_setup("user")`` is the same toy on a user-style model: the rows as ``[1, 8, 8]`` images and
a :class:`~obliviate.testing.models.UserCNN` (BatchNorm, Dropout, forward ``x`` only) trained by
:data:`USER_TOY_RECIPE` (its original also memorises all 30 wrong labels; the oracle none).

Usage::

    from obliviate.testing import check_unlearner
    check_unlearner("ssd")      # runs every check, raises on the first failure
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import torch
from torch import nn

from obliviate._hyper import param_names
from obliviate._rng import generator
from obliviate.data import synthetic_dataset
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.models import ModelSpec
from obliviate.testing.models import UserCNN, as_images
from obliviate.testing.strategies import NotApplicable
from obliviate.training import FactoryRecipe, Recipe, TrainConfig, accuracy
from obliviate.unlearning import unlearner_class
from obliviate.unlearning.base import ForgetRequest, Unlearner

UnlearnerType = type[Unlearner]

TOY_RECIPE = Recipe(
    ModelSpec("mlp", (64,), seed=0),
    TrainConfig(n_epochs=20, batch_size=16, lr=3e-3, optimizer="adam", seed=0),
)
N_MISLABELLED = 30


@dataclasses.dataclass(frozen=True, eq=False)
class Toy:
    """The toy: data, recipe, the forget request (the mislabelled rows), original and oracle."""

    train: Dataset
    test: Dataset
    recipe: Recipe | FactoryRecipe
    request: ForgetRequest
    original: nn.Module
    oracle: nn.Module


USER_TOY_RECIPE = FactoryRecipe(
    functools.partial(UserCNN, n_classes=4, side=8, channels=4, hidden=64, dropout=0.1),
    TrainConfig(n_epochs=20, batch_size=16, lr=3e-3, optimizer="adam", seed=0),
)
"""The user-style toy's recipe: :class:`~obliviate.testing.models.UserCNN` on ``[1, 8, 8]``
images (the same 64 features), BatchNorm and Dropout, forward ``x`` only."""

MODELS = ("builtin", "user")


@lru_cache(maxsize=2)
def toy_setup(model: str = "builtin") -> Toy:
    """Build (once per process and model) the memorisation toy described in the module
    docstring; ``model="user"``: the same rows as ``[1, 8, 8]`` images and a
    :class:`~obliviate.testing.models.UserCNN` trained by :data:`USER_TOY_RECIPE`."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    train, test = synthetic_dataset(n_classes=4, n_per_class=100, n_features=64, seed=0)
    recipe: Recipe | FactoryRecipe = TOY_RECIPE
    if model == "user":
        train, test, recipe = as_images(train, 8), as_images(test, 8), USER_TOY_RECIPE
    pick = torch.randperm(len(train), generator=generator(0, "toy-mislabelled"))[:N_MISLABELLED]
    y = train.y.clone()
    y[pick] = (y[pick] + 1) % train.n_classes
    train = dataclasses.replace(train, y=y)
    request = ForgetRequest.from_ids(train, train.ids[pick], recipe)
    original = recipe.fit(train)
    assert request.retain is not None
    oracle = recipe.fit(request.retain, n_classes=train.n_classes)
    return Toy(train, test, recipe, request, original, oracle)


def _resolve(cls_or_name: UnlearnerType | str) -> UnlearnerType:
    return unlearner_class(cls_or_name) if isinstance(cls_or_name, str) else cls_or_name


def _make(cls: UnlearnerType, seed: int = 0) -> Unlearner:
    params: dict[str, Any] = {"seed": seed} if "seed" in param_names(cls) else {}
    return cls(**params)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _name(cls: UnlearnerType) -> str:
    return cls.__name__


# ---- checks --------------------------------------------------------------------------------
def check_default_constructible(cls: UnlearnerType, *, model: str = "builtin") -> None:
    """Constructible with defaults; hyperparameters read back; declarations valid."""
    u = cls()
    params = u.get_params()
    assert set(params) == set(param_names(cls)), (
        f"{_name(cls)}: get_params() {sorted(params)} != constructor args"
    )
    assert cls.guarantee in ("exact", "approximate"), (
        f"{_name(cls)}: guarantee {cls.guarantee!r} invalid"
    )
    assert set(cls.needs) <= {"retain", "train", "recipe"}, (
        f"{_name(cls)}: unknown needs {set(cls.needs)}"
    )
    clone = u.clone()
    assert clone is not u and clone.get_params() == params, f"{_name(cls)}: clone() differs"


def check_contract_structure(cls: UnlearnerType, *, model: str = "builtin") -> None:
    """The class implements ``_unlearn`` and keeps the base's concrete ``unlearn`` (which clears
    the learned state, checks the request, and copies the model) instead of overriding it."""
    assert cls.unlearn is Unlearner.unlearn, (
        f"{_name(cls)}: overrides unlearn(); implement _unlearn(model, request) instead"
    )
    assert "_unlearn" not in getattr(cls, "__abstractmethods__", ()), (
        f"{_name(cls)}: does not implement _unlearn"
    )


def check_learned_state_declared(cls: UnlearnerType, *, model: str = "builtin") -> None:
    """A fresh unlearner holds no learned figures; after a call, every attribute it recorded
    ending in ``_`` is declared in ``learned_state``; an empty request clears them all."""
    toy = toy_setup(model)
    u = _make(cls)
    fresh = {k: v for k, v in u.learned().items() if v is not None}
    assert not fresh, f"{_name(cls)}: learned state {sorted(fresh)} set before any unlearn call"
    u.unlearn(toy.original, toy.request)
    recorded = sorted(k for k in vars(u) if k.endswith("_") and not k.startswith("_"))
    undeclared = [k for k in recorded if k not in cls.learned_state]
    assert not undeclared, (
        f"{_name(cls)}: records {undeclared} without declaring them in learned_state"
    )
    u.unlearn(toy.original, ForgetRequest.from_ids(toy.train, [], toy.recipe))
    stale = {k: v for k, v in u.learned().items() if v is not None}
    assert not stale, f"{_name(cls)}: learned state {sorted(stale)} survived an empty request"


def check_input_not_mutated(cls: UnlearnerType, *, model: str = "builtin") -> None:
    """``unlearn`` returns a new model and leaves the input's weights, mode and grads untouched."""
    toy = toy_setup(model)
    before = _state(toy.original)
    flags = [p.requires_grad for p in toy.original.parameters()]
    out = _make(cls).unlearn(toy.original, toy.request)
    assert out is not toy.original, f"{_name(cls)}: unlearn returned its input model"
    assert _equal(before, _state(toy.original)), (
        f"{_name(cls)}: unlearn mutated the input model's weights"
    )
    assert [p.requires_grad for p in toy.original.parameters()] == flags, (
        f"{_name(cls)}: requires_grad changed"
    )
    assert not toy.original.training, f"{_name(cls)}: left the input model in train mode"


def check_empty_is_identity(cls: UnlearnerType, *, model: str = "builtin") -> None:
    """An empty forget set returns a model with bitwise the input's weights."""
    toy = toy_setup(model)
    empty = ForgetRequest.from_ids(toy.train, [], toy.recipe)
    out = _make(cls).unlearn(toy.original, empty)
    assert out is not toy.original, (
        f"{_name(cls)}: the empty request returned the input object itself"
    )
    assert _equal(_state(out), _state(toy.original)), (
        f"{_name(cls)}: the empty request changed the weights"
    )


def check_deterministic(cls: UnlearnerType, *, model: str = "builtin") -> None:
    """The same seed (two fresh instances) gives bitwise the same weights."""
    toy = toy_setup(model)
    a = _make(cls, seed=3).unlearn(toy.original, toy.request)
    b = _make(cls, seed=3).unlearn(toy.original, toy.request)
    assert _equal(_state(a), _state(b)), f"{_name(cls)}: two runs with the same seed differ"


def check_missing_needs_raise(cls: UnlearnerType, *, model: str = "builtin") -> None:
    """Each declared need (retain, train, recipe) missing from the request raises ObliviateError."""
    if not cls.needs:
        raise NotApplicable("needs nothing beyond the forget set")
    toy = toy_setup(model)
    for need in sorted(cls.needs):
        missing: dict[str, Any] = {need: None}
        req = dataclasses.replace(toy.request, **missing)
        try:
            _make(cls).unlearn(toy.original, req)
        except ObliviateError as exc:
            assert need in str(exc), (
                f"{_name(cls)}: the error for a missing {need} does not name it: {exc}"
            )
        else:
            raise AssertionError(
                f"{_name(cls)}: a request without {need} did not raise ObliviateError"
            )


def check_unknown_ids_raise(cls: UnlearnerType, *, model: str = "builtin") -> None:
    """Forget rows that are not in the training set raise ObliviateError, both when building the
    request and when an unlearner is handed such a request directly."""
    toy = toy_setup(model)
    bogus = int(toy.train.ids.max()) + 1000
    try:
        ForgetRequest.from_ids(toy.train, [bogus], toy.recipe)
    except ObliviateError:
        pass
    else:
        raise AssertionError("ForgetRequest.from_ids accepted an id never trained on")
    stray = toy.test.subset(torch.arange(3))  # rows never trained on
    req = ForgetRequest(forget=stray, retain=toy.train, train=toy.train, recipe=toy.recipe)
    try:
        _make(cls).unlearn(toy.original, req)
    except ObliviateError:
        return
    raise AssertionError(
        f"{_name(cls)}: unlearning rows that are not in request.train did not raise ObliviateError"
    )


def retrain_from_scratch(toy: Toy) -> nn.Module:
    """The toy's model retrained from scratch on the training rows minus the forget ids,
    written out here rather than through ``Recipe.fit``/``training.fit``: a fresh model from
    the recipe's init seed, ``torch.optim`` Adam or SGD with the recipe's settings, the epochs'
    orders ``randperm`` from ``generator(train.seed, "fit")``, batches of ``batch_size`` (a last
    batch of one row joins the one before when the model has a training BatchNorm), and the
    global generator (Dropout masks) seeded from ``generator(train.seed, "global-rng", "fit")``:
    the recipe's documented contract, so an exact unlearner is compared with retraining itself,
    not with the routine it calls."""
    cfg = toy.recipe.train
    retain = toy.train.subset(~torch.isin(toy.train.ids, toy.request.forget.ids))
    model = toy.recipe.build(retain.sample_shape, toy.train.n_classes)
    params = [p for p in model.parameters() if p.requires_grad]
    opt: torch.optim.Optimizer
    if cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    order = generator(cfg.seed, "fit")
    n = len(retain)
    with torch.random.fork_rng(devices=[]):
        g = generator(cfg.seed, "global-rng", "fit")
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=g)))
        model.train()
        for _ in range(cfg.n_epochs):
            perm = torch.randperm(n, generator=order)
            starts = list(range(0, n, cfg.batch_size))
            if has_bn and len(starts) > 1 and n - starts[-1] < 2:
                starts.pop()
            for j, start in enumerate(starts):
                idx = perm[start : starts[j + 1] if j + 1 < len(starts) else n]
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(retain.x[idx]), retain.y[idx]).backward()
                opt.step()
    return model.eval()


def check_exact_equals_retrain(cls: UnlearnerType, *, model: str = "builtin") -> None:
    """An exact method's output equals, bitwise, an independent retraining from scratch on the
    retain set (:func:`retrain_from_scratch`, not the training routine the method calls), and
    differs from the original (the forget rows mattered)."""
    if cls.guarantee != "exact":
        raise NotApplicable("approximate method")
    toy = toy_setup(model)
    out = _make(cls).unlearn(toy.original, toy.request)
    assert _equal(_state(out), _state(retrain_from_scratch(toy))), (
        f"{_name(cls)}: differs from retraining from scratch without the forget set"
    )
    assert not _equal(_state(out), _state(toy.original)), (
        f"{_name(cls)}: returned the original unchanged"
    )


def check_forgets_memorised(cls: UnlearnerType, *, model: str = "builtin") -> None:
    """On the toy, forget accuracy falls from the original's towards the oracle's (by at least
    0.1 or an eighth of the gap, whichever is more), and retain accuracy stays within 0.15 of the
    oracle's."""
    toy = toy_setup(model)
    assert toy.request.retain is not None
    out = _make(cls).unlearn(toy.original, toy.request)
    fa_orig = accuracy(toy.original, toy.request.forget)
    fa_oracle = accuracy(toy.oracle, toy.request.forget)
    fa = accuracy(out, toy.request.forget)
    ra, ra_oracle = accuracy(out, toy.request.retain), accuracy(toy.oracle, toy.request.retain)
    assert fa_orig - fa_oracle >= 0.5, (
        f"toy broken: original {fa_orig:.2f} vs oracle {fa_oracle:.2f} on the forget set"
    )
    assert fa <= fa_orig - max(0.1, (fa_orig - fa_oracle) / 8) + 1e-9, (
        f"{_name(cls)}: forget accuracy {fa:.2f} did not fall towards the oracle's {fa_oracle:.2f} "
        f"(original {fa_orig:.2f})"
    )
    assert ra >= ra_oracle - 0.15, (
        f"{_name(cls)}: retain accuracy {ra:.2f} fell below the oracle's {ra_oracle:.2f} - 0.15"
    )


UNLEARNER_CHECKS: tuple[Callable[..., None], ...] = (
    check_default_constructible,
    check_contract_structure,
    check_learned_state_declared,
    check_input_not_mutated,
    check_empty_is_identity,
    check_deterministic,
    check_missing_needs_raise,
    check_unknown_ids_raise,
    check_exact_equals_retrain,
    check_forgets_memorised,
)
"""Every unlearner check, in order; parametrise tests over ``(unlearner, check)``."""


def run_check(check: Callable[..., None], cls: UnlearnerType, model: str = "builtin") -> None:
    """Run one check on ``model`` (``"builtin"``: obliviate's MLP; ``"user"``: the
    :class:`~obliviate.testing.models.UserCNN` toy).

    On the user-style model an unlearner may refuse with one :class:`ObliviateError` only when
    it declares a ``model_requirement`` (shown by ``obliviate list unlearners``); the refusal is
    reported as :class:`NotApplicable`. Any other failure fails the check.
    """
    if model == "builtin":
        check(cls)
        return
    try:
        check(cls, model=model)
    except ObliviateError as err:
        text = str(err)
        assert cls.model_requirement is not None, (
            f"{_name(cls)}: refused the user-style model without declaring a "
            f"model_requirement: {text}"
        )
        assert "\n" not in text, f"{_name(cls)}: the refusal is not one line: {text!r}"
        raise NotApplicable(f"refuses a user-style model: {text}") from err


def check_unlearner(
    cls_or_name: UnlearnerType | str,
    *,
    checks: tuple[Callable[..., None], ...] = UNLEARNER_CHECKS,
    model: str = "builtin",
) -> dict[str, str]:
    """Run every check on an unlearner class (or registry name) on ``model`` (``"builtin"`` or
    ``"user"``); raise on the first failure.

    Returns ``{check name: "passed" | "not applicable: <why>"}``.
    """
    cls = _resolve(cls_or_name)
    report: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for check in checks:
            try:
                run_check(check, cls, model)
            except NotApplicable as why:
                report[check.__name__] = f"not applicable: {why}"
            else:
                report[check.__name__] = "passed"
    return report


__all__ = [
    "MODELS",
    "UNLEARNER_CHECKS",
    "USER_TOY_RECIPE",
    "Toy",
    "check_unlearner",
    "run_check",
    "toy_setup",
] + [c.__name__ for c in UNLEARNER_CHECKS]
