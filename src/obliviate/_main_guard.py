"""Fail fast when a script without a ``__main__`` guard starts a process pool.

The ``local`` backend (:mod:`obliviate.parallel`) starts its workers with the ``forkserver``
method. Each worker re-imports the parent's main script (as ``__mp_main__``) so that functions
defined there can be unpickled. A script that calls, say, ``ShardedStore.train(...)`` at module
level, outside ``if __name__ == "__main__":``, would therefore run that call again in every
worker: the pool dies with ``BrokenProcessPool`` after minutes, leaving a half-built store.

:func:`check_main_guard` is called by the entry points that start such a pool, before anything
is written. It finds the caller's frame in the main script's module-level code and, parsing the
script (``ast``), checks whether that line sits inside an ``if __name__ == "__main__":`` block. If
not, it raises one :class:`~obliviate.errors.ObliviateError` saying so (and that
``backend="inline"`` runs without worker processes). Calls from a function, from the CLI, from
an interactive session, ``python -c`` or a notebook (no script file) pass. Inside a worker's
re-import (``__mp_main__``) the call is refused the same way, so even an undetected case ends
with that message instead of a silent re-run.
"""

from __future__ import annotations

import ast
import multiprocessing
import sys
from functools import lru_cache
from pathlib import Path
from types import FrameType

from obliviate.errors import ObliviateError

__all__ = ["check_main_guard"]


def _is_main_test(node: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either order)."""
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
        return False
    if not isinstance(node.ops[0], ast.Eq):
        return False
    sides = [node.left, node.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    consts = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return bool(names and consts)


@lru_cache(maxsize=8)
def _guarded_ranges(path: str, mtime: float) -> tuple[tuple[int, int], ...]:
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return ((0, 10**9),)  # unreadable: do not guess, let it run
    return tuple(
        (node.body[0].lineno, node.end_lineno or node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.body
    )


def check_main_guard(what: str) -> None:
    """Raise :class:`ObliviateError` when ``what`` (e.g. ``"ShardedStore.train"``) is called
    from a script's module-level code outside ``if __name__ == "__main__":`` (see the module
    docstring); return otherwise."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None:
        return
    fix = (
        f'put the code that calls {what} under `if __name__ == "__main__":` (worker processes '
        f're-import {Path(path).name}), or pass backend="inline" to run without workers'
    )
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals is vars(main) and frame.f_code.co_name == "<module>":
            break
        frame = frame.f_back
    if frame is None:
        return  # called from a function, a library, the CLI, a worker's job: nothing re-runs it
    if multiprocessing.parent_process() is not None and main.__name__ == "__mp_main__":
        # a worker process is re-importing the script and reached the call at its top level
        raise ObliviateError(f"{what} was called while a worker process imported the script; {fix}")
    try:
        mtime = Path(path).stat().st_mtime
    except OSError:
        return
    line = frame.f_lineno
    if any(a <= line <= b for a, b in _guarded_ranges(str(path), mtime)):
        return
    raise ObliviateError(f"{what} is called at the top level of a script without a guard; {fix}")
