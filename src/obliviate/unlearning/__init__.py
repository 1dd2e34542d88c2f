"""Unlearning: forget requests, unlearners (one file each) and the retrain oracle.

``UNLEARNERS`` is the registry: a literal dict of name -> "module:Class" (imported lazily).
"""

from __future__ import annotations

from typing import Any

from obliviate._hyper import check_param_names
from obliviate._registry import resolve

UNLEARNERS: dict[str, str] = {
    "retrain": "obliviate.unlearning.retrain:Retrain",
    "finetune": "obliviate.unlearning.finetune:Finetune",
    "gradient_ascent": "obliviate.unlearning.gradient_ascent:GradientAscent",
    "neggrad_plus": "obliviate.unlearning.neggrad_plus:NegGradPlus",
    "newton": "obliviate.unlearning.newton:Newton",
    "random_label": "obliviate.unlearning.random_label:RandomLabel",
    "bad_teacher": "obliviate.unlearning.bad_teacher:BadTeacher",
    "scrub": "obliviate.unlearning.scrub:SCRUB",
    "ssd": "obliviate.unlearning.ssd:SSD",
    "famr": "obliviate.unlearning.famr:FAMR",
    "l1_sparse": "obliviate.unlearning.l1_sparse:L1Sparse",
    "salun": "obliviate.unlearning.salun:SalUn",
    "iau": "obliviate.unlearning.iau:IAU",
    "scar": "obliviate.unlearning.scar:SCAR",
    "upcore": "obliviate.unlearning.upcore:UPCORE",
    "fisher_forgetting": "obliviate.unlearning.fisher_forgetting:FisherForgetting",
    "unsir": "obliviate.unlearning.unsir:UNSIR",
    "boundary_shrink": "obliviate.unlearning.boundary_shrink:BoundaryShrink",
    "boundary_expand": "obliviate.unlearning.boundary_expand:BoundaryExpand",
    "lf_ssd": "obliviate.unlearning.lf_ssd:LFSSD",
    "jit": "obliviate.unlearning.jit:JiT",
    "negmerge": "obliviate.unlearning.negmerge:NegMerge",
    "sfron": "obliviate.unlearning.sfron:SFRon",
    "cf_k": "obliviate.unlearning.cf_k:CFk",
    "eu_k": "obliviate.unlearning.eu_k:EUk",
    "stochastic_teacher": "obliviate.unlearning.stochastic_teacher:StochasticTeacher",
    "gs_lora": "obliviate.unlearning.gs_lora:GSLoRA",
    "gs_lora_pp": "obliviate.unlearning.gs_lora_pp:GSLoRAPP",
}


def unlearner_class(name: str) -> Any:
    return resolve(UNLEARNERS, "unlearner", name)


def make_unlearner(name: str, **params: Any) -> Any:
    """Construct the named unlearner with hyperparameters ``params``; an unknown
    hyperparameter name is a one-line :class:`~obliviate.errors.ObliviateError` listing the
    valid ones."""
    cls = unlearner_class(name)
    check_param_names(name, cls, params)
    return cls(**params)


__all__ = ["UNLEARNERS", "make_unlearner", "unlearner_class"]
