"""Imports point down, and no import circle exists (issue 9, item 3).

Every module under ``src/obliviate`` is parsed with :mod:`ast`; every ``import`` of an obliviate
module is read, the ones inside functions and under ``if TYPE_CHECKING:`` included. A module
belongs to a *unit* (``obliviate.data.splits`` -> ``data``; top-level modules are their own unit,
the package root is ``obliviate``), and every unit to a layer. Layers, low to high::

    0  foundation   obliviate (root), errors, _hyper, _registry, _rng, _lifetime,
                    _forkserver_preload, io, provenance, _validation, parallel, _main_guard
    1  data
    2  models
    3  training     training, recipes (the default recipes), population (torch.func)
    4  metrics
    5  methods      continual, unlearning, sharded, llm   (siblings)
    6  testing
    7  experiments
    8  bench
    9  report
    10 serve
    11 client
    12 cli

Rules, each a test below:

- a module imports only from its own layer or lower ones;
- within the methods layer the four siblings do not import each other, except the pairs in
  ``SIBLING_IMPORTS`` (each with its reason); shared code belongs in a lower layer. Within the
  foundation layer, modules may import each other (cycles are still caught);
- no import circle between modules (imports under ``if TYPE_CHECKING:`` do not run and are left
  out of this one; importing a package's submodule is not counted as importing the package);
- obliviate imports inside functions only in ``cli/`` (the layer that keeps start-up fast by
  importing lazily) or where ``LOCAL_IMPORTS`` allows them, each with its reason. Lazy imports
  of third-party optional extras (ray, transformers, matplotlib, ...) are not restricted here.

Registries name their classes as ``"module:Class"`` strings resolved by
:func:`obliviate._registry.resolve`; those are not imports and are not checked.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "obliviate"

LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "obliviate",
        "errors",
        "_hyper",
        "_registry",
        "_rng",
        "_lifetime",
        "_forkserver_preload",
        "io",
        "provenance",
        "_validation",
        "parallel",
        "_main_guard",
    ),
    ("data",),
    ("models",),
    ("training", "recipes", "population"),
    ("metrics",),
    ("continual", "unlearning", "sharded", "llm"),
    ("testing",),
    ("experiments", "api"),
    ("bench",),
    ("report",),
    ("serve",),
    ("client",),
    ("cli",),
)
FOUNDATION = 0
METHODS = 5

SIBLING_IMPORTS: dict[tuple[str, str], str] = {
    ("unlearning", "continual"): "unlearners reuse the continual penalties (Fisher information)",
    ("llm", "sharded"): "LLM adapter shards run on the exact sharded engine and its ledger",
    ("sharded", "continual"): (
        "sharded continual learning: every shard learns its stream with a continual strategy"
    ),
}
"""(importer unit, imported unit) pairs allowed inside the methods layer, with the reason."""

_SERVE_ENGINE = (
    "the service loads the shard engine (torch) on first use so that `import obliviate.serve` "
    "stays light; owned by the service change, which may move it to module level"
)
_LLM_EXTRA = "the optional [llm] extra (transformers) loads only when an LLM run is asked for"
LOCAL_IMPORTS: dict[tuple[str, str], str] = {
    ("obliviate.serve", "obliviate.serve.app"): (
        "module __getattr__ (PEP 562): importing obliviate.serve must not need the optional "
        "[serve] extra (FastAPI, uvicorn)"
    ),
    ("obliviate.client", "obliviate.serve.signing"): (
        "verifying a signature needs `cryptography` (optional); the client works without it"
    ),
    ("obliviate.experiments.llm", "obliviate.llm.run"): _LLM_EXTRA,
    ("obliviate.experiments.llm", "obliviate.llm.methods"): _LLM_EXTRA,
    ("obliviate.serve.app", "obliviate.sharded"): _SERVE_ENGINE,
    ("obliviate.serve.app", "obliviate.sharded.ledger"): _SERVE_ENGINE,
    ("obliviate.serve.app", "obliviate.sharded.subjects"): _SERVE_ENGINE,
    ("obliviate.serve.app", "obliviate.sharded.receipts"): _SERVE_ENGINE,
    ("obliviate.serve.app", "obliviate.sharded.config"): _SERVE_ENGINE,
    ("obliviate.serve.queue", "obliviate.sharded.ledger"): _SERVE_ENGINE,
    ("obliviate.serve.worker", "obliviate.sharded"): _SERVE_ENGINE,
    ("obliviate.serve.worker", "obliviate.sharded.intake"): _SERVE_ENGINE,
    ("obliviate.serve.worker", "obliviate.serve.auth"): (
        "no circle; being moved to module level by the service change"
    ),
}
"""(importing module, imported module) pairs allowed inside functions outside ``cli/``, each with
its reason. Lazy imports for optional extras belong here; "being moved" entries are debts."""


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported obliviate module (a package means its __init__)
    line: int
    local: bool  # inside a function
    type_checking: bool  # under `if TYPE_CHECKING:`


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@lru_cache(maxsize=1)
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / ROOT).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _imports_of(module: str, path: Path) -> list[Import]:
    known = modules()
    out: list[Import] = []

    def visit(node: ast.AST, local: bool, type_checking: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            local = True
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, local, True)
            for child in node.orelse:
                visit(child, local, type_checking)
            return
        targets: list[str] = []
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(module, path.name == "__init__.py", node.level, node.module)
                if node.level
                else node.module or ""
            )
            for alias in node.names:  # `from pkg import sub` imports the submodule pkg.sub
                full = f"{base}.{alias.name}"
                targets.append(full if full in known else base)
        for target in targets:
            if target == ROOT or target.startswith(ROOT + "."):
                out.append(Import(module, target, line, local, type_checking))
        for child in ast.iter_child_nodes(node):
            visit(child, local, type_checking)

    visit(ast.parse(path.read_text(), filename=str(path)), False, False)
    return out


@lru_cache(maxsize=1)
def all_imports() -> tuple[Import, ...]:
    return tuple(i for m, p in modules().items() for i in _imports_of(m, p))


def unit(module: str) -> str:
    parts = module.split(".")
    return ROOT if len(parts) == 1 else parts[1]


def layer_of(u: str) -> int:
    for k, units in enumerate(LAYERS):
        if u in units:
            return k
    raise KeyError(u)


def _where(i: Import) -> str:
    return f"{modules()[i.module].relative_to(SRC.parent)}:{i.line} imports {i.target}"


# ---- the tests ------------------------------------------------------------------------------
def test_every_module_has_a_layer() -> None:
    unknown = sorted({unit(m) for m in modules()} - {u for units in LAYERS for u in units})
    assert not unknown, f"add these to LAYERS in tests/test_imports.py: {unknown}"


def test_no_upward_imports() -> None:
    bad = [
        f"{_where(i)} (layer {layer_of(unit(i.module))} -> {layer_of(unit(i.target))})"
        for i in all_imports()
        if layer_of(unit(i.target)) > layer_of(unit(i.module))
    ]
    assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


def test_method_packages_do_not_import_each_other() -> None:
    bad = [
        _where(i)
        for i in all_imports()
        if unit(i.module) != unit(i.target)
        and layer_of(unit(i.module)) == layer_of(unit(i.target)) == METHODS
        and (unit(i.module), unit(i.target)) not in SIBLING_IMPORTS
    ]
    assert not bad, (
        "method packages import each other (move the shared code to a lower layer, or add the "
        "pair to SIBLING_IMPORTS with a reason):\n" + "\n".join(bad)
    )


def test_function_local_imports_only_in_cli() -> None:
    bad = sorted(
        {
            _where(i)
            for i in all_imports()
            if i.local
            and unit(i.module) != "cli"
            and (i.module, i.target) not in LOCAL_IMPORTS
            and i.module != i.target
        }
    )
    assert not bad, (
        "obliviate imports inside functions outside cli/ (import at module level; an import "
        "that would close a circle means code sits in the wrong module):\n" + "\n".join(bad)
    )


def test_allow_lists_hold_no_stale_entries() -> None:
    """Every LOCAL_IMPORTS / SIBLING_IMPORTS entry still matches an import (remove it once fixed)."""
    local = {(i.module, i.target) for i in all_imports() if i.local}
    stale = sorted(set(LOCAL_IMPORTS) - local)
    siblings = {(unit(i.module), unit(i.target)) for i in all_imports()}
    stale += sorted(set(SIBLING_IMPORTS) - siblings)
    assert not stale, f"remove these allow-list entries from tests/test_imports.py: {stale}"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def test_no_import_circles() -> None:
    edges: dict[str, set[str]] = {m: set() for m in modules()}
    for i in all_imports():
        if not i.type_checking and i.target != i.module:
            edges[i.module].add(i.target)
    circles = _cycles(edges)
    assert not circles, "import circles (move the shared piece down):\n" + "\n".join(
        " <-> ".join(c) for c in circles
    )


def test_the_checker_sees_local_and_type_checking_imports(tmp_path: Path) -> None:
    """The reader itself: function-local and TYPE_CHECKING imports are found and marked."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "import obliviate.errors\n"
        "if TYPE_CHECKING:\n"
        "    from obliviate.training import TrainConfig\n"
        "def f():\n"
        "    from obliviate.data import dataset\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    found = {(i.target, i.local, i.type_checking) for i in _imports_of("obliviate.probe", path)}
    assert found == {
        ("obliviate.errors", False, False),
        ("obliviate.training", False, True),
        ("obliviate.data.dataset", True, False),
    }
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
