"""Child processes that do not outlive their parent.

A function replica, the stack's nats-server, or a test's embedded stack must not be
left running when the process that started it dies, even by SIGKILL: Linux's
parent-death signal (``prctl(PR_SET_PDEATHSIG)``) delivers a signal to the child the
moment its parent exits. A parent that dies while the child is being forked, before
the child asked for the signal, is caught by the child itself (its parent pid changed).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(signum: int, parent: int) -> None:
    # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:
        # the parent died between fork and prctl: no signal will come, so go now
        os.kill(os.getpid(), signum)


def die_with_parent(signum: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``signum`` when
    its parent dies (SIGTERM lets it shut down gracefully, SIGKILL ends it at once).

    The signal follows the thread that started the child, so start such children
    from a long-lived thread (the main thread or the event loop's).
    """
    return functools.partial(_set_parent_death_signal, int(signum), os.getpid())
