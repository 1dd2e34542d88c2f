"""PackNet: several tasks in one network by iterative pruning (Mallya & Lazebnik, 2018)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from obliviate._rng import generator
from obliviate._validation import check_choice, check_number
from obliviate.continual._gradients import trainable_params
from obliviate.continual.base import Batch, Strategy, cross_entropy
from obliviate.data.scenarios import Experience
from obliviate.models.base import Model
from obliviate.training import batches, train_mode

FREE = -1
"""Owner value of an entry no task has claimed yet."""

GRANULARITIES = ("weight", "unit")


@dataclass
class PackNetMasks:
    """Which task owns every parameter entry.

    ``owner[name]``: int64 tensor shaped like the parameter, ``FREE`` or the *rank* (training
    order, 0, 1, ...) of the task that claimed the entry. ``rank[task_id]``: that task's rank.
    ``training``: the task id being trained now (None between experiences).
    """

    owner: dict[str, Tensor] = field(default_factory=dict)
    rank: dict[int, int] = field(default_factory=dict)
    training: int | None = None

    def visible(self, task: int) -> dict[str, Tensor] | None:
        """Entries the network for ``task`` may use, or None when it uses all of them."""
        if task not in self.rank or task == self.training:
            return None
        r = self.rank[task]
        return {n: (o >= 0) & (o <= r) for n, o in self.owner.items()}


class _EvalMasks:
    """Forward hook: in eval mode, rows of task ``s`` are recomputed with the entries owned by
    tasks trained after ``s`` (and the free ones) set to zero, which is PackNet's task-aware
    inference. In training mode (and without task ids) the model runs unchanged."""

    def __init__(self, masks: PackNetMasks) -> None:
        self.masks = masks
        self.active = False

    def __call__(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Tensor
    ) -> Tensor | None:
        if module.training or self.active:
            return None
        task = args[1] if len(args) > 1 else kwargs.get("task")
        if task is None:
            return None
        x = args[0] if args else kwargs["x"]
        out = output.clone()
        self.active = True  # functional_call below runs this hook again
        try:
            for s in torch.unique(task).tolist():
                visible = self.masks.visible(int(s))
                if visible is None:
                    continue
                rows = (task == s).nonzero().reshape(-1)
                params = {n: p * visible[n] for n, p in module.named_parameters() if n in visible}
                out[rows] = functional_call(module, params, (x[rows], task[rows]))
        finally:
            self.active = False
        return out


class PackNet(Strategy):
    """PackNet: train, prune, retrain, freeze; the next task gets the pruned weights.

    While task ``t`` trains, every entry claimed by an earlier task is frozen (zero gradient in
    ``adjust_gradients``) and the free entries learn. At the end of the task, in every prunable
    layer (the weight tensors of the shared trunk) the fraction ``prune_ratio`` of the *free*
    entries with the smallest magnitude is set to zero and released for later tasks (one-shot
    magnitude pruning per layer, Section 3 of the paper); the remaining free entries are claimed
    by task ``t``, retrained for ``retrain_epochs`` on the task's data with only them updated
    (the pruned ones stay zero), and frozen from then on. At inference on task ``t`` only the
    entries claimed by ``t`` and earlier tasks are used (the later ones are masked to zero),
    so a task's accuracy does not change once it is learned.

    Non-prunable parameters (biases, task heads, any 1-D tensor) are claimed by the first task
    that gives them a non-zero gradient: the trunk's biases are fixed after the first task, as
    in the paper, and each task head belongs to its task. (With ``granularity="unit"`` a
    unit's bias is claimed or released together with the unit.)

    Parameters
    ----------
    prune_ratio : float, in (0, 1)
        Fraction of each layer's free weights released after each task (the paper uses 0.5 and
        0.75).
    granularity : {"weight", "unit"}
        ``"weight"``: prune individual weights by magnitude (the paper). ``"unit"``: prune whole
        units (rows of a weight tensor: a neuron's or a channel's incoming weights) by the L1
        norm of their incoming weights, so tasks claim disjoint sets of units, as in CLNP
        (Golkar et al., 2019); later tasks' units still read the earlier tasks' units.
    retrain_epochs : int, >= 0
        Epochs of post-pruning retraining (0 skips it).
    retrain_lr : float, > 0
        Learning rate of the post-pruning retraining (plain SGD).
    batch_size : int, >= 1
        Batch size of the post-pruning retraining.
    seed : int
        Seed of the retraining's data order.

    Notes
    -----
    - The post-pruning retraining runs inside ``end`` with the strategy's own plain SGD (no
      momentum, no weight decay) over the experience's training data, since a strategy does not
      own the loop's optimiser. The paper retrains with its main optimiser at a lower rate.
    - Task-aware inference is a forward hook this strategy registers on the model (in
      ``begin``): in eval mode with task ids, each task's rows are recomputed with the later
      tasks' entries masked. Mid-experience (continual evaluation), the task being trained also
      sees the free entries it is training.
    - An optimiser with weight decay would shrink frozen entries although their gradient is
      zero; frozen entries are written back before every loss and at the end of each
      experience, so they are bitwise unchanged in every forward pass and after every task.
    - With ``granularity="unit"``, released units are re-initialised (``nn.Linear``'s uniform
      rule, seeded) when the next task begins, since a zeroed ReLU unit gets no gradient; in
      the per-weight mode released weights restart from zero, as in the paper. Earlier tasks'
      units keep their (frozen) weights from released units; those inputs are masked to zero
      when an earlier task is evaluated, so its outputs are exactly those it ended with.
    - :meth:`capacity_report` counts units as in CLNP (Golkar et al., 2019): a unit is used by a
      task when one of its incoming weights belongs to that task or an earlier one; it reports
      free, new and reused units per layer and task. With ``granularity="weight"`` (unstructured
      pruning) almost every unit keeps some weights of the first task, so the counts are only
      informative with ``granularity="unit"``.
    - A task that recurs gets a new rank and claims more free entries; its earlier entries stay
      frozen.
    - Requires task ids and a multi-head model (task-incremental streams).

    References
    ----------
    Mallya, A. & Lazebnik, S. (2018). PackNet: Adding Multiple Tasks to a Single Network by
    Iterative Pruning. CVPR 2018, Section 3.
    Golkar, S., Kagan, M. & Cho, K. (2019). Continual Learning via Neural Pruning.
    arXiv:1903.04476.
    """

    needs_task_boundaries: ClassVar[bool] = True
    needs_task_ids: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = ("masks_", "values_", "prunable_", "touched_")
    masks_: PackNetMasks | None = None
    prunable_: set[str] | None = None

    def __init__(
        self,
        *,
        prune_ratio: float = 0.5,
        granularity: str = "weight",
        retrain_epochs: int = 2,
        retrain_lr: float = 0.01,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        check_number(
            "prune_ratio",
            prune_ratio,
            low=0,
            high=1,
            low_open=True,
            high_open=True,
            owner="PackNet",
        )
        check_choice("granularity", granularity, GRANULARITIES, owner="PackNet")
        check_number("retrain_epochs", retrain_epochs, low=0, integer=True, owner="PackNet")
        check_number("retrain_lr", retrain_lr, low=0, low_open=True, owner="PackNet")
        check_number("batch_size", batch_size, low=1, integer=True, owner="PackNet")
        check_number("seed", seed, integer=True, owner="PackNet")
        self.prune_ratio = prune_ratio
        self.granularity = granularity
        self.retrain_epochs = retrain_epochs
        self.retrain_lr = retrain_lr
        self.batch_size = batch_size
        self.seed = seed

    # ---- hooks -------------------------------------------------------------------------------
    def begin(self, model: nn.Module, experience: Experience) -> None:
        if self.masks_ is None:
            self.masks_ = PackNetMasks()
            self.values_: dict[str, Tensor] = {}
            self.prunable_ = _prunable_names(model)
            self.masks_.owner = {
                n: torch.full(p.shape, FREE, dtype=torch.int64, device=p.device)
                for n, p in trainable_params(model)
            }
        task = _task_of(experience)
        self.masks_.training = task
        if self.granularity == "unit" and self.masks_.rank:
            self._reinit_free_units(model, experience)
        self.touched_ = {
            n: torch.zeros(p.shape, dtype=torch.bool, device=p.device)
            for n, p in trainable_params(model)
        }
        _install_hook(model, self.masks_)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        self._restore(model)
        return cross_entropy(model, batch)

    def adjust_gradients(self, model: nn.Module) -> None:
        assert self.masks_ is not None  # created in begin
        for name, p in trainable_params(model):
            if p.grad is None:
                continue
            p.grad[self.masks_.owner[name] >= 0] = 0.0
            self.touched_[name] |= p.grad != 0

    def end(self, model: nn.Module, experience: Experience) -> None:
        self._restore(model)  # undo what the last optimiser step's decay did to frozen entries
        task = _task_of(experience)
        assert self.masks_ is not None and self.prunable_ is not None  # created in begin
        rank = 1 + max(self.masks_.rank.values(), default=-1)
        self.masks_.rank[task] = rank
        prunable = self.prunable_
        unit_biases = _unit_biases(model, prunable) if self.granularity == "unit" else {}
        params = dict(trainable_params(model))
        with torch.no_grad():
            for name, p in params.items():
                owner = self.masks_.owner[name]
                free = owner == FREE
                if name in prunable and self.granularity == "unit":
                    rows, orow = p.reshape(p.shape[0], -1), owner.reshape(owner.shape[0], -1)
                    free_units = (orow == FREE).all(dim=1).nonzero().reshape(-1)
                    n_prune = int(self.prune_ratio * free_units.numel())
                    order = torch.argsort(rows[free_units].abs().sum(dim=1), stable=True)
                    released, claimed = free_units[order[:n_prune]], free_units[order[n_prune:]]
                    rows[released] = 0.0
                    orow[claimed] = rank
                    bias = unit_biases.get(name)
                    if bias is not None:  # a unit's bias goes with the unit
                        params[bias][released] = 0.0
                        self.masks_.owner[bias][claimed] = rank
                elif name in unit_biases.values():
                    continue
                elif name in prunable:
                    magnitude = p.detach().abs()[free]
                    n_prune = int(self.prune_ratio * magnitude.numel())
                    order = torch.argsort(magnitude, stable=True)
                    claim = torch.ones_like(magnitude, dtype=torch.bool)
                    claim[order[:n_prune]] = False
                    where = free.nonzero(as_tuple=True)
                    dropped = tuple(w[~claim] for w in where)
                    p[dropped] = 0.0
                    owner[tuple(w[claim] for w in where)] = rank
                else:
                    owner[free & self.touched_[name]] = rank
        self._retrain(model, experience, rank)
        self.values_ = {n: p.detach().clone() for n, p in trainable_params(model)}
        self.masks_.training = None

    # ---- internals ---------------------------------------------------------------------------
    def _reinit_free_units(self, model: nn.Module, experience: Experience) -> None:
        """Draw fresh incoming weights (and bias) for every unclaimed unit, as ``nn.Linear``
        does: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``. A released unit is all zeros, and a
        ReLU unit with zero pre-activation gets zero gradient, so it could never learn again."""
        params = dict(trainable_params(model))
        assert self.masks_ is not None and self.prunable_ is not None  # created in begin
        biases = _unit_biases(model, self.prunable_)
        with torch.no_grad():
            for name in sorted(self.prunable_):
                p, owner = params[name], self.masks_.owner[name]
                rows = p.reshape(p.shape[0], -1)
                free = (owner.reshape(owner.shape[0], -1) == FREE).all(dim=1).nonzero().reshape(-1)
                if free.numel() == 0:
                    continue
                bound = rows.shape[1] ** -0.5
                gen = generator(self.seed, "packnet-reinit", experience.index, name)
                rows[free] = (
                    (
                        torch.rand((free.numel(), rows.shape[1]), generator=gen, device=gen.device)
                        * 2
                        - 1
                    )
                    * bound
                ).to(rows.device)  # drawn on the CPU generator, written where the weights are
                if name in biases:
                    params[biases[name]][free] = (
                        (torch.rand(free.numel(), generator=gen, device=gen.device) * 2 - 1) * bound
                    ).to(rows.device)

    def _restore(self, model: nn.Module) -> None:
        if not self.values_:
            return
        assert self.masks_ is not None  # created in begin, with values_
        with torch.no_grad():
            for name, p in trainable_params(model):
                frozen = self.masks_.owner[name] >= 0
                p.copy_(torch.where(frozen, self.values_[name], p))

    def _retrain(self, model: nn.Module, experience: Experience, rank: int) -> None:
        """Fine-tune only the entries just claimed by this task, with plain SGD."""
        if self.retrain_epochs == 0 or len(experience.train) == 0:
            return
        named = trainable_params(model)
        params = [p for _, p in named]
        assert self.masks_ is not None  # created in begin
        update = [self.masks_.owner[n] == rank for n, _ in named]
        was_training = model.training
        train_mode(model)
        gen = generator(self.seed, "packnet-retrain", experience.index)
        try:
            for _ in range(self.retrain_epochs):
                for batch in batches(
                    experience.train, self.batch_size, gen, experience=experience.index
                ):
                    with torch.enable_grad():
                        grads = torch.autograd.grad(
                            cross_entropy(model, batch), params, allow_unused=True
                        )
                    with torch.no_grad():
                        for p, g, m in zip(params, grads, update, strict=True):
                            if g is not None:
                                p.sub_(self.retrain_lr * torch.where(m, g, torch.zeros_like(g)))
        finally:
            model.train(was_training)

    # ---- reporting ---------------------------------------------------------------------------
    def capacity_report(self) -> list[dict[str, Any]]:
        """Free vs reused capacity per prunable layer, after each task (CLNP-style counts).

        One dict per layer: ``layer``, ``n_units`` (output units), ``n_weights``,
        ``free_weights`` (unclaimed now) and per task rank lists ``weights`` (claimed by that
        task), ``used_units`` (units with an incoming weight of that task or an earlier one),
        ``reused_units`` (of those, units already used by earlier tasks), ``new_units`` and
        ``free_units`` (units no task so far uses).
        """
        masks, prunable = self.masks_, self.prunable_ or set()
        if masks is None:
            return []
        out = []
        n_ranks = 1 + max(masks.rank.values(), default=-1)
        for name, owner in masks.owner.items():
            if owner.ndim < 2 or name not in prunable:
                continue
            rows = owner.reshape(owner.shape[0], -1)
            used_before = torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
            rec: dict[str, Any] = {
                "layer": name,
                "n_units": int(rows.shape[0]),
                "n_weights": int(owner.numel()),
                "free_weights": int((owner == FREE).sum()),
                "weights": [],
                "used_units": [],
                "reused_units": [],
                "new_units": [],
                "free_units": [],
            }
            for r in range(n_ranks):
                used = ((rows >= 0) & (rows <= r)).any(dim=1)
                rec["weights"].append(int((owner == r).sum()))
                rec["used_units"].append(int(used.sum()))
                rec["reused_units"].append(int((used & used_before).sum()))
                rec["new_units"].append(int((used & ~used_before).sum()))
                rec["free_units"].append(int((~used).sum()))
                used_before = used
            out.append(rec)
        return out


def _task_of(experience: Experience) -> int:
    return experience.index if experience.task_id is None else int(experience.task_id)


def _prunable_names(model: nn.Module) -> set[str]:
    """Weight tensors (2-D or more) outside the model's heads."""
    heads = {id(p) for p in model.head_parameters()} if isinstance(model, Model) else set()
    return {n for n, p in trainable_params(model) if p.ndim >= 2 and id(p) not in heads}


def _unit_biases(model: nn.Module, prunable: set[str]) -> dict[str, str]:
    """``weight name -> bias name`` for the layers whose weight is prunable and has a bias."""
    names = {n for n, _ in trainable_params(model)}
    out = {}
    for w in prunable:
        prefix = w.rsplit(".", 1)[0] if "." in w else ""
        b = f"{prefix}.bias" if prefix else "bias"
        if w.endswith("weight") and b in names:
            out[w] = b
    return out


def _install_hook(model: nn.Module, masks: PackNetMasks) -> None:
    """Register the task-aware inference hook once per model; re-point it on a later call.

    ``nn.Module`` has no public way to list its hooks, so we look through ``_forward_hooks``.
    """
    for hook in model._forward_hooks.values():
        if isinstance(hook, _EvalMasks):
            hook.masks = masks
            return
    model.register_forward_hook(_EvalMasks(masks), with_kwargs=True)
