"""Gradient Episodic Memory (Lopez-Paz & Ranzato, 2017)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from scipy.optimize import nnls
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual._gradients import (
    add_experience_memory,
    flat_grad,
    loss_gradient,
    trainable_params,
    write_flat_grad,
)
from obliviate.continual.base import Batch, Strategy, cross_entropy, deleted_rows, task_key
from obliviate.data.dataset import Dataset, as_id_tensor
from obliviate.data.scenarios import Experience


class GEM(Strategy):
    """Gradient Episodic Memory: never let the loss on a past task's memory increase.

    Each finished experience ``k`` leaves an episodic memory ``M_k``. At every step the gradient
    ``g`` of the current loss is compared with the reference gradients ``g_k`` of the loss on
    each memory (eq. 7 of the paper, linearised as ``<g, g_k> >= 0``). When some ``<g, g_k> < 0``
    the gradient is replaced by its closest projection ``g~`` satisfying all constraints,
    found by solving the dual quadratic programme (eqs. 10-11)::

        min_v  1/2 v^T G G^T v + g^T G^T v   s.t.  v >= gamma,      g~ = G^T v + g

    with ``G = (g_1, ..., g_{t-1})``. The QP has one variable per past experience and is solved
    exactly by non-negative least squares (:func:`gem_project`).

    Parameters
    ----------
    memory_size : int, >= 1
        Samples in all episodic memories *together* (``M`` in the paper's ``m = M / T``). Each
        finished experience keeps an equal share (remainder to the oldest).
    memory_strength : float, >= 0
        ``gamma``, the margin: the lower bound on the dual variables ``v``, which biases the
        projection towards updates that also lower the memories' losses. 0 is the plain QP.
    seed : int
        Seed of the memories' random choice of samples.

    Notes
    -----
    - ``memory_size`` is the total, not the per-task size: the paper fixes ``m`` samples per
      task knowing the number of tasks ``T``; we do not know ``T`` in advance, so each new
      experience shrinks the older memories to their equal share (keeping a random subset).
      ``memory_size = m * T`` reproduces the paper's memory at the last task.
    - A memory is a uniform random sample of its experience's training data, drawn at the end
      of the experience (the paper keeps the last ``m`` examples of each task's stream).
    - One memory (one constraint) per distinct task, as in the paper: on a recurring stream a
      task that comes back presents the same samples and keeps the memory of its first
      occurrence (:func:`~obliviate.continual.base.task_key` tells tasks apart).
    - The margin is a constraint ``v >= gamma`` as in the authors' code (the paper's text "adds
      gamma to v*"); with the constraint every projected gradient provably satisfies
      ``<g~, g_k> >= 0``, with the post-hoc addition it need not.
    - The QP is solved with :func:`scipy.optimize.nnls` on the ``k x k`` reduced problem instead
      of ``quadprog``; both are exact active-set solvers.
    - All trainable parameters (every head included) enter ``g`` and ``g_k``; reference
      gradients use each memory's own task ids on task-aware streams.

    References
    ----------
    Lopez-Paz, D. & Ranzato, M. (2017). Gradient Episodic Memory for Continual Learning.
    NeurIPS 2017, Section 3, eqs. (6)-(11).
    """

    needs_task_boundaries: ClassVar[bool] = True
    keeps_memory: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = ("memories_", "memory_tasks_", "n_projections_")
    memories_: list[Dataset] | None = None
    memory_tasks_: list[str] | None = None  # the task of each memory (base.task_key)
    n_projections_: int | None = None

    def __init__(
        self, *, memory_size: int = 200, memory_strength: float = 0.5, seed: int = 0
    ) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="GEM")
        check_number("memory_strength", memory_strength, low=0, owner="GEM")
        check_number("seed", seed, integer=True, owner="GEM")
        self.memory_size = memory_size
        self.memory_strength = memory_strength
        self.seed = seed

    def memory_used(self) -> int:
        """Samples held in all memories together."""
        return sum(len(m) for m in self.memories_ or [])

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64) from every per-experience memory
        (a memory may become empty; it keeps its place, so later quotas are unchanged). No
        gradient is stored: reference gradients are recomputed from the memories at every
        step. See :meth:`~obliviate.continual.base.Strategy.purge`."""
        ids = as_id_tensor(ids)
        if self.memories_ is not None:
            self.memories_ = [m.subset(~deleted_rows(m.ids, ids)) for m in self.memories_]

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        return cross_entropy(model, batch)

    def adjust_gradients(self, model: nn.Module) -> None:
        memories: list[Dataset] = [m for m in self.memories_ or [] if len(m)]
        if not memories:
            return
        params = [p for _, p in trainable_params(model)]
        g = flat_grad(params)
        G = torch.stack([loss_gradient(model, params, m.x, m.y, m.task) for m in memories])
        if bool((G @ g >= 0).all()):
            return
        self.n_projections_ = (self.n_projections_ or 0) + 1
        write_flat_grad(params, gem_project(G, g, self.memory_strength))

    def end(self, model: nn.Module, experience: Experience) -> None:
        if self.memories_ is None:
            self.memories_ = []
        tasks = self.memory_tasks_ = self.memory_tasks_ or []
        key = task_key(experience)
        if key in tasks:  # a task that recurs keeps its memory: one memory (constraint) per task
            return
        tasks.append(key)
        gen = generator(self.seed, "gem-memory", len(self.memories_))
        add_experience_memory(self.memories_, experience.train, self.memory_size, gen)


def gem_project(memory_grads: Tensor, g: Tensor, margin: float = 0.0) -> Tensor:
    """Solve GEM's dual QP and return the projected gradient ``g~`` (Lopez-Paz & Ranzato, 2017).

    ``memory_grads`` is ``G`` (``[k, p]``, one reference gradient per past task), ``g`` the
    current gradient. The primal (eq. 10) is ``min_z 1/2 ||g - z||^2  s.t.  G z >= 0``; its dual
    (eq. 11) ``min_v 1/2 v^T G G^T v + g^T G^T v  s.t.  v >= margin`` gives ``g~ = G^T v + g``.
    The margin ``gamma`` enters as the lower bound on ``v``, as in the authors' code; with
    ``v = gamma + u`` the dual becomes a non-negative least-squares problem
    ``min_{u >= 0} 1/2 ||G^T u + g'||^2`` with ``g' = g + gamma G^T 1``, which we reduce to
    ``k x k`` through the eigen-decomposition of ``G G^T`` and solve exactly with
    :func:`scipy.optimize.nnls` (Lawson-Hanson active set). Computed in float64; for every row
    ``k`` the result satisfies ``<g~, g_k> >= -tol_k`` (:func:`constraint_tolerance`) before
    the cast back to ``g.dtype``: when the reduced solve misses that (nearly parallel
    constraints), the NNLS is solved again on ``G^T`` directly.
    """
    G = memory_grads.detach().to(torch.float64).cpu().numpy()
    gv = g.detach().to(torch.float64).cpu().numpy()
    k = G.shape[0]
    g_shift = gv + margin * G.sum(axis=0)
    A = G @ G.T
    c = G @ g_shift
    lam, Q = np.linalg.eigh(A)
    keep = lam > max(float(lam.max(initial=0.0)), 1e-300) * k * 1e-12
    if not keep.any():  # every reference gradient is zero: no constraint binds
        return g
    M = np.sqrt(lam[keep])[:, None] * Q[:, keep].T  # M^T M = A on its range
    b = (Q[:, keep].T @ c) / np.sqrt(lam[keep])  # M^T b = c (c lies in range(A))
    u, _ = nnls(M, -b, maxiter=50 * k)
    out = gv + G.T @ (u + margin)
    if not _satisfied(G, gv, out):
        # Nearly parallel constraints make G G^T ill-conditioned and the k x k reduction loses
        # digits (violations of ~1e-6 relative were found). Solve the NNLS on G^T itself
        # (p x k): slower for large p, exact to rounding.
        u, _ = nnls(G.T, -g_shift, maxiter=50 * k + 50)
        out = gv + G.T @ (u + margin)
    return torch.from_numpy(out).to(g.dtype)


#: Relative tolerance of the constraints ``<g~, g_k> >= 0``, see :func:`constraint_tolerance`.
CONSTRAINT_RTOL = 1e-10


def constraint_tolerance(G: np.ndarray, g: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Per-constraint tolerance ``CONSTRAINT_RTOL * ||g_k|| * (||g|| + ||g~ - g|| + ||g~||)``.

    ``g~ = g + G^T v`` is a sum of vectors of norm up to ``||g||`` and ``||g~ - g||``; float64
    rounding of that sum and of the dot product ``<g~, g_k>`` is a few ``p`` ulps of this scale
    (``p`` parameters, ``eps = 2.2e-16``), so ``1e-10`` allows ``p`` up to ~10^5 ulps each while
    still catching the ~1e-6 relative violations an ill-conditioned reduction produces.
    Shapes: ``G`` ``[k, p]``, ``g`` and ``out`` ``[p]`` (float64); returns ``[k]``.
    """
    size = float(np.linalg.norm(g) + np.linalg.norm(out - g) + np.linalg.norm(out))
    return CONSTRAINT_RTOL * np.linalg.norm(G, axis=1) * max(size, 1e-300)


def _satisfied(G: np.ndarray, g: np.ndarray, out: np.ndarray) -> bool:
    """Whether every constraint ``G_k . out >= 0`` holds to :func:`constraint_tolerance`."""
    return bool((G @ out >= -constraint_tolerance(G, g, out)).all())
