"""Snapshots of a model and a continual strategy as deterministic, safely loadable bytes.

A sharded continual store checkpoints, after every stage, a shard's model *and* its strategy's
learned state (replay buffers, stored logits, Fisher estimates, old-model copies, counters), since
training continues from both. :func:`encode` turns them into a tree of plain containers, tensors
and numbers that ``torch.save`` writes and ``torch.load(weights_only=True)`` reads back: no pickled
code runs on load. :func:`decode` rebuilds the objects.

The tree:

- ``None``, ``bool``, ``int``, ``float``, ``str`` and tensors stay as they are (tensors sharing
  storage keep sharing it, as ``torch.save`` does);
- every container is a tagged list ``[kind, ...]`` with kind ``"list"``, ``"tuple"``, ``"dict"``,
  ``"odict"`` (OrderedDict), ``"set"`` (sorted), ``"ndarray"``, ``"npscalar"``, ``"dtype"``,
  ``"device"``, ``"generator"`` (its state tensor), ``"param"`` (a parameter or buffer *of the
  model*, by name, so a strategy that keeps references to the model's parameters gets the new
  model's), ``"ref"`` (a Python object seen before: aliasing is kept) or ``"object"`` (class path
  and attribute dict);
- objects are rebuilt without calling ``__init__`` (``cls.__new__`` then ``__setstate__`` or the
  attribute dict), and only classes from ``obliviate.*``, ``torch.nn.*`` or the model's own module
  tree are allowed; anything else (functions, open files, foreign classes) is refused with an
  :class:`~obliviate.errors.ObliviateError` naming the attribute.

Same objects -> same bytes: dicts keep insertion order, sets are sorted, ``torch.save`` numbers
storages in the order it meets them.
"""

from __future__ import annotations

import importlib
import io
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from obliviate.errors import ObliviateError

_ALLOWED_PREFIXES = ("obliviate.", "torch.nn.")


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _model_classes(model: nn.Module) -> set[str]:
    return {_class_path(type(m)) for m in model.modules()}


def encode(model: nn.Module, strategy: object, extra: dict[str, Any] | None = None) -> bytes:
    """Bytes of ``{"model": state_dict, "training": [bool per submodule], "requires_grad":
    [bool per parameter], "strategy": tree, "extra": tree}``: the weights and also the modes a
    strategy may have set (frozen parameters, submodules in eval mode), which a state dict
    leaves out.

    Raises :class:`ObliviateError` when the strategy holds something that cannot be stored
    safely (named by its attribute path)."""
    names: dict[int, str] = {}
    for n, t in [*model.named_parameters(), *model.named_buffers()]:
        names.setdefault(id(t), n)
    enc = _Encoder(names, _model_classes(model))
    tree = {
        "model": OrderedDict((k, v.detach().contiguous()) for k, v in model.state_dict().items()),
        "training": [bool(m.training) for m in model.modules()],
        "requires_grad": [bool(p.requires_grad) for p in model.parameters()],
        "strategy": enc.tree(strategy, "strategy"),
        "extra": enc.tree(extra or {}, "extra"),
    }
    buf = io.BytesIO()
    torch.save(tree, buf)
    return buf.getvalue()


def decode(data: bytes, model: nn.Module) -> tuple[object, dict[str, Any]]:
    """Load ``data`` into ``model`` (its weights, the train/eval mode of every submodule and
    ``requires_grad`` of every parameter) and return the strategy
    and the extra dict. ``model`` must be built as the encoded one was (same class and shapes)."""
    tree = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    model.load_state_dict(tree["model"])
    for m, mode in zip(model.modules(), tree["training"], strict=True):
        m.training = mode
    for p, flag in zip(model.parameters(), tree["requires_grad"], strict=True):
        p.requires_grad_(flag)
    params = dict([*model.named_parameters(), *model.named_buffers()])
    dec = _Decoder(params, _model_classes(model))
    strategy = dec.value(tree["strategy"])
    extra = dec.value(tree["extra"])
    return strategy, extra


class _Encoder:
    def __init__(self, names: dict[int, str], model_classes: set[str]) -> None:
        self.names = names
        self.model_classes = model_classes
        self.seen: dict[int, int] = {}
        self.keep: list[object] = []  # keeps encoded objects alive so ids stay unique

    def tree(self, obj: object, where: str) -> Any:
        if isinstance(obj, np.generic):  # before the primitives: np.float64 is a float
            return ["npscalar", str(obj.dtype), obj.item()]
        if obj is None or type(obj) in (bool, int, float, str):
            return obj
        if isinstance(obj, torch.Tensor):
            if id(obj) in self.names:
                return ["param", self.names[id(obj)]]
            if obj.grad_fn is not None:
                obj = obj.detach()
            if type(obj) is not torch.Tensor and not isinstance(obj, nn.Parameter):
                raise ObliviateError(
                    f"{where} is a {type(obj).__name__} (a tensor subclass) that a sharded "
                    "continual checkpoint cannot store"
                )
            return obj
        if isinstance(obj, np.ndarray):
            return ["ndarray", torch.from_numpy(np.ascontiguousarray(obj).copy())]
        if isinstance(obj, torch.dtype):
            return ["dtype", str(obj).removeprefix("torch.")]
        if isinstance(obj, torch.device):
            return ["device", str(obj)]
        key = id(obj)
        if key in self.seen:
            return ["ref", self.seen[key]]
        self.seen[key] = len(self.seen)
        self.keep.append(obj)
        if isinstance(obj, torch.Generator):
            return ["generator", obj.get_state()]
        if isinstance(obj, list):
            return ["list", [self.tree(v, f"{where}[{i}]") for i, v in enumerate(obj)]]
        if isinstance(obj, tuple) and type(obj) is tuple:
            return ["tuple", [self.tree(v, f"{where}[{i}]") for i, v in enumerate(obj)]]
        if isinstance(obj, (set, frozenset)):
            try:
                items = sorted(obj)
            except TypeError:
                raise ObliviateError(
                    f"{where} is a set of unorderable items; a sharded continual checkpoint "
                    "needs a deterministic order"
                ) from None
            return ["set", [self.tree(v, f"{where}{{}}") for v in items]]
        if isinstance(obj, dict) and type(obj) in (dict, OrderedDict):
            kind = "odict" if type(obj) is OrderedDict else "dict"
            return [
                kind,
                [
                    [self.tree(k, f"{where}.key"), self.tree(v, f"{where}[{k!r}]")]
                    for k, v in obj.items()
                ],
            ]
        cls = type(obj)
        path = _class_path(cls)
        if not (cls.__module__.startswith(_ALLOWED_PREFIXES) or path in self.model_classes):
            raise ObliviateError(
                f"{where} is a {path} object, which a sharded continual checkpoint cannot store "
                "safely (allowed: tensors, numbers, containers, obliviate and torch.nn objects)"
            )
        state = obj.__getstate__() if _own_getstate(cls) else vars(obj)
        if not isinstance(state, dict):
            raise ObliviateError(f"{where} ({path}) has a non-dict state; it cannot be stored")
        return ["object", path, self.tree(dict(state), f"{where}")]


def _own_getstate(cls: type) -> bool:
    return cls.__getstate__ is not object.__getstate__


class _Decoder:
    def __init__(self, params: dict[str, torch.Tensor], model_classes: set[str]) -> None:
        self.params = params
        self.model_classes = model_classes
        self.objects: list[object] = []

    def _register(self, obj: object) -> int:
        self.objects.append(obj)
        return len(self.objects) - 1

    def value(self, node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str, torch.Tensor)):
            return node
        kind = node[0]
        if kind == "param":
            return self.params[node[1]]
        if kind == "ndarray":
            return node[1].numpy()
        if kind == "npscalar":
            return np.dtype(node[1]).type(node[2])
        if kind == "dtype":
            return getattr(torch, node[1])
        if kind == "device":
            return torch.device(node[1])
        if kind == "ref":
            return self.objects[node[1]]
        if kind == "generator":
            gen = torch.Generator()
            self._register(gen)
            gen.set_state(node[1])
            return gen
        if kind == "list":
            out: list[Any] = []
            self._register(out)
            out.extend(self.value(v) for v in node[1])
            return out
        if kind == "tuple":
            slot = self._register(None)
            tup = tuple(self.value(v) for v in node[1])
            self.objects[slot] = tup
            return tup
        if kind == "set":
            s: set[Any] = set()
            self._register(s)
            s.update(self.value(v) for v in node[1])
            return s
        if kind in ("dict", "odict"):
            d: dict[Any, Any] = OrderedDict() if kind == "odict" else {}
            self._register(d)
            for k, v in node[1]:
                d[self.value(k)] = self.value(v)
            return d
        if kind == "object":
            cls = self._resolve(node[1])
            obj = cls.__new__(cls)
            slot = self._register(obj)
            state = self.value(node[2])
            if hasattr(cls, "__setstate__") and _own_setstate(cls):
                obj.__setstate__(state)
            else:
                obj.__dict__.update(state)
            self.objects[slot] = obj
            return obj
        raise ObliviateError(f"unknown node kind {kind!r} in a sharded continual checkpoint")

    def _resolve(self, path: str) -> Any:
        module, _, qual = path.partition(":")
        if not (module.startswith(_ALLOWED_PREFIXES) or path in self.model_classes):
            raise ObliviateError(
                f"a sharded continual checkpoint names class {path}, which is not allowed; "
                "the checkpoint was not written by obliviate"
            )
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, type):
            raise ObliviateError(f"{path} in a sharded continual checkpoint is not a class")
        return obj


def _own_setstate(cls: type) -> bool:
    setstate = getattr(cls, "__setstate__", None)
    return setstate is not None and setstate is not getattr(object, "__setstate__", None)
