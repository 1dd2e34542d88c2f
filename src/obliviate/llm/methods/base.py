"""The interface of causal-LM unlearners and the one unlearning loop they share.

An :class:`LLMUnlearner` holds hyperparameters only. :meth:`LLMUnlearner.unlearn` copies the
model (the input is never mutated), then runs ``n_epochs`` passes over the forget set in a
seeded order; each step pairs a forget batch with a retain batch drawn from a seeded generator
(OpenUnlearning's ``ForgetRetainDataset`` pairing) and minimises the method's :meth:`loss`.
An empty forget set returns an unchanged copy.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate.errors import ObliviateError
from obliviate.llm.models import LM
from obliviate.llm.train import Encoded, check_schedule, sequence_nll


@dataclass
class Step:
    """What :meth:`LLMUnlearner.loss` sees: the model being unlearned, the frozen reference
    (the input model, when the method declares ``needs_reference``), the batches, the LM."""

    model: nn.Module
    reference: nn.Module | None
    forget: list[Encoded]
    retain: list[Encoded]
    lm: LM
    extra: dict[str, Any]


class LLMUnlearner(ABC):
    """Base of every causal-LM unlearner (abstract; each method is one final subclass).

    Class attributes: ``guarantee`` ("approximate" or "exact"), ``needs_retain``,
    ``needs_reference`` (a frozen copy of the input model), ``supports_lora`` (works on a peft
    LoRA model, moving only the adapters; checked by :mod:`obliviate.testing.llm`).
    """

    guarantee: ClassVar[str] = "approximate"
    needs_retain: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False
    supports_lora: ClassVar[bool] = True

    def __init__(self, *, n_epochs: int, lr: float, batch_size: int, seed: int) -> None:
        check_schedule(n_epochs, lr, batch_size)
        self.n_epochs, self.lr, self.batch_size, self.seed = n_epochs, lr, batch_size, seed

    def get_params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def prepare(self, step: Step) -> None:
        """Fill ``step.extra`` once before the loop (default: nothing)."""
        return None

    @abstractmethod
    def loss(self, step: Step) -> Tensor:
        """Scalar loss of one step (minimised)."""

    def unlearn(
        self,
        lm: LM,
        forget: Sequence[Encoded],
        retain: Sequence[Encoded] = (),
        *,
        base: LM | None = None,
    ) -> LM:
        """A new :class:`LM` with ``forget`` unlearned; ``lm`` is left untouched.

        Raises:
            ObliviateError: retain data missing for a method that needs it.
        """
        del base
        model = copy.deepcopy(lm.model)
        out = LM(model=model, tokenizer=lm.tokenizer, device=lm.device, prefix=lm.prefix)
        if not forget:
            return out
        if self.needs_retain and not retain:
            raise ObliviateError(f"{type(self).__name__} needs retain data; give the retain set")
        reference = lm.model if self.needs_reference else None
        if reference is not None:
            reference.eval()
        if not any(p.requires_grad for p in model.parameters()):
            raise ObliviateError("nothing to unlearn with: every parameter of the model is frozen")
        step = Step(model, reference, [], [], out, {})
        self.prepare(step)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)
        pick = generator(self.seed, "llm-unlearn-retain")
        model.train()
        for epoch in range(self.n_epochs):
            order = torch.randperm(
                len(forget), generator=generator(self.seed, "llm-unlearn", epoch)
            )
            for start in range(0, len(forget), self.batch_size):
                step.forget = [forget[i] for i in order[start : start + self.batch_size].tolist()]
                if retain:
                    idx = torch.randint(len(retain), (len(step.forget),), generator=pick)
                    step.retain = [retain[i] for i in idx.tolist()]
                opt.zero_grad(set_to_none=True)
                self.loss(step).backward()
                opt.step()
        for p in step.extra.get("restore", ()):  # parameters prepare() froze for the loop
            p.requires_grad_(True)
        model.eval()
        return out


def sequence_logp(step: Step, seqs: list[Encoded], model: nn.Module | None) -> Tensor:
    """``[B]`` summed log-probability of each answer under ``model`` (no grad for the reference)."""

    if model is step.reference:
        with torch.no_grad():
            return -sequence_nll(step.lm, seqs, model)[0]
    return -sequence_nll(step.lm, seqs, model)[0]
