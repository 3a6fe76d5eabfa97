"""Cost model of bucket joins (nanoseconds per elementary operation on one core).

Measured on the 2-core development VM with numpy 2.4
(``benchmarks/bench_neardup.py --calibrate``); only the ratios matter for choosing plans,
the absolute values only for logging.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

DENSE_TABLE_MAX_BITS: int = 22
"""Bucket keys of at most this many bits use a dense slot table (:class:`_SlotIndex`);
longer keys use a sorted array and binary search."""

MAX_TABLE_ENTRIES: int = 1 << 24
"""Upper bound on ``2**key_bits * width`` words of one slot table (128 MiB of hashes plus
64 MiB of ids); the width is reduced (more overflow) to respect it."""

# --------------------------------------------------------------------------------------
# Cost model constants (nanoseconds per elementary operation on one core).  Measured on
# the 2-core development VM with numpy 2.4 (benchmarks/bench_neardup.py --calibrate);
# only their ratios matter for choosing plans, the absolute values only for logging.
# --------------------------------------------------------------------------------------
COST_PROBE_NS: float = 1.5
"""Fixed part of one bucket probe (form the key, ``np.take`` a table row, bookkeeping)."""
COST_SLOT_NS: float = 1.5
"""Per table slot scanned by a probe (XOR + popcount + compare of one stored hash)."""
COST_MISS_NS: float = 22.0
"""Extra per-probe latency when the table no longer fits in cache (see ``_miss_ns``)."""
COST_OVF_CHECK_NS: float = 1.0
"""Per-probe cost of checking the overflow area (when the table has one)."""
COST_CANDIDATE_NS: float = 64.0
"""One candidate expanded from a variable-size bucket (overflow / sorted index)."""
COST_SEARCH_STEP_NS: float = 6.0
"""One binary-search step of a sorted-key probe."""
COST_BUILD_ENTRY_NS: float = 90.0
"""Per indexed entry: sorting and scattering it into the table."""
COST_BUILD_SLOT_NS: float = 11.0
"""Per table slot (``2**key_bits * width``): allocation, sentinel and id fill."""
COST_JOIN_FIXED_NS: float = 1.5e6
"""Fixed overhead of one bucket join (one MIH substring or one LSH table): Python-level
work items, table allocation.  Measured: ~10 ms for a 7-substring MIH on 200 hashes."""
COST_LSH_KEY_NS: float = 15.0
"""Extracting one LSH table key (8 byte-table lookups) for one hash."""
COST_BRUTE_PAIR_NS: float = 6.0
"""One pair of the chunked brute force (three XOR + popcount + min)."""


def _ball_volume(length: int, radius: int) -> int:
    """Number of ``length``-bit values within Hamming distance ``radius`` of a value."""
    if radius < 0:
        return 0
    return sum(math.comb(length, t) for t in range(min(radius, length) + 1))


def _miss_ns(table_bytes: float) -> float:
    """Cache-miss penalty per probe into a table of ``table_bytes`` bytes: 0 up to
    1 MiB (L2), growing log-linearly to ``COST_MISS_NS`` at 32 MiB (L3) and beyond."""
    if table_bytes <= 1 << 20:
        return 0.0
    return COST_MISS_NS * min(1.0, math.log2(table_bytes / (1 << 20)) / 5.0)


def _width_cost_ns(width: int, overflow_entries: float, nb: int, probes: float) -> float:
    """Estimated cost of a slot table of ``width`` slots per bucket: ``probes`` probes,
    each scanning ``width`` slots plus (uniformly) ``overflow_entries / nb`` overflow
    entries, plus filling the ``nb * width`` table."""
    per_probe = COST_PROBE_NS + width * COST_SLOT_NS + _miss_ns(nb * width * 12.0)
    if overflow_entries > 0:
        per_probe += COST_OVF_CHECK_NS + overflow_entries / nb * COST_CANDIDATE_NS
    return probes * per_probe + nb * width * COST_BUILD_SLOT_NS


def _slot_width(counts: NDArray[np.int64], probes: float, cap: int) -> int:
    """Cost-minimising table width for actual bucket sizes ``counts`` and ``probes``
    expected probes (:func:`_width_cost_ns`)."""
    hist = np.bincount(counts)  # hist[c] = number of buckets holding c entries
    c = np.arange(hist.shape[0], dtype=np.int64)
    nb = counts.shape[0]
    best_w, best_cost = 1, math.inf
    for width in range(1, max(1, min(cap, hist.shape[0] - 1)) + 1):
        over = float(np.sum(np.maximum(c - width, 0) * hist))
        cost = _width_cost_ns(width, over, nb, probes)
        if cost < best_cost:
            best_w, best_cost = width, cost
    return best_w


def _poisson_overflow(lam: float, widths: NDArray[np.int64]) -> NDArray[np.float64]:
    """``E[max(C - w, 0)] = lam P(C >= w) - w P(C >= w + 1)`` for ``C ~ Poisson(lam)``:
    expected entries per bucket that do not fit in ``w`` slots."""
    from scipy.special import pdtrc  # pdtrc(j, lam) = P(C > j)

    w = np.asarray(widths, np.float64)
    return np.maximum(0.0, lam * pdtrc(w - 1, lam) - w * pdtrc(w, lam))


def _dense_join_cost_ns(n_index: int, probes: float, key_bits: int) -> float:
    """Estimated cost of one dense slot-table join (uniformly random keys): the
    cost-minimising width among ~200 candidates around the Poisson bucket size."""
    nb = 1 << key_bits
    lam = n_index / nb
    cap = max(1, MAX_TABLE_ENTRIES // nb)
    lo = max(1, int(lam - 4 * math.sqrt(lam)))
    hi = max(lo, min(cap, int(lam + 8 * math.sqrt(lam) + 4)))
    widths = np.unique(np.linspace(lo, hi, num=min(200, hi - lo + 1)).astype(np.int64))
    over = _poisson_overflow(lam, widths) * nb
    over = np.where(over >= 0.5, over, 0.0)
    table_bytes = nb * widths * 12.0
    miss = COST_MISS_NS * np.clip(np.log2(np.maximum(table_bytes, 1.0) / (1 << 20)) / 5.0, 0, 1)
    per_probe = COST_PROBE_NS + widths * COST_SLOT_NS + miss
    per_probe = per_probe + np.where(over > 0, COST_OVF_CHECK_NS + over / nb * COST_CANDIDATE_NS, 0)
    cost = probes * per_probe + nb * widths * COST_BUILD_SLOT_NS
    return float(cost.min()) + n_index * COST_BUILD_ENTRY_NS


def _sorted_join_cost_ns(n_index: int, probes: float, key_bits: int) -> float:
    """Estimated cost of one sorted-key (binary search) join, uniformly random keys."""
    steps = math.log2(max(n_index, 2))
    cands = probes * n_index / 2.0**key_bits
    return (
        probes * steps * COST_SEARCH_STEP_NS
        + cands * COST_CANDIDATE_NS
        + n_index * steps * COST_BUILD_ENTRY_NS
    )


def _join_cost_ns(n_index: int, n_query: int, key_bits: int, radius: int) -> float:
    probes = float(n_query) * _ball_volume(key_bits, radius)
    if probes == 0:
        return 0.0
    if key_bits <= DENSE_TABLE_MAX_BITS:
        return COST_JOIN_FIXED_NS + _dense_join_cost_ns(n_index, probes, key_bits)
    return COST_JOIN_FIXED_NS + _sorted_join_cost_ns(n_index, probes, key_bits)
