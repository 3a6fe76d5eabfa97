"""Live progress of a run: a counter stream from the workers, and its rendering.

Workers report through a side channel that works in-process, across the DirectRunner's
worker processes and on any runner sharing the driver's filesystem: an append-only
file named by the ``MITIGATE_PROGRESS_FILE`` environment variable (worker processes
inherit it). Each report is one short line ``NAME COUNT`` written with one
``os.write`` on an ``O_APPEND`` descriptor, which the kernel appends whole, so
concurrent writers never interleave. Without the variable (a remote runner, a test, a
library caller) :func:`emit` does nothing. The driver reads the new lines every half
second (:class:`CounterStream`) and :class:`ProgressRenderer` draws:

``mitigate 1200/4000 (30%) · 85.2/s · ETA 0:33 · kept 900 · filtered 40 · error 3 · out/``

The names reported: ``indexed`` (samples found by the index pass: the total),
``sources`` (source files indexed: the total is final when all are), ``processed``
(samples decoded and scored), ``state/<state>`` (final states, as manifest parts are
written), and ``c_grid`` / ``c_grid_size`` (``rebalance.C: auto``'s held-out fits
settled, fitted or left out by the early stop, of its grid's: minutes at a large fit
sample, after every sample is processed and before any is written). Nothing here
imports Beam.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TextIO

ENV = "MITIGATE_PROGRESS_FILE"
_STATES = ("kept", "filtered", "duplicate", "error")

_fd: dict[str, int] = {}  # path -> descriptor, one per process
_fd_lock = threading.Lock()


def emit(name: str, count: int = 1) -> None:
    """Report ``count`` more of ``name`` (no-op without a progress file). Never raises:
    progress is a courtesy, not part of the run."""
    path = os.environ.get(ENV)
    if not path or count <= 0:
        return
    try:
        with _fd_lock:
            fd = _fd.get(path)
            if fd is None:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                _fd[path] = fd
        os.write(fd, f"{name} {int(count)}\n".encode())
    except OSError:
        pass


@dataclass
class Counts:
    """Totals of the counter stream so far."""

    values: dict[str, int] = field(default_factory=dict)

    def get(self, name: str) -> int:
        return self.values.get(name, 0)

    def add(self, name: str, n: int) -> None:
        self.values[name] = self.values.get(name, 0) + n


class CounterStream:
    """Reads the progress file incrementally; a partial last line waits for its end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.counts = Counts()
        self._offset = 0
        self._partial = b""

    def poll(self) -> Counts:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return self.counts
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            name, _, n = line.decode("utf-8", "replace").rpartition(" ")
            if name and n.isdigit():
                self.counts.add(name, int(n))
        return self.counts


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressRenderer:
    """Draws the counts: in a terminal one line redrawn in place that always fits the
    width (the output path is shortened, never the counts); otherwise a plain line
    every ``plain_every`` seconds and a last one at the end.

    ``clock`` and ``width`` are injectable so that tests run on a fake clock.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        terminal: bool,
        sources: int,
        where: str = "",
        width: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        plain_every: float = 10.0,
    ) -> None:
        self.stream = stream
        self.terminal = terminal
        self.sources = sources
        self.where = where
        self.width = width or (lambda: 80)
        self.clock = clock
        self.plain_every = plain_every
        self.started = clock()
        self._last_plain: float | None = None
        self._drawn = False
        # rate over a sliding window of (time, processed), so a slow start (models
        # loading) does not depress the ETA for the rest of the run
        self._history: list[tuple[float, int]] = []
        self._lock = threading.Lock()  # the poll thread draws, a log line clears

    def _rate(self, now: float, done: int) -> float | None:
        self._history.append((now, done))
        while len(self._history) > 2 and now - self._history[1][0] >= 30.0:
            self._history.pop(0)
        t0, d0 = self._history[0]
        if now <= t0 or done <= d0:
            return None
        return (done - d0) / (now - t0)

    def line(self, counts: Counts, width: int | None = None) -> str:
        """The progress line for ``counts`` (advances the rate window)."""
        now = self.clock()
        done = counts.get("processed")
        total = counts.get("indexed")
        final = counts.get("sources") >= self.sources
        rate = self._rate(now, done)
        parts = []
        if total:
            share = f" ({done / total:.0%})" if final else ""
            parts.append(f"{done}/{total if final else f'{total}+'}{share} samples")
        else:
            parts.append(f"{done} samples (indexing)")
        parts.append(f"{rate:.1f}/s" if rate else "-/s")
        settled, grid = counts.get("c_grid"), counts.get("c_grid_size")
        if total and final and done >= total and grid and settled < grid:
            # no sample moves meanwhile, so no rate: the grid's fits are the progress
            parts.append(f"choosing C: {settled}/{grid} fits")
        elif rate and total and final:
            parts.append(f"ETA {_clock((total - done) / rate)}" if done < total else "writing")
        else:
            parts.append(f"{_clock(now - self.started)} elapsed")
        states = [f"{s} {counts.get('state/' + s)}" for s in _STATES if counts.get("state/" + s)]
        body = "mitigate " + " · ".join(parts + states)
        return self._fit(body, width)

    def _fit(self, body: str, width: int | None) -> str:
        if width is None or not self.where:
            text = f"{body} · {self.where}" if self.where else body
            return text if width is None else text[:width]
        room = width - len(body) - 3
        if room >= len(self.where):
            return f"{body} · {self.where}"
        if room >= 8:  # keep the end of the path: the folder the user named
            return f"{body} · …{self.where[-(room - 1) :]}"
        return body[:width]

    def update(self, counts: Counts, final: bool = False) -> None:
        with self._lock:
            self._update(counts, final)

    def _update(self, counts: Counts, final: bool) -> None:
        now = self.clock()
        if self.terminal:
            width = max(20, self.width() - 1)  # the last column would wrap
            text = self.line(counts, width)
            self.stream.write("\r" + text + "\x1b[K")
            self._drawn = True
        else:
            if not final and self._last_plain is not None:
                if now - self._last_plain < self.plain_every:
                    return
            self._last_plain = now
            self.stream.write(self.line(counts) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Clear the terminal line (the summary table or a log line follows)."""
        with self._lock:
            if self.terminal and self._drawn:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._drawn = False


class LiveProgress:
    """Polls a :class:`CounterStream` on a thread and feeds a renderer until closed.
    Sets :data:`ENV` for the run (worker processes inherit it) and removes the file."""

    def __init__(self, renderer: ProgressRenderer, path: str, interval: float = 0.5) -> None:
        self.renderer = renderer
        self.path = path
        self.stream = CounterStream(path)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mitigate-progress", daemon=True)
        self._previous: str | None = None

    def _clear_for_log(self, record: object) -> bool:
        # A log line must not land inside the redrawn line: clear it first (the next
        # poll draws it again below the log line).
        self.renderer.close()
        return True

    def __enter__(self) -> LiveProgress:
        self._previous = os.environ.get(ENV)
        os.environ[ENV] = self.path
        if self.renderer.terminal:
            for handler in logging.getLogger().handlers:
                handler.addFilter(self._clear_for_log)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.renderer.update(self.stream.poll())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._clear_for_log)
        if exc[0] is None and not self.renderer.terminal:
            self.renderer.update(self.stream.poll(), final=True)
        self.renderer.close()
        if self._previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = self._previous
        with _fd_lock:
            fd = _fd.pop(self.path, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(self.path)


_listeners: list[Callable[[str], None]] = []


def announce(text: str) -> None:
    """A line for the person running the job (the Dataflow console link): shown by
    the command line's progress display when one listens, else logged."""
    if _listeners:
        for listener in list(_listeners):
            listener(text)
    else:
        logging.getLogger(__name__).info("%s", text)


@contextlib.contextmanager
def listening(listener: Callable[[str], None]) -> Iterator[None]:
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def dataflow_console_url(project: str, region: str, job_id: str) -> str:
    return f"https://console.cloud.google.com/dataflow/jobs/{region}/{job_id}?project={project}"
