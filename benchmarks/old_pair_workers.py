"""The near-dup decision's pair scoring on worker processes as before ``PairScorer``:
each call of at least ``MIN_PARALLEL_PAIRS`` pairs cut into ``processes`` equal parts,
one scored here and each other one on a worker process started for that call (which
imports verification and loads the kernels again). The replaced
``workers.parallel_pair_scores``, verbatim but for its names; ``install`` makes
``pipeline/near.py``'s decision use it. For ``bench_pair_workers.py``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from mitigate import workers
from mitigate.pipeline import near as pipeline_near
from mitigate.workers import PoolUnavailable, Worker, WorkerDied, _score_part

log = logging.getLogger(__name__)
_NOW = pipeline_near.PairScorer


def parallel_pair_scores(
    processes: int,
) -> Callable[..., np.ndarray]:
    def score(i: Any, j: Any, signatures: Any, stop_above: float | None = None) -> np.ndarray:
        from mitigate import verify

        ii = np.asarray(i, dtype=np.int64).reshape(-1)
        jj = np.asarray(j, dtype=np.int64).reshape(-1)
        if processes < 2 or ii.shape[0] < workers.MIN_PARALLEL_PAIRS or ii.shape != jj.shape:
            return verify.pair_scores(ii, jj, signatures, stop_above=stop_above)
        table = verify.as_signatures(signatures)
        bounds = np.linspace(0, ii.shape[0], processes + 1).astype(np.int64)
        parts = []
        for lo, hi in itertools.pairwise(bounds):
            used, inv = np.unique(np.concatenate([ii[lo:hi], jj[lo:hi]]), return_inverse=True)
            parts.append((inv[: hi - lo], inv[hi - lo :], table[used]))
        # the first part is scored here while the workers score the others
        started: list[Worker | None] = [None]
        for a, b, sub in parts[1:]:
            try:
                w = Worker()
                w.send(_score_part, a, b, sub, stop_above)
                started.append(w)
            except (PoolUnavailable, WorkerDied) as exc:
                log.warning("scoring candidate pairs in this process: %s", exc)
                started.append(None)
        out = []
        for w, (a, b, sub) in zip(started, parts, strict=True):
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


class _OldScorer:
    """``PairScorer``'s interface around the old function."""

    def __init__(self, processes: int) -> None:
        self.score = parallel_pair_scores(processes)

    def __enter__(self) -> Callable[..., np.ndarray]:
        return self.score

    def __exit__(self, *exc: object) -> None:
        pass


def install() -> None:
    pipeline_near.PairScorer = _OldScorer  # type: ignore[assignment, misc]


def uninstall() -> None:
    pipeline_near.PairScorer = _NOW  # type: ignore[misc]
