"""Evaluate an unlearned model against the retrained oracle (same seed) and the original.

:func:`evaluate_unlearning` reports, for the original, the oracle and the unlearned model:
retain / forget / test accuracy, membership-inference attacks (forget set = members, held-out
test samples of the forget set's classes = non-members), the gaps to the oracle, the output
distance to the oracle (JS divergence of softmax outputs on the forget and test sets) and the
relearn time (fine-tuning steps on the forget set until forget accuracy returns to the
original's) and whether the unlearned model collapsed (:func:`collapse`: its retain accuracy
fell below half-way from chance to the oracle's). :func:`forgetting_quality` scores N unlearned models (each from its own original)
against N independently retrained ones as the NeurIPS-2023 unlearning challenge did.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from obliviate._rng import generator
from obliviate.data.dataset import Dataset
from obliviate.metrics.membership import membership_attacks
from obliviate.metrics.unlearning import confidence_scores, final_score, js_divergence
from obliviate.metrics.unlearning import forgetting_quality as _fq
from obliviate.training import (
    TrainConfig,
    accuracy,
    batches,
    data_to,
    make_optimizer,
    min_batch_rows,
    model_device,
    predict_logits,
    train_mode,
)
from obliviate.unlearning._ops import clone_model, cross_entropy
from obliviate.unlearning.base import ForgetRequest
from obliviate.unlearning.robustness import robustness_report

COLLAPSE_FRACTION = 0.5
"""An unlearned model is collapsed when its retain accuracy is below chance plus this fraction
of the distance from chance to the oracle's retain accuracy (:func:`collapse`)."""


class CollapseWarning(UserWarning):
    """An unlearned model has collapsed: its retain accuracy is far below the retrained
    oracle's (:func:`collapse`), so its low forget accuracy is damage, not forgetting."""


RELEARN = TrainConfig(n_epochs=1, batch_size=32, lr=1e-3, optimizer="adam", seed=0)
"""Recovery attack optimiser: Adam, lr 1e-3, batch 32 on the forget set."""


def nonmembers(request: ForgetRequest, test: Dataset) -> Dataset:
    """Held-out samples to contrast with the forget set: the test rows of the classes present in
    the forget set (all of the test set for random forgetting; the forgotten class for class
    forgetting, so the attack compares like with like)."""
    classes = torch.unique(request.forget.y)
    sub = test.subset(torch.isin(test.y, classes))
    return sub if len(sub) else test


def model_report(
    model: nn.Module, request: ForgetRequest, test: Dataset, held_out: Dataset, *, seed: int = 0
) -> dict[str, Any]:
    """Accuracies and membership attacks of one model."""
    retain = request.retain if request.retain is not None else request.forget.subset([])
    out: dict[str, Any] = {
        "retain_acc": accuracy(model, retain) if len(retain) else float("nan"),
        "forget_acc": accuracy(model, request.forget),
        "test_acc": accuracy(model, test),
    }
    if len(request.forget):
        lf, lt = predict_logits(model, request.forget), predict_logits(model, held_out)
        mia = membership_attacks(
            F.cross_entropy(lf, request.forget.y, reduction="none"),
            F.cross_entropy(lt, held_out.y, reduction="none"),
            lf.softmax(1),
            lt.softmax(1),
            seed=seed,
        )
    else:
        mia = dict.fromkeys(
            ("loss_auc", "entropy_auc", "logistic_auc", "logistic_accuracy"), float("nan")
        )
    out["mia_auc"] = mia["loss_auc"]
    out["mia"] = mia
    return out


def chance_accuracy(data: Dataset) -> float:
    """Accuracy of the best constant predictor on ``data``: the frequency of its most common
    label (``1 / n_classes`` on balanced data); NaN when ``data`` is empty."""
    if len(data) == 0:
        return float("nan")
    counts = torch.bincount(data.y.long().cpu())
    return float(counts.max()) / len(data)


def collapse(
    retain_acc: float,
    oracle_retain_acc: float,
    chance: float,
    *,
    fraction: float = COLLAPSE_FRACTION,
) -> dict[str, Any]:
    """Whether an unlearned model collapsed, judged against the retrained oracle.

    Rule: ``collapsed`` when ``retain_acc < chance + fraction * (oracle_retain_acc - chance)``
    (``fraction`` 0.5 by default: the model lost more than half of what separates the oracle
    from a constant predictor on the rows it was meant to keep). Chance is the accuracy of the
    best constant predictor (:func:`chance_accuracy`), so the rule holds on imbalanced retain
    sets and any class count; anchoring on the oracle (not a fixed accuracy) makes it hold for
    weak and strong models alike. A useful method stays within a few points of the oracle's
    retain accuracy; a collapsed one predicts near-constantly, and its forget accuracy near 0
    is then damage, not forgetting. Never collapsed when a figure is NaN (empty retain set) or
    the oracle itself is no better than chance.

    Returns ``collapsed`` (bool), ``retain_acc``, ``oracle_retain_acc``, ``chance``,
    ``threshold`` (the retain accuracy below which the model counts as collapsed) and ``rule``.
    """
    threshold = chance + fraction * (oracle_retain_acc - chance)
    known = not any(math.isnan(v) for v in (retain_acc, oracle_retain_acc, chance))
    collapsed = bool(known and oracle_retain_acc > chance and retain_acc < threshold)
    return {
        "collapsed": collapsed,
        "retain_acc": retain_acc,
        "oracle_retain_acc": oracle_retain_acc,
        "chance": chance,
        "threshold": threshold,
        "rule": f"retain_acc < chance + {fraction:g} * (oracle_retain_acc - chance)",
    }


def collapse_message(result: dict[str, Any], label: str = "the unlearned model") -> str:
    """One line saying that ``result`` (of :func:`evaluate_unlearning`) collapsed, with its
    figures."""
    c = result["collapse"]
    return (
        f"{label} collapsed: retain accuracy {c['retain_acc']:.3f} against the oracle's "
        f"{c['oracle_retain_acc']:.3f} (chance {c['chance']:.3f}, collapse below "
        f"{c['threshold']:.3f}); its forget accuracy is damage, not forgetting (try a smaller "
        "lr or fewer steps)"
    )


def relearn_steps(
    model: nn.Module,
    forget: Dataset,
    target_acc: float,
    *,
    cap: int = 200,
    config: TrainConfig = RELEARN,
) -> int:
    """Optimiser steps of fine-tuning a copy of ``model`` on ``forget`` until its forget accuracy
    reaches ``target_acc``; ``cap`` if it never does within ``cap`` steps (0 if it already does)."""
    if len(forget) == 0 or accuracy(model, forget) >= target_acc:
        return 0
    m = clone_model(model)
    forget = data_to(forget, model_device(m))  # the attack runs where the model lives
    params = [p for p in m.parameters() if p.requires_grad]
    opt = make_optimizer(params, config)
    gen = generator(config.seed, "relearn")
    steps = 0
    train_mode(m)
    min_rows = min_batch_rows(m)
    while steps < cap:
        for batch in batches(forget, config.batch_size, gen, min_rows=min_rows):
            train_mode(m)
            opt.zero_grad(set_to_none=True)
            cross_entropy(m, batch).backward()
            opt.step()
            steps += 1
            if accuracy(m, forget) >= target_acc or steps >= cap:
                return steps
    return steps


def evaluate_unlearning(
    original: nn.Module,
    oracle: nn.Module,
    unlearned: nn.Module,
    request: ForgetRequest,
    test: Dataset,
    *,
    relearn_cap: int = 200,
    seed: int = 0,
    robustness: bool = False,
) -> dict[str, Any]:
    """The evaluation of issue #4, as a JSON-ready dict (see the module docstring).

    Keys: ``original``, ``oracle``, ``unlearned`` (each ``retain_acc``, ``forget_acc``,
    ``test_acc``, ``mia_auc`` (loss-threshold AUC) and ``mia`` (all attacks)); ``gaps``
    (unlearned minus oracle for the accuracies and AUCs); ``js_to_oracle`` (``forget``, ``test``
    for the unlearned model, ``original_forget``, ``original_test`` for reference);
    ``relearn_steps`` (unlearned), ``relearn_steps_oracle``, ``relearn_cap``; ``collapsed``
    (bool) and ``collapse`` (its figures: :func:`collapse` of the unlearned and the oracle's
    retain accuracy, chance from the retain set's labels); with
    ``robustness=True``, ``robustness``: recovery after int8 quantisation, after fine-tuning
    on related samples, and the linear probe, for the unlearned model and the oracle
    (:func:`obliviate.unlearning.robustness.robustness_report`, probe fitted on ``test``).
    """
    held_out = nonmembers(request, test)
    reports = {
        name: model_report(m, request, test, held_out, seed=seed)
        for name, m in (("original", original), ("oracle", oracle), ("unlearned", unlearned))
    }
    u, o = reports["unlearned"], reports["oracle"]
    gaps = {k: u[k] - o[k] for k in ("retain_acc", "forget_acc", "test_acc", "mia_auc")}
    gaps.update({f"mia_{k}": u["mia"][k] - o["mia"][k] for k in ("entropy_auc", "logistic_auc")})

    def probs(m: nn.Module, d: Dataset) -> torch.Tensor:
        return predict_logits(m, d).softmax(1)

    js = {
        "forget": js_divergence(probs(unlearned, request.forget), probs(oracle, request.forget)),
        "test": js_divergence(probs(unlearned, test), probs(oracle, test)),
        "original_forget": js_divergence(
            probs(original, request.forget), probs(oracle, request.forget)
        ),
        "original_test": js_divergence(probs(original, test), probs(oracle, test)),
    }
    target = reports["original"]["forget_acc"]
    extra = (
        {"robustness": robustness_report(original, oracle, unlearned, request, test, seed=seed)}
        if robustness
        else {}
    )
    retain = request.retain if request.retain is not None else request.forget.subset([])
    flag = collapse(u["retain_acc"], o["retain_acc"], chance_accuracy(retain))
    return {
        **reports,
        **extra,
        "collapsed": flag["collapsed"],
        "collapse": flag,
        "gaps": gaps,
        "js_to_oracle": js,
        "relearn_steps": relearn_steps(unlearned, request.forget, target, cap=relearn_cap),
        "relearn_steps_oracle": relearn_steps(oracle, request.forget, target, cap=relearn_cap),
        "relearn_cap": relearn_cap,
    }


def forgetting_quality(
    unlearned_models: Sequence[nn.Module],
    oracle_models: Sequence[nn.Module],
    request: ForgetRequest,
    test: Dataset,
    *,
    delta: float = 1e-5,
) -> dict[str, Any]:
    """NeurIPS-2023 forgetting quality of N unlearned vs N oracle models on ``request.forget``.

    ``unlearned_models``: each unlearned from its own original; ``oracle_models``: retrained
    from scratch on the retain set with seeds independent of the originals' (the challenge's
    protocol; :func:`obliviate.experiments.forget.quality` builds both). Returns ``F``,
    ``score`` (= F * RA_u/RA_o * TA_u/TA_o with mean accuracies over the models), the mean
    accuracies, ``n_models`` and the per-example figures and resolution of
    :func:`obliviate.metrics.unlearning.forgetting_quality` (``F_stderr``, ``epsilons``,
    ``mean_epsilon``, ``n_separated``, ``max_finite_epsilon``, ``n_reachable_bins``,
    ``H_levels``). Raises ``ValueError`` for an empty forget set.
    """
    if len(request.forget) == 0:
        raise ValueError("forgetting quality needs a non-empty forget set")
    retain = request.retain
    assert retain is not None

    def scores(models: Sequence[nn.Module]) -> np.ndarray:
        return np.stack(
            [confidence_scores(predict_logits(m, request.forget), request.forget.y) for m in models]
        )

    fq = _fq(scores(unlearned_models), scores(oracle_models), delta=delta)
    ra_u = float(np.mean([accuracy(m, retain) for m in unlearned_models]))
    ra_o = float(np.mean([accuracy(m, retain) for m in oracle_models]))
    ta_u = float(np.mean([accuracy(m, test) for m in unlearned_models]))
    ta_o = float(np.mean([accuracy(m, test) for m in oracle_models]))
    return {
        **fq,
        "score": final_score(fq["F"], ra_u, ra_o, ta_u, ta_o),
        "retain_acc_unlearned": ra_u,
        "retain_acc_oracle": ra_o,
        "test_acc_unlearned": ta_u,
        "test_acc_oracle": ta_o,
        "n_models": len(unlearned_models),
        "n_oracles": len(oracle_models),
        "delta": delta,
    }


__all__ = [
    "COLLAPSE_FRACTION",
    "CollapseWarning",
    "chance_accuracy",
    "collapse",
    "collapse_message",
    "evaluate_unlearning",
    "forgetting_quality",
    "model_report",
    "nonmembers",
    "relearn_steps",
]
