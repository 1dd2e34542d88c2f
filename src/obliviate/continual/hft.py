"""Half Fine-Tuning (Hui et al., 2024)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate._validation import check_number
from obliviate.continual._gradients import trainable_params
from obliviate.continual.base import Batch, Strategy, cross_entropy
from obliviate.data.scenarios import Experience


class HFT(Strategy):
    """Half Fine-Tuning: each experience trains a random half of every layer; the other half
    keeps the values it had when the experience began.

    At the start of each experience a fresh random half of the entries of every trainable
    parameter tensor is frozen (the draw depends on ``seed`` and the experience index only).
    The frozen half gets zero gradient in ``adjust_gradients``; because an optimiser's weight
    decay (or momentum carried in its state) can still move an entry whose gradient is zero,
    the frozen entries are also written back to their values from the start of the experience
    before every loss evaluation and at the end of the experience, so they are bitwise
    unchanged in every forward pass and in the model the experience leaves behind.

    Parameters
    ----------
    frozen_fraction : float, in [0, 1)
        Fraction of each parameter tensor's entries frozen per experience (the paper: 1/2).
        0 gives plain fine-tuning.
    seed : int
        Seed of the per-experience random choice.

    Notes
    -----
    - The paper (for transformer LLMs) freezes half of the parameter *matrices* of each block
      (e.g. two of the four attention projections, and half the feed-forward matrices). Our
      models have one weight matrix per layer, so we freeze half of the *entries* of every
      parameter tensor (weights, biases and heads alike) instead; ``floor(fraction * n)``
      entries of a tensor with ``n`` entries.
    - The first experience is also trained with half the parameters frozen (the paper applies
      HFT to every fine-tuning round, the pre-trained model being its starting point).
    - An optimiser step between two write-backs may move a frozen entry by the decay term; a
      continual-evaluation snapshot taken in between (``eval_every``) can see that one-step
      drift. The loop's own step never moves it when weight decay is 0.

    References
    ----------
    Hui, T., Zhang, Z., Wang, S., Xu, W., Sun, Y. & Wu, H. (2024). HFT: Half Fine-Tuning for
    Large Language Models. arXiv:2404.18466, Section 3.
    """

    needs_task_boundaries: ClassVar[bool] = True
    neutral_params: ClassVar[dict[str, float]] = {"frozen_fraction": 0.0}
    learned_state: ClassVar[tuple[str, ...]] = ("frozen_", "values_")
    frozen_: dict[str, Tensor] | None = None

    def __init__(self, *, frozen_fraction: float = 0.5, seed: int = 0) -> None:
        check_number("frozen_fraction", frozen_fraction, low=0, high=1, high_open=True, owner="HFT")
        check_number("seed", seed, integer=True, owner="HFT")
        self.frozen_fraction = frozen_fraction
        self.seed = seed

    def begin(self, model: nn.Module, experience: Experience) -> None:
        frozen: dict[str, Tensor] = {}
        self.frozen_ = frozen
        self.values_: dict[str, Tensor] = {}
        for name, p in trainable_params(model):
            n = p.numel()
            k = int(self.frozen_fraction * n)
            if k == 0:
                continue
            gen = generator(self.seed, "hft", experience.index, name)
            mask = torch.zeros(n, dtype=torch.bool, device=p.device)
            mask[torch.randperm(n, generator=gen, device=gen.device)[:k].to(p.device)] = True
            frozen[name] = mask.reshape(p.shape)
            self.values_[name] = p.detach()[frozen[name]].clone()

    def _restore(self, model: nn.Module) -> None:
        frozen = self.frozen_ or {}
        with torch.no_grad():
            for name, p in trainable_params(model):
                if name in frozen:
                    p[frozen[name]] = self.values_[name]

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        if self.frozen_:
            self._restore(model)
        return cross_entropy(model, batch)

    def adjust_gradients(self, model: nn.Module) -> None:
        frozen = self.frozen_ or {}
        for name, p in trainable_params(model):
            if name in frozen and p.grad is not None:
                p.grad[frozen[name]] = 0.0

    def end(self, model: nn.Module, experience: Experience) -> None:
        self._restore(model)
