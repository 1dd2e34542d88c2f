"""Certified removal by one Newton step on an l2-regularised softmax-regression head."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._validation import check_number
from obliviate.data.dataset import Dataset
from obliviate.errors import ObliviateError
from obliviate.models.base import Model
from obliviate.models.multihead import MultiHead
from obliviate.models.output_layer import feature_model
from obliviate.training import eval_mode
from obliviate.unlearning._ops import trainable
from obliviate.unlearning.base import ForgetRequest, Unlearner

GAMMA = 0.25
"""Lipschitz constant of the logistic loss's second derivative used in the residual bound."""


def _head(model: nn.Module, example: Tensor) -> tuple[Model, nn.Parameter, nn.Parameter]:
    """``(view, weight, bias)``: the model as a :class:`Model` (itself, or a user model's
    :class:`~obliviate.models.output_layer.OutputLayerView`, traced on ``example`` rows) and its
    one linear output layer. Raises :class:`ObliviateError` for a multi-head model or an output
    layer without a bias."""
    view = feature_model(model, example, owner="newton")
    if isinstance(view, MultiHead):
        raise ObliviateError(
            f"newton needs one linear output layer over all classes; {type(model).__name__} has "
            f"{len(view.task_classes)} heads (one per task). Use a single-head model "
            "(class- or domain-incremental stream)"
        )
    params = view.head_parameters()
    if len(params) != 2 or params[0].ndim != 2 or params[1].ndim != 1:
        raise ObliviateError(
            f"newton needs the output layer to be an nn.Linear with a bias; "
            f"{type(model).__name__}'s output layer has {'no bias' if len(params) == 1 else 'another shape'}. "
            "Build it with nn.Linear(d, n_classes, bias=True)"
        )
    return view, params[0], params[1]


@torch.no_grad()
def design_matrix(model: nn.Module, data: Dataset) -> Tensor:
    """Frozen features with a constant column for the bias: ``[N, feature_dim + 1]`` float64.

    The features are ``model.features(x)`` of an obliviate model, or the input of a user
    model's output layer (traced), computed in eval mode (each submodule's mode restored)."""
    view = feature_model(model, data.x, owner="newton")
    with eval_mode(view):
        h = view.features(data.x).reshape(len(data), -1).to(torch.float64)
    return torch.cat([h, torch.ones(len(data), 1, dtype=torch.float64, device=h.device)], dim=1)


def objective_grad_hessian(
    w: Tensor, x: Tensor, y: Tensor, reg_strength: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Value, gradient ``[K, D]`` and Hessian ``[K*D, K*D]`` (row-major over (class, feature)) of

    ``L(w) = mean_i CE(softmax(w x_i), y_i) + reg_strength / 2 * ||w||^2``  for ``w`` of shape ``[K, D]``.
    """
    n, d = x.shape
    k = w.shape[0]
    z = x @ w.T
    logp = torch.log_softmax(z, dim=1)
    p = logp.exp()
    value = -logp[torch.arange(n, device=x.device), y].mean() + 0.5 * reg_strength * (w * w).sum()
    resid = p.clone()
    resid[torch.arange(n, device=x.device), y] -= 1.0
    grad = resid.T @ x / n + reg_strength * w
    v = (p[:, :, None] * x[:, None, :]).reshape(n, k * d)
    hess = -(v.T @ v) / n
    for c in range(k):
        block = (x * p[:, c : c + 1]).T @ x / n
        hess[c * d : (c + 1) * d, c * d : (c + 1) * d] += block
    hess += reg_strength * torch.eye(k * d, dtype=x.dtype, device=x.device)
    return value, grad, hess


def objective_grad(w: Tensor, x: Tensor, y: Tensor, reg_strength: float) -> tuple[Tensor, Tensor]:
    """Gradient ``[K, D]`` of the objective above, and the softmax outputs ``[N, K]``."""
    p = torch.softmax(x @ w.T, dim=1)
    resid = p.clone()
    resid[torch.arange(x.shape[0], device=x.device), y] -= 1.0
    return resid.T @ x / x.shape[0] + reg_strength * w, p


def hessian_vector(v: Tensor, x: Tensor, p: Tensor, reg_strength: float) -> Tensor:
    """``H v`` for the objective above at the point whose softmax outputs are ``p`` (``v``: ``[K, D]``)."""
    z = x @ v.T
    s = p * z - p * (p * z).sum(dim=1, keepdim=True)
    return s.T @ x / x.shape[0] + reg_strength * v


def solve_cg(
    x: Tensor,
    p: Tensor,
    b: Tensor,
    reg_strength: float,
    *,
    tol: float = 1e-12,
    max_iter: int = 2000,
) -> Tensor:
    """``H^-1 b`` by conjugate gradients on Hessian-vector products (H is positive definite)."""
    sol = torch.zeros_like(b)
    r = b.clone()
    d = r.clone()
    rr = (r * r).sum()
    stop = tol * float((b * b).sum())
    for _ in range(max_iter):
        if float(rr) <= stop:
            break
        hd = hessian_vector(d, x, p, reg_strength)
        a = rr / (d * hd).sum()
        sol += a * d
        r -= a * hd
        rr_new = (r * r).sum()
        d = r + (rr_new / rr) * d
        rr = rr_new
    return sol


def newton_steps(
    w: Tensor, x: Tensor, y: Tensor, reg_strength: float, n_steps: int
) -> tuple[Tensor, Tensor]:
    """``n_steps`` Newton steps on the objective above from ``w``; returns (new w, last step).

    Each step solves ``H step = grad`` by conjugate gradients (Guo et al., Sec. 4, suggest the
    same for large models), to a relative residual of 1e-6.
    """
    step = torch.zeros_like(w)
    for _ in range(n_steps):
        grad, p = objective_grad(w, x, y, reg_strength)
        step = solve_cg(x, p, grad, reg_strength)
        w = w - step
    return w, step


def fit_head(
    model: nn.Module, data: Dataset, *, reg_strength: float = 1e-3, n_steps: int = 25
) -> nn.Module:
    """Set ``model``'s linear head (in place) to the minimiser of the l2-regularised softmax loss
    on ``data`` with frozen features, by Newton's method; returns ``model``.

    With a linear model (``MLP(hidden=())``) this trains the whole model to the exact optimum,
    the setting of Guo et al. (2020).
    """
    view, weight, bias = _head(model, data.x)
    x = design_matrix(view, data)
    w0 = torch.cat([weight.detach(), bias.detach()[:, None]], dim=1).to(torch.float64)
    w, _ = newton_steps(w0, x, data.y, reg_strength, n_steps)
    with torch.no_grad():
        weight.copy_(w[:, :-1].to(weight.dtype))
        bias.copy_(w[:, -1].to(bias.dtype))
    return model


class Newton(Unlearner):
    """Certified data removal by a Newton step (Guo et al., 2020, Eq. 3), on the output layer.

    The output layer ``w`` (weights and bias) on frozen features ``x`` is treated as an
    l2-regularised softmax regression, ``L(w; D) = mean CE + reg_strength/2 ||w||^2``. Removing
    the forget set moves it by one Newton step on the retain objective,
    ``w- = w - H^-1 grad L(w; D')``, with ``H`` the Hessian of ``L(.; D')`` at ``w``. When ``w``
    minimises ``L(.; D)`` this is the paper's update ``w + H^-1 Delta`` (``Delta`` the removed
    points' gradient contribution).

    After ``unlearn``, ``certificate_`` (declared in ``learned_state``; ``None`` after an empty
    request) holds the paper's figures for that removal:
    ``gradient_residual_norm`` = ``||grad L(w-; D')||`` (measured exactly), ``residual_bound`` =
    the data-dependent bound of Guo et al. (Corollary 2), ``gamma * ||X|| * ||H^-1 Delta|| *
    ||X H^-1 Delta||`` (divided by ``n`` for the mean-normalised loss), and
    ``noise_for_epsilon_1`` = the standard deviation of the training-time objective perturbation
    ``b`` that would make this removal (1, 1e-5)-certified (Theorem 3: sigma = c * bound / eps,
    c = sqrt(2 ln(1.5 / delta))).

    Parameters
    ----------
    reg_strength : float, > 0
        The l2 strength ``lambda`` of the head objective (the paper's lambda, per sample).
    n_steps : int, >= 1
        Newton steps (the paper takes one). The certificate figures use the whole move
        ``w- - w`` (for one step, the paper's ``H^-1 Delta``); with several steps the bound is
        computed on that total move, outside the paper's one-step analysis.

    Notes
    -----
    Deviations: (1) the paper covers binary logistic regression on the whole (linear) model;
    here the loss is the softmax cross-entropy of the output layer on frozen features (a linear
    model is the special case ``MLP(hidden=())``), and ``gamma = 1/4`` (the logistic constant)
    is kept in the bound, which the paper does not prove for softmax. (2) The bias is part of
    ``w`` and regularised. (3) The original model is not trained with objective perturbation, so
    no certificate is *issued*; the noise figure says what training would have needed. (4) The
    step starts from the given weights, which need not minimise ``L(.; D)`` (e.g. an MLP trained
    by SGD without this regulariser); then it is a Newton step towards the retain optimum.

    References
    ----------
    Guo, C., Goldstein, T., Hannun, A. & van der Maaten, L. (2020). Certified data removal from
    machine learning models. ICML.
    """

    needs: ClassVar[frozenset[str]] = frozenset({"retain"})
    learned_state: ClassVar[tuple[str, ...]] = ("certificate_",)
    model_requirement: ClassVar[str | None] = (
        "one nn.Linear output layer with a bias over all classes, producing the logits"
    )

    def __init__(self, *, reg_strength: float = 1e-3, n_steps: int = 1) -> None:
        check_number("reg_strength", reg_strength, low=0, low_open=True, owner="Newton")
        check_number("n_steps", n_steps, low=1, integer=True, owner="Newton")
        self.reg_strength, self.n_steps = reg_strength, n_steps

    def _unlearn(self, model: nn.Module, request: ForgetRequest) -> nn.Module:
        out = trainable(model)
        assert request.retain is not None
        view, weight, bias = _head(out, request.retain.x)
        x = design_matrix(view, request.retain)
        y = request.retain.y
        w0 = torch.cat([weight.detach(), bias.detach()[:, None]], dim=1).to(torch.float64)
        w, _ = newton_steps(w0, x, y, self.reg_strength, self.n_steps)
        step = w - w0  # the whole removal move (one Newton step in the paper; several here)
        grad_after, _ = objective_grad(w, x, y, self.reg_strength)
        n = x.shape[0]
        x_norm = float(torch.linalg.matrix_norm(x, ord=2))
        bound = GAMMA * x_norm * float(step.norm()) * float((x @ step.T).norm()) / n
        c = math.sqrt(2.0 * math.log(1.5 / 1e-5))
        self.certificate_ = {
            "gradient_residual_norm": float(grad_after.norm()),
            "residual_bound": bound,
            "noise_for_epsilon_1": c * bound,
            "step_norm": float(step.norm()),
        }
        with torch.no_grad():
            weight.copy_(w[:, :-1].to(weight.dtype))
            bias.copy_(w[:, -1].to(bias.dtype))
        return out
