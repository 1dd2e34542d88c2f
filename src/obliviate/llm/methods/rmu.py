"""Representation misdirection for unlearning."""

from __future__ import annotations

from typing import Any, final

import torch
from torch import Tensor, nn

from obliviate._rng import generator
from obliviate.errors import ObliviateError
from obliviate.llm.methods.base import LLMUnlearner, Step
from obliviate.llm.models import LM, blocks, forward_logits
from obliviate.llm.train import Encoded


def _answer_mask(seqs: list[Encoded], width: int, device: torch.device) -> Tensor:
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for b, s in enumerate(seqs):
        mask[b, s.n_prompt : len(s.ids)] = True
    return mask.to(device)


def _activations(lm: LM, model: nn.Module, seqs: list[Encoded], layer: int) -> Tensor:
    """``[B, T, H]`` output of block ``layer`` (the rest of the forward pass runs too)."""
    box: dict[str, Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        box["h"] = out[0] if isinstance(out, tuple) else out

    handle = blocks(model)[layer].register_forward_hook(hook)
    try:
        forward_logits(lm, [s.ids for s in seqs], model=model)
    finally:
        handle.remove()
    return box["h"]


@final
class RMU(LLMUnlearner):
    """Push the forget set's activations at block ``layer`` towards a fixed random direction and
    keep the retain set's where they were:
    ``L = gamma * ||h_l(forget) - c u||^2 + alpha * ||h_l(retain) - h_l^ref(retain)||^2``
    (mean squared error over the answer tokens), updating blocks ``layer - 2 .. layer`` only.

    Parameters
    ----------
    layer
        Block index l whose output is steered (default: one above the lowest trainable block).
    steering_coeff
        c, the norm of the control vector (OpenUnlearning's TOFU setting uses small values;
        default 6.5 as in the WMDP paper's Zephyr run).
    gamma, alpha
        Weights of the forget and retain terms (paper: alpha = 1200 for Zephyr-7B; default 1
        here, chosen on a validation split of the fictitious data).
    n_epochs, lr, batch_size, seed
        As :class:`GradAscent`; ``seed`` also draws u (uniform in [0, 1), normalised).

    Notes
    -----
    The paper updates the MLPs of layers l-2..l; here every trainable parameter of those blocks
    (intersected with what the model allows to train). Activations are compared on answer
    tokens only (the paper uses every token of the forget corpus).

    References
    ----------
    Li et al., 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use With
    Unlearning", section 5, eqs. 1-2 (RMU).
    """

    needs_reference = True

    def __init__(
        self,
        *,
        layer: int | None = None,
        steering_coeff: float = 6.5,
        gamma: float = 1.0,
        alpha: float = 1.0,
        n_epochs: int = 5,
        lr: float = 5e-5,
        batch_size: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__(n_epochs=n_epochs, lr=lr, batch_size=batch_size, seed=seed)
        if layer is not None and layer < 0:
            raise ObliviateError(f"layer={layer}: must be >= 0")
        if steering_coeff <= 0 or gamma < 0 or alpha < 0:
            raise ObliviateError(
                f"steering_coeff={steering_coeff} must be > 0; gamma={gamma}, alpha={alpha} >= 0"
            )
        self.layer, self.steering_coeff = layer, steering_coeff
        self.gamma, self.alpha = gamma, alpha

    def _layer(self, model: nn.Module) -> int:
        mods = list(blocks(model))
        trainable = [i for i, b in enumerate(mods) if any(p.requires_grad for p in b.parameters())]
        if not trainable:
            raise ObliviateError("RMU: no trainable block")
        layer = min(trainable[0] + 1, len(mods) - 1) if self.layer is None else self.layer
        if layer not in trainable:
            raise ObliviateError(f"RMU layer={layer}: choose a trainable block, one of {trainable}")
        return layer

    def prepare(self, step: Step) -> None:
        layer = self._layer(step.model)
        mods = list(blocks(step.model))
        keep = {id(p) for i in range(max(0, layer - 2), layer + 1) for p in mods[i].parameters()}
        for p in step.model.parameters():  # the loop builds its optimizer after prepare()
            if p.requires_grad and id(p) not in keep:
                p.requires_grad_(False)
                step.extra.setdefault("restore", []).append(p)
        config: Any = getattr(step.model, "config")  # noqa: B009
        width = int(config.hidden_size)
        u = torch.rand(width, generator=generator(self.seed, "rmu-direction"))
        step.extra["control"] = (self.steering_coeff * u / u.norm()).to(step.lm.device)
        step.extra["layer"] = layer

    def loss(self, step: Step) -> Tensor:
        layer = step.extra["layer"]
        h_f = _activations(step.lm, step.model, step.forget, layer)
        m_f = _answer_mask(step.forget, h_f.shape[1], step.lm.device)
        forget = (h_f[m_f] - step.extra["control"]).square().mean()
        h_r = _activations(step.lm, step.model, step.retain, layer)
        assert step.reference is not None  # needs_reference
        with torch.no_grad():
            h_ref = _activations(step.lm, step.reference, step.retain, layer)
        m_r = _answer_mask(step.retain, h_r.shape[1], step.lm.device)
        retain = (h_r[m_r] - h_ref[m_r]).square().mean()
        return self.gamma * forget + self.alpha * retain
