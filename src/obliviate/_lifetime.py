"""Child processes that die with their parent.

A process pool's workers (and the ``forkserver`` they fork from) block on pipes whose other ends
they hold themselves, so when the process that owns the pool is killed (SIGKILL, OOM killer) they
would live on, holding memory and the caller's stdout/stderr. :func:`die_with_parent` asks the
Linux kernel to SIGKILL the calling process when its parent exits (``prctl(PR_SET_PDEATHSIG)``,
see prctl(2)); elsewhere it does nothing. Pool workers call it from their initializer; the
``forkserver`` process calls it by importing :mod:`obliviate._forkserver_preload`, which
:mod:`obliviate.parallel` puts on the forkserver's preload list (and nothing else imports).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """SIGKILL this process when its parent exits (Linux; a no-op elsewhere).

    The kernel tracks the parent *thread* that created the process. If the parent is already
    gone (re-parented to init before the call), exit at once.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return
    if parent == 1 or os.getppid() != parent:
        os._exit(1)
