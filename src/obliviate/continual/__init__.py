"""Continual learning: strategies (one file each), the training loop and replay buffers.

``STRATEGIES`` is the registry: a literal dict of name -> "module:Class" (imported lazily).
"""

from __future__ import annotations

from typing import Any

from obliviate._hyper import check_param_names
from obliviate._registry import resolve

STRATEGIES: dict[str, str] = {
    "naive": "obliviate.continual.naive:Naive",
    "joint": "obliviate.continual.joint:Joint",
    "cumulative": "obliviate.continual.cumulative:Cumulative",
    "ewc": "obliviate.continual.ewc:EWC",
    "lwf": "obliviate.continual.lwf:LwF",
    "replay": "obliviate.continual.replay:Replay",
    "si": "obliviate.continual.si:SI",
    "mas": "obliviate.continual.mas:MAS",
    "l2": "obliviate.continual.l2:L2",
    "der": "obliviate.continual.der:DER",
    "derpp": "obliviate.continual.derpp:DERpp",
    "icarl": "obliviate.continual.icarl:ICaRL",
    "gdumb": "obliviate.continual.gdumb:GDumb",
    "gem": "obliviate.continual.gem:GEM",
    "agem": "obliviate.continual.agem:AGEM",
    "packnet": "obliviate.continual.packnet:PackNet",
    "hft": "obliviate.continual.hft:HFT",
    "fpf": "obliviate.continual.fpf:FPF",
    "slda": "obliviate.continual.slda:SLDA",
    "remind": "obliviate.continual.remind:REMIND",
    "lucir": "obliviate.continual.lucir:LUCIR",
    "cope": "obliviate.continual.cope:CoPE",
    "l2p": "obliviate.continual.l2p:L2P",
    "pnn": "obliviate.continual.pnn:PNN",
    "erace": "obliviate.continual.erace:ERACE",
    "rwalk": "obliviate.continual.rwalk:RWalk",
    "mir": "obliviate.continual.mir:MIR",
    "gss": "obliviate.continual.gss:GSS",
    "xder": "obliviate.continual.xder:XDER",
    "bic": "obliviate.continual.bic:BiC",
}


def strategy_class(name: str) -> Any:
    """The strategy class registered under ``name``."""
    return resolve(STRATEGIES, "strategy", name)


def make_strategy(name: str, **params: Any) -> Any:
    """Construct the named strategy with hyperparameters ``params``; an unknown hyperparameter
    name is a one-line :class:`~obliviate.errors.ObliviateError` listing the valid ones."""
    cls = strategy_class(name)
    check_param_names(name, cls, params)
    return cls(**params)


__all__ = ["STRATEGIES", "make_strategy", "strategy_class"]
