"""UPCORE: prune the forget set's outliers before unlearning (a wrapper around any method)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from obliviate._hyper import param_names
from obliviate._validation import check_number
from obliviate.errors import ObliviateError
from obliviate.models.output_layer import REQUIREMENT, feature_model
from obliviate.training import eval_mode
from obliviate.unlearning import UNLEARNERS, unlearner_class
from obliviate.unlearning.base import ForgetRequest, Unlearner, require


class UPCORE(Unlearner):
    """Utility-Preserving Coreset selection (Patil, Stengel-Eskin & Bansal 2025).

    The collateral damage of unlearning grows with the variance of the model's representations
    of the forget set. UPCORE therefore (1) embeds the forget set with the model to be edited
    (here: the penultimate features: ``model.features(x)`` of an obliviate model, the input of
    a user model's output layer otherwise, :mod:`obliviate.models.output_layer`), (2) scores outliers with an Isolation
    Forest (Liu, Ting & Zhou 2008), (3) removes the fraction ``contamination`` most anomalous
    points, and (4) runs the wrapped unlearning method on the remaining *core* forget set. The
    pruned points are expected to be forgotten too, by positive transfer from the core set; the
    evaluation always measures them as part of the forget set.

    Parameters
    ----------
    method : str
        Registry name of the wrapped unlearner (default ``"neggrad_plus"``; see Notes: the paper
        wraps Gradient Ascent, Refusal and NPO, not NegGrad+).
    contamination : float in (0, 0.5]
        Fraction of the forget set pruned as outliers (the Isolation Forest's contamination).
    n_estimators : int
        Trees in the Isolation Forest.
    method_params : mapping or None
        Hyperparameters of the wrapped method (its ``seed`` is set from ``seed`` when it has one).
    seed : int
        Seeds the Isolation Forest and the wrapped method.

    Notes
    -----
    ``needs`` declares what the default wrapped method needs; the wrapped method's own needs are
    checked at call time. Deviations: the paper embeds with an LLM's hidden states; here the
    model's penultimate features play that role. The paper wraps three LLM unlearning methods,
    Gradient Ascent, Refusal (training to answer "I don't know") and NPO; NegGrad+ (gradient
    ascent on the forget set with descent on the retain set) is not among them and is this
    class's default only as the classifier method closest to them that keeps retain accuracy;
    ``method="gradient_ascent"`` is the paper's Gradient Ascent setting. See :func:`deletion_utility_auc` for the
    paper's trade-off AUC.

    References
    ----------
    Patil, V., Stengel-Eskin, E. & Bansal, M. (2025). UPCORE: Utility-Preserving Coreset Selection
    for Balanced Unlearning. arXiv:2502.15082.
    Liu, F. T., Ting, K. M. & Zhou, Z.-H. (2008). Isolation Forest. ICDM.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"retain"})
    model_requirement: ClassVar[str | None] = REQUIREMENT

    def __init__(
        self,
        *,
        method: str = "neggrad_plus",
        contamination: float = 0.1,
        n_estimators: int = 100,
        method_params: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        if method not in UNLEARNERS or method == "upcore":
            valid = ", ".join(sorted(k for k in UNLEARNERS if k != "upcore"))
            raise ObliviateError(
                f"UPCORE: method {method!r} is not a wrappable unlearner; valid: {valid}"
            )
        check_number("contamination", contamination, low=0, high=0.5, low_open=True, owner="UPCORE")
        check_number("n_estimators", n_estimators, low=1, integer=True, owner="UPCORE")
        check_number("seed", seed, integer=True, owner="UPCORE")
        self.method, self.contamination, self.n_estimators = method, contamination, n_estimators
        self.method_params, self.seed = method_params, seed
        self.inner()  # validates method_params now: unknown keys or bad values raise here

    def inner(self) -> Unlearner:
        """The wrapped unlearner, constructed from ``method`` and ``method_params``."""
        cls = unlearner_class(self.method)
        params = dict(self.method_params or {})
        valid = param_names(cls)
        unknown = [k for k in params if k not in valid]
        if unknown:
            raise ObliviateError(
                f"UPCORE: {self.method} has no parameter {unknown[0]!r}; valid: {', '.join(valid)}"
            )
        if "seed" in valid and "seed" not in params:
            params["seed"] = self.seed
        return cls(**params)

    @torch.no_grad()
    def coreset(
        self, model: nn.Module, request: ForgetRequest
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(core ids, pruned outlier ids) of the forget set."""
        from sklearn.ensemble import IsolationForest

        forget = request.forget
        if len(forget) < 4:
            return forget.ids.clone(), forget.ids[:0].clone()
        view = feature_model(model, forget.x, owner="UPCORE")  # a user model: traced
        with eval_mode(view):  # each submodule's own mode comes back
            feats = view.features(forget.x).cpu().numpy().astype(np.float64)
        forest = IsolationForest(
            n_estimators=self.n_estimators, contamination=self.contamination, random_state=self.seed
        )
        inlier = torch.as_tensor(forest.fit_predict(feats) == 1, device=forget.ids.device)
        return forget.ids[inlier].clone(), forget.ids[~inlier].clone()

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        inner = self.inner()
        require(inner, request)
        core_ids, _ = self.coreset(model, request)
        core = ForgetRequest(
            forget=request.forget.select_ids(core_ids),
            retain=request.retain,
            train=request.train,
            recipe=request.recipe,
        )
        return inner.unlearn(model, core)


def deletion_utility_auc(deletion: Sequence[float], utility: Sequence[float]) -> float:
    """UPCORE's trade-off AUC: the area under utility as a function of deletion.

    ``deletion[k]`` (e.g. 1 − forget accuracy) and ``utility[k]`` (e.g. retain or test accuracy)
    are measured at increasing unlearning strengths (epochs, steps); include the original model
    as the first point. Points are sorted by deletion and integrated with the trapezoid rule over
    the deletion range covered, so a method that deletes more while keeping utility scores higher.
    """
    d = np.asarray(deletion, dtype=float)
    u = np.asarray(utility, dtype=float)
    if d.shape != u.shape or d.ndim != 1 or d.size < 2:
        raise ValueError("deletion and utility must be 1-D arrays of equal length >= 2")
    order = np.argsort(d, kind="stable")
    d, u = d[order], u[order]
    return float(np.sum((d[1:] - d[:-1]) * (u[1:] + u[:-1]) / 2))
