"""Worker subprocesses for the CPU-heavy steps a Beam worker runs itself.

A :class:`Worker` is a ``python`` subprocess of this interpreter (``sys.executable``, not
one found on PATH) that runs calls sent over a pipe: each request is a module-level
function and its arguments (pickled by reference, so the worker imports only the
module that function lives in), each reply its result. Users are the decode step
(:mod:`mitigate.decode_pool`) and the verification of near-duplicate candidate pairs
(:func:`parallel_pair_scores`).

Why not :mod:`multiprocessing`: its ``spawn`` and ``forkserver`` start methods re-run the
main script of a caller that lacks an ``if __name__ == "__main__"`` guard (a second
pipeline writing to the same output), and ``fork`` copies a process that runs threads.

A worker reads requests until its pipe closes, so it ends with the process that
started it, however that process ends (no orphans). A call that raises in the worker is
re-raised in the caller (:class:`WorkerError`); a worker that dies (a segfault, the
out-of-memory killer) shows as :class:`WorkerDied` with its exit signal.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

import numpy as np

log = logging.getLogger(__name__)

_BOOT = (
    "import pickle, sys; sys.path[:] = pickle.load(sys.stdin.buffer); "
    "from mitigate.workers import serve; serve()"
)

MIN_PARALLEL_PAIRS: int = 4096
"""Candidate pairs below which :func:`parallel_pair_scores` scores in process: at
~0.1-0.2 ms a pair that is under a second, about what starting a worker costs."""


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


def serve() -> None:
    """A worker's main loop: calls until the pipe closes."""
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
        pickle.dump(reply, replies, protocol=5)
        replies.flush()


class Worker:
    """One worker subprocess. ``init``: a first call (function, args) made at start, e.g.
    to load what later calls share; :class:`PoolUnavailable` if the worker cannot start
    or that call fails."""

    def __init__(self, init: tuple[Callable[..., Any], tuple[Any, ...]] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.requests: IO[bytes] = self.proc.stdin
        self.replies: IO[bytes] = self.proc.stdout
        try:
            pickle.dump(list(sys.path), self.requests)
            if init is not None:
                self.call(init[0], *init[1])
            else:
                self.requests.flush()
        except (WorkerDied, WorkerError, OSError) as exc:
            self.close()
            why = f"a worker process ({sys.executable}) failed at start: {exc}"
            raise PoolUnavailable(why) from None

    def send(self, fn: Callable[..., Any], *args: Any) -> None:
        """Start a call; at most one call in flight per worker (a reply the worker
        cannot write while the caller blocks writing a second request would deadlock)."""
        try:
            pickle.dump((fn, args), self.requests, protocol=5)
            self.requests.flush()
        except OSError:
            raise WorkerDied(self.death()) from None

    def receive(self) -> Any:
        """The result of the call in flight."""
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


def parallel_pair_scores(
    processes: int,
) -> Callable[..., np.ndarray]:
    """A drop-in for :func:`mitigate.verify.pair_scores` that scores on ``processes``
    worker processes when there are at least :data:`MIN_PARALLEL_PAIRS` pairs. Scores
    are per pair, so they are identical to scoring in process (tests); each worker gets
    its pairs and only the signatures they name. A worker that cannot start or dies
    makes its part be scored in process."""

    def score(i: Any, j: Any, signatures: Any, stop_above: float | None = None) -> np.ndarray:
        from mitigate import verify

        ii = np.asarray(i, dtype=np.int64).reshape(-1)
        jj = np.asarray(j, dtype=np.int64).reshape(-1)
        if processes < 2 or ii.shape[0] < MIN_PARALLEL_PAIRS or ii.shape != jj.shape:
            return verify.pair_scores(ii, jj, signatures, stop_above=stop_above)
        table = verify.as_signatures(signatures)
        bounds = np.linspace(0, ii.shape[0], processes + 1).astype(np.int64)
        parts = []
        for lo, hi in itertools.pairwise(bounds):
            used, inv = np.unique(np.concatenate([ii[lo:hi], jj[lo:hi]]), return_inverse=True)
            parts.append((inv[: hi - lo], inv[hi - lo :], table[used]))
        # the first part is scored here while the workers score the others
        workers: list[Worker | None] = [None]
        for a, b, sub in parts[1:]:
            try:
                w = Worker()
                w.send(_score_part, a, b, sub, stop_above)
                workers.append(w)
            except (PoolUnavailable, WorkerDied) as exc:
                log.warning("scoring candidate pairs in this process: %s", exc)
                workers.append(None)
        out = []
        for w, (a, b, sub) in zip(workers, parts, strict=True):
            got = None
            if w is not None:
                try:
                    got = w.receive()
                except WorkerDied as exc:
                    log.warning("scoring candidate pairs in this process: %s", exc)
                finally:
                    w.close()
            out.append(got if got is not None else _score_part(a, b, sub, stop_above))
        return np.concatenate(out)

    return score
