"""Forgetting-Prioritised Fine-tuning, FPF and k-FPF (Zhao, Zhou, Long, Jiang & Zhang, 2023)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual.base import Batch, Strategy, cross_entropy
from obliviate.continual.buffers import ReservoirBuffer
from obliviate.data.dataset import as_id_tensor
from obliviate.data.scenarios import Experience
from obliviate.models.base import logits
from obliviate.training import global_rng_from, train_mode


class FPF(Strategy):
    """Fine-tune only the modules most prone to forgetting, on a small buffer.

    A reservoir buffer of at most ``memory_size`` samples is filled from the training stream.
    An *FPF round* first ranks the model's modules (every sub-module that owns parameters:
    each linear/convolutional layer, each head) by their sensitivity on the buffer, the mean
    squared gradient of the buffer's cross-entropy per parameter of the module::

        s_m = (1 / |theta_m|) * sum_{i in m} (dL_buffer / d theta_i)^2

    (normalised by the module's size so large layers are not favoured), then fine-tunes only
    the ``n_modules`` most sensitive ones for ``fpf_steps`` SGD steps on random buffer batches.

    Two variants, selected by ``fpf_every``:

    - **FPF** (``fpf_every=None``): training is experience replay (the current batch concatenated
      with a buffer batch, as the "any CL method" FPF is applied on) and an FPF round runs at
      the end of every experience.
    - **k-FPF** (``fpf_every=K``): training is plain SGD on the current batches, with no replay;
      an FPF round runs every ``K`` training steps, regardless of experience boundaries.

    Parameters
    ----------
    memory_size : int, >= 1
        Buffer capacity in samples.
    fpf_every : int >= 1 or None
        Steps between FPF rounds (k-FPF); None for FPF at the end of each experience.
    n_modules : int, >= 1
        Number of most sensitive modules fine-tuned in a round.
    fpf_steps : int, >= 1
        SGD steps per FPF round.
    fpf_lr : float, > 0
        Learning rate of the FPF rounds (plain SGD).
    fpf_batch_size : int, >= 1
        Buffer samples per FPF step (and per replay batch in the FPF variant).
    seed : int
        Seed of the buffer and of every batch drawn from it.

    Notes
    -----
    - Mapping to the hook contract: the buffer is filled in ``loss`` (each sample id is offered
      to the reservoir once, on first sight, so several epochs do not bias it); a k-FPF round
      runs inside ``loss`` before the current batch's loss is computed, and an FPF round inside
      ``end``. A round uses the strategy's own plain SGD on the selected modules' parameters
      (the loop's optimiser is never touched); model mode is restored afterwards.
    - The paper's k-FPF applies FPF ``k`` times over the whole training; not knowing the length
      of the stream in advance, we take the period instead: ``k = total_steps / fpf_every``.
    - The paper selects module *types* (e.g. batch-norm and the last layers of a ResNet) from an
      analysis of training dynamics and its sensitivity score; we rank individual modules by
      the gradient sensitivity above, recomputed on the buffer at every round.
    - The base method of plain FPF is experience replay (reservoir buffer); the paper also
      stacks FPF on DER and others. The k-FPF-KD variant (distillation on stored logits) is not
      implemented.
    - The class declares ``needs_task_boundaries`` because the FPF variant uses ``end``; k-FPF
      itself would not need them.

    References
    ----------
    Zhao, H., Zhou, T., Long, G., Jiang, J. & Zhang, C. (2023). Does Continual Learning Equally
    Forget All Parameters? ICML 2023, Sections 4-5 (FPF and k-FPF).
    """

    needs_task_boundaries: ClassVar[bool] = True
    keeps_memory: ClassVar[bool] = True
    learned_state: ClassVar[tuple[str, ...]] = (
        "buffer_",
        "seen_ids_",
        "n_steps_",
        "n_rounds_",
        "selected_",
        "sensitivity_",
    )
    buffer_: ReservoirBuffer | None = None
    seen_ids_: set[int]
    sensitivity_: dict[str, float]

    def __init__(
        self,
        *,
        memory_size: int = 200,
        fpf_every: int | None = None,
        n_modules: int = 1,
        fpf_steps: int = 50,
        fpf_lr: float = 0.05,
        fpf_batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        check_number("memory_size", memory_size, low=1, integer=True, owner="FPF")
        if fpf_every is not None:
            check_number("fpf_every", fpf_every, low=1, integer=True, owner="FPF")
        check_number("n_modules", n_modules, low=1, integer=True, owner="FPF")
        check_number("fpf_steps", fpf_steps, low=1, integer=True, owner="FPF")
        check_number("fpf_lr", fpf_lr, low=0, low_open=True, owner="FPF")
        check_number("fpf_batch_size", fpf_batch_size, low=1, integer=True, owner="FPF")
        check_number("seed", seed, integer=True, owner="FPF")
        self.memory_size = memory_size
        self.fpf_every = fpf_every
        self.n_modules = n_modules
        self.fpf_steps = fpf_steps
        self.fpf_lr = fpf_lr
        self.fpf_batch_size = fpf_batch_size
        self.seed = seed

    def memory_used(self) -> int:
        return 0 if self.buffer_ is None else len(self.buffer_)

    def purge(self, ids: Tensor, model: nn.Module | None = None) -> None:
        """Remove the deleted samples (ids ``[K]``, int64) from the reservoir buffer
        (:meth:`~obliviate.continual.buffers.ReservoirBuffer.purge`) and from the record of
        offered ids; when rows were removed, the last round's sensitivity scores (computed on
        them) are cleared (the next round recomputes them). See
        :meth:`~obliviate.continual.base.Strategy.purge`."""
        ids = as_id_tensor(ids)
        if self.buffer_ is None:
            return
        self.seen_ids_.difference_update(ids.tolist())
        if self.buffer_.purge(ids):
            self.sensitivity_ = {}

    # ---- hooks -------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        if self.buffer_ is None:
            self.buffer_ = ReservoirBuffer(memory_size=self.memory_size, seed=self.seed)
            self.seen_ids_ = set()
            self.n_steps_ = 0
            self.n_rounds_ = 0
            self.selected_: list[str] = []
            self.sensitivity_ = {}
        self.n_steps_ += 1
        if self.fpf_every is not None:
            if self.n_steps_ % self.fpf_every == 0 and len(self.buffer_):
                self._fpf_round(model)
            out = cross_entropy(model, batch)
        elif len(self.buffer_):
            stored = self.buffer_.filled()
            sx, sy, stask = stored["x"], stored["y"], stored["task"]
            assert sx is not None and sy is not None and stask is not None  # a non-empty buffer
            gen = generator(self.seed, "fpf-replay", self.n_steps_)
            idx = self.buffer_.sample(self.fpf_batch_size, gen)
            x = torch.cat([batch.x, sx[idx]])
            y = torch.cat([batch.y, sy[idx]])
            task = None if batch.task is None else torch.cat([batch.task, stask[idx]])
            out = nn.functional.cross_entropy(logits(model, x, task), y)
        else:
            out = cross_entropy(model, batch)
        self._offer(batch)
        return out

    def end(self, model: nn.Module, experience: Experience) -> None:
        if self.fpf_every is None and self.memory_used():
            self._fpf_round(model)

    # ---- internals ---------------------------------------------------------------------------
    def _offer(self, batch: Batch) -> None:
        fresh = [i for i, sid in enumerate(batch.ids.tolist()) if sid not in self.seen_ids_]
        if not fresh:
            return
        self.seen_ids_.update(int(batch.ids[i]) for i in fresh)
        rows = torch.tensor(fresh, dtype=torch.int64, device=batch.y.device)
        task = None if batch.task is None else batch.task[rows]
        assert self.buffer_ is not None  # created in loss
        self.buffer_.add(batch.x[rows], batch.y[rows], batch.ids[rows], task)

    def _buffer_loss(self, model: nn.Module, idx: Tensor | None = None) -> Tensor:
        assert self.buffer_ is not None  # created in loss
        stored = self.buffer_.filled()
        x, y, task = stored["x"], stored["y"], stored["task"]
        assert x is not None and y is not None and task is not None  # called on a non-empty buffer
        if idx is not None:
            x, y, task = x[idx], y[idx], task[idx]
        task_ids = None if bool((task < 0).any()) else task
        return nn.functional.cross_entropy(logits(model, x, task_ids), y)

    def _fpf_round(self, model: nn.Module) -> None:
        """Rank modules by sensitivity on the buffer, then SGD on the top ``n_modules`` only.

        The round runs in ``end`` (outside the loop's seeded steps), so a user model's dropout
        masks are drawn here from ``(seed, round)``; each submodule gets its own mode back."""
        with global_rng_from(self.seed, "fpf-round", self.n_rounds_):
            self._seeded_round(model)

    def _seeded_round(self, model: nn.Module) -> None:
        modules = {
            n: m
            for n, m in model.named_modules()
            if any(p.requires_grad for p in m.parameters(recurse=False))
        }
        modes = [(m, m.training) for m in model.modules()]
        train_mode(model)
        try:
            with torch.enable_grad():
                params = {
                    n: [p for p in m.parameters(recurse=False) if p.requires_grad]
                    for n, m in modules.items()
                }
                flat = [p for ps in params.values() for p in ps]
                grads = torch.autograd.grad(self._buffer_loss(model), flat, allow_unused=True)
            by_param = {id(p): g for p, g in zip(flat, grads, strict=True)}
            score = {}
            for n, ps in params.items():
                sq = sum(
                    float((by_param[id(p)] ** 2).sum()) for p in ps if by_param[id(p)] is not None
                )
                score[n] = sq / sum(p.numel() for p in ps)
            ranked = sorted(score, key=lambda n: (-score[n], n))
            self.selected_ = ranked[: self.n_modules]
            self.sensitivity_ = score
            tuned = [p for n in self.selected_ for p in params[n]]
            for step in range(self.fpf_steps):
                gen = generator(self.seed, "fpf-round", self.n_rounds_, step)
                assert self.buffer_ is not None  # a round runs on a non-empty buffer
                idx = self.buffer_.sample(self.fpf_batch_size, gen)
                with torch.enable_grad():
                    grads = torch.autograd.grad(
                        self._buffer_loss(model, idx), tuned, allow_unused=True
                    )
                with torch.no_grad():
                    for p, g in zip(tuned, grads, strict=True):
                        if g is not None:
                            p.sub_(self.fpf_lr * g)
        finally:
            for m, training in modes:
                m.training = training
        self.n_rounds_ += 1
