"""Causal-LM unlearners: one file, one final class, one registry key each."""

from __future__ import annotations

from obliviate.llm.methods.base import LLMUnlearner
from obliviate.llm.methods.grad_ascent import GradAscent
from obliviate.llm.methods.grad_diff import GradDiff
from obliviate.llm.methods.idk_dpo import IdkDPO
from obliviate.llm.methods.npo import NPO
from obliviate.llm.methods.retrain import Retrain
from obliviate.llm.methods.rmu import RMU
from obliviate.llm.methods.simnpo import SimNPO

REGISTRY: dict[str, type[LLMUnlearner]] = {
    "grad_ascent": GradAscent,
    "grad_diff": GradDiff,
    "npo": NPO,
    "simnpo": SimNPO,
    "rmu": RMU,
    "idk_dpo": IdkDPO,
    "retrain": Retrain,
}

__all__ = [
    "NPO",
    "REGISTRY",
    "RMU",
    "GradAscent",
    "GradDiff",
    "IdkDPO",
    "LLMUnlearner",
    "Retrain",
    "SimNPO",
]
