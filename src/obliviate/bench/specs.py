"""Benchmark spec files (TOML): a grid of runs, generated from the run kinds' spec dataclasses.

A spec file holds optional top-level settings and any number of grid blocks, one per run kind
of :data:`obliviate.experiments.KINDS`::

    name = "smoke"                 # optional label
    description = "..."            # optional
    seeds = [0, 1, 2]              # default seeds of every block

    [[learn]]                      # continual learning (obliviate.experiments.learn.LearnSpec)
    datasets = ["digits"]          # = dataset; a list is a grid axis
    scenarios = ["class-incremental", "online"]
    strategies = ["naive", "replay"]
    n_experiences = 5              # scalar or list (a grid axis)
    n_epochs = [1, 2]
    eval_every = 10
    [learn.params.replay]          # hyperparameters of one strategy; a list is a grid axis
    memory_size = [100, 200]
    [learn.scenario_params.online] # keywords of one scenario builder; a list is a grid axis
    blurry = [0.0, 0.1]

    [[forget]]                     # approximate unlearning (ForgetSpec)
    datasets = ["digits"]
    forgets = ["class:3", "random:100"]
    methods = ["finetune", "ssd"]
    [forget.params.ssd]
    alpha = [5.0, 10.0]

    [[events]]                     # example forgetting events (EventsSpec), as `obliviate events`
    datasets = ["digits"]
    n_epochs = 20

    [[sharded]]                    # exact sharded unlearning (ShardedSpec)
    datasets = ["digits"]
    n_shards = [1, 5]
    n_slices = [1, 4]
    graphs = ["none", "ring:1"]

The keys of a block are the fields of the kind's spec dataclass, with the same names as in
Python and on the command line (``n_epochs``, ``batch_size``, ``scenario_params``, ...), so the
file format cannot drift from the API: a field added to a spec is a key here. Name fields may
also be written in the plural (``datasets``, ``scenarios``, ``strategies``, ``forgets``,
``methods``, ``graphs``, ``seeds``). A list value is a grid axis; a field that holds a list
(``hidden``) takes one list as one value and a list of lists as an axis:
``hidden = [[64], [64, 64]]``. A mapping field keyed by another field's names (``params`` by
the strategy or method, ``scenario_params`` by the scenario) is written per name, as above.

:func:`load_spec` returns the expanded grid: a list of :class:`Run`, each a JSON-serialisable
dict of the keys the file set (plus ``kind``, ``seed`` and the method's ``params``) and its key
(a hash of the dict): the key is how the runner recognises finished runs. Unknown keys, wrong
types, unknown names (datasets, scenarios, strategies, unlearners, graphs), bad values and bad
hyperparameters are :class:`~obliviate.errors.ObliviateError` naming the file, the key and its
line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import json
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate._hyper import param_names
from obliviate.continual import STRATEGIES, strategy_class
from obliviate.data import build_scenario
from obliviate.data.datasets import load_dataset
from obliviate.data.forget_sets import KINDS as SET_KINDS
from obliviate.data.forget_sets import EmptyForgetSetWarning, parse_ids, read_id_file
from obliviate.data.scenarios import SCENARIOS
from obliviate.errors import ObliviateError
from obliviate.experiments import KINDS
from obliviate.experiments import kind as kind_module
from obliviate.experiments._spec import FieldType, field_type, field_types
from obliviate.experiments._spec import seed as seed_check
from obliviate.experiments.continual_forget import parse_sequence
from obliviate.experiments.lifecycle import LifecycleSpec, build
from obliviate.sharded.config import check_fits
from obliviate.sharded.subjects import read_mapping
from obliviate.unlearning import UNLEARNERS, unlearner_class
from obliviate.unlearning.base import build_request

_TOP_KEYS = ("name", "description", "seeds")
_INT = FieldType("int", optional=False)


@dataclass(frozen=True)
class Run:
    """One point of the grid: ``spec`` (the grid point, JSON-able) and ``key`` (its hash)."""

    spec: dict[str, Any]
    key: str

    @property
    def kind(self) -> str:
        return str(self.spec["kind"])

    @property
    def group(self) -> str | None:
        """Runs of one group share trained models (an unlearning run's original and oracle):
        the runner finishes one run of a group before starting the others."""
        ignore = kind_module(self.kind).SHARED_MODELS_IGNORE
        if ignore is None:
            return None
        shared = {k: v for k, v in self.spec.items() if k not in ignore}
        return run_key(shared)

    def label(self) -> str:
        """A short human-readable name: what ran, on what, with which seed."""
        return f"{self.kind} {kind_module(self.kind).label(self.spec)} seed={self.spec['seed']}"


def run_key(spec: dict[str, Any]) -> str:
    """The hash that names a run: sha256 of the canonical JSON of its grid point (16 hex)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def distinct_labels(runs: list[Run]) -> list[str]:
    """:meth:`Run.label` of every run, with ``field=value`` appended for every field that
    differs between runs whose labels would otherwise be equal (``precision``, ``device``,
    a recipe field the kind's label leaves out, ...): no two different runs print the same."""
    labels = [r.label() for r in runs]
    groups: dict[str, list[int]] = {}
    for i, text in enumerate(labels):
        groups.setdefault(text, []).append(i)
    out = list(labels)
    for members in groups.values():
        if len(members) < 2:
            continue
        specs = [runs[i].spec for i in members]
        fields = sorted({k for sp in specs for k in sp})
        differ = [
            k
            for k in fields
            if len({json.dumps(sp.get(k), sort_keys=True, default=str) for sp in specs}) > 1
        ]
        for i in members:
            spec = runs[i].spec
            extra = " ".join(
                f"{k}=default"
                if k not in spec
                else f"{k}={spec[k]}"
                if isinstance(spec[k], str)
                else f"{k}={json.dumps(spec[k], sort_keys=True, default=str)}"
                for k in differ
            )
            out[i] = f"{labels[i]} {extra}" if extra else labels[i]
    return out


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


# ---- the schema of a kind, read off its spec dataclass ----------------------------------------


@dataclass(frozen=True)
class _Schema:
    kind: str
    cls: Any  # the kind's spec dataclass
    types: dict[str, Any]  # field -> FieldType
    checks: dict[str, Any]  # field -> check(name, value) or None
    alias: dict[str, str]  # written key (field name or plural alias) -> field
    required: tuple[str, ...]  # fields every block must set
    method_field: str | None
    per_name: dict[str, str]  # mapping field -> the field whose names key it


def schema(kind: str) -> _Schema:
    """What a ``[[kind]]`` block accepts, derived from the kind's spec dataclass."""

    mod = kind_module(kind)
    cls = mod.Spec
    types = field_types(cls)
    alias: dict[str, str] = {}
    checks: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        alias[f.name] = f.name
        if f.metadata.get("alias"):
            alias[f.metadata["alias"]] = f.name
        checks[f.name] = f.metadata.get("check")
        if f.metadata.get("required"):
            required.append(f.name)
    per_name = {}
    if getattr(mod, "METHOD_FIELD", None) and "params" in types:
        per_name["params"] = mod.METHOD_FIELD
    if "scenario_params" in types and "scenario" in types:
        per_name["scenario_params"] = "scenario"
    return _Schema(
        kind,
        cls,
        types,
        checks,
        alias,
        tuple(required),
        getattr(mod, "METHOD_FIELD", None),
        per_name,
    )


def _written(sch: _Schema, name: str, block: dict[str, Any]) -> str:
    """The key a block uses for field ``name`` (its plural alias if written so)."""
    for key, field in sch.alias.items():
        if field == name and key in block:
            return key
    return next((k for k, f in sch.alias.items() if f == name and k != name), name)


#: the most seeds one spec key may list: the cap of ``--seeds`` (docs/cli.md), so a spec
#: cannot start (or hang expanding) a grid of 200 000 seeds either
MAX_SEEDS = 10_000


def _seed_count(where: str, values: list[Any]) -> None:
    """At most :data:`MAX_SEEDS` seeds, each once (as ``--seeds``: a repeated seed would
    silently collapse into one run)."""
    if len(values) > MAX_SEEDS:
        raise ObliviateError(
            f"{where}: {len(values)} seeds; at most {MAX_SEEDS} per spec key (as --seeds)"
        )
    seen: set[Any] = set()
    for v in values:
        key = repr(v)
        if key in seen:
            raise ObliviateError(f"{where}: seed {v!r} appears twice; list each seed once")
        seen.add(key)


def _axis(where: _Where, path: tuple[Any, ...], value: Any, ftype: Any) -> list[Any]:
    """The values of one key as a list (a scalar is a one-value axis); wrong types raise."""
    if ftype.kind == "ints":
        nested = isinstance(value, list) and value and isinstance(value[0], list)
        values = value if nested else [value]
    else:
        values = value if isinstance(value, list) else [value]
    if isinstance(value, list) and not value:
        raise ObliviateError(f"{where(path)} is an empty list; give at least one value")
    for v in values:
        if not ftype.accepts(v) or v is None:
            raise ObliviateError(f"{where(path)} must be {ftype.noun} or a list of them, got {v!r}")
    return values


def _owner(sch: _Schema, table_field: str, name: str) -> Any:
    """The class or function whose keywords a per-name table sets (None: unknown name)."""
    if table_field == "params":
        if sch.kind == "learn":
            return strategy_class(name) if name in STRATEGIES else None

        return unlearner_class(name) if name in UNLEARNERS else None
    if table_field == "scenario_params":
        return SCENARIOS.get(name)
    return None


def _keywords(owner: Any) -> list[str]:
    if isinstance(owner, type):
        return list(param_names(owner))
    return [
        p.name
        for p in inspect.signature(owner).parameters.values()
        if p.kind is p.KEYWORD_ONLY and p.name not in ("n_experiences", "seed")
    ]


def _table_grid(
    where: _Where, path: tuple[Any, ...], table: Any, owner: Any, name: str, check: bool
) -> list[dict[str, Any]]:
    """Expand one ``<field>.<name>`` table into keyword dicts (lists are axes)."""
    if not isinstance(table, dict):
        raise ObliviateError(f"{where(path)} must be a table of hyperparameters, got {table!r}")
    valid = _keywords(owner) if (check and owner is not None) else None
    # a function's keywords (a scenario builder's) are checked against their annotations here;
    # a class's (strategy, unlearner) by constructing it below
    hints = (
        typing.get_type_hints(owner)
        if (check and owner is not None and not isinstance(owner, type))
        else {}
    )
    axes: list[list[tuple[str, Any]]] = []
    for key, value in table.items():
        if valid is not None and key not in valid:
            raise ObliviateError(
                f"{where(path + (key,))}: {name} has no parameter {key!r}; valid: {', '.join(valid) or '(none)'}"
            )
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ObliviateError(
                f"{where(path + (key,))} is an empty list; give at least one value"
            )
        if key in hints:
            try:
                ftype = field_type(hints[key], f"{name}.{key}")
            except TypeError:
                ftype = None
            for v in values:
                if ftype is not None and not ftype.accepts(v):
                    raise ObliviateError(
                        f"{where(path + (key,))} must be {ftype.noun} or a list of them, got {v!r}"
                    )
        axes.append([(key, v) for v in values])
    grid = [dict(combo) for combo in itertools.product(*axes)]
    if check and isinstance(owner, type):
        for combo in grid:
            try:
                owner(**combo)
            except ObliviateError as exc:
                raise ObliviateError(f"{where(path)}: {exc}") from None
            except TypeError as exc:
                raise ObliviateError(f"{where(path)}: {name}: {exc}") from None
    return grid


def _expand_block(
    kind: str,
    index: int,
    block: Any,
    top_seeds: list[int],
    where: _Where,
    *,
    check_methods: bool,
    data: _DataCheck | None = None,
) -> list[dict[str, Any]]:
    path0: tuple[Any, ...] = (kind, index)
    if not isinstance(block, dict):
        raise ObliviateError(f"{where(path0)} must be a table ([[{kind}]])")
    sch = schema(kind)
    written: dict[str, str] = {}  # field -> key as written
    for key in block:
        field = sch.alias.get(key)
        if field is None:
            valid = ", ".join(f.name for f in dataclasses.fields(sch.cls))
            raise ObliviateError(
                f"{where(path0 + (key,))}: unknown key {key!r} in [[{kind}]]; valid: {valid}"
            )
        if field in written:
            raise ObliviateError(
                f"{where(path0 + (key,))}: {key!r} and {written[field]!r} are the same key; write one"
            )
        written[field] = key
    for field in sch.required:
        if field not in written:
            raise ObliviateError(
                f"{where(path0)}: [[{kind}]] block {index + 1} lacks the required key "
                f"{_written(sch, field, block)!r}"
            )

    axes: dict[str, list[Any]] = {}
    for field, key in written.items():
        if field in sch.per_name or sch.types[field].kind == "table":
            continue
        path = path0 + (key,)
        values = _axis(where, path, block[key], sch.types[field])
        if field == "seed":
            _seed_count(where(path), values)
        check = sch.checks.get(field)
        if check is not None:
            for v in values:
                check(where(path), v)
        axes[field] = values
    if "seed" not in axes:
        if not top_seeds:
            raise ObliviateError(
                f"{where(path0)}: no seeds; set seeds = [0, ...] at the top or in the block"
            )
        axes["seed"] = list(top_seeds)

    # per-name tables: params per strategy / method, scenario_params per scenario
    tables: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for field, owner_field in sch.per_name.items():
        key = written.get(field, field)
        table = block.get(key, {})
        if not isinstance(table, dict):
            raise ObliviateError(f"{where(path0 + (key,))} must be a table of {owner_field} tables")
        names = axes.get(owner_field, [])
        for name in table:
            if name not in names:
                raise ObliviateError(
                    f"{where(path0 + (key, name))}: {key} for {name!r}, which is not in "
                    f"{written.get(owner_field, owner_field)} ({', '.join(map(str, names))})"
                )
        tables[field] = {
            name: _table_grid(
                where,
                path0 + (key, name),
                table[name],
                _owner(sch, field, name),
                name,
                check_methods or field != "params",
            )
            for name in table
        }
    for field in sch.types:
        if sch.types[field].kind == "table" and field not in sch.per_name and field in written:
            raise ObliviateError(f"{where(path0 + (written[field],))}: write it per name")

    # the grid, in a stable order: data axes outermost, the method and its params, then seeds
    method = sch.method_field
    plain = [f for f in axes if f not in ("seed", method)]
    runs: list[dict[str, Any]] = []
    for combo in itertools.product(*(axes[f] for f in plain)):
        base = {"kind": kind, **dict(zip(plain, combo, strict=True))}
        variants = [base]
        if "scenario_params" in tables and base.get("scenario") in tables["scenario_params"]:
            variants = [
                {**base, "scenario_params": sp}
                for sp in tables["scenario_params"][base["scenario"]]
            ]
        for variant in variants:
            for name in axes[method] if method else [None]:
                hps = tables.get("params", {}).get(str(name), [{}]) if method else [{}]
                for hp in hps:
                    for seed in axes["seed"]:
                        run = dict(variant)
                        if method:
                            run[method] = name
                            run["params"] = hp
                        run["seed"] = seed
                        runs.append(run)
    if check_methods:
        for run in runs:  # the spec's own cross-field checks (recipes, scenario keywords, ...)
            try:
                sch.cls.from_dict(run)
            except ObliviateError as exc:
                raise ObliviateError(f"{where(path0)}: {exc}") from None
    if data is not None:
        for run in runs:  # what the dataset decides (classes, sizes, ids), before any training
            field = data.check(run)
            if field is not None:
                raise ObliviateError(
                    f"{where(path0 + (_written(sch, field, block),))}: {data.error}"
                )
    return runs


# ---- what the dataset decides, checked before any training -----------------------------------

#: datasets loaded for the data checks: embedded, so loading them is cheap. Other datasets (IDX
#: files, npz files) get the checks that need no rows: the forget-set syntax and id files.
CHEAP_DATASETS = ("digits", "mnist1d", "synthetic")


def _loadable(dataset: str) -> bool:
    """Whether a spec-time data check loads ``dataset``: an embedded one, or a local
    ``npz:FILE`` (one file, read once)."""
    return dataset in CHEAP_DATASETS or dataset.startswith("npz:")


class _DataCheck:
    """Checks the values of a grid point that the dataset decides and no training needs: a
    forget set's classes, counts and ids against the training split (``forget``), a class
    sequence (``continual_forget``), a deletion schedule and the scenario (``lifecycle``), the
    scenario (``learn``). Datasets are loaded once per (name, data_dir, limit).

    :meth:`check` returns the field at fault (``error`` holds the message) or ``None``.
    """

    def __init__(self, data_dir: str | None) -> None:
        self.data_dir = data_dir
        self.error = ""
        self._data: dict[tuple[Any, ...], Any] = {}
        self._done: set[str] = set()

    def _load(self, run: dict[str, Any]) -> Any:

        where = run.get("data_dir") or self.data_dir
        split_seed = run.get("split_seed", 0)
        key = (run["dataset"], where, run.get("limit"), split_seed)
        if key not in self._data:
            self._data[key] = load_dataset(
                run["dataset"], data_dir=where, limit=run.get("limit"), split_seed=split_seed
            )
        return self._data[key]

    def check(self, run: dict[str, Any]) -> str | None:
        kind = run["kind"]
        checker = getattr(self, f"_{kind}", None)
        if checker is None:
            return None
        ignore = ("params", "method", "strategy", "method_params", "config", "quality")
        key = run_key({k: v for k, v in run.items() if k not in ignore})
        if key in self._done:  # the same data, forget set and seed: checked once
            return None
        try:
            if str(run.get("dataset", "")).startswith("npz:"):
                try:  # a local file: load it once through the normal loader
                    self._load(run)
                except ObliviateError as exc:
                    raise _Blame("dataset", str(exc)) from None
            field = checker(run)
        except _Blame as exc:
            self.error = " ".join(str(exc).split())
            return exc.field
        except ObliviateError as exc:
            self.error = " ".join(str(exc).split())
            return _DATA_FIELD[kind]
        self._done.add(key)
        return field

    def _forget(self, run: dict[str, Any]) -> None:
        import warnings

        spec = run["forget"]
        forget_syntax(spec)
        if not _loadable(run["dataset"]):
            return

        train, _ = self._load(run)
        with warnings.catch_warnings():  # an empty set is allowed; the run itself warns
            warnings.simplefilter("ignore", EmptyForgetSetWarning)
            build_request(train, spec, seed=run["seed"])

    def _continual_forget(self, run: dict[str, Any]) -> None:

        classes = parse_sequence(run["sequence"])
        if not _loadable(run["dataset"]):
            return
        train, _ = self._load(run)
        n = train.n_classes
        bad = [c for c in classes if c >= n]
        if bad:
            raise ObliviateError(
                f"sequence {run['sequence']!r}: class {bad[0]} is not a class of "
                f"{run['dataset']!r}; valid classes: 0..{n - 1}"
            )
        if len(classes) >= n:
            raise ObliviateError(
                f"sequence {run['sequence']!r} forgets all {n} classes of {run['dataset']!r}; "
                "leave at least one"
            )

    def _lifecycle(self, run: dict[str, Any]) -> str | None:
        if not _loadable(run["dataset"]):
            return None

        spec = LifecycleSpec.from_dict({**run, "data_dir": run.get("data_dir") or self.data_dir})
        build(spec)  # data, scenario and schedule, every request resolved to ids
        return None

    def _sharded(self, run: dict[str, Any]) -> str | None:
        if run.get("subjects") is not None:
            try:
                read_mapping(Path(run["subjects"]))
            except ObliviateError as exc:
                raise _Blame("subjects", str(exc)) from None
        if not _loadable(run["dataset"]):
            return None
        train, _ = self._load(run)
        excluded = run.get("exclude_ids")
        n_rows = len(train.ids) - len(set(excluded or ()))
        try:
            check_fits(n_rows, run["n_shards"], run.get("n_slices", 1), repr(run["dataset"]))
        except ObliviateError as exc:
            raise _Blame("n_shards", str(exc)) from None
        if excluded is None:
            return None
        import torch

        wanted = torch.as_tensor(list(excluded), dtype=torch.int64)
        unknown = wanted[~torch.isin(wanted, train.ids)]
        if unknown.numel():
            shown = ", ".join(map(str, unknown[:5].tolist()))
            raise _Blame(
                "exclude_ids",
                f"exclude_ids: {unknown.numel()} id(s) are not training ids of "
                f"{run['dataset']!r}: {shown}; give ids of the training split",
            )
        return None

    def _learn(self, run: dict[str, Any]) -> None:
        if not _loadable(run["dataset"]):
            return

        train, test = self._load(run)
        build_scenario(
            run.get("scenario", "class-incremental"),
            train,
            test,
            n_experiences=run.get("n_experiences", 5),
            seed=run["seed"],
            **run.get("scenario_params", {}),
        )


class _Blame(ObliviateError):
    """A data check's error that names the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


#: the field a data check of each kind blames
_DATA_FIELD = {
    "sharded": "dataset",
    "forget": "forget",
    "continual_forget": "sequence",
    "lifecycle": "schedule",
    "learn": "scenario",
}


def forget_syntax(spec: Any) -> None:
    """Check a forget-set spec without the dataset (see :mod:`obliviate.data.forget_sets`):
    a known kind and well-formed numbers; ``source:FILE`` is read (ids checked as integers),
    ``ids:...`` parsed. Raises :class:`ObliviateError` naming the value."""

    usage = "use random:K, random:P%, class:C, subclass:C:K, source:FILE or ids:1,2,3"
    if not isinstance(spec, str) or ":" not in spec:
        raise ObliviateError(f"forget spec {spec!r} is not understood; {usage}")
    kind, _, rest = spec.partition(":")
    kind = kind.strip().lower()
    rest = rest.strip()

    def count(text: str) -> None:
        if text.endswith("%"):
            try:
                pct = float(text[:-1])
            except ValueError:
                pct = -1.0
            if not 0.0 <= pct <= 100.0:
                raise ObliviateError(
                    f"forget spec {spec!r}: {text!r} is not a percentage in 0..100 like 10%"
                )
        elif not text.isdigit():
            raise ObliviateError(
                f"forget spec {spec!r}: count {text!r} is not an integer >= 0; {usage}"
            )

    def klass(text: str) -> None:
        if not text.strip().isdigit():
            raise ObliviateError(
                f"forget spec {spec!r}: class {text.strip()!r} is not an integer >= 0; {usage}"
            )

    if kind == "random":
        count(rest)
    elif kind == "class":
        for part in rest.split(","):
            klass(part)
    elif kind == "subclass":
        c, sep, k = rest.partition(":")
        if not sep:
            raise ObliviateError(f"forget spec {spec!r}: write subclass:C:K or subclass:C:P%")
        klass(c)
        count(k.strip())
    elif kind == "source":
        read_id_file(rest)
    elif kind == "ids":
        parse_ids(rest)
    else:
        raise ObliviateError(
            f"forget spec {spec!r}: unknown kind {kind!r}; valid: {', '.join(SET_KINDS)}"
        )


def parse_spec(
    text: str,
    source: str = "<spec>",
    *,
    check_methods: bool = True,
    check_data: bool = False,
    data_dir: str | None = None,
) -> tuple[dict[str, Any], list[Run]]:
    """Parse spec text: ``(header, runs)``; errors name ``source``, the key and its line.

    ``check_methods`` constructs every strategy/unlearner with its hyperparameters to validate
    them (imports torch); the names are checked either way. ``check_data`` also checks what the
    dataset decides without training (:class:`_DataCheck`: forget sets against the classes,
    sizes and ids of the training split, class sequences, lifecycle schedules, scenarios);
    ``data_dir`` is the runner's folder of dataset files.
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
        if key == "seeds":
            header[key] = _axis(where, (key,), value, _INT)
            _seed_count(where((key,)), header[key])
            for v in header[key]:
                seed_check(where((key,)), v)
        elif not isinstance(value, str):
            raise ObliviateError(f"{where((key,))} must be a string, got {value!r}")
        else:
            header[key] = value
    if not any(k in data for k in KINDS):
        blocks = ", ".join(f"[[{k}]]" for k in KINDS)
        raise ObliviateError(f"{source}: no runs; add at least one block of {blocks}")
    specs: list[dict[str, Any]] = []
    data_check = _DataCheck(data_dir) if check_data else None
    for kind in KINDS:
        for i, block in enumerate(data.get(kind, [])):
            specs.extend(
                _expand_block(
                    kind,
                    i,
                    block,
                    header.get("seeds", []),
                    where,
                    check_methods=check_methods,
                    data=data_check,
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


def load_spec(
    path: str | Path,
    *,
    check_methods: bool = True,
    check_data: bool = False,
    data_dir: str | None = None,
) -> tuple[dict[str, Any], list[Run]]:
    """Read and expand a spec file (see :func:`parse_spec`)."""
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not a UTF-8 text file"
        raise ObliviateError(f"cannot read spec file {str(p)!r}: {why}") from None
    return parse_spec(
        text, str(p), check_methods=check_methods, check_data=check_data, data_dir=data_dir
    )


__all__ = [
    "KINDS",
    "Run",
    "distinct_labels",
    "key_lines",
    "load_spec",
    "parse_spec",
    "run_key",
    "schema",
]
