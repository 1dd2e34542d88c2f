"""Load a script of ``benchmarks/`` as a module, for the tests of its functions (the scripts are
files, not a package)."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def load(name: str) -> ModuleType:
    """``benchmarks/NAME.py`` as a module (loaded once per test process). The scripts import
    torch and obliviate at module level but run nothing on import."""
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", ROOT / "benchmarks" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
