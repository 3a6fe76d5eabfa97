"""Worker subprocesses for the CPU-heavy steps a Beam worker runs itself.

A :class:`Worker` is a ``python`` subprocess of this interpreter (``sys.executable``, not
one found on PATH) that runs calls sent over a pipe: each request is a module-level
function and its arguments (pickled by reference, so the worker imports only the
module that function lives in), each reply its result. Users are the decode step
(:mod:`mitigate.decode_pool`) and the verification of near-duplicate candidate pairs
(:class:`PairScorer`).

Why not :mod:`multiprocessing`: its ``spawn`` and ``forkserver`` start methods re-run the
main script of a caller that lacks an ``if __name__ == "__main__"`` guard (a second
pipeline writing to the same output), and ``fork`` copies a process that runs threads.

A worker reads requests until its pipe closes, so it ends with the process that
started it, however that process ends (no orphans). A call that raises in the worker is
re-raised in the caller (:class:`WorkerError`); a worker that dies (a segfault, the
out-of-memory killer) shows as :class:`WorkerDied` with its exit signal.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import IO, Any, NoReturn

import numpy as np

from mitigate.watchdog import WATCHDOG

log = logging.getLogger(__name__)

_BOOT = (
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "from mitigate.workers import serve; serve()"
)

MIN_PARALLEL_PAIRS: int = 65536
"""Candidate pairs below which :class:`PairScorer` scores in process (and starts no
worker): at ~0.06 ms a pair (session 14) that is under ~4 s. A worker's start (~1 s of
CPU to import and load the kernels) then leaves it too little to take: the 6,400-sample
decision's 24,943 + 7,961 pairs took 2.24 s with a worker, 2.17 s without
(BENCHMARKS.md, "Pair scores: ... few groups of images")."""

MIN_WARM_PAIRS: int = 4096
"""The same bound where workers are already up: lent by the decode pool
(:func:`borrow`: ~0.05 s to load the scoring kernels there) or started by an earlier
call of the decision."""


class PoolUnavailable(RuntimeError):
    """Workers could not be started here (the reason is in the message)."""


class WorkerDied(RuntimeError):
    """A worker process ended while it held a request (``why``: exit status or signal)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"a worker process died ({why})")
        self.why = why


class WorkerError(RuntimeError):
    """A call raised in the worker; the message carries the worker's exception."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's limit)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def serve() -> NoReturn:
    """A worker's main loop: calls until the pipe closes, then the process ends at once.
    Every reply is flushed when written, so nothing is left to finish; the interpreter's
    own teardown (numba's and numpy's modules) took ~0.3-0.4 s a worker, which the
    caller's :meth:`Worker.close` waited for (BENCHMARKS.md, "How processes end")."""
    _serve()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _serve() -> None:
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the replies
    while True:
        try:
            fn, args = pickle.load(requests)
        except EOFError:  # the caller closed the pipe, or is gone
            return
        try:
            reply: tuple[bool, Any] = (True, fn(*args))
        except Exception as exc:
            reply = (False, f"{type(exc).__name__}: {exc}")
        try:
            pickle.dump(reply, replies, protocol=5)
            replies.flush()
        except OSError:  # the caller closed the pipe without reading this reply
            return


PIPE_SIZE: int = 1 << 20
"""Bytes a worker's request pipe is asked to hold (Linux's ``F_SETPIPE_SZ``; 1 MiB is
the most an unprivileged process may set by default). Requests up to a quarter of what
it holds may be queued behind a call in flight (:meth:`Worker.room`)."""


def _widen_pipe(fd: int) -> int:
    """The pipe ``fd``'s capacity in bytes, widened to :data:`PIPE_SIZE` where the
    system allows; 4,096 (the least POSIX promises) where it cannot be read."""
    if sys.platform != "linux":
        return 4096
    import fcntl

    try:
        return int(fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE))
    except OSError:
        try:
            return int(fcntl.fcntl(fd, getattr(fcntl, "F_GETPIPE_SZ", 1032)))
        except OSError:
            return 4096


class Worker:
    """One worker subprocess. ``init``: a first call (function, args) made at start, e.g.
    to load what later calls share; :class:`PoolUnavailable` if the worker cannot start
    or that call fails. ``wait=False`` returns as soon as the init call is sent, so that
    several workers start at once: the first :meth:`receive` (or :meth:`ready`) then
    reads the init's reply first, and raises :class:`PoolUnavailable` if it failed."""

    def __init__(
        self, init: tuple[Callable[..., Any], tuple[Any, ...]] | None = None, *, wait: bool = True
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.requests: IO[bytes] = self.proc.stdin
        self.replies: IO[bytes] = self.proc.stdout
        self.stopped_after: float | None = None  # a receive's time limit that ended it
        self.pipe_size = _widen_pipe(self.requests.fileno())
        self._starting = False  # the init's reply is unread
        try:
            pickle.dump(list(sys.path), self.requests)
            if init is not None:
                self.send(init[0], *init[1])
                self._starting = True
            else:
                self.requests.flush()
        except (WorkerDied, OSError) as exc:
            self._failed_at_start(exc)
        if wait:
            self.ready()

    def _failed_at_start(self, exc: Exception) -> NoReturn:
        self.close()
        why = f"a worker process ({sys.executable}) failed at start: {exc}"
        raise PoolUnavailable(why) from None

    @property
    def starting(self) -> bool:
        """Whether the init call's reply is still unread (``wait=False``)."""
        return self._starting

    def is_ready(self) -> bool:
        """Whether the init call has ended, without waiting for it (its reply is read
        here once it is there); :class:`PoolUnavailable` if it failed or the worker
        died."""
        if self._starting and not select.select([self.replies], [], [], 0)[0]:
            return False
        self.ready()
        return True

    def ready(self) -> None:
        """Wait for the init call to end (at once if it has, or there is none);
        :class:`PoolUnavailable` if it failed or the worker died."""
        if self._starting:
            self._starting = False
            try:
                self._reply()
            except (WorkerDied, WorkerError) as exc:
                self._failed_at_start(exc)

    def send(self, fn: Callable[..., Any], *args: Any) -> None:
        """Start a call; replies come back in the order of the calls. One call in flight
        per worker, unless the request fits :meth:`room` (see :meth:`send_pickled`): a
        reply the worker cannot write while the caller blocks writing a further request
        would deadlock. A call sent behind an unread init (``wait=False``) is such a
        queued call."""
        self.send_pickled(pickle.dumps((fn, args), protocol=5))

    def send_pickled(self, request: bytes) -> None:
        """:meth:`send` of a request pickled already (``pickle.dumps((fn, args))``),
        e.g. to check its size against :meth:`room` first."""
        try:
            self.requests.write(request)
            self.requests.flush()
        except OSError:
            raise WorkerDied(self.death()) from None

    def room(self) -> int:
        """Bytes of a request that may be sent while other requests are still unread in
        the pipe (a call in flight, a second queued behind it, the init): the worker does
        not read while it writes a reply the caller has not read yet, so a request that
        did not fit the pipe would deadlock the two."""
        return self.pipe_size // 4

    def receive(self, limit: float | None = None) -> Any:
        """The result of the call in flight (after the init's, if still unread, which
        the ``limit`` does not count). ``limit``: seconds to wait for the reply; past
        them the worker is killed (:class:`WorkerDied`, :attr:`stopped_after` set), as
        a call that hangs in native code cannot be interrupted otherwise."""
        self.ready()
        if limit is None:
            return self._reply()
        token = WATCHDOG.watch(self.proc, limit, self._stopped)
        try:
            return self._reply()
        finally:
            WATCHDOG.unwatch(token)

    def _reply(self) -> Any:
        try:
            ok, value = pickle.load(self.replies)
        except (OSError, EOFError, pickle.UnpicklingError):
            raise WorkerDied(self.death()) from None
        if not ok:
            raise WorkerError(value)
        return value

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.send(fn, *args)
        return self.receive()

    def _stopped(self, limit: float) -> None:
        self.stopped_after = limit

    def death(self) -> str:
        """Why the worker is gone: its exit status or signal, or the time limit it was
        stopped at."""
        if self.stopped_after is not None:
            self.proc.wait()
            return f"stopped after {self.stopped_after:g} s without a reply"
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


# --------------------------------------------------------------------------------------
# Idle workers lent to other users in this process
# --------------------------------------------------------------------------------------
#
# A local run's decode workers sit idle once the decode stage has ended (the FnApiRunner
# runs one stage after another), while the one-worker near-dup decision that follows
# would start workers of its own (~0.6 s each to import and load the kernels). So an
# owner lends its idle workers (:func:`lend`, between its bundles), a :class:`PairScorer`
# borrows them (:func:`borrow`) and gives them back when its decision ends
# (:func:`give_back`); the owner takes a worker back before each use (:func:`reclaim`)
# and starts another in its place if it is out. A worker is used by one holder at a
# time, and closed by whoever holds it last.

_loans = threading.Lock()
_idle: dict[int, Worker] = {}  # lent and free to borrow
_out: set[int] = set()  # borrowed
_abandoned: set[int] = set()  # borrowed, and its owner no longer wants it back


def lend(worker: Worker) -> None:
    """Offer an idle ``worker`` (no call in flight, its start read) to other users until
    its owner takes it back (:func:`reclaim`)."""
    with _loans:
        if id(worker) not in _out:
            _idle[id(worker)] = worker


def reclaim(worker: Worker) -> bool:
    """The owner's ``worker`` back for its own use (or to close it): True unless a
    borrower holds it. When it is out, the owner goes on without it, and the borrower
    closes it when it gives it back."""
    with _loans:
        if _idle.pop(id(worker), None) is not None or id(worker) not in _out:
            return True
        _abandoned.add(id(worker))
        return False


def borrow(n: int) -> list[Worker]:
    """Up to ``n`` lent workers that are still alive, for the caller's use alone."""
    with _loans:
        got = [w for w in _idle.values() if w.proc.poll() is None][:n]
        for w in got:
            del _idle[id(w)]
            _out.add(id(w))
    return got


def lent_workers() -> int:
    """How many lent workers are free to borrow now."""
    with _loans:
        return len(_idle)


def give_back(worker: Worker, healthy: bool) -> None:
    """End a :func:`borrow` of ``worker``. ``healthy``: no call in flight and no failure
    seen. A worker whose owner went on without it is closed; an unhealthy one is not
    lent again (its owner finds out at its next call, as after a crash)."""
    with _loans:
        _out.discard(id(worker))
        close = id(worker) in _abandoned
        _abandoned.discard(id(worker))
        if healthy and not close:
            _idle[id(worker)] = worker
    if close:
        worker.close()


def split_evenly(seq: Sequence[Any], parts: int) -> list[list[Any]]:
    """``seq`` in at most ``parts`` contiguous runs whose lengths differ by at most one."""
    if not len(seq):
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
# Verification of candidate pairs on several cores
# --------------------------------------------------------------------------------------


def _score_part(
    i: np.ndarray, j: np.ndarray, table: np.ndarray, stop_above: float | None
) -> np.ndarray:
    from mitigate import verify

    return verify.pair_scores(i, j, table, stop_above=stop_above)


def warm_scoring() -> bool:
    """A scoring worker's first call: import verification and load its compiled
    kernels (numba's import and cached machine code: ~1 s), before any pair waits (also
    a Beam worker's head start while its decode pool works:
    ``mitigate.pipeline.process``)."""
    from PIL import Image

    from mitigate import localscore, verify

    localscore.load_kernels(localscore.MIN_COMPILED_PAIRS)
    sig = verify.signature(Image.new("RGB", (128, 128), (40, 90, 160)))
    verify.pair_scores([0], [1], [sig, sig])
    return True


class PairScorer:
    """A drop-in for :func:`mitigate.verify.pair_scores` that scores on this process and
    ``processes - 1`` worker processes, for the calls of one near-dup decision (use it
    as a context manager: the workers end with it).

    Its workers are first those lent here (:func:`borrow`: a local run's decode workers,
    idle by then), given back at :meth:`close`; then, for a call of at least
    :data:`MIN_PARALLEL_PAIRS` pairs, workers of its own up to ``processes - 1``. A call
    of at least :data:`MIN_WARM_PAIRS` (with workers at hand) or
    :data:`MIN_PARALLEL_PAIRS` pairs is cut into chunks, in the order
    :func:`mitigate.verify.scoring_order` gives (a group of copies' pairs in one chunk
    share their images' planes); this process and each worker take the next chunk until
    none is left, so a worker still starting (~1 s to import and load the kernels; ~0.05
    s for a lent one) takes its share once ready and none if it never is, and later
    calls reuse it warm. A worker gets a chunk's pairs and only the signatures they
    name. Scores are per pair,
    so they are identical to scoring in process whatever the chunks (tests). A worker
    that cannot start, dies or fails leaves its chunk to this process, with a warning.
    """

    CHUNKS_PER_PROCESS = 6
    MIN_CHUNK = 512

    def __init__(self, processes: int) -> None:
        self.processes = max(1, processes)
        self._workers: list[Worker] = []
        self._warming: set[int] = set()  # workers (id) whose warm-up reply is unread
        self._borrowed: set[int] = set()  # workers (id) lent by their owner (given back)
        self._started = False  # workers of its own started
        self._lent_taken = False  # lent workers borrowed
        self.worker_pairs = 0  # pairs the workers scored (the rest: this process)

    def __enter__(self) -> PairScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for w in self._workers:
            if id(w) in self._borrowed:
                give_back(w, self._settle(w))
                continue
            w.close()
            if w.proc.returncode:  # not 0: it ended on its own, not at its pipe's close
                log.warning("scoring candidate pairs in this process: %s", WorkerDied(w.death()))
        self._workers, self._warming, self._borrowed = [], set(), set()

    def _settle(self, w: Worker) -> bool:
        """Read a borrowed worker's unread warm-up reply (its owner's next call must not
        find it): whether the worker is fit to give back for use."""
        if id(w) in self._warming:
            try:
                w.receive()
            except (WorkerDied, WorkerError):
                return False
        return w.proc.poll() is None

    def wait_ready(self) -> int:
        """Start the workers now and wait until each has loaded what it needs; the
        number ready (the calls do not wait: they start the workers themselves)."""
        self._start()
        for w in list(self._workers):
            if id(w) in self._warming:
                try:
                    w.receive()
                    self._warming.discard(id(w))
                except (WorkerDied, WorkerError) as exc:
                    log.warning("scoring candidate pairs in this process: %s", exc)
                    self._drop(w)
        return len(self._workers)

    def _drop(self, w: Worker) -> None:
        self._workers.remove(w)
        self._warming.discard(id(w))
        if id(w) in self._borrowed:
            self._borrowed.discard(id(w))
            give_back(w, healthy=False)
        else:
            w.close()

    def _start(self, pairs: int | None = None) -> None:
        """Borrow lent workers (once), then start the rest of ``processes - 1`` (once, for
        a call of at least :data:`MIN_PARALLEL_PAIRS` ``pairs``, or None: now)."""
        if not self._lent_taken:
            self._lent_taken = True
            self._borrow()
        if self._started or (pairs is not None and pairs < MIN_PARALLEL_PAIRS):
            return
        self._started = True
        for _ in range(self.processes - 1 - len(self._workers)):
            try:
                w = Worker()
                w.send(warm_scoring)
            except (PoolUnavailable, WorkerDied) as exc:
                log.warning("scoring candidate pairs in this process: %s", exc)
                break
            self._workers.append(w)
            self._warming.add(id(w))

    def _borrow(self) -> None:
        for w in borrow(self.processes - 1):
            self._borrowed.add(id(w))
            try:
                w.send(warm_scoring)
            except WorkerDied as exc:
                log.warning("scoring candidate pairs in this process: %s", exc)
                self._borrowed.discard(id(w))
                give_back(w, healthy=False)
                continue
            self._workers.append(w)
            self._warming.add(id(w))

    def __call__(
        self, i: Any, j: Any, signatures: Any, stop_above: float | None = None
    ) -> np.ndarray:
        from mitigate import localscore, verify

        ii = np.asarray(i, dtype=np.int64).reshape(-1)
        jj = np.asarray(j, dtype=np.int64).reshape(-1)
        n = ii.shape[0]
        warm = self._workers or (not self._lent_taken and lent_workers())
        least = min(MIN_WARM_PAIRS, MIN_PARALLEL_PAIRS) if warm else MIN_PARALLEL_PAIRS
        if self.processes < 2 or n < max(least, 1) or ii.shape != jj.shape:
            return verify.pair_scores(ii, jj, signatures, stop_above=stop_above)
        table = verify.as_signatures(signatures)
        localscore.load_kernels(n)  # this process's chunks as compiled as the whole call
        self._start(n)
        # chunks in the order pair_scores scores in: a group of copies' pairs together
        order = verify.scoring_order(ii, jj, table)
        ii, jj = ii[order], jj[order]
        size = max(self.MIN_CHUNK, -(-n // (self.processes * self.CHUNKS_PER_PROCESS)))
        chunks = [(lo, min(lo + size, n)) for lo in range(0, n, size)]
        results: list[np.ndarray | None] = [None] * len(chunks)
        lock, taken = threading.Lock(), [0]

        def take() -> int | None:
            with lock:
                if taken[0] >= len(chunks):
                    return None
                taken[0] += 1
                return taken[0] - 1

        def left() -> bool:
            with lock:
                return taken[0] < len(chunks)

        failed: list[Worker] = []

        def feed(w: Worker) -> None:
            try:
                if id(w) in self._warming:
                    while not select.select([w.replies], [], [], 0.05)[0]:
                        if not left():
                            return  # still warming: ready for the next call
                    w.receive()
                    self._warming.discard(id(w))
                while (k := take()) is not None:
                    lo, hi = chunks[k]
                    used, inv = np.unique(
                        np.concatenate([ii[lo:hi], jj[lo:hi]]), return_inverse=True
                    )
                    w.send(_score_part, inv[: hi - lo], inv[hi - lo :], table[used], stop_above)
                    results[k] = w.receive()
                    with lock:
                        self.worker_pairs += hi - lo
            except (WorkerDied, WorkerError) as exc:
                log.warning("scoring candidate pairs in this process: %s", exc)
                failed.append(w)

        threads = [threading.Thread(target=feed, args=(w,), daemon=True) for w in self._workers]
        for t in threads:
            t.start()
        while (k := take()) is not None:
            lo, hi = chunks[k]
            results[k] = verify.pair_scores(ii[lo:hi], jj[lo:hi], table, stop_above=stop_above)
        for t in threads:
            t.join()
        for w in failed:
            self._drop(w)
        for k, (lo, hi) in enumerate(chunks):  # a failed worker's chunk
            if results[k] is None:
                results[k] = verify.pair_scores(ii[lo:hi], jj[lo:hi], table, stop_above=stop_above)
        out = np.empty(n, dtype=np.float64)
        out[order] = np.concatenate(results)  # type: ignore[arg-type]
        return out
