"""Decoding samples in several processes, so a local run uses every core.

The DirectRunner gives one Beam worker per ``direct_num_workers``, and neither of its
parallel modes scales here (BENCHMARKS.md, issue 14: 2 threads 1.08x one worker, as the
per-element Python work holds the GIL; 2 processes 1.09x, as every element crosses gRPC
and each process imports Beam). The heavy per-sample work, though, is plain Python and C
over bytes: sha256, the one decode, the hashes, the verification signature and the pixel
filters (:func:`mitigate.stages.compute_signals`, :func:`~mitigate.stages.score_items`).
:class:`DecodePool` runs that work for a chunk of samples in a pool of worker processes
inside one Beam worker; the Beam worker only reads bytes and routes records.

* **Same results.** The workers call the same functions on the same bytes and return
  the items in input order, so every output is byte-identical to decoding in process
  (tests compare whole runs).
* **A crashing decoder costs one sample, not the run.** A sample that kills its worker
  (a decoder segfault or abort, the kernel's out-of-memory killer) loses that worker's
  share of the chunk. The share is decoded again one sample at a time on a fresh
  worker, and the sample that kills its worker again becomes a ``decode_error`` naming
  the signal; every other sample is processed as usual.
* Workers are plain ``python`` subprocesses of the same interpreter (``sys.executable``,
  not one found on PATH) that import only the decode path (~0.5 s each, no Beam) and
  talk to the Beam worker over pipes. Not :mod:`multiprocessing`: its ``spawn`` and
  ``forkserver`` start methods re-run the main script of a caller that lacks an
  ``if __name__ == "__main__"`` guard (a second pipeline writing to the same output),
  and ``fork`` copies a process that runs threads.
* **No orphans.** A worker reads its requests from a pipe and exits at its end, so it
  ends with the process that started it, however that process ends.
* A pool whose workers cannot start (:class:`PoolUnavailable`) makes the caller decode
  in process instead, with a warning; results are the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import IO, Any

from mitigate import stages
from mitigate.config import DecodeConfig, RunnerConfig
from mitigate.filters import FilterConfig, ScoringItem, build_filter
from mitigate.records import Reason, SampleRecord

log = logging.getLogger(__name__)

Payload = tuple[SampleRecord, bytes | None]

WARMUP_SAMPLES: int = 256
"""With ``decode.processes: auto``, samples a Beam worker decodes itself before it starts
its pool: a small run finishes before a pool (~0.5 s a process to start) would pay off."""

MAX_AUTO_PROCESSES: int = 32

_CRASH_ENV = "MITIGATE_TEST_DECODER_CRASH_SHA256"
"""Test hook: a worker that is about to decode an image with this sha256 kills itself
with SIGSEGV, as a crashing decoder would (tests of the crash path; unset in real runs)."""

_BOOT = (
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "from mitigate.decode_pool import serve; serve()"
)


class PoolUnavailable(RuntimeError):
    """Decode workers could not be started here (the reason is in the message)."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def plan_processes(decode: DecodeConfig, runner: RunnerConfig) -> tuple[int, int]:
    """``(processes, warm-up samples)`` for ``decode.processes`` on ``runner``: an
    explicit number starts at once; ``auto`` is one process per usable core on the
    direct runner with one Beam worker (after :data:`WARMUP_SAMPLES`), else 1 (none)."""
    if decode.processes != "auto":
        return decode.processes, 0
    if runner.name != "direct" or runner.local_workers() > 1:
        return 1, 0
    return min(usable_cores(), MAX_AUTO_PROCESSES), WARMUP_SAMPLES


def split_evenly(seq: Sequence[Any], parts: int) -> list[list[Any]]:
    """``seq`` in at most ``parts`` contiguous runs whose lengths differ by at most one."""
    if not seq:
        return []
    parts = max(1, min(parts, len(seq)))
    base, extra = divmod(len(seq), parts)
    out, start = [], 0
    for p in range(parts):
        end = start + base + (1 if p < extra else 0)
        out.append(list(seq[start:end]))
        start = end
    return out


# --------------------------------------------------------------------------------------
# The worker side
# --------------------------------------------------------------------------------------


def _crash_if_asked(payloads: Sequence[Payload]) -> None:
    target = os.environ.get(_CRASH_ENV)
    if not target:
        return
    for _, data in payloads:
        if data is not None and hashlib.sha256(data).hexdigest() == target:
            os.kill(os.getpid(), signal.SIGSEGV)


def work(
    payloads: Sequence[Payload], decode: DecodeConfig, filters: Sequence[Any], keep_images: bool
) -> tuple[list[ScoringItem], int]:
    """What :class:`mitigate.pipeline.process.Decode` does in process, for one share."""
    _crash_if_asked(payloads)
    items = stages.compute_signals(payloads, decode, filters)
    stages.score_items(items, filters)
    decoded = sum(1 for item in items if item.image is not None)
    if not keep_images:
        items = [ScoringItem(item.record, None) for item in items]
    return items, decoded


def serve() -> None:
    """A worker's main loop: an init message, then requests until the pipe closes."""
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the replies
    decode, filter_configs, keep_images = pickle.load(requests)
    filters = [build_filter(c) for c in filter_configs]
    for flt in filters:
        flt.setup()
    pickle.dump("ready", replies)
    replies.flush()
    while True:
        try:
            payloads = pickle.load(requests)
        except EOFError:  # the Beam worker closed the pipe, or is gone
            return
        pickle.dump(work(payloads, decode, filters, keep_images), replies, protocol=5)
        replies.flush()


# --------------------------------------------------------------------------------------
# The Beam worker side
# --------------------------------------------------------------------------------------


class _Worker:
    def __init__(self, init: tuple[Any, ...]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.requests: IO[bytes] = self.proc.stdin
        self.replies: IO[bytes] = self.proc.stdout
        try:
            self.send(list(sys.path))
            self.send(init)
            ready = pickle.load(self.replies)
        except (OSError, EOFError, pickle.UnpicklingError) as exc:
            self.close()
            raise PoolUnavailable(
                f"a decode worker ({sys.executable}) exited at start "
                f"(exit status {self.proc.returncode}): {exc!r}"
            ) from None
        if ready != "ready":
            self.close()
            raise PoolUnavailable(f"a decode worker answered {ready!r} at start")

    def send(self, obj: Any) -> None:
        pickle.dump(obj, self.requests, protocol=5)
        self.requests.flush()

    def receive(self) -> Any:
        return pickle.load(self.replies)

    def death(self) -> str:
        """Why the worker is gone: its exit status or signal."""
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def close(self) -> None:
        for stream in (self.requests, self.replies):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclasses.dataclass(frozen=True)
class Ticket:
    """Work handed to the workers by :meth:`DecodePool.send`."""

    shares: list[list[Payload]]
    sent: list[bool]


class DecodePool:
    """``processes`` decode workers for one decode config and filter list.

    ``filter_configs`` are the filters scored at decode (no model filters, no heads).
    ``keep_images``: return the working images (a model filter reads them next);
    otherwise items come back without pixels, which saves moving them between
    processes. Workers start at the first :meth:`run` (:class:`PoolUnavailable` if
    they cannot); :meth:`close` ends them."""

    def __init__(
        self,
        processes: int,
        decode: DecodeConfig,
        filter_configs: Sequence[FilterConfig],
        *,
        keep_images: bool,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.processes = processes
        self._init = (decode, list(filter_configs), keep_images)
        self.crashed = 0  # samples lost to a decoder crash
        self._workers: list[_Worker | None] = [None] * processes

    def _worker(self, w: int) -> _Worker:
        worker = self._workers[w]
        if worker is None:
            worker = self._workers[w] = _Worker(self._init)
        return worker

    def _drop(self, w: int) -> str:
        worker = self._workers[w]
        self._workers[w] = None
        if worker is None:
            return "not started"
        why = worker.death()
        worker.close()
        return why

    def close(self) -> None:
        for w in range(self.processes):
            worker = self._workers[w]
            self._workers[w] = None
            if worker is not None:
                worker.close()

    def run(self, payloads: Sequence[Payload]) -> tuple[list[ScoringItem], int]:
        """Items (as :func:`~mitigate.stages.compute_signals` then
        :func:`~mitigate.stages.score_items` give them, in input order) and how many
        were decoded."""
        return self.receive(self.send(payloads))

    def send(self, payloads: Sequence[Payload]) -> Ticket:
        """Hand ``payloads`` to the workers (one share each) and return at once; the
        caller may work while they decode, then :meth:`receive` the ticket. One ticket
        at a time: a worker never has two requests (a reply it cannot write while the
        caller blocks writing the next request would deadlock)."""
        shares = split_evenly(payloads, self.processes)
        sent: list[bool] = []
        for w, share in enumerate(shares):
            try:
                self._worker(w).send(share)
                sent.append(True)
            except OSError:  # the worker died between chunks
                self._drop(w)
                sent.append(False)
        return Ticket(shares, sent)

    def receive(self, ticket: Ticket) -> tuple[list[ScoringItem], int]:
        """The items of a :meth:`send`, in input order, and how many were decoded."""
        items: list[ScoringItem] = []
        decoded = 0
        for w, share in enumerate(ticket.shares):
            got: tuple[list[ScoringItem], int] | None = None
            if ticket.sent[w]:
                try:
                    got = self._worker(w).receive()
                except (OSError, EOFError, pickle.UnpicklingError):
                    why = self._drop(w)
                    log.warning(
                        "a decode worker died (%s) on %d samples; decoding them one at a time",
                        why,
                        len(share),
                    )
            if got is None:
                got = self._one_at_a_time(w, share)
            items.extend(got[0])
            decoded += got[1]
        return items, decoded

    def _one_at_a_time(self, w: int, share: Sequence[Payload]) -> tuple[list[ScoringItem], int]:
        items: list[ScoringItem] = []
        decoded = 0
        for record, data in share:
            try:
                worker = self._worker(w)
                worker.send([(record, data)])
                got, n = worker.receive()
            except (OSError, EOFError, pickle.UnpicklingError):
                why = self._drop(w)
                self.crashed += 1
                log.error("the decoder crashed on sample %s (%s): decode_error", record.key, why)
                failed = record
                if data is not None:
                    sha = hashlib.sha256(data).hexdigest()
                    failed = dataclasses.replace(record, sha256=sha, n_bytes=len(data))
                detail = f"the decoder crashed on this image (its worker process: {why})"
                got, n = [ScoringItem(failed.with_error(Reason.DECODE_ERROR, detail), None)], 0
            items.extend(got)
            decoded += n
        return items, decoded
