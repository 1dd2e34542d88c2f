"""Bias Correction, BiC (Wu et al., 2019)."""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual.base import Batch, Strategy
from obliviate.continual.buffers import ClassBalancedBuffer
from obliviate.continual.penalties import distillation_loss
from obliviate.data.dataset import as_id_tensor
from obliviate.data.scenarios import Experience
from obliviate.errors import ObliviateError
from obliviate.models.base import logits

__all__ = ["BiC", "bias_correct", "fit_bias_correction"]


def bias_correct(out: Tensor, new: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """BiC's bias correction layer (Wu et al., 2019, eq. 4): ``q_k = alpha * o_k + beta`` for the
    new classes ``k in new`` (int64 column indices) and ``q_k = o_k`` for all others.
    ``out``: logits ``[N, C]`` (float); ``alpha``, ``beta``: scalars. Returns ``[N, C]``."""
    is_new = torch.zeros(out.shape[1], dtype=torch.bool, device=out.device)
    is_new[new] = True
    return torch.where(is_new, alpha * out + beta, out)


def fit_bias_correction(
    out: Tensor, y: Tensor, new: Tensor, columns: Tensor, *, max_iter: int = 100
) -> tuple[float, float]:
    """Fit ``(alpha, beta)`` of :func:`bias_correct` on held-out logits (BiC stage 2, eq. 5).

    Minimises the cross-entropy ``-log softmax(q)_y`` of the corrected logits over the seen
    classes ``columns`` (``out``: ``[N, C]`` detached logits of a validation set, ``y``: its
    labels in ``columns``), starting from the identity ``(1, 0)``. The loss is convex in
    ``(alpha, beta)`` (the logits are affine in them), so L-BFGS with a strong-Wolfe line
    search (deterministic on CPU) finds the optimum.
    """
    out = out.detach()
    keep = torch.zeros(out.shape[1], dtype=torch.bool, device=out.device)
    keep[columns] = True
    ab = torch.tensor([1.0, 0.0], dtype=out.dtype, device=out.device, requires_grad=True)
    opt = torch.optim.LBFGS([ab], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        q = bias_correct(out, new, ab[0], ab[1]).masked_fill(~keep, torch.finfo(out.dtype).min)
        loss = nn.functional.cross_entropy(q, y)
        loss.backward()
        return loss

    opt.step(closure)
    return float(ab[0].detach()), float(ab[1].detach())


class BiC(Strategy):
    """BiC: distillation with exemplars, then a two-parameter bias correction of the new classes.

    Experience ``t`` with ``n`` old and ``m`` new classes trains in two stages (Section 3):

    1. **Stage 1** (the loop's steps): the experience's data plus the *training* part of the
       exemplar memory minimise ``lambda * L_d + (1 - lambda) * L_c`` with ``lambda = n / (n + m)``
       (eq. 3): ``L_c`` the cross-entropy over the ``n + m`` seen classes (eq. 2) and ``L_d`` the
       distillation, at temperature ``T``, of the previous model's (bias-corrected) logits on
       the old classes (eq. 1, :func:`~obliviate.continual.penalties.distillation_loss`).
    2. **Stage 2** (``end``): with the model frozen, the bias layer ``q_k = alpha o_k + beta`` on
       the new classes (eq. 4, :func:`bias_correct`) is fitted on a validation set balanced
       between old and new classes (eq. 5, :func:`fit_bias_correction`): ``val_fraction`` of
       each old class's exemplars and as many held-out samples of each new class, both excluded
       from stage 1.

    The correction is affine in the output layer's rows, so it is written into the layer
    (``W_k <- alpha W_k``, ``b_k <- alpha b_k + beta`` for new ``k``): the model's ordinary
    forward pass then *is* the corrected classifier for every evaluation, and the next
    experience's ``begin`` keeps that corrected model as the distillation teacher and puts the
    uncorrected rows back before training continues. The memory holds ``memory_size`` exemplars,
    an equal share per class seen.

    Parameters
    ----------
    memory_size : int, >= 1
        Exemplars kept in total (samples).
    val_fraction : float in (0, 1)
        Share of each old class's exemplars held out for stage 2 (paper: train/val 9:1, 0.1).
    temperature : float, > 0
        ``T`` of the distillation (paper: 2).
    max_iter : int, >= 1
        L-BFGS iterations of stage 2.
    seed : int
        Seeds the memory, the validation split and the exemplars mixed into each batch.

    Notes
    -----
    - Exemplars are a uniform random sample per class
      (:class:`~obliviate.continual.buffers.ClassBalancedBuffer`); the paper selects them by
      herding as iCaRL, which needs a feature extractor the user's model may not expose.
    - Stage 2 fits the two scalars to convergence with L-BFGS instead of the paper's SGD epochs
      (the objective is convex in them). The validation logits are computed in eval mode.
    - Exemplars enter stage 1 by mixing ``ceil(B * |P| / |X|)`` random exemplars into each batch
      of ``B`` (``|P|`` training exemplars, ``|X|`` the experience's size), about one pass over
      them per epoch, as :class:`~obliviate.continual.icarl.ICaRL` does.
    - Columns of classes not yet seen are masked out of ``L_c`` and of stage 2. The
      distillation is not multiplied by ``T^2`` (eq. 1 has no such factor; Mammoth adds it).
    - The output layer is found as the ``nn.Linear`` (with bias) whose output is the model's
      output; a model whose output is anything else (e.g. a multi-head model) is refused at the
      end of the second experience with an :class:`~obliviate.errors.ObliviateError`.

    References
    ----------
    Wu, Y., Chen, Y., Wang, L., Ye, Y., Liu, Z., Guo, Y. & Fu, Y. (2019). Large Scale
    Incremental Learning. CVPR 2019, Section 3, eqs. (1)-(5).
    """

    needs_task_boundaries: ClassVar[bool] = True
    keeps_memory: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = (
        "memory_",
        "head_name_",
        "trained_head_",
        "corrections_",
        "n_steps_",
        "teacher_",
        "new_",
        "old_",
        "columns_",
        "exemplars_",
        "held_out_ids_",
        "lam_",
        "replay_ratio_",
        "val_",
    )
    memory_: ClassBalancedBuffer | None = None
    head_name_: str | None = None
    trained_head_: tuple[Tensor, Tensor] | None = None
    teacher_: nn.Module | None = None

    def __init__(
        self,
        *,
        memory_size: int = 200,
        val_fraction: float = 0.1,
        temperature: float = 2.0,
        max_iter: int = 100,
        seed: int = 0,
    ) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="BiC")
        check_number("val_fraction", val_fraction, low=0, high=1, low_open=True, owner="BiC")
        if val_fraction >= 1:
            raise ObliviateError(f"BiC: val_fraction must be below 1; got {val_fraction!r}")
        check_number("temperature", temperature, low=0, low_open=True, owner="BiC")
        check_number("max_iter", max_iter, low=1, integer=True, owner="BiC")
        check_number("seed", seed, integer=True, owner="BiC")
        self.memory_size = memory_size
        self.val_fraction = val_fraction
        self.temperature = temperature
        self.max_iter = max_iter
        self.seed = seed

    def memory_used(self) -> int:
        return 0 if self.memory_ is None else len(self.memory_)

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64) from the class-balanced exemplar memory
        (:meth:`~obliviate.continual.buffers.ClassBalancedBuffer.purge`); see :meth:`~obliviate.continual.base.Strategy.purge`.

        The fitted bias-correction scalars (``corrections_``) and the trained head are
        influence, left to the unlearner.
        """
        ids = as_id_tensor(ids)
        if self.memory_ is not None:
            self.memory_.purge(ids)

    # ---- hooks -----------------------------------------------------------------------------
    def begin(self, model: nn.Module, experience: Experience) -> None:
        if self.memory_ is None:
            self.memory_ = ClassBalancedBuffer(memory_size=self.memory_size, seed=self.seed)
            self.head_name_ = None
            self.trained_head_ = None
            self.corrections_: list[tuple[float, float]] = []
            self.n_steps_ = 0
        self.teacher_ = None
        if len(self.memory_):
            teacher = copy.deepcopy(model).eval()  # the previous model, bias-corrected
            for p in teacher.parameters():
                p.requires_grad_(False)
            self.teacher_ = teacher
        if self.trained_head_ is not None:
            head = _module(model, self.head_name_)
            with torch.no_grad():
                head.weight.copy_(self.trained_head_[0])
                head.bias.copy_(self.trained_head_[1])
        stored = self.memory_.filled()
        stored_y, stored_task = stored["y"], stored["task"]
        # labels and task ids are always tensors (empty when nothing is stored); x is None then
        assert stored_y is not None and stored_task is not None
        new = sorted(set(experience.classes))
        old = sorted({int(c) for c in stored_y.tolist()} - set(new))
        dev = stored_y.device
        self.new_ = torch.tensor(new, dtype=torch.int64, device=dev)
        self.old_ = torch.tensor(old, dtype=torch.int64, device=dev)
        self.columns_ = torch.tensor(sorted(set(old) | set(new)), dtype=torch.int64, device=dev)
        self.lam_ = len(old) / (len(old) + len(new))
        gen = generator(self.seed, "bic-split", experience.index)
        train_rows, val_rows, held = [], [], []
        if old:
            counts = [int((stored_y == c).sum()) for c in old]
            n_val = max(1, round(self.val_fraction * min(counts)))
            for c in old:
                rows = (stored_y == c).nonzero().reshape(-1)
                rows = rows[torch.randperm(rows.numel(), generator=gen, device=gen.device)]
                val_rows.append(rows[:n_val])
                train_rows.append(rows[n_val:])
            data = experience.train
            for c in new:
                rows = (data.y == c).nonzero().reshape(-1)
                held.append(
                    rows[torch.randperm(rows.numel(), generator=gen, device=gen.device)[:n_val]]
                )
        tr, va, ho = _cat(train_rows), _cat(val_rows), _cat(held)
        self.exemplars_ = {k: v[tr] for k, v in stored.items() if v is not None}
        data = experience.train
        self.val_: dict[str, Any] = {
            "x": torch.cat([stored["x"][va], data.x[ho]]) if old else data.x[:0],  # type: ignore[index]
            "y": torch.cat([stored_y[va], data.y[ho]]) if old else data.y[:0],
            "task": None if data.task is None else torch.cat([stored_task[va], data.task[ho]]),
        }
        self.held_out_ids_ = data.ids[ho]
        n_train = len(data) - int(ho.numel())
        self.replay_ratio_ = int(tr.numel()) / max(n_train, 1)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        keep = ~torch.isin(batch.ids, self.held_out_ids_)
        x, y = batch.x[keep], batch.y[keep]
        task = None if batch.task is None else batch.task[keep]
        ex = self.exemplars_
        if self.replay_ratio_ > 0 and ex["y"].numel():
            n = min(int(ex["y"].numel()), math.ceil(batch.x.shape[0] * self.replay_ratio_))
            gen = generator(self.seed, "bic", self.n_steps_)
            idx = torch.randperm(int(ex["y"].numel()), generator=gen, device=gen.device)[:n]
            x, y = torch.cat([x, ex["x"][idx]]), torch.cat([y, ex["y"][idx]])
            if task is not None:
                task = torch.cat([task, ex["task"][idx]])
        self.n_steps_ += 1
        out = logits(model, x, task)
        keep_cols = torch.zeros(out.shape[1], dtype=torch.bool, device=out.device)
        keep_cols[self.columns_] = True
        if y.numel() == 0:
            return out.sum() * 0.0
        ce = nn.functional.cross_entropy(out.masked_fill(~keep_cols, torch.finfo(out.dtype).min), y)
        if self.teacher_ is None or self.old_.numel() == 0:
            return ce
        with torch.no_grad():
            target = logits(self.teacher_, x, task)[:, self.old_]
        kd = distillation_loss(out[:, self.old_], target, self.temperature)
        return self.lam_ * kd + (1 - self.lam_) * ce

    @torch.no_grad()
    def end(self, model: nn.Module, experience: Experience) -> None:
        if self.teacher_ is not None and self.old_.numel() and self.val_["y"].numel():
            modes = [m.training for m in model.modules()]
            model.eval()
            try:
                out, head_name = _output_and_head(model, self.val_["x"], self.val_["task"])
                with torch.enable_grad():
                    alpha, beta = fit_bias_correction(
                        out, self.val_["y"], self.new_, self.columns_, max_iter=self.max_iter
                    )
                head = _module(model, head_name)
                self.head_name_ = head_name
                self.trained_head_ = (head.weight.detach().clone(), head.bias.detach().clone())
                head.weight[self.new_] *= alpha
                head.bias[self.new_] = alpha * head.bias[self.new_] + beta
                want = bias_correct(out, self.new_, out.new_tensor(alpha), out.new_tensor(beta))
                got = logits(model, self.val_["x"], self.val_["task"])
                if not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
                    raise ObliviateError(
                        "BiC: writing the bias correction into the output layer did not give "
                        "the corrected logits; the model's output must be its last nn.Linear's"
                    )
                self.corrections_.append((alpha, beta))
            finally:
                for m, mode in zip(model.modules(), modes, strict=True):
                    m.training = mode
        else:
            self.trained_head_ = None
            self.corrections_.append((1.0, 0.0))
        data = experience.train
        assert self.memory_ is not None  # created in begin
        self.memory_.add_experience(data.x, data.y, data.ids, data.task)
        del self.teacher_, self.new_, self.old_, self.columns_, self.lam_
        del self.exemplars_, self.val_, self.held_out_ids_, self.replay_ratio_


def _cat(parts: list[Tensor]) -> Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64, device="cpu")


def _module(model: nn.Module, name: str | None) -> nn.Linear:
    module = dict(model.named_modules())[name or ""]
    assert isinstance(module, nn.Linear) and module.bias is not None
    return module


def _output_and_head(model: nn.Module, x: Tensor, task: Tensor | None) -> tuple[Tensor, str]:
    """The model's logits on ``x`` and the name of the ``nn.Linear`` that produced them."""
    seen: list[tuple[str, Tensor]] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, o, n=n: seen.append((n, o)))
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and m.bias is not None
    ]
    try:
        out = logits(model, x, task)
    finally:
        for h in hooks:
            h.remove()
    for name, o in reversed(seen):
        if o is out or (o.shape == out.shape and torch.equal(o, out)):
            return out, name
    raise ObliviateError(
        f"BiC needs a model whose output is the output of an nn.Linear layer with bias (the "
        f"layer the bias correction is written into); {type(model).__name__}'s is not. Use a "
        "single-head model (class-incremental scenario) whose last layer is nn.Linear"
    )
