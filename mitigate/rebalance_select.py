"""Model selection for the density-ratio classifier: ``C`` by k-fold held-out log loss.

The classifier's strength ``C`` decides how much of the filter's effect the weights
can express, and no fixed value suits every dataset: scikit-learn sums the loss over
rows, so the same ``C`` is weak on a small fit sample and strong on a large one. Here
``C`` is chosen from a grid by the log loss on held-out folds of the bounded fit
sample (the same coupled sample the model is then fitted on, see
:func:`mitigate.rebalance.fit_density_ratio`): the value whose probabilities of
"unfiltered vs filtered" generalise best.

Folds are assigned by the sample-key hash that drew the fit sample, so a kept sample's
two rows (label 1 as part of the unfiltered population, label 0 as a filtered sample)
always fall in the same fold, and the split is the same on every runner. Ties go to the
smaller ``C`` (the weaker model). Beam-free and deterministic.

The grid is climbed from the weakest ``C``: once the mean held-out loss has risen at
``patience`` consecutive steps (default 2), the stronger values are not fitted. The
fits of strong ``C`` take the most solver iterations (at 50,000 rows, ``C`` = 10 and
100 took ~75 % of the grid's time, BENCHMARKS.md), and a held-out loss rising twice in
a row means the classifier already overfits. Fits run on threads, but a value is
started only once it is certain to be needed, so the values tried, and the choice,
depend on the losses alone, never on which fit ended first.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from mitigate import progress
from mitigate.config import RebalanceConfig
from mitigate.rebalance import DEFAULT_C, FeatureConfig
from mitigate.rebalance.model import fit_density_ratio, fit_stacked
from mitigate.workers import usable_cores

logger = logging.getLogger(__name__)

#: Default grid of ``C`` values tried by ``rebalance.C: auto``.
DEFAULT_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)

#: Default number of folds.
DEFAULT_FOLDS = 3

#: Default early stop: the grid's climb ends once the held-out loss has risen at this
#: many consecutive steps.
DEFAULT_PATIENCE = 2

#: Most fits of the grid run at once (one thread each; each holds copies of its fold's
#: training rows: ~1.9 GB at 50,000 rows with a 1,024-d embedding, BENCHMARKS.md), and
#: fewer where the memory the process may still use would not hold them
#: (:func:`fit_threads`).
MAX_FIT_THREADS = 4

#: Bytes a running fit holds per stored value of its training rows: the rows gathered
#: in float64 (12), liblinear's own copy (16), the columns' remap (4), and slack
#: (measured: ~1.9 GB for ~55 million values at 50,000 rows, BENCHMARKS.md).
FIT_BYTES_PER_VALUE = 36

#: Share of the memory still available that the grid's fits may take together.
FIT_MEMORY_SHARE = 0.5

#: The grid's fits are the final fit's (:func:`fit_density_ratio`'s defaults), but for
#: a looser tolerance.
_FIT_DEFAULTS: dict[str, Any] = dict(fit_density_ratio.__kwdefaults__ or {})


@dataclass(frozen=True)
class CSelection:
    """Outcome of :func:`select_C`.

    Attributes:
        C: the chosen value.
        log_loss: ``C`` -> mean held-out log loss (nats per row, both classes' rows).
        folds: number of folds used.
        not_tried: values of the grid above the early stop, not fitted.
        patience: the early stop's number of consecutive rises (0: the whole grid).
    """

    C: float
    log_loss: dict[float, float]
    folds: int
    not_tried: tuple[float, ...] = ()
    patience: int = 0

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "C": self.C,
            "folds": self.folds,
            "held_out_log_loss": {repr(c): v for c, v in self.log_loss.items()},
        }
        if self.not_tried:
            out["not_tried"] = [repr(c) for c in self.not_tried]
            out["stopped_after_rises"] = self.patience
        return out


def fold_ids(hashes: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Fold of each fit-sample row from its 64-bit key hash (``hash % k``)."""
    if k < 2:
        raise ValueError(f"need at least 2 folds, got {k}")
    return np.array([int(h) % k for h in hashes], dtype=np.int64)


def _log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Sum of ``log(1 + exp(-y z))`` with ``y`` in {-1, +1}, computed stably."""
    margin = np.where(labels == 1, logits, -logits)
    return float(np.logaddexp(0.0, -margin).sum())


def select_C(
    features: sp.spmatrix | np.ndarray,
    kept: np.ndarray | Sequence[bool],
    folds: np.ndarray | Sequence[int],
    grid: Sequence[float] = DEFAULT_C_GRID,
    *,
    feature_config: FeatureConfig | None = None,
    patience: int = DEFAULT_PATIENCE,
) -> CSelection:
    """Choose ``C`` by k-fold held-out log loss on a coupled fit sample.

    Args:
        features: one row per sample of the unfiltered fit sample.
        kept: kept flag per row (kept rows are also the filtered class).
        folds: fold id per row (:func:`fold_ids`); every fold must leave both classes
            in its training part.
        grid: candidate ``C`` values (> 0).
        feature_config: the featurisation of ``features`` (its width is checked; default
            ``FeatureConfig()``), passed to the fits.
        patience: stop climbing the grid (ascending) once the mean held-out loss has
            risen at this many consecutive steps; 0 fits every value.

    Returns:
        :class:`CSelection` with the ``C`` of least mean held-out log loss among the
        values fitted.
    """
    mask = np.asarray(kept, dtype=bool).ravel()
    fold = np.asarray(folds, dtype=np.int64).ravel()
    if not (mask.size == fold.size == features.shape[0]):
        raise ValueError("features, kept and folds must have one entry per row")
    values = sorted({float(c) for c in grid})
    if not values or any(not (c > 0 and math.isfinite(c)) for c in values):
        raise ValueError(f"C grid must hold positive finite numbers, got {list(grid)}")
    if patience < 0:
        raise ValueError(f"patience must be >= 0, got {patience}")
    # float64 once, here: each fit then gathers its rows in the solver's dtype in one copy
    x = sp.csr_matrix(features, dtype=np.float64)
    ids = sorted(set(fold.tolist()))
    if len(ids) < 2:
        raise ValueError("need at least two non-empty folds")
    for f in ids:
        train = fold != f
        tr_kept = mask & train
        if not tr_kept.any() or tr_kept.sum() == train.sum():
            raise ValueError(f"fold {f}: its training part lacks a filtered or a kept sample")
    rows = int(fold.size + np.count_nonzero(mask))  # every row held out once, kept rows twice
    config = feature_config if feature_config is not None else FeatureConfig()
    if x.shape[1] != config.width:
        raise ValueError(
            f"features have {x.shape[1]} columns, feature_config.width is {config.width}"
        )

    def held_out_loss(job: tuple[int, float]) -> float:
        # the fold's rows are taken here, so that only the running fits hold copies: the
        # training rows as fit_density_ratio stacks them (unfiltered, then kept), gathered
        # in one copy
        test, train = fold == job[0], fold != job[0]
        unfiltered, filtered = np.flatnonzero(train), np.flatnonzero(train & mask)
        model = fit_stacked(
            x[np.concatenate([unfiltered, filtered])],
            unfiltered.size,
            **{**_FIT_DEFAULTS, "C": job[1], "feature_config": config, "tol": 1e-4, "warn": False},
        )
        x_test_u, x_test_f = x[test], x[test & mask]
        logits = np.concatenate(
            [model.decision_function(x_test_u), model.decision_function(x_test_f)]
        )
        y = np.concatenate(
            [np.ones(x_test_u.shape[0], dtype=np.int8), np.zeros(x_test_f.shape[0], dtype=np.int8)]
        )
        return _log_loss(logits, y)

    # The fits are independent and liblinear's solver runs without the GIL: on threads,
    # each fit single-threaded (limited here, once, for all of them: a limit set and
    # restored inside each thread would race), summed in the same order as one by one.
    climb = _Climb(patience)
    jobs = [(f, c) for c in values for f in ids]  # the weakest C first
    per_row = np.diff(x.indptr)  # stored values a row
    per_fit = FIT_BYTES_PER_VALUE * max(
        int(per_row[fold != f].sum() + per_row[(fold != f) & mask].sum()) for f in ids
    )
    threads = fit_threads(len(jobs), per_fit, available_memory())
    job_losses: dict[tuple[int, float], float] = {}
    progress.emit("c_grid_size", len(jobs))  # the live progress line: mitigate.progress
    with threadpool_limits(limits=1), ThreadPoolExecutor(threads) as pool:
        running: dict[Future[float], tuple[int, float]] = {}
        queued = iter(jobs)
        following = next(queued, None)
        while True:
            while following is not None and len(running) < threads:
                if not climb.needed(values.index(following[1])):
                    break
                running[pool.submit(held_out_loss, following)] = following
                following = next(queued, None)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                job_losses[job] = future.result()
                progress.emit("c_grid")
                if all((f, job[1]) in job_losses for f in ids):
                    total = 0.0
                    for f in ids:  # the one-by-one order: the same float
                        total += job_losses[(f, job[1])]
                    climb.done(values.index(job[1]), total / rows)
    progress.emit("c_grid", len(jobs) - len(job_losses))  # the fits left out: settled
    mean = {c: climb.loss[i] for i, c in enumerate(values) if i in climb.loss}
    not_tried = tuple(c for c in values if c not in mean)
    best = min(mean, key=lambda c: (mean[c], c))
    logger.info(
        "rebalance C auto: %s -> C=%g (%d folds)",
        ", ".join(f"C={c:g}: {v:.5f}" for c, v in mean.items()),
        best,
        len(ids),
    )
    if not_tried:
        logger.info(
            "rebalance C auto: held-out loss rose at %d consecutive steps; not fitted: %s",
            patience,
            ", ".join(f"C={c:g}" for c in not_tried),
        )
    return CSelection(best, mean, len(ids), not_tried, patience if not_tried else 0)


def fit_threads(jobs: int, per_fit: int, available: int | None) -> int:
    """How many of the grid's fits run at once: one a usable core, at most
    :data:`MAX_FIT_THREADS`, and no more than :data:`FIT_MEMORY_SHARE` of the
    ``available`` bytes hold at ``per_fit`` bytes each (one at least, which then runs
    as before: the memory a fit needs is the fit's). ``available`` None: not known."""
    threads = max(1, min(jobs, usable_cores(), MAX_FIT_THREADS))
    if available is not None and per_fit > 0:
        fit = max(1, int(available * FIT_MEMORY_SHARE) // per_fit)
        if fit < threads:
            logger.info(
                "rebalance C auto: %d fits at once, not %d: each holds ~%.1f GB and %.1f GB "
                "is available",
                fit,
                threads,
                per_fit / 1e9,
                available / 1e9,
            )
            threads = fit
    return threads


def available_memory(root: str = "/") -> int | None:
    """Bytes this process may still take: the kernel's ``MemAvailable``, and no more
    than its memory cgroup's limit less its usage (a container's limit; cgroup v2 or
    v1). None where neither is readable (not Linux). ``root``: for tests."""
    base = root.rstrip("/")
    found: list[int] = []
    try:
        with open(f"{base}/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit, usage in (
        ("sys/fs/cgroup/memory.max", "sys/fs/cgroup/memory.current"),
        (
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            with open(f"{base}/{limit}", encoding="ascii") as f:
                text = f.read().strip()
            if text == "max":
                continue
            with open(f"{base}/{usage}", encoding="ascii") as f:
                found.append(max(0, int(text) - int(f.read().strip())))
        except (OSError, ValueError):
            continue
    return min(found) if found else None


def select_for_run(
    hashes: Sequence[int],
    features: sp.spmatrix | np.ndarray,
    kept: np.ndarray,
    cfg: RebalanceConfig,
    feature_config: FeatureConfig,
) -> tuple[float, dict[str, Any]]:
    """``rebalance.C: auto`` for a run: folds from the key hashes that drew the fit
    sample, the config's grid, folds and patience. Returns ``C`` and what the summary
    records; where no fold split leaves both classes (a tiny sample), the default ``C``
    and why, with a warning."""
    folds = fold_ids(hashes, cfg.cv_folds)
    try:
        chosen = select_C(
            features,
            kept,
            folds,
            cfg.C_grid,
            feature_config=feature_config,
            patience=cfg.C_patience,
        )
    except ValueError as exc:  # a fold without kept or filtered samples: tiny sample
        logger.warning("rebalance C auto: %s; using C=%g", exc, DEFAULT_C)
        return DEFAULT_C, {"C": DEFAULT_C, "note": f"selection impossible ({exc}); default C"}
    return chosen.C, chosen.as_dict()


class _Climb:
    """Which values of an ascending grid are certain to be fitted, given the mean
    held-out losses known so far.

    The climb stops after value ``i`` when ``i >= patience`` and the loss rose at each
    of the ``patience`` steps ending at ``i``. Value ``j`` is needed when no earlier
    value can stop the climb: for each ``i < j``, some step in its window is known not
    to rise (both of its losses known), or ``i < patience``. With ``patience`` 0 every
    value is needed.
    """

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.loss: dict[int, float] = {}

    def _rise(self, k: int) -> bool | None:
        """Whether the loss rose at the step into value ``k`` (None: not yet known)."""
        if k not in self.loss or k - 1 not in self.loss:
            return None
        return self.loss[k] > self.loss[k - 1]

    def _stops_after(self, i: int) -> bool | None:
        if self.patience == 0 or i < self.patience:
            return False
        rises = [self._rise(k) for k in range(i - self.patience + 1, i + 1)]
        if any(r is False for r in rises):
            return False
        return True if all(rises) else None

    def needed(self, j: int) -> bool:
        return all(self._stops_after(i) is False for i in range(j))

    def done(self, i: int, mean_loss: float) -> None:
        self.loss[i] = mean_loss


__all__ = [
    "DEFAULT_C_GRID",
    "DEFAULT_FOLDS",
    "DEFAULT_PATIENCE",
    "CSelection",
    "available_memory",
    "fit_threads",
    "fold_ids",
    "select_C",
    "select_for_run",
]
