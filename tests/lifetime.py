"""Process lifetime in the suite: nothing a test run starts outlives it."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when this process's parent dies, however it dies.

    Used in a child before exec (Beam's job service, the worker pool) and at start-up in
    each pytest-xdist worker, so a killed pytest takes its workers, and they their
    services, with it. Linux only (``prctl``); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
