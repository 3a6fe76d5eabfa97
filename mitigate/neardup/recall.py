"""Pair recall of a search, measured on a sample against brute force (Wilson interval)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mitigate.neardup.bits import PairSet, _as_pair, _check_k
from mitigate.neardup.brute import brute_force_join

# ======================================================================================
# Recall estimation
# ======================================================================================


@dataclass(frozen=True)
class RecallEstimate:
    """Estimated pair recall of a (possibly approximate) pair set.

    ``recall`` = found / true over (sampled query, true neighbour) pairs; ``ci_low`` ..
    ``ci_high`` is the Wilson score interval at ``confidence`` using ``effective_n``
    trials (see :func:`estimate_pair_recall`).  ``recall`` is NaN when the sample holds
    no true pair (then the interval is ``[0, 1]``).
    """

    recall: float
    ci_low: float
    ci_high: float
    confidence: float
    n_queries: int
    n_true_pairs: int
    n_found_pairs: int
    effective_n: float


def wilson_interval(
    successes: float, trials: float, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (``trials`` may be fractional)."""
    if trials <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0)
    phat = successes / trials
    denom = 1.0 + z * z / trials
    centre = (phat + z * z / (2.0 * trials)) / denom
    half = z * math.sqrt(phat * (1.0 - phat) / trials + z * z / (4.0 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _pair_keys(i: NDArray[np.int64], j: NDArray[np.int64], n: int) -> NDArray[np.int64]:
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    return lo * np.int64(n) + hi


def estimate_pair_recall(
    phash: ArrayLike,
    mirror: ArrayLike | None,
    k: int,
    found: PairSet,
    *,
    n_samples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    skip_identical: bool = False,
) -> RecallEstimate:
    """Estimate the fraction of true near-duplicate pairs present in ``found``.

    A deterministic sample (``np.random.default_rng(seed)``, without replacement) of
    ``n_samples`` query items is brute-forced against all items (``n_samples * N`` pair
    distances) to get their true neighbours ``T_q``; ``F_q`` are those also in ``found``.
    Every unordered true pair has the same chance (two endpoints) of being counted, so
    ``R = sum F_q / sum T_q`` is a ratio estimator of the pair recall.
    ``skip_identical=True`` ignores pairs with identical ``(phash, mirror)`` (every mode
    finds those, and hot groups would otherwise dominate the pair count).

    Confidence interval: pairs sharing a query are correlated (e.g. a hot cluster is
    found all-or-nothing), so a plain binomial interval over pairs is too narrow.  We use
    the Wilson score interval with Kish's effective sample size
    ``n_eff = R(1 - R) / Var(R)``, where ``Var(R)`` is the linearised (cluster-robust)
    variance of the ratio estimator over sampled queries, clipped to
    ``[#queries with a true pair, #true pairs]``; when the observed variance is zero
    (``R`` = 0 or 1) the conservative lower end (number of clusters) is used.  The finite
    population correction is ignored (conservative).
    """
    k = _check_k(k)
    p, m = _as_pair(phash, mirror)
    n = p.shape[0]
    s = min(int(n_samples), n)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=s, replace=False)).astype(np.int64)
    qi, xi, _ = brute_force_join(p[sample], None if m is None else m[sample], p, m, k)
    q_item = sample[qi]
    not_self = xi != q_item
    if skip_identical:
        same = p[q_item] == p[xi]
        if m is not None:
            same &= m[q_item] == m[xi]
        not_self &= ~same
    qi, q_item, xi = qi[not_self], q_item[not_self], xi[not_self]
    found_keys = np.sort(_pair_keys(found.i, found.j, n))
    keys = _pair_keys(q_item, xi, n)
    hit = np.zeros(keys.shape[0], dtype=bool)
    if found_keys.size and keys.size:
        loc = np.minimum(np.searchsorted(found_keys, keys), found_keys.size - 1)
        hit = found_keys[loc] == keys
    t_q = np.bincount(qi, minlength=s).astype(np.float64)
    f_q = np.bincount(qi, weights=hit.astype(np.float64), minlength=s)
    n_true = int(t_q.sum())
    n_found = int(f_q.sum())
    if n_true == 0:
        return RecallEstimate(float("nan"), 0.0, 1.0, confidence, s, 0, 0, 0.0)
    r = n_found / n_true
    clusters = int(np.count_nonzero(t_q))
    if s > 1:
        tbar = t_q.mean()
        resid = f_q - r * t_q
        var_r = float(np.sum(resid * resid)) / (s * (s - 1) * tbar * tbar)
    else:
        var_r = 0.0
    if var_r > 0.0 and 0.0 < r < 1.0:
        n_eff = min(float(n_true), max(float(clusters), r * (1.0 - r) / var_r))
    else:
        n_eff = float(clusters)
    lo, hi = wilson_interval(r * n_eff, n_eff, confidence)
    return RecallEstimate(r, lo, hi, confidence, s, n_true, n_found, n_eff)
