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
* Workers are :class:`mitigate.workers.Worker` subprocesses (this interpreter, not
  :mod:`multiprocessing`; they end with the process that started them), and import
  only the decode path and load its kernels at start (~1-1.5 s each, no Beam).
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
import threading
import time
from collections.abc import Sequence
from typing import Any

from mitigate import stages
from mitigate.config import DecodeConfig, RunnerConfig
from mitigate.filters import (
    FilterConfig,
    ModelFilter,
    ScoringItem,
    build_filter,
    scored_at_decode,
)
from mitigate.records import Reason, SampleRecord
from mitigate.samples import Opener
from mitigate.workers import (
    PoolUnavailable,
    Worker,
    WorkerDied,
    lend,
    reclaim,
    split_evenly,
    usable_cores,
)

__all__ = [
    "DecodePool",
    "PoolUnavailable",
    "Ticket",
    "plan_processes",
    "pool_args",
    "prestart_for",
    "split_evenly",
]

log = logging.getLogger(__name__)

Payload = tuple[SampleRecord, bytes | None]

WARMUP_SAMPLES: int = 256
"""With ``decode.processes: auto``, samples a Beam worker decodes itself before its pool
takes over: a small run finishes before a pool (~1 s a process to start) would pay off.
The pool's workers boot once half of them are decoded, so their start overlaps the rest."""

AUTO_MIN_SAMPLES: int = 4096
"""With ``decode.processes: auto``, the fewest input samples a run starts a pool for:
below, its Beam worker decodes them all. On 2 cores, a pool made a run of 1,600
samples 1.10-1.20x the wall time of one process, of 3,200 0.98x, of 6,400 0.89x
(BENCHMARKS.md, "decode.processes: auto from 4,096 samples")."""

MAX_AUTO_PROCESSES: int = 32

PRESTART_MIN_BYTES: int = 64 * 2**20
"""With ``decode.processes: auto``, the input bytes (local tar shards) from which a run
boots its pool's workers before the pipeline starts (:func:`prestart_for`), while the
driver imports Beam and builds the graph on one core. Below it, or where the input's
size is not known that cheaply (tables, remote files), the pool starts as it always did,
after the warm-up in runs of :data:`AUTO_MIN_SAMPLES` samples and more."""

_CRASH_ENV = "MITIGATE_TEST_DECODER_CRASH_SHA256"
"""Test hook: a worker that is about to decode an image with this sha256 kills itself
with SIGSEGV, as a crashing decoder would (tests of the crash path; unset in real runs)."""

_HANG_ENV = "MITIGATE_TEST_DECODER_HANG_SHA256"
"""Test hook: a worker that is about to decode an image with this sha256 sleeps a
minute, as a decoder spinning on a hostile image would (tests of ``decode.timeout``: a
minute, so that a broken limit fails them in bounded time)."""


def plan_processes(decode: DecodeConfig, runner: RunnerConfig) -> tuple[int, int]:
    """``(processes, warm-up samples)`` for ``decode.processes`` on ``runner``: an
    explicit number starts at once; ``auto`` is one process per usable core on the
    direct runner with one Beam worker (after :data:`WARMUP_SAMPLES`, in runs of
    :data:`AUTO_MIN_SAMPLES` and more: ``pipeline.process.Decode``), else 1 (none)."""
    if decode.processes != "auto":
        return decode.processes, 0
    if runner.name != "direct" or runner.local_workers() > 1:
        return 1, 0
    return min(usable_cores(), MAX_AUTO_PROCESSES), WARMUP_SAMPLES


def plan_isolation(decode: DecodeConfig, runner: RunnerConfig) -> bool:
    """Whether ``decode.isolate`` keeps every decode out of the Beam worker: ``auto``
    on every runner but ``direct``, where a decoder crash would take a cloud worker down
    with its bundle, retried until the job fails."""
    if decode.isolate != "auto":
        return bool(decode.isolate)
    return runner.name != "direct"


# --------------------------------------------------------------------------------------
# In a worker
# --------------------------------------------------------------------------------------

_state: dict[str, Any] = {}  # decode config, filters, keep_images, opener of this worker


def _setup(
    decode: DecodeConfig,
    filter_configs: list[FilterConfig],
    keep_images: bool,
    opener: Opener,
) -> None:
    filters = [build_filter(c) for c in filter_configs]
    for flt in filters:
        flt.setup()
    _state.update(decode=decode, filters=filters, keep_images=keep_images, opener=opener)
    _warm_decode(decode)


def _warm_decode(decode: DecodeConfig) -> None:
    """Load what a worker's first chunk would: numba and the decode path's compiled
    kernels (~1 s of a worker's first chunk, BENCHMARKS.md, session 15), by decoding two
    small images, one under 128 px and one over (each kernel path). While a worker
    boots, the Beam worker decodes in process, so this is no longer waited for. A
    failure here is left to the real chunks to report."""
    import io

    from PIL import Image

    from mitigate.decode import decode_images

    try:
        datas = []
        for size in ((200, 150), (90, 60)):
            buf = io.BytesIO()
            Image.new("RGB", size, (200, 120, 40)).save(buf, "JPEG")
            datas.append(buf.getvalue())
        decode_images(
            datas,
            max_pixels=decode.max_pixels,
            working_size=decode.working_side,
            hash_mode=decode.hash_mode,
        )
    except Exception as exc:  # a warm-up only
        log.debug("decode warm-up failed: %s", exc)


def _fault_if_asked(payloads: Sequence[Payload]) -> None:
    """The test hooks :data:`_CRASH_ENV` and :data:`_HANG_ENV` (unset in real runs)."""
    crash, hang = os.environ.get(_CRASH_ENV), os.environ.get(_HANG_ENV)
    if not (crash or hang):
        return
    for _, data in payloads:
        if data is None:
            continue
        sha = hashlib.sha256(data).hexdigest()
        if sha == crash:
            os.kill(os.getpid(), signal.SIGSEGV)
        if sha == hang:
            time.sleep(60)


def _decode_share(records: Sequence[SampleRecord]) -> tuple[list[ScoringItem], int]:
    """What :class:`mitigate.pipeline.process.Decode` does in process, for one share:
    the worker reads the samples' bytes itself (no image bytes cross the pipe)."""
    decode = _state["decode"]
    payloads = stages.load_payloads(
        records, _state["opener"], decode.max_image_bytes, decode.max_caption_bytes
    )
    _fault_if_asked(payloads)
    filters = _state["filters"]
    items = stages.compute_signals(payloads, decode, filters)
    stages.score_items(items, filters)
    decoded = sum(1 for item in items if item.image is not None)
    if not _state["keep_images"]:
        items = [ScoringItem(item.record, None) for item in items]
    return items, decoded


# --------------------------------------------------------------------------------------
# In the Beam worker
# --------------------------------------------------------------------------------------


def pool_args(
    decode: DecodeConfig, filter_configs: Sequence[FilterConfig]
) -> tuple[DecodeConfig, list[FilterConfig], bool]:
    """A pool's ``(decode, filter configs, keep_images)`` for a run's decode config and
    filters: the filters scored at decode, and pixels kept where a model filter reads
    them next."""
    built = [build_filter(c) for c in filter_configs]
    models = any(isinstance(f, ModelFilter) for f in built)
    return decode, [f.config for f in scored_at_decode(built)], models


# Workers booted before the pipeline started (prestart_for), by their init call's
# arguments, until a DecodePool with the same arguments takes them (or the run ends)
_early = threading.Lock()
_prestarted: list[tuple[tuple[Any, ...], list[Worker]]] = []


def _setup_args(
    decode: DecodeConfig, filter_configs: Sequence[FilterConfig], keep_images: bool, opener: Opener
) -> tuple[Any, ...]:
    """A worker's start call's arguments (:func:`_setup`): what a pool and the workers
    booted for it must agree on."""
    return (decode, list(filter_configs), keep_images, opener)


def prestart(
    processes: int,
    decode: DecodeConfig,
    filter_configs: Sequence[FilterConfig],
    *,
    keep_images: bool,
    opener: Opener,
) -> bool:
    """Boot ``processes`` decode workers now, without waiting for them, for the first
    :class:`DecodePool` of this process built with the same arguments; False (with a
    warning) where they cannot start."""
    args = _setup_args(decode, filter_configs, keep_images, opener)
    with _early:
        if any(have == args for have, _ in _prestarted):
            return True
        try:
            workers = []
            for _ in range(processes):
                workers.append(Worker((_setup, args), wait=False))
        except PoolUnavailable as exc:
            for worker in workers:
                worker.close()
            log.warning("decode processes not started early: %s", exc)
            return False
        _prestarted.append((args, workers))
    return True


def has_prestarted(
    decode: DecodeConfig, filter_configs: Sequence[FilterConfig], keep_images: bool, opener: Opener
) -> bool:
    """Whether workers booted by :func:`prestart` wait for a pool of these arguments."""
    args = _setup_args(decode, filter_configs, keep_images, opener)
    with _early:
        return any(have == args for have, _ in _prestarted)


def _take_prestarted(args: tuple[Any, ...]) -> list[Worker]:
    with _early:
        for n, (have, workers) in enumerate(_prestarted):
            if have == args:
                del _prestarted[n]
                return workers
    return []


def close_prestarted() -> int:
    """Close the booted workers no pool took (the run decoded in process, or failed);
    how many."""
    with _early:
        left = [w for _, workers in _prestarted for w in workers]
        _prestarted.clear()
    for worker in left:
        worker.close()
    return len(left)


def prestart_for(config: Any, sources: Sequence[str], extra_beam_args: bool = False) -> int:
    """Boot a run's decode workers before its pipeline starts, where its Beam worker will
    run in this process and start a pool: the direct runner with one Beam worker and
    ``decode.processes`` a number of 2 or more, or ``auto`` on local tar shards of
    :data:`PRESTART_MIN_BYTES` or more. ``extra_beam_args``: Beam options on the command
    line (they may change the workers: nothing is started). How many were started.

    ``auto`` boots none where a model filter runs: its inference in the Beam worker uses
    the cores, and a pool decoding beside it made a 1,600-sample run with the nsfw
    filter 1.15x slower (BENCHMARKS.md, session 19); such a run keeps the warm-up and
    the :data:`AUTO_MIN_SAMPLES` rule."""
    from mitigate.formats import table_format
    from mitigate.pipeline import fs

    runner = config.runner
    if extra_beam_args or runner.dry_run or runner.name != "direct":
        return 0
    processes, _ = plan_processes(config.decode, runner)
    if processes < 2:
        return 0
    decode, configs, keep = pool_args(config.decode, config.filters)
    if config.decode.processes == "auto":
        if keep:  # a model filter's inference takes the cores in the Beam worker
            return 0
        size = 0
        for path in sources:
            if "://" in path or table_format(path, config.input.format) != "webdataset":
                return 0  # a table, or a remote file: its samples are not known cheaply
            try:
                size += os.path.getsize(path)
            except OSError:
                return 0
        if size < PRESTART_MIN_BYTES:
            return 0
    started = prestart(processes, decode, configs, keep_images=keep, opener=fs.open_read)
    return processes if started else 0


@dataclasses.dataclass(frozen=True)
class Ticket:
    """Work handed to the workers by :meth:`DecodePool.send`: each share and the worker
    it went to (None: not sent, its worker died or could not start)."""

    shares: list[list[SampleRecord]]
    sent: list[Worker | None]

    @property
    def records(self) -> list[SampleRecord]:
        return [record for share in self.shares for record in share]


class DecodePool:
    """``processes`` decode workers for one decode config and filter list.

    ``filter_configs`` are the filters scored at decode (no model filters, no heads);
    ``opener`` opens a source for reading (a module-level function: workers read the
    samples' bytes themselves, as :func:`~mitigate.stages.load_payloads` does).
    ``keep_images``: return the working images (a model filter reads them next);
    otherwise items come back without pixels, which saves moving them between
    processes. Workers start at the first :meth:`send` (:class:`PoolUnavailable` if
    they cannot); :meth:`close` ends them."""

    def __init__(
        self,
        processes: int,
        decode: DecodeConfig,
        filter_configs: Sequence[FilterConfig],
        *,
        keep_images: bool,
        opener: Opener,
    ) -> None:
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.processes = processes
        self._init = (_setup, _setup_args(decode, filter_configs, keep_images, opener))
        self._opener = opener
        self._max_bytes = decode.max_image_bytes
        self._max_caption_bytes = decode.max_caption_bytes
        self._limit = decode.timeout  # seconds a sample (a share: its slowest one)
        self.crashed = 0  # samples lost to a decoder crash or its time limit
        self._workers: list[Worker | None] = [None] * processes
        early = _take_prestarted(self._init[1])
        self.prestarted = bool(early)  # its workers were booted before the pipeline
        for w, worker in enumerate(early):
            if w < processes:
                self._workers[w] = worker
            else:
                worker.close()

    def _worker(self, w: int) -> Worker:
        worker = self._workers[w]
        if worker is not None and not reclaim(worker):  # lent and out: go on without it
            worker = self._workers[w] = None
        if worker is None:
            # not waiting for its start (~1 s: the decode path's imports and kernels): the
            # workers boot side by side, not one after the other (BENCHMARKS.md)
            worker = self._workers[w] = Worker(self._init, wait=False)
        return worker

    def _drop(self, w: int) -> None:
        worker = self._workers[w]
        self._workers[w] = None
        if worker is not None and reclaim(worker):  # out: its borrower closes it
            worker.close()

    def close(self) -> None:
        for w in range(self.processes):
            self._drop(w)

    def booting(self) -> bool:
        """Whether a started worker is still booting (checked without waiting);
        :class:`PoolUnavailable` if one failed to."""
        return not all(w.is_ready() for w in self._workers if w is not None)

    def start(self) -> None:
        """Boot the workers now without waiting for them (the first :meth:`send` hands
        them their shares once they are up), e.g. while the caller decodes its warm-up
        itself; :class:`PoolUnavailable` if one cannot start."""
        for w in range(self.processes):
            self._worker(w)

    def lend_idle(self) -> None:
        """Lend the started workers to other users of this process
        (:func:`mitigate.workers.lend`: the one-worker near-dup decision's pair scoring)
        until this pool's next call takes them back. Call it with no ticket in flight,
        e.g. at the end of a bundle."""
        for worker in self._workers:
            if worker is not None and not worker.starting:
                lend(worker)

    def run(self, records: Sequence[SampleRecord]) -> tuple[list[ScoringItem], int]:
        """Items (as :func:`~mitigate.stages.load_payloads`, then
        :func:`~mitigate.stages.compute_signals` and :func:`~mitigate.stages.score_items`
        give them, in input order) and how many were decoded."""
        return self.receive(self.send(records))

    def _requests(self, records: Sequence[SampleRecord]) -> list[bytes]:
        return [
            pickle.dumps((_decode_share, (share,)), protocol=5)
            for share in split_evenly(records, self.processes)
        ]

    def fits_ahead(self, records: Sequence[SampleRecord]) -> bool:
        """Whether :meth:`send` may hand ``records`` over while a ticket is still in
        flight: every share's request fits the room its worker's pipe leaves
        (:meth:`mitigate.workers.Worker.room`). Queued so, a worker starts the next
        share as soon as it has written its last reply, instead of waiting for the
        caller to receive every share of the chunk and send the next (the chunks'
        lockstep)."""
        for w, request in enumerate(self._requests(records)):
            worker = self._workers[w]
            if worker is not None and len(request) > worker.room():
                return False
        return True

    def send(self, records: Sequence[SampleRecord]) -> Ticket:
        """Hand ``records`` to the workers (one share each) and return at once; the
        caller may work while they read and decode, then :meth:`receive` the ticket.
        Tickets are received in the order they were sent; a second may be sent before
        the first is received where :meth:`fits_ahead` allows."""
        shares = split_evenly(records, self.processes)
        sent: list[Worker | None] = []
        for w, request in enumerate(self._requests(records)):
            try:
                worker = self._worker(w)
                worker.send_pickled(request)
                sent.append(worker)
            except WorkerDied:  # the worker died between chunks
                self._drop(w)
                sent.append(None)
        return Ticket(shares, sent)

    def receive(self, ticket: Ticket) -> tuple[list[ScoringItem], int]:
        """The items of a :meth:`send`, in input order, and how many were decoded. A
        share whose worker died (here, or while an earlier ticket was received) is
        decoded again one sample at a time."""
        items: list[ScoringItem] = []
        decoded = 0
        for w, share in enumerate(ticket.shares):
            got: tuple[list[ScoringItem], int] | None = None
            worker = ticket.sent[w]
            if worker is not None and worker is self._workers[w]:
                try:
                    # one sample's limit for the whole share: a share of normal images
                    # takes milliseconds, so one past it holds a slow image, which the
                    # one-at-a-time decode below then finds
                    got = worker.receive(self._limit)
                except WorkerDied as exc:
                    self._drop(w)
                    log.warning(
                        "a decode worker died (%s) on %d samples; decoding them one at a time",
                        exc.why,
                        len(share),
                    )
            if got is None:
                got = self._one_at_a_time(w, share)
            items.extend(got[0])
            decoded += got[1]
        return items, decoded

    def _one_at_a_time(
        self, w: int, share: Sequence[SampleRecord]
    ) -> tuple[list[ScoringItem], int]:
        items: list[ScoringItem] = []
        decoded = 0
        for record in share:
            worker = self._worker(w)
            try:
                worker.send(_decode_share, [record])
                got, n = worker.receive(self._limit)
            except WorkerDied as exc:
                self._drop(w)
                self.crashed += 1
                log.error(
                    "decoding sample %s ended its worker (%s): decode_error", record.key, exc.why
                )
                # the record as reading left it (a private copy), with its sha256
                ((failed, data),) = stages.load_payloads(
                    [record], self._opener, self._max_bytes, self._max_caption_bytes
                )
                if data is not None:
                    sha = hashlib.sha256(data).hexdigest()
                    failed = dataclasses.replace(failed, sha256=sha, n_bytes=len(data))
                if worker.stopped_after is not None:
                    detail = (
                        f"decoding this image took more than decode.timeout "
                        f"({worker.stopped_after:g} s); its worker process was stopped"
                    )
                else:
                    detail = f"the decoder crashed on this image (its worker process: {exc.why})"
                got, n = [ScoringItem(failed.with_error(Reason.DECODE_ERROR, detail), None)], 0
            items.extend(got)
            decoded += n
        return items, decoded
