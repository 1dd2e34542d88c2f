"""Benchmark spec files (TOML): a grid of runs, validated with the offending line named.

A spec file holds optional top-level settings and any number of grid blocks of three kinds::

    name = "smoke"                 # optional label
    description = "..."            # optional
    seeds = [0, 1, 2]              # default seeds of every block

    [[learn]]                      # continual learning (obliviate.experiments.run_learn)
    datasets = ["digits"]
    scenarios = ["class-incremental"]
    strategies = ["naive", "replay"]
    n_experiences = 5              # scalar or list (a grid axis)
    n_epochs = [1, 2]              # every training key: scalar or list
    eval_every = 10                # continual evaluation every k steps (optional)
    [learn.params.replay]          # hyperparameters of one strategy; a list is a grid axis
    memory_size = [100, 200]

    [[forget]]                     # approximate unlearning (obliviate.unlearning.run.run_forget)
    datasets = ["digits"]
    forgets = ["class:3", "random:100"]
    methods = ["finetune", "ssd"]
    quality = 0                    # N models for the forgetting-quality score (0 = off)
    relearn_cap = 200              # cap of the relearn attack (steps)

    [[events]]                     # example forgetting events (Toneva et al.), as `obliviate events`
    datasets = ["digits"]
    n_epochs = 20

    [[sharded]]                    # exact sharded unlearning (obliviate.sharded.run_sharded)
    datasets = ["digits"]
    n_shards = [1, 5]
    n_slices = [1, 4]
    graphs = ["none", "ring:1"]
    n_deletions = 3                # single-sample deletions timed per run

Every block also accepts ``seeds`` and the training keys ``model``, ``hidden``, ``n_epochs``,
``batch_size``, ``lr``, ``optimizer``, ``momentum``, ``weight_decay`` and ``limit`` (first
``limit`` training rows). A list value is a grid axis; to pass a list-valued hyperparameter
(``hidden``) as one value, wrap it: ``hidden = [[64, 64]]``.

:func:`load_spec` returns the expanded grid: a list of :class:`Run`, each a resolved,
JSON-serialisable dict plus its key (a hash of the dict) — the key is how the runner recognises
finished runs. Unknown keys, wrong types, unknown names (datasets, scenarios, strategies,
unlearners) and bad hyperparameters are :class:`~obliviate.errors.ObliviateError` naming the key
and its line.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate.errors import ObliviateError

KINDS = ("learn", "forget", "sharded", "events")

# key -> (allowed scalar types, may be a list that forms a grid axis)
_INT, _FLOAT, _STR = (int,), (int, float), (str,)
_TRAIN_KEYS: dict[str, tuple[tuple[type, ...], bool]] = {
    "model": (_STR, True),
    "hidden": ((list, int), True),
    "n_epochs": (_INT, True),
    "batch_size": (_INT, True),
    "lr": (_FLOAT, True),
    "optimizer": (_STR, True),
    "momentum": (_FLOAT, True),
    "weight_decay": (_FLOAT, True),
    "limit": (_INT, True),
    "seeds": (_INT, True),
    "datasets": (_STR, True),
}
_BLOCK_KEYS: dict[str, dict[str, tuple[tuple[type, ...], bool]]] = {
    "learn": {
        **_TRAIN_KEYS,
        "scenarios": (_STR, True),
        "strategies": (_STR, True),
        "n_experiences": (_INT, True),
        "eval_every": (_INT, False),
        "params": ((dict,), False),
    },
    "forget": {
        **_TRAIN_KEYS,
        "forgets": (_STR, True),
        "methods": (_STR, True),
        "quality": (_INT, False),
        "relearn_cap": (_INT, False),
        "params": ((dict,), False),
    },
    "sharded": {
        **_TRAIN_KEYS,
        "n_shards": (_INT, True),
        "n_slices": (_INT, True),
        "graphs": (_STR, True),
        "aggregation": (_STR, False),
        "n_deletions": (_INT, False),
    },
    "events": {**_TRAIN_KEYS},
}
_REQUIRED = {
    "learn": ("datasets", "scenarios", "strategies"),
    "forget": ("datasets", "forgets", "methods"),
    "sharded": ("datasets", "n_shards"),
    "events": ("datasets",),
}
# plural spec key -> singular key of the resolved run
_SINGULAR = {
    "datasets": "dataset",
    "scenarios": "scenario",
    "strategies": "strategy",
    "forgets": "forget",
    "methods": "method",
    "seeds": "seed",
    "graphs": "graph",
}
_TOP_KEYS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": (_STR, False),
    "description": (_STR, False),
    "seeds": (_INT, True),
}


@dataclass(frozen=True)
class Run:
    """One point of the grid: ``spec`` (resolved, JSON-able) and ``key`` (its hash)."""

    spec: dict[str, Any]
    key: str

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])

    @property
    def group(self) -> str | None:
        """Runs of one group share cached models (an unlearning run's original and oracle):
        the runner finishes one run of a group before starting the others."""
        if self.kind != "forget":
            return None
        shared = {k: v for k, v in self.spec.items() if k not in ("method", "params", "quality")}
        return run_key(shared)

    def label(self) -> str:
        """A short human-readable name: what ran, on what, with which seed."""
        s = self.spec
        params = ",".join(f"{k}={v}" for k, v in sorted(s.get("params", {}).items()))
        what = {
            "learn": lambda: (
                f"{s['strategy']}{'(' + params + ')' if params else ''} {s['dataset']}/{s['scenario']}"
            ),
            "forget": lambda: (
                f"{s['method']}{'(' + params + ')' if params else ''} {s['dataset']}/{s['forget']}"
            ),
            "sharded": lambda: (
                f"S={s['n_shards']} R={s.get('n_slices', 1)} {s.get('graph', 'none')} {s['dataset']}"
            ),
            "events": lambda: f"{s['dataset']}",
        }[self.kind]()
        return f"{self.kind} {what} seed={s['seed']}"


def run_key(spec: dict[str, Any]) -> str:
    """The hash that names a run: sha256 of the canonical JSON of its resolved spec (16 hex)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- line numbers ----------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEYLINE = re.compile(
    r"^\s*((?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*'))*)\s*="
)


def _split_dotted(text: str) -> list[str]:
    parts = re.findall(r"\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-]+", text)
    return [p.strip("\"'") for p in parts]


def key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """Map each key path (array-of-table entries indexed, e.g. ``("learn", 0, "lr")``) to the
    1-based line it is written on. Tables map to their header's line."""
    lines: dict[tuple[Any, ...], int] = {}
    counts: dict[tuple[Any, ...], int] = {}
    current: tuple[Any, ...] = ()
    depth = 0  # open brackets of a multi-line value

    def resolve(parts: list[str]) -> tuple[Any, ...]:
        # walk the dotted header; an array-of-tables prefix refers to its latest entry
        out: tuple[Any, ...] = ()
        for p in parts:
            out = out + (p,)
            if out in counts:
                out = out + (counts[out] - 1,)
        return out

    for n, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'", '""', raw)  # blank out strings
        line = line.split("#", 1)[0]
        if depth == 0:
            m = _HEADER.match(raw)
            if m and "=" not in raw.split("#", 1)[0].split("]")[0]:
                parts = _split_dotted(m.group(2))
                if m.group(1) == "[[":
                    base = resolve(parts[:-1]) + (parts[-1],)
                    counts[base] = counts.get(base, 0) + 1
                    current = base + (counts[base] - 1,)
                    lines.setdefault(base, n)
                else:
                    current = resolve(parts)
                lines.setdefault(current, n)
                continue
            m = _KEYLINE.match(raw)
            if m:
                path = current
                for p in _split_dotted(m.group(1)):
                    path = path + (p,)
                    lines.setdefault(path, n)
        depth += line.count("[") + line.count("{") - line.count("]") - line.count("}")
        depth = max(depth, 0)
    return lines


class _Where:
    """Names a key and its line in error messages."""

    def __init__(self, source: str, lines: dict[tuple[Any, ...], int]) -> None:
        self.source = source
        self.lines = lines

    def __call__(self, path: tuple[Any, ...]) -> str:
        shown = ".".join(str(p) for p in path if not isinstance(p, int))
        for k in range(len(path), 0, -1):
            if path[:k] in self.lines:
                return f"{self.source}:{self.lines[path[:k]]}: {shown}"
        return f"{self.source}: {shown}"


# ---- validation ------------------------------------------------------------------------------


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", dict: "a table", list: "a list"}
    if types == _FLOAT:
        return "a number"
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_value(
    where: _Where, path: tuple[Any, ...], value: Any, types: tuple[type, ...], axis: bool
) -> list[Any]:
    """The values of one key as a list (a scalar is a one-value axis); wrong types raise."""

    def ok(v: Any) -> bool:
        if isinstance(v, bool):
            return bool in types
        if list in types and isinstance(v, list):  # e.g. hidden = [64, 64]
            return all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        return isinstance(v, tuple(t for t in types if t is not list))

    if path[-1] == "hidden":
        # hidden = [64, 64] is one value; hidden = [[64], [64, 64]] is an axis
        values = (
            value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
        )
        for v in values:
            if not (
                isinstance(v, list)
                and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            ):
                raise ObliviateError(
                    f"{where(path)} must be a list of integers (layer widths), got {v!r}"
                )
        return values
    values = value if (axis and isinstance(value, list)) else [value]
    if axis and isinstance(value, list) and not value:
        raise ObliviateError(f"{where(path)} is an empty list; give at least one value")
    for v in values:
        if not ok(v):
            raise ObliviateError(
                f"{where(path)} must be {_type_name(types)}{' or a list of them' if axis else ''}, got {v!r}"
            )
    return values


def _check_names(
    where: _Where, path: tuple[Any, ...], values: list[Any], valid: list[str], what: str
) -> None:
    for v in values:
        name = v.split(":", 1)[0] if what == "graph" else v
        if what == "dataset" and v.startswith("npz:"):
            continue
        if name not in valid:
            raise ObliviateError(f"{where(path)}: unknown {what} {v!r}; valid: {', '.join(valid)}")


def _param_grid(
    where: _Where, path: tuple[Any, ...], params: Any, cls: type | None, owner: str
) -> list[dict[str, Any]]:
    """Expand a ``params.<method>`` table into hyperparameter dicts (lists are axes)."""
    if not isinstance(params, dict):
        raise ObliviateError(f"{where(path)} must be a table of hyperparameters, got {params!r}")
    valid: list[str] | None = None
    if cls is not None:
        from obliviate._hyper import param_names

        valid = param_names(cls)
    axes: list[list[tuple[str, Any]]] = []
    for name, value in params.items():
        if valid is not None and name not in valid:
            raise ObliviateError(
                f"{where(path + (name,))}: {owner} has no parameter {name!r}; valid: {', '.join(valid) or '(none)'}"
            )
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ObliviateError(
                f"{where(path + (name,))} is an empty list; give at least one value"
            )
        axes.append([(name, v) for v in values])
    grid = [dict(combo) for combo in itertools.product(*axes)]
    if cls is not None:
        for combo in grid:
            try:
                cls(**combo)
            except ObliviateError as exc:
                raise ObliviateError(f"{where(path)}: {exc}") from None
            except TypeError as exc:
                raise ObliviateError(f"{where(path)}: {owner}: {exc}") from None
    return grid


def _method_class(kind: str, name: str) -> type | None:
    """The class registered under ``name`` (strategy or unlearner), or None when unknown."""
    if kind == "learn":
        from obliviate.continual import STRATEGIES, strategy_class

        return strategy_class(name) if name in STRATEGIES else None
    from obliviate.unlearning import UNLEARNERS, unlearner_class

    return unlearner_class(name) if name in UNLEARNERS else None


def _valid_names(kind: str) -> dict[str, list[str]]:
    from obliviate.data.datasets import DATASETS
    from obliviate.data.scenarios import SCENARIOS

    names: dict[str, list[str]] = {"datasets": list(DATASETS), "scenarios": list(SCENARIOS)}
    if kind == "learn":
        from obliviate.continual import STRATEGIES

        names["strategies"] = sorted(STRATEGIES)
    if kind == "forget":
        from obliviate.unlearning import UNLEARNERS

        names["methods"] = sorted(UNLEARNERS)
    if kind == "sharded":
        from obliviate.sharded.graph import GRAPH_KINDS

        names["graphs"] = list(GRAPH_KINDS)
    return names


def _expand_block(
    kind: str, index: int, block: Any, top_seeds: list[int], where: _Where, *, check_methods: bool
) -> list[dict[str, Any]]:
    path0: tuple[Any, ...] = (kind, index)
    if not isinstance(block, dict):
        raise ObliviateError(f"{where(path0)} must be a table ([[{kind}]])")
    schema = _BLOCK_KEYS[kind]
    for key in block:
        if key not in schema:
            raise ObliviateError(
                f"{where(path0 + (key,))}: unknown key {key!r} in [[{kind}]]; valid: {', '.join(schema)}"
            )
    for key in _REQUIRED[kind]:
        if key not in block:
            raise ObliviateError(
                f"{where(path0)}: [[{kind}]] block {index + 1} lacks the required key {key!r}"
            )
    axes: dict[str, list[Any]] = {}
    for key, (types, axis) in schema.items():
        if key == "params" or key not in block:
            continue
        axes[key] = _check_value(where, path0 + (key,), block[key], types, axis)
    if "seeds" not in axes:
        if not top_seeds:
            raise ObliviateError(
                f"{where(path0)}: no seeds; set seeds = [0, ...] at the top or in the block"
            )
        axes["seeds"] = list(top_seeds)
    names = _valid_names(kind)
    for key, valid in names.items():
        if key in axes:
            _check_names(
                where,
                path0 + (key,),
                axes[key],
                valid,
                key.rstrip("s") if key != "strategies" else "strategy",
            )
    for key in ("n_shards", "n_slices", "n_experiences", "n_epochs", "batch_size", "limit"):
        for v in axes.get(key, []):
            if v < (0 if key in ("n_epochs",) else 1):
                raise ObliviateError(
                    f"{where(path0 + (key,))} must be >= {0 if key == 'n_epochs' else 1}, got {v}"
                )
    for v in axes.get("forgets", []):
        if not re.fullmatch(r"(class:\d+|random:\d+(\.\d+)?%?|[a-z_]+:.+)", v):
            raise ObliviateError(
                f"{where(path0 + ('forgets',))}: bad forget request {v!r}; use class:C or random:K"
            )

    # per-method hyperparameter grids
    method_key = {"learn": "strategies", "forget": "methods"}.get(kind)
    params = block.get("params", {})
    if not isinstance(params, dict):
        raise ObliviateError(f"{where(path0 + ('params',))} must be a table of method tables")
    method_grids: dict[str, list[dict[str, Any]]] = {}
    if method_key is None:
        if params:
            raise ObliviateError(f"{where(path0 + ('params',))}: [[{kind}]] takes no params")
    else:
        for name in params:
            if name not in axes[method_key]:
                raise ObliviateError(
                    f"{where(path0 + ('params', name))}: params for {name!r}, which is not in {method_key} "
                    f"({', '.join(axes[method_key])})"
                )
        for name in axes[method_key]:
            cls = _method_class(kind, name) if check_methods else None
            method_grids[name] = _param_grid(
                where, path0 + ("params", name), params.get(name, {}), cls, name
            )

    # the grid, in a stable order: data axes outermost, seeds innermost
    plain = [k for k in axes if k not in ("seeds", method_key)]
    runs: list[dict[str, Any]] = []
    for combo in itertools.product(*(axes[k] for k in plain)):
        base = {"kind": kind, **{_SINGULAR.get(k, k): v for k, v in zip(plain, combo, strict=True)}}
        for key in ("eval_every", "quality", "relearn_cap", "aggregation", "n_deletions"):
            if key in base and base[key] is None:
                del base[key]
        methods = axes[method_key] if method_key else [None]
        for method in methods:
            for hp in method_grids.get(method, [{}]) if method else [{}]:
                for seed in axes["seeds"]:
                    run = dict(base)
                    if method_key:
                        run[_SINGULAR[method_key]] = method
                        run["params"] = hp
                    run["seed"] = seed
                    runs.append(run)
    return runs


def parse_spec(
    text: str, source: str = "<spec>", *, check_methods: bool = True
) -> tuple[dict[str, Any], list[Run]]:
    """Parse spec text: ``(header, runs)``; errors name ``source``, the key and its line.

    ``check_methods`` constructs every strategy/unlearner with its hyperparameters to validate
    them (imports torch); the names are checked either way.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)", msg)
        if m:
            msg = f"{m.group(1)}: not valid TOML: {msg[: m.start()]} (column {m.group(2)})"
        else:
            msg = f" not valid TOML: {msg}"
        raise ObliviateError(f"{source}:{msg}") from None
    where = _Where(source, key_lines(text))
    header: dict[str, Any] = {}
    for key, value in data.items():
        if key in KINDS:
            if not isinstance(value, list):
                raise ObliviateError(
                    f"{where((key,))}: write the {key} grid as an array of tables: [[{key}]]"
                )
            continue
        if key not in _TOP_KEYS:
            valid = ", ".join(list(_TOP_KEYS) + [f"[[{k}]]" for k in KINDS])
            raise ObliviateError(f"{where((key,))}: unknown key {key!r}; valid: {valid}")
        types, axis = _TOP_KEYS[key]
        values = _check_value(where, (key,), value, types, axis)
        header[key] = values if axis else values[0]
    if not any(k in data for k in KINDS):
        raise ObliviateError(
            f"{source}: no runs; add at least one [[learn]], [[forget]], [[sharded]] or [[events]] block"
        )
    specs: list[dict[str, Any]] = []
    for kind in KINDS:
        for i, block in enumerate(data.get(kind, [])):
            specs.extend(
                _expand_block(
                    kind, i, block, header.get("seeds", []), where, check_methods=check_methods
                )
            )
    runs: list[Run] = []
    seen: set[str] = set()
    for spec in specs:
        key = run_key(spec)
        if key not in seen:  # the same point listed twice runs once
            seen.add(key)
            runs.append(Run(spec, key))
    return header, runs


def load_spec(path: str | Path, *, check_methods: bool = True) -> tuple[dict[str, Any], list[Run]]:
    """Read and expand a spec file (see :func:`parse_spec`)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ObliviateError(f"cannot read spec file {str(p)!r}: {exc.strerror or exc}") from None
    return parse_spec(text, str(p), check_methods=check_methods)


__all__ = ["KINDS", "Run", "key_lines", "load_spec", "parse_spec", "run_key"]
