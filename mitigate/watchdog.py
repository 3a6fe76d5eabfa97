"""Deadlines for replies from worker processes (:meth:`mitigate.workers.Worker.receive`'s
``limit``, ``decode.timeout``): a process whose reply is overdue is killed, since a call
that hangs in native code cannot be interrupted otherwise.

One daemon thread a process keeps every deadline, started at the first and sleeping
until the nearest (woken only where a new deadline comes before it): a watch and an
unwatch cost ~0.9 us on the caller's thread, where a ``threading.Timer`` a call cost
~0.24 ms (a thread started each time)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable


class Watchdog:
    """Kills a watched process whose deadline passes before it is unwatched."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, subprocess.Popen, float, Callable[[float], None]]] = {}
        self._thread: threading.Thread | None = None
        self._tokens = 0
        self._asleep_until: float | None = None  # the thread's wake-up (None: no deadline)

    def watch(self, proc: subprocess.Popen, limit: float, on_stop: Callable[[float], None]) -> int:
        """Kill ``proc`` in ``limit`` seconds unless :meth:`unwatch` comes first, calling
        ``on_stop(limit)`` just before; a token for :meth:`unwatch`."""
        with self._cond:
            self._tokens += 1
            due = time.monotonic() + limit
            self._due[self._tokens] = (due, proc, limit, on_stop)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
            elif self._asleep_until is None or due < self._asleep_until:
                self._cond.notify()  # only where it would otherwise wake too late
            return self._tokens

    def unwatch(self, token: int) -> None:
        with self._cond:
            self._due.pop(token, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for token, (due, proc, limit, on_stop) in list(self._due.items()):
                    if due <= now:
                        del self._due[token]
                        on_stop(limit)
                        proc.kill()
                nearest = min((entry[0] for entry in self._due.values()), default=None)
                self._asleep_until = nearest
                self._cond.wait(None if nearest is None else max(0.0, nearest - now))


WATCHDOG = Watchdog()
