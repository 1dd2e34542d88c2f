"""Shared pieces of regularisation strategies: diagonal Fisher, quadratic anchors, distillation.

Plain functions over named parameters (``dict[str, Tensor]`` keyed as in
``model.named_parameters()``), so EWC, SI, MAS, L2 and friends share them without inheritance:

- :func:`trainable` / :func:`snapshot`: the trainable parameters, live or as a detached copy;
- :func:`per_sample_grads`: per-sample gradients of the cross-entropy, by the path measured
  fastest for the model and row count (:func:`per_sample_path`: a batched backward,
  ``torch.func.vmap``, or :func:`per_sample_grads_loop`, the brute-force reference);
- :func:`diagonal_fisher`: the diagonal Fisher information, empirical or true, in eval mode
  (BatchNorm on running statistics, Dropout off), with an exact closed form for networks whose
  trainable parameters all sit in ``nn.Linear`` layers (:func:`fisher_path`);
- :func:`quadratic_penalty`: ``sum_i omega_i (theta_i - theta*_i)^2``;
- :func:`distillation_loss`: soft-target cross-entropy at a temperature (Hinton et al., 2015).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from obliviate._rng import generator
from obliviate._validation import check_choice
from obliviate.data.dataset import Dataset
from obliviate.models.base import Model
from obliviate.training import eval_mode

FISHERS = ("empirical", "true")

__all__ = [
    "FISHERS",
    "FISHER_PATHS",
    "PER_SAMPLE_PATHS",
    "diagonal_fisher",
    "fisher_path",
    "distillation_loss",
    "per_sample_grads",
    "per_sample_grads_loop",
    "per_sample_grads_vmap",
    "per_sample_path",
    "quadratic_penalty",
    "snapshot",
    "trainable",
]


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters with ``requires_grad``, by name."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of the trainable parameters (an anchor ``theta*``)."""
    return {n: p.detach().clone() for n, p in trainable(model).items()}


def quadratic_penalty(
    model: nn.Module,
    importance: Mapping[str, Tensor],
    anchor: Mapping[str, Tensor],
    params: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """``sum_i importance_i * (theta_i - anchor_i)^2`` over the parameters named in ``importance``.

    No factor 1/2 and no strength: callers multiply (EWC uses ``reg_strength / 2``). A plain L2
    anchor is ``importance = 1`` everywhere. Parameters missing from the model are an error.
    ``params``: ``dict(model.named_parameters())`` when the caller already has it (a loss with
    several penalties builds it once per step instead of once per penalty).
    """
    params = dict(model.named_parameters()) if params is None else params
    total: Tensor | None = None
    for name, omega in importance.items():
        term = (omega * (params[name] - anchor[name]).pow(2)).sum()
        total = term if total is None else total + term
    if total is None:
        return next(iter(params.values())).new_zeros(())
    return total


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Soft-target cross-entropy ``-mean_b sum_c softmax(teacher/T)_c log softmax(student/T)_c``.

    This is Li & Hoiem's (2017) eq. (2) knowledge-distillation loss (their ``T = 2``); it equals
    ``KL(teacher || student)`` plus the teacher's entropy, which has no gradient. It is **not**
    multiplied by ``T^2`` (Hinton et al., 2015, do so; LwF does not). ``teacher`` is detached.
    """
    target = torch.softmax(teacher.detach() / temperature, dim=1)
    return -(target * torch.log_softmax(student / temperature, dim=1)).sum(dim=1).mean()


# ---- per-sample gradients ----------------------------------------------------------------------


def _call(
    model: nn.Module,
    params: Mapping[str, Tensor],
    buffers: Mapping[str, Tensor],
    x: Tensor,
    task: Tensor | None,
) -> Tensor:
    args = (x, task) if isinstance(model, Model) else (x,)
    return functional_call(model, ({**params}, {**buffers}), args)


PER_SAMPLE_PATHS = ("auto", "batched", "loop", "vmap")
VMAP_MIN_ROWS = 512
"""From this many rows (without task ids) per-sample gradients take the ``vmap`` path: its
one-time set-up (~5.7 s for importing ``torch._dynamo``) is then repaid (:func:`per_sample_path`)."""


def per_sample_path(model: nn.Module, n_rows: int, task: Tensor | None = None) -> str:
    """The per-sample gradient path :func:`per_sample_grads` takes for ``model`` on ``n_rows``
    rows (``path="auto"``), chosen by measurement: ``benchmarks/per_sample_fisher.py``,
    empirical Fisher of MNIST-shaped rows, 1 thread on 2 cores shared with other jobs (load
    average ~12, so read the ratios, not the seconds):

    ================  =======  =====  =====  ======
    seconds           batched  loop   vmap   linear
    ================  =======  =====  =====  ======
    MLP, 256 rows     1.10     1.70   0.41   0.014
    MLP, 1024 rows    2.16     3.90   0.44   0.019
    CNN+BN, 256 rows  17.7     2.23   0.62   --
    CNN+BN, 1024      77.8     10.8   4.20   --
    ================  =======  =====  =====  ======

    (MLP 784-100-10; CNN+BN: two conv + BatchNorm2d + max-pool blocks, Linear 1568-64, Dropout,
    Linear 64-10, in eval mode; every path agrees with the loop to a relative 5e-7; vmap's
    figures exclude its one-time set-up, ~5.7 s for importing ``torch._dynamo`` once per
    process.) The batched backward (one backward vmapped over one-hot cotangents) costs rows x
    cotangents per block: cheap for matrix products, 8x slower than the loop for convolutions
    (the "6.5x slower" of issue #10). So: from :data:`VMAP_MIN_ROWS` rows (where the set-up is
    repaid) ``"vmap"``, except with task ids (a multi-head model indexes its heads by task,
    which vmap cannot batch); below, ``"loop"`` for a model with convolutions or batch /
    instance norm layers and ``"batched"`` otherwise. A BatchNorm without running statistics
    (``track_running_stats=False``) normalises with the statistics of the batch even in eval
    mode, so rows interact and a per-sample gradient is only defined on a batch of one row:
    such a model always takes ``"loop"``. (All-``nn.Linear`` models get the exact closed form
    before any of these: :func:`fisher_path`.)
    """
    if _batch_statistics(model):
        return "loop"
    if n_rows >= VMAP_MIN_ROWS and task is None:
        return "vmap"
    heavy = any(
        isinstance(m, nn.modules.conv._ConvNd | nn.modules.batchnorm._NormBase)
        for m in model.modules()
    )
    return "loop" if heavy else "batched"


def per_sample_grads(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    task: Tensor | None = None,
    *,
    chunk_size: int = 64,
    path: str = "auto",
) -> dict[str, Tensor]:
    """Per-sample gradients: ``{name: [N, *param.shape]}`` float, by trainable parameter name.

    With labels ``y`` (int64 ``[N]``): gradients of each sample's cross-entropy, shape
    ``[N, *param.shape]``. With ``y=None``: gradients of every class's log-probability,
    ``[N, C, *param.shape]`` (the ingredients of the true Fisher). The model is called in its
    current train/eval mode (use eval mode: with batch norm in training mode rows interact and
    a "per-sample" gradient would depend on the rest of the batch; Dropout in training mode
    would draw masks) and its ``.grad`` fields are left untouched.

    ``path`` (:data:`PER_SAMPLE_PATHS`): ``"auto"`` picks by :func:`per_sample_path`;
    ``"batched"`` differentiates the vector of per-sample (per-class) log-likelihoods against a
    batch of one-hot cotangents with ``torch.autograd.grad(..., is_grads_batched=True)``, rows
    in blocks of at most ``chunk_size`` cotangents; ``"loop"`` is
    :func:`per_sample_grads_loop`; ``"vmap"`` is :func:`per_sample_grads_vmap`. All give the same
    values up to float rounding.
    """
    check_choice("path", path, PER_SAMPLE_PATHS)
    if path == "auto":
        path = per_sample_path(model, x.shape[0], task)
    if path == "loop":
        return per_sample_grads_loop(model, x, y, task)
    if path == "vmap":
        return per_sample_grads_vmap(model, x, y, task, chunk_size=chunk_size)
    params = trainable(model)
    names = list(params)
    buffers = dict(model.named_buffers())
    parts: dict[str, list[Tensor]] = {k: [] for k in names}
    n_out = 1
    # the batched backward costs (cotangents x rows of the graph): keep both small per block
    n_classes = int(
        _call(model, params, buffers, x[:1], None if task is None else task[:1]).shape[1]
    )
    per_row = 1 if y is not None else n_classes
    rows = max(1, chunk_size // per_row)
    for start in range(0, x.shape[0], rows):
        xs = x[start : start + rows]
        ts = None if task is None else task[start : start + rows]
        logp = torch.log_softmax(_call(model, params, buffers, xs, ts), dim=1)
        values = logp if y is None else -logp.gather(1, y[start : start + rows].reshape(-1, 1))
        n_out = values.shape[1]
        flat = values.reshape(-1)
        cotangents = torch.eye(flat.numel(), dtype=flat.dtype, device=flat.device)
        grads = torch.autograd.grad(
            flat, list(params.values()), cotangents, allow_unused=True, is_grads_batched=True
        )
        for k, g, p in zip(names, grads, params.values(), strict=True):
            parts[k].append(p.new_zeros((flat.numel(), *p.shape)) if g is None else g.detach())
    shape = (x.shape[0],) if y is not None else (x.shape[0], n_out)
    return {k: torch.cat(v).reshape(*shape, *params[k].shape) for k, v in parts.items()}


def per_sample_grads_loop(
    model: nn.Module, x: Tensor, y: Tensor | None, task: Tensor | None = None
) -> dict[str, Tensor]:
    """The brute-force reference of :func:`per_sample_grads`: one ``autograd.grad`` per sample
    (and per class when ``y`` is None)."""
    params = trainable(model)
    names = list(params)
    rows: dict[str, list[Tensor]] = {k: [] for k in names}
    for i in range(x.shape[0]):
        t = None if task is None else task[i : i + 1]
        logp = torch.log_softmax(
            _call(model, params, dict(model.named_buffers()), x[i : i + 1], t), dim=1
        )[0]
        targets = range(logp.shape[0]) if y is None else [int(y[i])]
        per_class = []
        for c in targets:
            value = logp[c] if y is None else -logp[c]
            gs = torch.autograd.grad(
                value, list(params.values()), retain_graph=True, allow_unused=True
            )
            per_class.append(
                [
                    torch.zeros_like(p) if g is None else g
                    for g, p in zip(gs, params.values(), strict=True)
                ]
            )
        for j, k in enumerate(names):
            stacked = torch.stack([g[j] for g in per_class])
            rows[k].append(stacked if y is None else stacked[0])
    return {k: torch.stack(v) for k, v in rows.items()}


def per_sample_grads_vmap(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    task: Tensor | None = None,
    *,
    chunk_size: int = 64,
) -> dict[str, Tensor]:
    """:func:`per_sample_grads` by ``torch.func.vmap`` of ``grad`` (``jacrev`` over the classes
    when ``y`` is None), each row a batch of one, ``chunk_size`` rows per vmapped call. The first
    call in a process imports ``torch._dynamo`` (about 5.7 s)."""
    from torch.func import grad, jacrev, vmap

    params = {n: p.detach() for n, p in trainable(model).items()}
    buffers = dict(model.named_buffers())

    def logp(p: dict[str, Tensor], xi: Tensor, ti: Tensor | None) -> Tensor:
        t = None if ti is None else ti.reshape(1)
        return torch.log_softmax(_call(model, p, buffers, xi.unsqueeze(0), t), dim=1)[0]

    def nll(p: dict[str, Tensor], xi: Tensor, yi: Tensor, ti: Tensor | None) -> Tensor:
        return -logp(p, xi, ti).gather(0, yi.reshape(1))[0]

    parts: dict[str, list[Tensor]] = {k: [] for k in params}
    for start in range(0, x.shape[0], chunk_size):
        xs = x[start : start + chunk_size]
        ts = None if task is None else task[start : start + chunk_size]
        t_dim = None if ts is None else 0
        if y is None:
            g = vmap(jacrev(logp), in_dims=(None, 0, t_dim))(params, xs, ts)
        else:
            ys = y[start : start + chunk_size]
            g = vmap(grad(nll), in_dims=(None, 0, 0, t_dim))(params, xs, ys, ts)
        for k in parts:
            parts[k].append(g[k].detach())
    return {k: torch.cat(v) for k, v in parts.items()}


FISHER_PATHS = ("linear", "batched", "loop", "vmap")


def fisher_path(model: nn.Module, n_rows: int = 0, task: Tensor | None = None) -> str:
    """The path :func:`diagonal_fisher` takes: ``"linear"`` (the closed form of
    :func:`_linear_fisher_sums`) when every trainable parameter sits in an ``nn.Linear`` layer
    and no BatchNorm normalises with batch statistics in eval mode (then the closed form is
    exact; it still falls back when a layer turns out to be called twice or on non-2-D input),
    else :func:`per_sample_path`'s choice. See :func:`per_sample_path` for the measurements."""
    params = trainable(model)
    in_linear = {
        f"{mname}.{pname}" if mname else pname
        for mname, mod in model.named_modules()
        if isinstance(mod, nn.Linear)
        for pname, _ in mod.named_parameters(recurse=False)
    }
    if params and set(params) <= in_linear and not _batch_statistics(model):
        return "linear"
    return per_sample_path(model, n_rows, task)


def _batch_statistics(model: nn.Module) -> bool:
    """Whether a BatchNorm of ``model`` normalises with batch statistics in eval mode."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None
        for m in model.modules()
    )


def diagonal_fisher(
    model: nn.Module,
    data: Dataset,
    *,
    fisher: str = "empirical",
    n_samples: int | None = None,
    seed: int = 0,
    key: object = "fisher",
    vectorised: bool = True,
    chunk_size: int = 256,
) -> dict[str, Tensor]:
    """The diagonal of the Fisher information of ``model`` on ``data``, by parameter name.

    ``fisher="empirical"``: ``F_i = mean_n (d/d theta_i log p(y_n | x_n))^2`` at the true labels.
    ``fisher="true"``: ``F_i = mean_n sum_c p(c | x_n) (d/d theta_i log p(c | x_n))^2``, the exact
    expectation over the model's predictive distribution (a sum over all classes weighted by
    ``p``, not a Monte-Carlo sample of labels).

    ``n_samples``: use a random subset of that many rows (drawn from ``generator(seed, key)``);
    None uses every row. ``vectorised=False`` computes the same with a per-sample loop (the
    reference); otherwise the path is :func:`fisher_path`'s (chosen by measurement: the
    closed-form linear-layer Fisher only where it is exact for the model, else the fastest
    per-sample gradient path, :func:`per_sample_path`). Returns ``{name: Tensor}`` shaped like
    each trainable parameter.

    BatchNorm and Dropout: the model is evaluated in **eval mode** (every submodule's own mode
    is restored afterwards). So BatchNorm normalises each row with its running statistics (rows
    do not interact, and each row's gradient is that of its own loss: a true per-sample
    gradient), its affine weight and bias get Fisher entries like any parameter, and its
    running statistics are not updated; Dropout is the identity (the Fisher of the deterministic
    network the model is at test time, as EWC, Kirkpatrick et al. 2017, evaluates it). In train
    mode the gradient of one row's loss would depend on the whole batch through the batch
    statistics, which is not the per-sample Fisher. Frozen parameters (``requires_grad=False``)
    get no entry.
    """
    check_choice("fisher", fisher, FISHERS)
    if n_samples is not None and n_samples < len(data):
        data = data.subset(
            torch.randperm(len(data), generator=generator(seed, key), device="cpu")[:n_samples]
        )
    path = fisher_path(model, len(data), data.task) if vectorised else "loop"
    return _fisher_by(model, data, path, fisher=fisher, chunk_size=chunk_size)


def _fisher_by(
    model: nn.Module, data: Dataset, path: str, *, fisher: str = "empirical", chunk_size: int = 256
) -> dict[str, Tensor]:
    """:func:`diagonal_fisher` on every row of ``data`` by ``path`` (:data:`FISHER_PATHS`;
    ``"linear"`` falls back to :func:`per_sample_path`'s choice where the closed form does not
    apply)."""
    general = per_sample_path(model, len(data), data.task) if path == "linear" else path
    with eval_mode(model):  # each submodule's own mode comes back
        sums = {n: torch.zeros_like(p) for n, p in trainable(model).items()}
        for start in range(0, len(data), chunk_size):
            x = data.x[start : start + chunk_size]
            y = data.y[start : start + chunk_size]
            task = None if data.task is None else data.task[start : start + chunk_size]
            labels = y if fisher == "empirical" else None
            fast = _linear_fisher_sums(model, x, labels, task, fisher) if path == "linear" else None
            if fast is not None:
                for name in sums:
                    sums[name] += fast[name]
                continue
            g = per_sample_grads(model, x, labels, task, path=general)
            if fisher == "true":
                with torch.no_grad():
                    p = torch.softmax(
                        _call(model, trainable(model), dict(model.named_buffers()), x, task), dim=1
                    )
            for name in sums:
                sq = g[name].detach().pow(2)
                if fisher == "true":
                    sq = (p.reshape(*p.shape, *([1] * (sq.ndim - 2))) * sq).sum(dim=1)
                sums[name] += sq.sum(dim=0)
    n = max(len(data), 1)
    return {name: s / n for name, s in sums.items()}


def _linear_fisher_sums(
    model: nn.Module, x: Tensor, y: Tensor | None, task: Tensor | None, fisher: str
) -> dict[str, Tensor] | None:
    """Sums over the rows of ``x`` of the squared per-sample gradients, without materialising them,
    when every trainable parameter belongs to an ``nn.Linear`` layer called once on the whole batch.

    For a linear layer ``o = W a + b`` the per-sample gradient is ``g_n = δ_n a_nᵀ`` (δ the
    gradient at the layer's output), so ``Σ_n g_n² = (δ²)ᵀ (a²)`` elementwise and ``Σ_n δ_n²`` for
    the bias: one ordinary backward pass (one per class for the true Fisher) instead of one per
    sample. Rows must not interact (no batch norm; the caller uses eval mode). Returns ``None``
    when the model does not qualify, and the caller falls back to :func:`per_sample_grads`.
    """
    params = trainable(model)
    owner: dict[str, tuple[nn.Linear, str]] = {}
    for mname, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            for pname, _ in mod.named_parameters(recurse=False):
                full = f"{mname}.{pname}" if mname else pname
                if full in params:
                    owner[full] = (mod, pname)
    if not params or set(owner) != set(params):
        return None
    layers = list(dict.fromkeys(m for m, _ in owner.values()))
    seen: dict[nn.Linear, list[tuple[Tensor, Tensor]]] = {m: [] for m in layers}

    def record(mod: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        seen[mod].append((inputs[0].detach(), output))  # type: ignore[index]

    hooks = [m.register_forward_hook(record) for m in layers]
    try:
        out = _call(model, params, dict(model.named_buffers()), x, task)
    finally:
        for h in hooks:
            h.remove()
    n = x.shape[0]
    # each layer must be called at most once; a call on a subset of the rows (a task's head in
    # a multi-head model) is fine for the empirical Fisher, whose row weights are all 1, and a
    # layer not called at all (another task's head) has zero gradient
    if any(len(v) > 1 or (v and v[0][0].ndim != 2) for v in seen.values()):
        return None
    if fisher == "true" and any(v and v[0][0].shape[0] != n for v in seen.values()):
        return None
    layers = [m for m in layers if seen[m]]
    if not layers:
        return None
    outputs = [seen[m][0][1] for m in layers]
    sq_inputs = [seen[m][0][0].pow(2) for m in layers]
    sums = {name: torch.zeros_like(p) for name, p in params.items()}
    names_of = {m: {pname: full for full, (mm, pname) in owner.items() if mm is m} for m in layers}

    def add(deltas: tuple[Tensor, ...], row_weight: Tensor | None) -> None:
        for m, d, a2 in zip(layers, deltas, sq_inputs, strict=True):
            d2 = d.detach().pow(2)
            if row_weight is not None:
                d2 = d2 * row_weight.reshape(-1, 1)
            if "weight" in names_of[m]:
                sums[names_of[m]["weight"]] += d2.T @ a2
            if "bias" in names_of[m]:
                sums[names_of[m]["bias"]] += d2.sum(dim=0)

    logp = torch.log_softmax(out, dim=1)
    if fisher == "empirical":
        assert y is not None
        add(torch.autograd.grad(-logp.gather(1, y.reshape(-1, 1)).sum(), outputs), None)
    else:
        probs = logp.detach().exp()
        for c in range(logp.shape[1]):
            add(torch.autograd.grad(logp[:, c].sum(), outputs, retain_graph=True), probs[:, c])
    return sums
