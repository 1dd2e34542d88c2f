"""Synaptic Intelligence (Zenke, Poole & Ganguli, 2017)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._validation import check_number
from obliviate.continual.base import Batch, Strategy, cross_entropy
from obliviate.continual.penalties import quadratic_penalty, snapshot, trainable
from obliviate.data.scenarios import Experience


class SI(Strategy):
    """Synaptic Intelligence: a quadratic anchor whose importance is a path integral.

    While experience ``mu`` trains, every parameter ``k`` accumulates its contribution to the
    drop in the task loss along the optimisation path (eq. 3, discretised per step)::

        omega_k += -g_k * delta_theta_k

    where ``g_k`` is the gradient of the *task* loss (cross-entropy, without the SI penalty) at
    the step and ``delta_theta_k`` the change the optimiser step actually made. At the end of the
    experience the importance grows by (eq. 5)::

        Omega_k += omega_k / ((Delta_k)^2 + xi),   Delta_k = theta_k(end) - theta_k(begin)

    and later experiences minimise (eq. 4) ``L_mu + c * sum_k Omega_k (theta_k - theta*_k)^2``
    with ``theta*`` the weights at the end of the previous experience.

    Parameters
    ----------
    reg_strength : float, >= 0
        ``c``, the weight of the surrogate loss. 0 gives plain fine-tuning.
    damping : float, > 0
        ``xi``, keeps the importance bounded where a parameter barely moved over an experience.

    Notes
    -----
    - The path integral uses the actual step ``theta(t+1) - theta(t)`` of whatever optimiser the
      loop uses (the paper's eq. 3 is written for it too). ``adjust_gradients`` records a *copy*
      of ``theta(t)`` and of the task gradient; the step is read at the next call or in ``end``.
      (Storing a reference instead of a copy makes the step identically zero: Avalanche's SI has
      that bug on CPU.)
    - The task gradient is the total gradient minus the penalty's analytic gradient
      ``2 c Omega (theta - theta*)``, so the penalty is not credited to the importance (as in the
      authors' code, which integrates the unregularised gradient).
    - Importances are not clipped to be non-negative (the paper does not); parameters without a
      gradient at a step (e.g. other tasks' heads) contribute nothing for that step.
    - ``theta*`` and ``Omega`` cover all trainable parameters, heads included.

    References
    ----------
    Zenke, F., Poole, B. & Ganguli, S. (2017). Continual learning through synaptic intelligence.
    ICML 2017, eqs. (3)-(5).
    """

    needs_task_boundaries: ClassVar[bool] = True
    neutral_params: ClassVar[dict[str, float]] = {"reg_strength": 0.0}
    learned_state: ClassVar[tuple[str, ...]] = (
        "importance_",
        "anchor_",
        "start_",
        "path_",
        "before_",
        "task_grad_",
    )
    importance_: dict[str, Tensor] | None = None
    anchor_: dict[str, Tensor] | None = None
    before_: dict[str, Tensor] | None = None
    task_grad_: dict[str, Tensor] | None = None

    def __init__(self, *, reg_strength: float = 1.0, damping: float = 0.1) -> None:
        check_number("reg_strength", reg_strength, low=0, owner="SI")
        check_number("damping", damping, low=0, low_open=True, owner="SI")
        self.reg_strength = reg_strength
        self.damping = damping

    def begin(self, model: nn.Module, experience: Experience) -> None:
        self.start_ = snapshot(model)
        self.path_ = {n: torch.zeros_like(p) for n, p in self.start_.items()}
        self.before_ = None
        self.task_grad_ = None

    def _penalised(self) -> bool:
        return self.importance_ is not None and self.reg_strength > 0

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        ce = cross_entropy(model, batch)
        if not self._penalised():
            return ce
        assert self.importance_ is not None and self.anchor_ is not None
        return ce + self.reg_strength * quadratic_penalty(model, self.importance_, self.anchor_)

    @torch.no_grad()
    def _integrate(self, model: nn.Module) -> None:
        """Add ``-g * delta_theta`` of the step taken since the last ``adjust_gradients``."""
        if self.before_ is None or self.task_grad_ is None:
            return
        params = trainable(model)
        for name, g in self.task_grad_.items():
            self.path_[name] -= g * (params[name].detach() - self.before_[name])
        self.before_, self.task_grad_ = None, None

    @torch.no_grad()
    def adjust_gradients(self, model: nn.Module) -> None:
        self._integrate(model)
        params = trainable(model)
        grads: dict[str, Tensor] = {}
        for name, p in params.items():
            if p.grad is None:
                continue
            g = p.grad.detach().clone()
            importance, anchor = self.importance_, self.anchor_
            if self._penalised() and importance is not None and name in importance:
                assert anchor is not None  # set together with importance_
                g -= 2 * self.reg_strength * importance[name] * (p.detach() - anchor[name])
            grads[name] = g
        self.before_ = {name: params[name].detach().clone() for name in grads}
        self.task_grad_ = grads

    @torch.no_grad()
    def end(self, model: nn.Module, experience: Experience) -> None:
        self._integrate(model)
        now = snapshot(model)
        new = {n: self.path_[n] / ((now[n] - self.start_[n]).pow(2) + self.damping) for n in now}
        if self.importance_ is None:
            self.importance_ = new
        else:
            self.importance_ = {n: self.importance_[n] + new[n] for n in new}
        self.anchor_ = now
        del self.start_, self.path_, self.before_, self.task_grad_
