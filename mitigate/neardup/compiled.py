"""The compiled exact self-join: when to use it, its plan, and the call.

The numpy join (:mod:`.mih`) pays ~200 ns of interpreter and temporary-array work per
bucket probe; the numba kernel (:mod:`._kernels`) pays ~10 ns per probe and ~0.7 ns
per scanned candidate, so it is ~5x faster on large inputs (BENCHMARKS.md, "Compiled
near-dup kernel").  Its costs are also shaped differently -- probes are
cheap, scanning is what counts -- so it has its own plan (:func:`plan_compiled`).

Both give exactly the pairs of :func:`mitigate.neardup.brute_force_pairs`.  Importing
numba and loading the cached machine code (~0.8 s; compiling it on first use, ~10 s)
is only worth it for large searches, so ``engine="auto"`` uses the kernel
from :data:`COMPILED_MIN_NODES` unique hashes on.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from mitigate.kernels import compiled, load
from mitigate.neardup.bits import HASH_BITS, _check_k
from mitigate.neardup.cost import _ball_volume
from mitigate.neardup.plan import MAX_PROBES_PER_SUBSTRING, MIHPlan, pigeonhole_radii

logger = logging.getLogger(__name__)

Engine = Literal["auto", "numpy", "compiled"]

COMPILED_MIN_NODES: int = 50_000
"""``engine="auto"`` runs the compiled kernel from this many unique hashes on (below,
the numpy join takes well under a second and the kernel's import and load would
dominate; see BENCHMARKS.md for the crossover measurement)."""

COMPILED_MAX_KEY_BITS: int = 24
"""Longest substring the kernel buckets (its offsets array has ``2**L + 1`` entries);
plans with longer substrings run on the numpy join."""

MAX_COMPILED_SUBSTRINGS: int = 12
"""Most substrings a kernel plan considers (shorter substrings only add scanning)."""

# Cost model of the kernel (nanoseconds on one core of the development VM, fitted with
# ``benchmarks/bench_neardup.py --calibrate-compiled``; only ratios choose plans).
COMPILED_PROBE_NS: float = 10.2
"""One bucket probe: form the value, read two offsets (a cache miss on large tables)."""
COMPILED_PROBE_MISS_NS: float = 22.0
"""Extra cost of a probe once the hash array outgrows the caches: 0 up to 8 MiB (1M
hashes), growing log-linearly to this at 80 MiB (10M).  Fitted to one 10M run (m = 3:
661 s measured against 316 s without the term, over 15.8G probes); the 300k and 1M
calibration runs cannot see it."""
COMPILED_CANDIDATE_NS: float = 0.69
"""One scanned bucket entry: XOR, popcount, compare."""
COMPILED_ENTRY_NS: float = 356.0
"""Per node and substring: counting sort of the index and of the mirror queries."""
COMPILED_BUCKET_NS: float = 0.0
"""Per bucket value and substring: offsets and the walk over empty buckets."""


def _kernel_module():  # type: ignore[no-untyped-def]
    return _loaded() if compiled() else None


@lru_cache(maxsize=1)
def _loaded():  # type: ignore[no-untyped-def]
    return load("mitigate.neardup._kernels", "exact near-dup searches")


def _kernels():  # type: ignore[no-untyped-def]
    module = _kernel_module()
    if module is None:
        raise ImportError("the compiled near-dup kernel is unavailable here (logged)")
    return module


def compiled_available() -> bool:
    """Whether the kernel loads (numba is a core dependency; without it, or without a
    cache folder it can write, the numpy join runs, with a warning: :mod:`mitigate.kernels`)."""
    return _kernel_module() is not None


def plan_fits_kernel(plan: MIHPlan) -> bool:
    """Whether the kernel can run ``plan`` (every probed substring short enough)."""
    return all(
        ln <= COMPILED_MAX_KEY_BITS
        for ln, r in zip(plan.lengths, plan.radii, strict=True)
        if r >= 0
    )


def use_compiled(engine: Engine, n_nodes: int, plan: MIHPlan | None) -> bool:
    """Resolve ``engine`` for a self-join of ``n_nodes`` unique hashes."""
    if engine == "numpy":
        return False
    if plan is not None and not plan_fits_kernel(plan):
        if engine == "compiled":
            raise ValueError(
                f"engine='compiled' needs substrings of <= {COMPILED_MAX_KEY_BITS} bits, "
                f"plan has {plan.lengths}"
            )
        return False
    if engine == "compiled":
        if not compiled_available():  # pragma: no cover - numba is a dependency
            raise ImportError("engine='compiled' needs numba")
        return True
    if engine != "auto":
        raise ValueError(f"unknown engine {engine!r}: use 'auto', 'numpy' or 'compiled'")
    return n_nodes >= COMPILED_MIN_NODES and compiled_available()


def compiled_cost_terms(plan: MIHPlan, n_nodes: int, mirrored: bool = True) -> NDArray[np.float64]:
    """Expected operation counts of the kernel's self-join on ``n_nodes`` uniformly
    random nodes: ``[probes, comparisons, entries, buckets]``.

    Per probed substring of ``L`` bits and radius ``r`` (ball volume ``V``): every
    non-empty bucket of queries probes ``V`` values once for all its queries (pHash
    queries about half the ball, ``1 + (V - 1) / 2``), each probe compares every query
    of the bucket with every entry of the probed bucket (``n / 2**L`` each on
    average); the counting sorts touch every node and bucket once per query kind.
    """
    kinds = 2 if mirrored else 1
    probes = comparisons = entries = buckets = 0.0
    n = float(n_nodes)
    miss = min(1.0, max(0.0, math.log2(max(n, 1.0) * 8.0 / (8 << 20)) / math.log2(10.0)))
    for length, r in zip(plan.lengths, plan.radii, strict=True):
        if r < 0:
            continue
        nb = 2.0**length
        vol = float(_ball_volume(length, r))
        ball = 1.0 + (vol - 1.0) / 2.0 + (vol if mirrored else 0.0)
        nonempty = nb * -math.expm1(-n / nb)
        probes += nonempty * ball
        comparisons += n * n / nb * ball
        entries += kinds * n
        buckets += kinds * nb
    return np.array([probes, comparisons, entries, buckets, probes * miss])


def estimate_compiled_cost_ns(plan: MIHPlan, n_nodes: int, mirrored: bool = True) -> float:
    """Estimated nanoseconds of the kernel's self-join (:func:`compiled_cost_terms`
    priced with the ``COMPILED_*`` constants), uniformly random hashes."""
    unit = np.array(
        [
            COMPILED_PROBE_NS,
            COMPILED_CANDIDATE_NS,
            COMPILED_ENTRY_NS,
            COMPILED_BUCKET_NS,
            COMPILED_PROBE_MISS_NS,
        ]
    )
    return float(compiled_cost_terms(plan, n_nodes, mirrored) @ unit)


def _length_splits(m: int, spread: int) -> list[tuple[int, ...]]:
    """Non-increasing ``m``-tuples of substring lengths summing to 64, each within
    ``spread`` bits of ``64 // m``."""
    base = HASH_BITS // m
    lo, hi = max(1, base - spread), base + spread + 1

    def rec(left: int, parts: int, cap: int) -> list[tuple[int, ...]]:
        if parts == 0:
            return [()] if left == 0 else []
        out: list[tuple[int, ...]] = []
        for ln in range(min(cap, hi, left), lo - 1, -1):
            out.extend((ln, *rest) for rest in rec(left - ln, parts - 1, ln))
        return out

    return rec(HASH_BITS, m, hi)


def _candidate_plans(k: int) -> list[MIHPlan]:
    """Exact plans the kernel can run: ``m`` = 3..12 substrings with the tight
    pigeonhole radii (larger radii first; for ``m > k + 1`` the last substrings get
    radius -1 and are not probed), lengths non-increasing and within 3 bits of the
    even split (within 1 bit from ``m = 7`` on)."""
    out: list[MIHPlan] = []
    for m in range(3, MAX_COMPILED_SUBSTRINGS + 1):
        radii = pigeonhole_radii(k, m)
        for lengths in _length_splits(m, 3 if m <= 6 else 1):
            pairs = list(zip(lengths, radii, strict=True))
            if any(ln > COMPILED_MAX_KEY_BITS for ln, r in pairs if r >= 0):
                continue
            if any(_ball_volume(ln, r) > MAX_PROBES_PER_SUBSTRING for ln, r in pairs):
                continue
            starts = tuple(int(v) for v in np.cumsum((0, *lengths[:-1])))
            out.append(MIHPlan(starts, lengths, radii, k))
    return out


@lru_cache(maxsize=256)
def _plans_for(k: int) -> tuple[MIHPlan, ...]:
    return tuple(_candidate_plans(k))


def plan_compiled(k: int, n_nodes: int, mirrored: bool = True) -> MIHPlan:
    """The exact plan with the lowest :func:`estimate_compiled_cost_ns` for the kernel.

    For k = 10 and random hashes this is m = 4 substrings of about 16 bits (radii 2,
    2, 2, 1; lengths 17, 17, 16-17, 13-14) from ~300k to 10M hashes and 5 shorter ones
    below (BENCHMARKS.md).
    """
    k = _check_k(k)
    plans = _plans_for(k)
    if not plans:
        raise ValueError(f"no plan with substrings of <= {COMPILED_MAX_KEY_BITS} bits for k={k}")
    best = min(plans, key=lambda pl: estimate_compiled_cost_ns(pl, n_nodes, mirrored))
    logger.debug(
        "plan_compiled(k=%d, n=%d): lengths=%s radii=%s", k, n_nodes, best.lengths, best.radii
    )
    return best


def _grouped_masks(length: int, radius: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """The ball masks ordered by highest set bit and the group offsets the kernel reads
    (group 0 = the zero mask, group ``g + 1`` = highest set bit ``g``)."""
    from mitigate.neardup.mih import _ball_masks

    masks = _ball_masks(length, radius).astype(np.int64)
    top = np.array([int(v).bit_length() - 1 for v in masks.tolist()], np.int64)
    order = np.argsort(top, kind="stable")
    masks, top = masks[order], top[order]
    group_off = np.searchsorted(top, np.arange(-1, length + 1), side="left").astype(np.int64)
    return masks, group_off


def compiled_self_join(
    p: NDArray[np.uint64], m: NDArray[np.uint64] | None, k: int, plan: MIHPlan
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Node pairs ``(i, j)``, ``i < j``, with pair distance ``<= k``: each pair once,
    in the kernel's discovery order (the caller sorts them)."""
    if not plan_fits_kernel(plan):
        raise ValueError(f"plan substrings {plan.lengths} too long for the kernel")
    kern = _kernels()
    n = p.shape[0]
    node_p = np.ascontiguousarray(p, np.uint64)
    mirrored = m is not None
    node_m = np.ascontiguousarray(m, np.uint64) if m is not None else np.zeros(1, np.uint64)
    shifts = np.array(plan.starts, np.uint64)
    lmasks = np.array([(1 << ln) - 1 for ln in plan.lengths], np.uint64)
    radii = np.array(plan.radii, np.int64)
    cap = max(1024, n)
    out_i = np.empty(cap, np.int64)
    out_j = np.empty(cap, np.int64)
    n_out = 0
    for z, (ln, r) in enumerate(zip(plan.lengths, plan.radii, strict=True)):
        if r < 0 or n < 2:
            continue
        masks, group_off = _grouped_masks(ln, r)
        out_i, out_j, n_out = kern.join_substring(
            node_p,
            node_m,
            mirrored,
            z,
            shifts,
            lmasks,
            radii,
            k,
            masks,
            group_off,
            out_i,
            out_j,
            n_out,
        )
    return out_i[:n_out].copy(), out_j[:n_out].copy()
