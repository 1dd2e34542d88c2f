"""Progressive neural networks: a new column per task, lateral connections to the frozen earlier
columns (Rusu et al., 2016)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual.base import Batch, Strategy, cross_entropy
from obliviate.data.scenarios import Experience
from obliviate.errors import ObliviateError
from obliviate.models.mlp import MLP
from obliviate.models.multihead import MultiHead

__all__ = ["PNN", "Column", "progressive_forward"]

Linear = tuple[Tensor, Tensor]


@dataclass
class Column:
    """One column: its hidden layers ``[(W_i, b_i)]``, its output layer ``(W, b)`` (its task's
    classes) and its lateral weights ``laterals[t][j]``: from column ``j``'s activation ``t``
    (``t = 1..L``: the output of hidden layer ``t``) into this column's layer ``t`` (hidden layer
    ``t`` in 0-based order, or the output layer when ``t = L``)."""

    layers: list[Linear]
    head: Linear
    laterals: list[list[Tensor]] = field(default_factory=list)


def progressive_forward(x: Tensor, columns: list[Column]) -> Tensor:
    """The last column's output on ``x`` ``[B, n_in]`` (Rusu et al., 2016, Eq. 1)::

        h_i^(k) = ReLU(W_i^(k) h_{i-1}^(k) + b_i^(k) + sum_{j<k} U_i^(k:j) h_{i-1}^(j)),  i >= 2
        y^(k)   = W^(k) h_L^(k) + b^(k) + sum_{j<k} U_out^(k:j) h_L^(j)

    Every column's activations are computed in order (earlier columns feed later ones).
    """
    acts: list[list[Tensor]] = []
    out = x
    for k, col in enumerate(columns):
        a = [x]
        for i, (w, b) in enumerate(col.layers):
            pre = a[i] @ w.T + b
            if i >= 1:
                for j in range(k):
                    pre = pre + acts[j][i] @ col.laterals[i - 1][j].T
            a.append(torch.relu(pre))
        n_layers = len(col.layers)
        out = a[n_layers] @ col.head[0].T + col.head[1]
        if n_layers >= 1:
            for j in range(k):
                out = out + acts[j][n_layers] @ col.laterals[n_layers - 1][j].T
        acts.append(a)
    return out


def _require(model: nn.Module) -> tuple[MultiHead, list[nn.Linear]]:
    if not (isinstance(model, MultiHead) and isinstance(model.trunk, MLP)):
        raise ObliviateError(
            f"PNN needs a multi-head obliviate MLP (model='mlp' on a task-incremental stream), "
            f"whose layers it can connect laterally; got {type(model).__name__}"
        )
    return model, [m for m in model.trunk.body if isinstance(m, nn.Linear)]


@dataclass
class PNNState:
    """Frozen columns by task id, and the column being trained (task id and its laterals)."""

    frozen: dict[int, list[Column]] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)
    training: int | None = None
    laterals: list[list[Tensor]] = field(default_factory=list)


def _live_column(model: MultiHead, layers: list[nn.Linear], task: int, state: PNNState) -> Column:
    head = model.heads[task]
    assert isinstance(head, nn.Linear)  # MultiHead's heads are linear layers
    return Column([(m.weight, m.bias) for m in layers], (head.weight, head.bias), state.laterals)


class _ColumnsHook:
    """Forward hook: rows of a task with a column get that column's progressive output."""

    def __init__(self, state: PNNState) -> None:
        self.state = state

    def __call__(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Tensor
    ) -> Tensor | None:
        task = args[1] if len(args) > 1 else kwargs.get("task")
        if task is None:
            return None
        model, layers = _require(module)
        x = args[0] if args else kwargs["x"]
        flat = x.reshape(x.shape[0], -1)
        out = output.clone()
        for s in torch.unique(task).tolist():
            if s in self.state.frozen:
                columns = self.state.frozen[s]
            elif s == self.state.training:
                prior = [self.state.frozen[t][-1] for t in self.state.order]
                columns = [*prior, _live_column(model, layers, s, self.state)]
            else:
                continue
            rows = (task == s).nonzero().reshape(-1)
            cls = getattr(model, f"classes_{s}")
            col_out = progressive_forward(flat[rows], columns)
            # under autocast the model's output may be bf16/fp16 while the columns ran in fp32
            out[rows.unsqueeze(1), cls.unsqueeze(0)] = col_out.to(out.dtype)
        return out


def _install_hook(model: nn.Module, state: PNNState) -> None:
    for hook in model._forward_hooks.values():
        if isinstance(hook, _ColumnsHook):
            hook.state = state
            return
    model.register_forward_hook(_ColumnsHook(state), with_kwargs=True)


class PNN(Strategy):
    """Progressive neural networks: one column per task, frozen once learned.

    The first task trains the model's MLP trunk and the task's head as column 1. Every later
    task ``k`` gets a new column: the trunk's hidden layers are re-initialised (seeded, with
    ``nn.Linear``'s rule) and trained with the task's head, and every layer after the first
    also receives lateral connections ``U^(k:j)`` from the previous layer of every earlier
    column ``j`` (Eq. 1, :func:`progressive_forward`). Earlier columns and their laterals are
    frozen copies kept by the strategy, so no earlier task's output can change (zero forgetting
    by construction). Inference: rows of task ``t`` get column ``t``'s output (a forward hook
    registered on the model in ``begin``), so task ids are required.

    Parameters
    ----------
    lateral_lr : float, > 0
        Learning rate of the plain SGD step on the lateral weights (the column itself is trained
        by the loop's optimiser).
    seed : int
        Seeds the re-initialisation of new columns and the lateral weights.

    Notes
    -----
    - Laterals are linear (Eq. 1), without the paper's non-linear adapters (Eq. 2: a learned
      scale and a dimensionality-reducing projection); the first hidden layer has none, as in the
      paper.
    - Only the built-in MLP on a task-incremental stream (a multi-head model) is supported: the
      laterals need the layer-by-layer activations of each column. Parameters grow linearly in
      the number of tasks for the columns and quadratically for the laterals.
    - Lateral weights are updated by this strategy's own SGD step (the loop's optimiser holds
      the model's parameters only); after the last task the model's trunk holds the last
      column, the strategy holds the earlier ones.

    References
    ----------
    Rusu, A. A., Rabinowitz, N. C., Desjardins, G., Soyer, H., Kirkpatrick, J., Kavukcuoglu, K.,
    Pascanu, R. & Hadsell, R. (2016). Progressive Neural Networks. arXiv:1606.04671, Eq. 1-2.
    """

    needs_task_boundaries: ClassVar[bool] = True
    model_requirement: ClassVar[str | None] = (
        "obliviate's multi-head MLP (the built-in mlp on a task-aware stream): new columns copy "
        "its layers"
    )
    needs_task_ids: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = ("state_",)
    state_: PNNState | None = None

    def __init__(self, *, lateral_lr: float = 0.01, seed: int = 0) -> None:
        check_number("lateral_lr", lateral_lr, low=0, low_open=True, owner="PNN")
        check_number("seed", seed, integer=True, owner="PNN")
        self.lateral_lr = lateral_lr
        self.seed = seed

    def begin(self, model: nn.Module, experience: Experience) -> None:
        m, layers = _require(model)
        if self.state_ is None:
            self.state_ = PNNState()
        task = experience.index if experience.task_id is None else int(experience.task_id)
        if task in self.state_.frozen:
            raise ObliviateError(
                f"PNN: task {task} comes back, but its column is frozen; PNN needs each task once"
            )
        n_prior = len(self.state_.order)
        self.state_.training = task
        self.state_.laterals = []
        if n_prior:
            gen = generator(self.seed, "pnn-column", n_prior)
            with torch.no_grad():
                for lin in layers:
                    bound = lin.weight.shape[1] ** -0.5
                    lin.weight.copy_(
                        (torch.rand(lin.weight.shape, generator=gen, device=gen.device) * 2 - 1)
                        * bound
                    )
                    lin.bias.copy_(
                        (torch.rand(lin.bias.shape, generator=gen, device=gen.device) * 2 - 1)
                        * bound
                    )
            targets = [lin.weight.shape[0] for lin in layers[1:]] + [len(m.task_classes[task])]
            for t, n_out in enumerate(targets, start=1):
                n_in = layers[t - 1].weight.shape[0]
                bound = n_in**-0.5
                self.state_.laterals.append(
                    [
                        (
                            (torch.rand(n_out, n_in, generator=gen, device=gen.device) * 2 - 1)
                            * bound
                        )
                        .to(layers[0].weight.device)  # drawn on the CPU, kept with the model
                        .requires_grad_()
                        for _ in range(n_prior)
                    ]
                )
        _install_hook(m, self.state_)

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return cross_entropy(model, batch)

    @torch.no_grad()
    def adjust_gradients(self, model: nn.Module) -> None:
        assert self.state_ is not None  # created in begin
        for per_layer in self.state_.laterals:
            for u in per_layer:
                if u.grad is not None:
                    u -= self.lateral_lr * u.grad
                    u.grad = None

    def end(self, model: nn.Module, experience: Experience) -> None:
        m, layers = _require(model)
        assert self.state_ is not None  # created in begin
        task = self.state_.training
        assert task is not None
        live = _live_column(m, layers, task, self.state_)
        frozen = Column(
            [(w.detach().clone(), b.detach().clone()) for w, b in live.layers],
            (live.head[0].detach().clone(), live.head[1].detach().clone()),
            [[u.detach().clone() for u in per] for per in live.laterals],
        )
        prior = [self.state_.frozen[t][-1] for t in self.state_.order]
        self.state_.frozen[task] = [*prior, frozen]
        self.state_.order.append(task)
        self.state_.training = None
        self.state_.laterals = []

    def n_parameters(self) -> int:
        """Parameters of all frozen columns and their laterals (growth with the tasks)."""
        state = self.state_
        if state is None:
            return 0
        total = 0
        for t in state.order:
            col = state.frozen[t][-1]
            total += sum(w.numel() + b.numel() for w, b in col.layers)
            total += col.head[0].numel() + col.head[1].numel()
            total += sum(u.numel() for per in col.laterals for u in per)
        return total
