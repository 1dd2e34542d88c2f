"""Experiments: one module per run kind, one registry of kinds, one table of recipes.

Every surface that runs something (``obliviate learn|forget|events``, spec files run by
``obliviate bench``, ``obliviate report`` and ``compare``, the demo) reads the kinds from
:data:`KINDS`, so they cannot disagree about what a kind accepts or shows.

The kind contract
-----------------
A kind is one module ``obliviate.experiments.<kind>`` with:

``Spec``             a frozen dataclass (``LearnSpec``, ``ForgetSpec``, ...) whose fields are
                     declared with :func:`obliviate.experiments._spec.option`: a type a spec file
                     can write (``int``, ``float``, ``str``, ``bool``, ``tuple[int, ...]``, a
                     mapping; each optionally ``| None``), a ``check``, an optional plural
                     ``alias`` and ``required``; ``Spec.from_dict(d)`` builds one (unknown keys
                     raise) and ``spec.to_dict()`` gives it back JSON-able. Every field is a
                     key of the kind's ``[[<kind>]]`` spec-file block (a list is a grid axis).
``run(spec) -> dict``  runs it; the result is JSON-able (``spec`` and ``provenance`` included).
``SUMMARY_COLUMNS``  ``((dotted result key, column name), ...)``: what report and compare show.
``METHOD_KEYS``      the spec keys that name what is compared (seeds are summarised together).
``METHOD_FIELD``     the field naming a registered method whose hyperparameters a spec file
                     gives per name in ``[<kind>.params.<name>]`` (``None``: no such field).
``SHARED_MODELS_IGNORE``  grid points equal but for these keys share trained models (the runner
                     finishes one before the others); ``None``: nothing shared.
``label(run) -> str``  a short name of a grid point.

Adding a kind is that module plus one line in :data:`KINDS`. Modules are imported lazily (by
:func:`kind`), so importing this package stays light (``obliviate --help`` imports no torch).

Datasets and recipes: :mod:`obliviate.recipes` holds every default recipe;
:func:`register_dataset` adds a dataset (loader + recipe) in one call.

Moved here (issue 9; the old paths are gone): ``obliviate.unlearning.run`` ->
:mod:`obliviate.experiments.forget` (``ForgetSpec``, ``run_forget``, ``prepare``,
``default_recipe``); ``obliviate.sharded.run`` / ``obliviate.sharded.run_sharded`` ->
:mod:`obliviate.experiments.sharded` (``RUN_KEYS`` became the ``ShardedSpec`` dataclass);
``obliviate.experiments`` (a module) -> :mod:`obliviate.experiments.learn` (``LearnSpec``,
``run_learn``, ``aggregate`` and ``RECIPES`` stay importable from this package).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from obliviate.errors import ObliviateError

KINDS: dict[str, str] = {
    "learn": "obliviate.experiments.learn",
    "forget": "obliviate.experiments.forget",
    "sharded": "obliviate.experiments.sharded",
    "events": "obliviate.experiments.events",
    "llm": "obliviate.experiments.llm",
    "lifecycle": "obliviate.experiments.lifecycle",
    "continual_forget": "obliviate.experiments.continual_forget",
}
"""Run kind -> the module that implements it (see the kind contract above)."""


def kind(name: str) -> ModuleType:
    """The module of run kind ``name``; unknown names raise naming the valid ones."""
    if name not in KINDS:
        raise ObliviateError(f"unknown run kind {name!r}; valid: {', '.join(KINDS)}")
    return importlib.import_module(KINDS[name])


def run(name: str, spec: Any) -> dict[str, Any]:
    """Run a spec of kind ``name`` (a spec object or a dict of its fields)."""
    module = kind(name)
    if not isinstance(spec, module.Spec):
        spec = module.Spec.from_dict(spec)
    return module.run(spec)


# public names kept from the time this package was one module, and the kinds' entry points;
# resolved lazily so that `import obliviate.experiments` stays light
_ALIASES: dict[str, tuple[str, str]] = {
    "LearnSpec": ("obliviate.experiments.learn", "LearnSpec"),
    "LearnRun": ("obliviate.experiments.learn", "LearnRun"),
    "RESULT_KEYS": ("obliviate.experiments.learn", "RESULT_KEYS"),
    "METRIC_KEYS": ("obliviate.experiments.learn", "METRIC_KEYS"),
    "SINGLE_PASS_SCENARIOS": ("obliviate.experiments.learn", "SINGLE_PASS_SCENARIOS"),
    "aggregate": ("obliviate.experiments.learn", "aggregate"),
    "result_from_run": ("obliviate.experiments.learn", "result_from_run"),
    "run_learn": ("obliviate.experiments.learn", "run"),
    "ForgetSpec": ("obliviate.experiments.forget", "ForgetSpec"),
    "run_forget": ("obliviate.experiments.forget", "run"),
    "EventsSpec": ("obliviate.experiments.events", "EventsSpec"),
    "run_events": ("obliviate.experiments.events", "run"),
    "ShardedSpec": ("obliviate.experiments.sharded", "ShardedSpec"),
    "run_sharded": ("obliviate.experiments.sharded", "run"),
    "LifecycleSpec": ("obliviate.experiments.lifecycle", "LifecycleSpec"),
    "run_lifecycle": ("obliviate.experiments.lifecycle", "run"),
    "ContinualForgetSpec": ("obliviate.experiments.continual_forget", "ContinualForgetSpec"),
    "run_continual_forget": ("obliviate.experiments.continual_forget", "run"),
    "RECIPES": ("obliviate.recipes", "RECIPES"),
    "register_dataset": ("obliviate.recipes", "register_dataset"),
}


def __getattr__(name: str) -> Any:
    if name in _ALIASES:
        module, attr = _ALIASES[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'obliviate.experiments' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_ALIASES])


__all__ = ["KINDS", "kind", "run", *_ALIASES]  # noqa: PLE0604
