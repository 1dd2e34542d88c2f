"""Child processes that die with their parent.

A process pool's workers (and the ``forkserver`` they fork from) block on pipes whose other ends
they hold themselves, so when the process that owns the pool is killed (SIGKILL, OOM killer) they
would live on, holding memory and the caller's stdout/stderr. :func:`die_with_parent` asks the
Linux kernel to SIGKILL the calling process when its parent exits (``prctl(PR_SET_PDEATHSIG)``,
see prctl(2)); elsewhere it does nothing. Pool workers call it from their initializer; the
``forkserver`` process calls it by importing :mod:`obliviate._forkserver_preload`, which
:mod:`obliviate.parallel` puts on the forkserver's preload list (and nothing else imports).
The signal follows the parent *thread*, so :mod:`obliviate.parallel` starts the forkserver from
a keeper thread that lives as long as the process (a short-lived caller thread would take the
warm workers along when it ends).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits (Linux; a no-op elsewhere).

    The kernel tracks the parent *thread* that created the process. Exit at once when the owner
    is already gone: the parent changed before the ``prctl`` call, or the process that started
    this one (``multiprocessing.parent_process()``: for a pool worker, the pool's owner, not the
    forkserver) no longer exists. A parent of pid 1 alone is no reason to exit (a container
    whose entry point owns the pool has pid 1).
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return
    if os.getppid() != parent or not _owner_alive():
        os._exit(1)


def _owner_alive() -> bool:
    """Whether the process that started this one (multiprocessing's logical parent) still
    exists; True when there is none to ask (the forkserver itself, a plain process)."""
    owner = multiprocessing.parent_process()
    if owner is None or owner.pid is None:
        return True
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
