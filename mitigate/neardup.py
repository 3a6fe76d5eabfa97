"""Near-duplicate detection on 64-bit perceptual hashes (Beam-free core math).

Every item ``i`` carries two 64-bit perceptual hashes stored as ``np.uint64``:

* ``phash[i]`` -- pHash of the image;
* ``mirror[i]`` -- pHash of the horizontally mirrored image (optional everywhere: pass
  ``mirror=None`` to use the plain pHash rule only).

Distance
--------
The *pair distance* (in bits, 0..64) of items ``i`` and ``j`` is::

    d(i, j) = min(H(p_i, p_j), H(p_i, m_j), H(m_i, p_j))

where ``H`` is the Hamming distance (popcount of the XOR).  ``i`` and ``j`` are *near
duplicates* when ``d(i, j) <= k``.  ``d`` is symmetric.  ``H(m_i, m_j)`` is deliberately
**not** part of the rule: it compares the two images in the same relative orientation
as ``H(p_i, p_j)`` does.  (The pHash of a mirrored image is not a bit permutation of the
original's -- odd horizontal DCT frequencies change sign and the median threshold
moves -- so ``H(m_i, m_j)`` is close to, not equal to, ``H(p_i, p_j)``; a pair with
``H(p_i, p_j) > k`` but ``H(m_i, m_j) <= k`` is therefore *not* reported.  Adding the
term would cost a fourth test per pair and a second index for little gain.)  The mirror
terms exist to catch "A is the mirror image of B".

Search modes (all return :class:`PairSet`, sorted unique pairs ``i < j`` with ``d``)
-----------------------------------------------------------------------------------
* :func:`brute_force_pairs` -- reference O(N^2) implementation, chunked numpy,
  memory bounded by ``block_elems``.
* ``mode="exact"`` -- multi-index hashing (MIH, Norouzi et al. 2012).  The 64 bits are
  split into ``m`` contiguous substrings.  By the pigeonhole principle a pair with
  ``H <= k`` has some substring ``z`` with ``H_z <= r_z`` whenever ``sum_z (r_z + 1) > k``;
  we use the tight radii ``r_z = k // m`` for the first ``k % m + 1`` substrings and
  ``k // m - 1`` for the rest (``-1`` = substring not probed).  Every substring value of
  the indexed pHashes is put in a bucket table; each query probes all values within
  ``r_z`` of its own substring and the candidates are verified with the exact 64-bit
  Hamming distance.  The mirror rule is handled by also querying with mirror hashes
  against the pHash index (``H(m_i, p_j)``; ``H(p_i, m_j)`` is the same test seen from
  ``j``).  pHash-vs-pHash queries probe only half of each Hamming ball (the pair is
  found from the side whose substring is smaller).  The result equals
  :func:`brute_force_pairs` exactly.  ``m`` and the radii come from a cost model
  (:func:`plan_mih`); buckets are dense "slot tables" (one ``np.take`` of a fixed
  number of stored hashes per probe) for substrings of <= 22 bits and sorted arrays
  with binary search above.
  ``m=k+1`` with all radii 0 is the *band* formulation ("k+1 bands, exact match on a
  band"): the band value is a plain grouping key, which is what a distributed
  (Beam) pipeline groups by; see :func:`plan_bands`, :func:`band_keys`.
* ``mode="lsh"`` -- bit-sampling LSH over ``L`` tables of ``b`` sampled bit positions
  (deterministic seed), exact verification of candidates; approximate (misses pairs,
  never reports a false pair).  :func:`estimate_pair_recall` measures its recall.

Hot values
----------
Items with identical ``(phash, mirror)`` are collapsed into one *node* before any
search (:func:`collapse_identical`); the search runs on unique nodes, so one hash shared
by many items costs one query, not a quadratic number of candidates.  Pair output is
expanded back to items (the expansion itself is quadratic in the group size because
the pairs are the output); :func:`deduplicate` never expands and stays linear.
Many *distinct* hashes sharing one substring value (e.g. near-blank images) still make
that bucket large: every probe of it verifies all its entries, so a tight cluster of
``c`` distinct hashes costs O(c^2) verifications (as it yields O(c^2) pairs anyway).

Keep rule
---------
:func:`greedy_keep` / :func:`deduplicate`: connected components over verified edges and
a greedy pass in rank order (smaller rank = better): an item is kept unless it has a
verified edge (``d <= k``) to an already kept item; then it is dropped with
``duplicate_of`` = the best-ranked kept item it has an edge to.  "Within k" always
means "joined by a verified edge"; with ``mode="exact"`` or brute force the edge set is
exactly the set of pairs with ``d <= k``.

Distributed use
---------------
:func:`substring_keys`/:func:`band_keys` (index side), :func:`probe_keys` (query side),
:func:`lsh_keys` and :func:`verify_candidates` are exposed so that a pipeline can group
by ``(substring index, value)`` keys, form candidate pairs inside each group and verify
them; the in-memory functions here use exactly the same keys.

Hash bit order: bit ``t`` of the uint64 is ``(h >> t) & 1``; substring ``z`` covers bits
``[start_z, start_z + length_z)``.  :func:`hex_to_uint64` reads imagehash / imagededup
16-hex-digit strings (big-endian, so the first hex digit holds bits 60..63).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

logger = logging.getLogger(__name__)

HASH_BITS: int = 64
"""Number of bits in a perceptual hash."""

DENSE_TABLE_MAX_BITS: int = 22
"""Bucket keys of at most this many bits use a dense slot table (:class:`_SlotIndex`);
longer keys use a sorted array and binary search."""

MAX_TABLE_ENTRIES: int = 1 << 24
"""Upper bound on ``2**key_bits * width`` words of one slot table (128 MiB of hashes plus
64 MiB of ids); the width is reduced (more overflow) to respect it."""


MAX_PROBES_PER_SUBSTRING: int = 4_000_000
"""Refuse MIH plans whose Hamming ball for one substring has more probe values."""

_ONE = np.uint64(1)
_POP8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)
_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")

Mode = Literal["auto", "exact", "lsh", "brute"]

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


# ======================================================================================
# Input handling and popcount
# ======================================================================================


def as_hashes(values: ArrayLike, name: str = "hashes") -> NDArray[np.uint64]:
    """Return ``values`` as a 1-D ``np.uint64`` array of 64-bit hashes.

    Signed 64-bit input (e.g. from Parquet/Arrow, which has no unsigned 64-bit type in
    some writers) is reinterpreted bit-for-bit; Python ints are masked to 64 bits.
    """
    arr = np.asarray(values)
    if not isinstance(values, np.ndarray) and arr.dtype.kind not in "iu":
        arr = np.asarray(values, dtype=object)  # e.g. Python ints above 2**63
    if arr.dtype == np.uint64:
        out = arr
    elif arr.dtype.kind == "i" and arr.dtype.itemsize == 8:
        out = arr.view(np.uint64)
    elif arr.dtype.kind in "iu":
        if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
            raise ValueError(f"{name}: negative values in a narrow signed dtype")
        out = arr.astype(np.uint64)
    elif arr.dtype == object:
        if not all(isinstance(v, (int, np.integer)) for v in arr.ravel()):
            raise TypeError(f"{name}: expected integer hashes")
        out = np.array([int(v) & 0xFFFF_FFFF_FFFF_FFFF for v in arr.ravel()], dtype=np.uint64)
        out = out.reshape(arr.shape)
    else:
        raise TypeError(f"{name}: expected integer hashes, got dtype {arr.dtype}")
    if out.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {out.shape}")
    return np.ascontiguousarray(out)


def _as_pair(
    phash: ArrayLike, mirror: ArrayLike | None
) -> tuple[NDArray[np.uint64], NDArray[np.uint64] | None]:
    p = as_hashes(phash, "phash")
    if mirror is None:
        return p, None
    m = as_hashes(mirror, "mirror")
    if m.shape != p.shape:
        raise ValueError(f"mirror shape {m.shape} != phash shape {p.shape}")
    return p, m


def _check_k(k: int) -> int:
    if not 0 <= int(k) <= HASH_BITS:
        raise ValueError(f"k must be in [0, {HASH_BITS}], got {k}")
    return int(k)


def hex_to_uint64(hex_hashes: Sequence[str]) -> NDArray[np.uint64]:
    """Parse 16-hex-digit hash strings (imagehash ``str(h)``, imagededup encodings)."""
    return np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)


def uint64_to_hex(hashes: ArrayLike) -> list[str]:
    """Format hashes as 16-hex-digit strings (inverse of :func:`hex_to_uint64`)."""
    return [f"{int(h):016x}" for h in as_hashes(hashes)]


def popcount64(x: ArrayLike) -> NDArray[np.uint8]:
    """Number of set bits of each uint64 (0..64), vectorised.

    Uses ``np.bitwise_count`` (numpy >= 2.0, hardware popcount) and otherwise a
    256-entry byte lookup table.
    """
    arr = np.asarray(x, dtype=np.uint64)
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(arr)
    return _popcount_lut(arr)


def _popcount_lut(arr: NDArray[np.uint64]) -> NDArray[np.uint8]:
    """Byte-lookup-table popcount (fallback for numpy < 2; also used in tests)."""
    flat = np.ascontiguousarray(arr, dtype=np.uint64).reshape(-1)
    counts = _POP8[flat.view(np.uint8).reshape(-1, 8)].sum(axis=1, dtype=np.uint8)
    return counts.reshape(np.shape(arr))


def hamming(a: ArrayLike, b: ArrayLike) -> NDArray[np.uint8]:
    """Hamming distance in bits between uint64 hashes (numpy broadcasting applies)."""
    return popcount64(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


def pair_distance(
    p_a: ArrayLike, m_a: ArrayLike | None, p_b: ArrayLike, m_b: ArrayLike | None
) -> NDArray[np.uint8]:
    """Pair distance ``min(H(p_a,p_b), H(p_a,m_b), H(m_a,p_b))`` in bits (broadcasts).

    A mirror term is skipped when the corresponding mirror is ``None``.
    """
    d = hamming(p_a, p_b)
    if m_b is not None:
        d = np.minimum(d, hamming(p_a, m_b))
    if m_a is not None:
        d = np.minimum(d, hamming(m_a, p_b))
    return d


# ======================================================================================
# Pair sets
# ======================================================================================


@dataclass(frozen=True, eq=False)
class PairSet:
    """Unordered near-duplicate pairs: ``i[t] < j[t]``, sorted by ``(i, j)``, unique.

    ``dist[t]`` is the pair distance ``d(i, j)`` in bits.
    """

    i: NDArray[np.int64]
    j: NDArray[np.int64]
    dist: NDArray[np.uint8]

    def __len__(self) -> int:
        return int(self.i.shape[0])

    def to_set(self) -> set[tuple[int, int, int]]:
        """The pairs as a Python set of ``(i, j, dist)`` tuples (for tests / small data)."""
        return set(zip(self.i.tolist(), self.j.tolist(), self.dist.tolist(), strict=True))

    def same_as(self, other: PairSet) -> bool:
        """True when both sets hold exactly the same pairs with the same distances."""
        return (
            np.array_equal(self.i, other.i)
            and np.array_equal(self.j, other.j)
            and np.array_equal(self.dist, other.dist)
        )

    @staticmethod
    def empty() -> PairSet:
        """An empty pair set."""
        return PairSet(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8))


def _canonical_pairs(
    a: NDArray[np.integer], b: NDArray[np.integer], dist: NDArray[np.integer] | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint8] | None]:
    """Order each pair as ``i < j``, drop self pairs and duplicates, sort by ``(i, j)``."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    i = np.minimum(a, b)
    j = np.maximum(a, b)
    keep = i != j
    i, j = i[keep], j[keep]
    d = None if dist is None else np.asarray(dist)[keep]
    order = np.lexsort((j, i))
    i, j = i[order], j[order]
    if d is not None:
        d = d[order]
    if i.size:
        first = np.ones(i.size, dtype=bool)
        first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
        i, j = i[first], j[first]
        if d is not None:
            d = d[first]
    return i, j, (None if d is None else d.astype(np.uint8))


def verify_candidates(
    phash: ArrayLike,
    mirror: ArrayLike | None,
    i: ArrayLike,
    j: ArrayLike,
    k: int,
) -> PairSet:
    """Exact verification of candidate pairs ``(i[t], j[t])`` (item indices).

    Computes the pair distance, keeps pairs with ``d <= k``, drops self pairs and
    duplicates and returns them canonically (``i < j``, sorted).  Order and
    multiplicity of the candidates do not matter, so candidates from several
    buckets / tables / workers can simply be concatenated.
    """
    k = _check_k(k)
    p, m = _as_pair(phash, mirror)
    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)
    if i.shape != j.shape:
        raise ValueError("i and j must have the same shape")
    if i.size == 0:
        return PairSet.empty()
    d = pair_distance(p[i], None if m is None else m[i], p[j], None if m is None else m[j])
    ok = d <= k
    ci, cj, cd = _canonical_pairs(i[ok], j[ok], d[ok])
    assert cd is not None
    return PairSet(ci, cj, cd)


# ======================================================================================
# Brute force (reference)
# ======================================================================================


def brute_force_pairs(
    phash: ArrayLike,
    mirror: ArrayLike | None,
    k: int,
    *,
    block_elems: int = 1 << 22,
) -> PairSet:
    """All pairs with ``d <= k`` by exhaustive comparison (reference implementation).

    O(N^2 / 2) pair evaluations in row blocks against the upper triangle; peak extra
    memory is about ``11 * block_elems`` bytes (uint64 XOR buffer, two uint8 distance
    buffers, the boolean mask) plus the output.
    """
    k = _check_k(k)
    p, m = _as_pair(phash, mirror)
    n = p.shape[0]
    block_elems = max(block_elems, n)  # at least one full row
    xbuf = np.empty(block_elems, np.uint64)
    dbuf = np.empty(block_elems, np.uint8)
    tbuf = np.empty(block_elems, np.uint8)
    out_i: list[NDArray[np.int64]] = []
    out_j: list[NDArray[np.int64]] = []
    out_d: list[NDArray[np.uint8]] = []
    s = 0
    while s < n - 1:
        width = n - s  # columns s..n-1
        rows = max(1, min(n - 1 - s, block_elems // width))
        e = s + rows
        shape = (rows, width)
        x = xbuf[: rows * width].reshape(shape)
        d = dbuf[: rows * width].reshape(shape)
        t = tbuf[: rows * width].reshape(shape)
        np.bitwise_xor(p[s:e, None], p[None, s:], out=x)
        _popcount_into(x, d)
        if m is not None:
            np.bitwise_xor(p[s:e, None], m[None, s:], out=x)
            _popcount_into(x, t)
            np.minimum(d, t, out=d)
            np.bitwise_xor(m[s:e, None], p[None, s:], out=x)
            _popcount_into(x, t)
            np.minimum(d, t, out=d)
        r, c = np.nonzero(d <= k)
        upper = c > r  # column index c is item s + c, row r is item s + r
        r, c = r[upper], c[upper]
        out_d.append(d[r, c].copy())
        out_i.append(r.astype(np.int64) + s)
        out_j.append(c.astype(np.int64) + s)
        s = e
    if not out_i:
        return PairSet.empty()
    return PairSet(np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d))


def _popcount_into(x: NDArray[np.uint64], out: NDArray[np.uint8]) -> None:
    if _HAS_BITWISE_COUNT:
        np.bitwise_count(x, out=out)
    else:
        out[...] = _popcount_lut(x)


def brute_force_join(
    query_phash: ArrayLike,
    query_mirror: ArrayLike | None,
    index_phash: ArrayLike,
    index_mirror: ArrayLike | None,
    k: int,
    *,
    block_elems: int = 1 << 22,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint8]]:
    """All (query, index) pairs with pair distance ``<= k`` by exhaustive comparison.

    Returns ``(query_idx, index_idx, dist)`` sorted by ``(query_idx, index_idx)``.  The
    two sets are unrelated (a query is not excluded from matching "itself").
    """
    k = _check_k(k)
    qp, qm = _as_pair(query_phash, query_mirror)
    ip, im = _as_pair(index_phash, index_mirror)
    nq, ni = qp.shape[0], ip.shape[0]
    out_q: list[NDArray[np.int64]] = []
    out_x: list[NDArray[np.int64]] = []
    out_d: list[NDArray[np.uint8]] = []
    rows = max(1, block_elems // max(ni, 1))
    for s in range(0, nq, rows):
        e = min(nq, s + rows)
        d = pair_distance(
            qp[s:e, None],
            None if qm is None else qm[s:e, None],
            ip[None, :],
            None if im is None else im[None, :],
        )
        r, c = np.nonzero(d <= k)
        out_q.append(r.astype(np.int64) + s)
        out_x.append(c.astype(np.int64))
        out_d.append(d[r, c])
    if not out_q:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8)
    return np.concatenate(out_q), np.concatenate(out_x), np.concatenate(out_d)


# ======================================================================================
# Collapsing identical hashes
# ======================================================================================


@dataclass(frozen=True, eq=False)
class HashGroups:
    """Items grouped by identical ``(phash, mirror)`` ("nodes").

    ``node_phash[u]``/``node_mirror[u]`` are the hashes of node ``u`` (nodes sorted by
    ``(phash, mirror)`` value); ``item_node[i]`` is the node of item ``i``; the items of
    node ``u`` are ``items[offsets[u]:offsets[u + 1]]`` in increasing item order.
    """

    node_phash: NDArray[np.uint64]
    node_mirror: NDArray[np.uint64] | None
    item_node: NDArray[np.int64]
    items: NDArray[np.int64]
    offsets: NDArray[np.int64]

    @property
    def n_nodes(self) -> int:
        """Number of distinct ``(phash, mirror)`` values."""
        return int(self.node_phash.shape[0])

    @property
    def sizes(self) -> NDArray[np.int64]:
        """Number of items per node."""
        return np.diff(self.offsets)


def collapse_identical(phash: ArrayLike, mirror: ArrayLike | None) -> HashGroups:
    """Group items whose ``(phash, mirror)`` are identical (O(N log N), deterministic)."""
    p, m = _as_pair(phash, mirror)
    n = p.shape[0]
    order = np.lexsort((p,) if m is None else (m, p))  # stable: items ascending in group
    sp = p[order]
    new = np.ones(n, dtype=bool)
    if n:
        new[1:] = sp[1:] != sp[:-1]
        if m is not None:
            sm = m[order]
            new[1:] |= sm[1:] != sm[:-1]
    starts = np.flatnonzero(new)
    node_of_sorted = np.cumsum(new) - 1
    item_node = np.empty(n, np.int64)
    item_node[order] = node_of_sorted
    offsets = np.append(starts, n).astype(np.int64)
    return HashGroups(
        node_phash=sp[starts],
        node_mirror=None if m is None else m[order][starts],
        item_node=item_node,
        items=order.astype(np.int64),
        offsets=offsets,
    )


def _ragged_arange(counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """Concatenation of ``arange(c)`` for every ``c`` in ``counts``."""
    counts = np.asarray(counts, np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, np.int64)
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


def expand_node_pairs(groups: HashGroups, node_pairs: PairSet) -> PairSet:
    """Turn pairs of nodes into pairs of items (plus all pairs inside a node, ``d = 0``).

    Output size is the number of item pairs, i.e. quadratic in group sizes.
    """
    sizes = groups.sizes
    starts = groups.offsets[:-1]
    items = groups.items
    # Pairs inside a node: item at position t pairs with positions t+1..g-1.
    g_of_item = sizes[groups.item_node]
    pos_in_node = np.empty(items.shape[0], np.int64)
    pos_in_node[items] = np.arange(items.shape[0]) - np.repeat(starts, sizes)
    cnt = g_of_item - 1 - pos_in_node
    first = np.repeat(np.arange(items.shape[0], dtype=np.int64), cnt)
    second = items[np.repeat(starts[groups.item_node] + pos_in_node + 1, cnt) + _ragged_arange(cnt)]
    within_d = np.zeros(first.shape[0], np.uint8)
    # Pairs across nodes.
    ga = sizes[node_pairs.i]
    gb = sizes[node_pairs.j]
    cnt2 = ga * gb
    r = _ragged_arange(cnt2)
    rep_gb = np.repeat(gb, cnt2)
    a_items = items[np.repeat(starts[node_pairs.i], cnt2) + r // np.maximum(rep_gb, 1)]
    b_items = items[np.repeat(starts[node_pairs.j], cnt2) + r % np.maximum(rep_gb, 1)]
    across_d = np.repeat(node_pairs.dist, cnt2)
    ci, cj, cd = _canonical_pairs(
        np.concatenate([first, a_items]),
        np.concatenate([second, b_items]),
        np.concatenate([within_d, across_d]),
    )
    assert cd is not None
    return PairSet(ci, cj, cd)


# ======================================================================================
# Multi-index hashing plans and keys
# ======================================================================================


@dataclass(frozen=True)
class MIHPlan:
    """A multi-index hashing plan.

    Substring ``z`` covers hash bits ``[starts[z], starts[z] + lengths[z])`` and is probed
    with Hamming radius ``radii[z]`` (``-1`` = not probed).  The plan is *exact* for
    threshold ``k`` iff some substring matches everything (``radii[z] >= lengths[z]``) or
    ``sum(radii[z] + 1) > k`` (pigeonhole).
    """

    starts: tuple[int, ...]
    lengths: tuple[int, ...]
    radii: tuple[int, ...]
    k: int

    @property
    def m(self) -> int:
        """Number of substrings."""
        return len(self.starts)

    def probes_per_query(self) -> int:
        """Number of bucket probes one query hash makes (sum of Hamming-ball volumes)."""
        pairs = zip(self.lengths, self.radii, strict=True)
        return sum(_ball_volume(length, r) for length, r in pairs)


def split_bits(m: int) -> list[tuple[int, int]]:
    """Split 64 bits into ``m`` contiguous substrings ``(start, length)``, as even as
    possible, longer substrings first (``64 % m`` of them are one bit longer)."""
    if not 1 <= m <= HASH_BITS:
        raise ValueError(f"m must be in [1, {HASH_BITS}], got {m}")
    base, extra = divmod(HASH_BITS, m)
    out: list[tuple[int, int]] = []
    start = 0
    for z in range(m):
        length = base + (1 if z < extra else 0)
        out.append((start, length))
        start += length
    return out


def pigeonhole_radii(k: int, m: int) -> tuple[int, ...]:
    """Tightest radii that keep an ``m``-substring MIH exact for threshold ``k``.

    With ``k = m*q + a`` (``0 <= a < m``): the first ``a + 1`` substrings get radius
    ``q`` and the remaining ``m - a - 1`` get ``q - 1``.  Then ``sum(r_z + 1) = k + 1``:
    a pair whose substrings all exceeded their radii would differ in at least ``k + 1``
    bits.  Radius ``-1`` means the substring need not be probed at all.
    """
    k = _check_k(k)
    q, a = divmod(k, m)
    return tuple([q] * (a + 1) + [q - 1] * (m - a - 1))


def _ball_volume(length: int, radius: int) -> int:
    """Number of ``length``-bit values within Hamming distance ``radius`` of a value."""
    if radius < 0:
        return 0
    return sum(math.comb(length, t) for t in range(min(radius, length) + 1))


def make_plan(k: int, m: int, radii: Sequence[int] | None = None) -> MIHPlan:
    """An MIH plan with ``m`` even substrings and the given (default: tight) radii.

    Raises ``ValueError`` when the radii would not make the search exact.
    """
    k = _check_k(k)
    parts = split_bits(m)
    r = tuple(int(v) for v in (pigeonhole_radii(k, m) if radii is None else radii))
    if len(r) != m:
        raise ValueError(f"need {m} radii, got {len(r)}")
    plan = MIHPlan(
        starts=tuple(s for s, _ in parts), lengths=tuple(ln for _, ln in parts), radii=r, k=k
    )
    covers_all = any(rz >= ln for rz, ln in zip(plan.radii, plan.lengths, strict=True))
    if not covers_all and sum(rz + 1 for rz in plan.radii) <= k:
        raise ValueError(f"radii {r} are not exact for k={k}: need sum(r+1) > k")
    for ln, rz in zip(plan.lengths, plan.radii, strict=True):
        if _ball_volume(ln, rz) > MAX_PROBES_PER_SUBSTRING:
            raise ValueError(f"substring of {ln} bits with radius {rz}: too many probes")
    return plan


def plan_bands(k: int) -> MIHPlan:
    """The band formulation: ``k + 1`` substrings, exact match (radius 0) on each.

    Pigeonhole: ``k`` differing bits touch at most ``k`` of the ``k + 1`` bands, so a
    near-duplicate pair shares at least one band value.  Bands are only ~``64/(k+1)``
    bits long (6 bits for k=10), so each band value is shared by ``N / 2**bits`` random
    items: cheap to distribute, but O(N^2 / 2**bits) candidates.
    """
    k = _check_k(k)
    if k + 1 > HASH_BITS:
        raise ValueError("band plan needs k < 64")
    return make_plan(k, k + 1, [0] * (k + 1))


def estimate_mih_cost_ns(plan: MIHPlan, n_index: int, n_query: int) -> float:
    """Estimated nanoseconds of an MIH join, assuming uniformly random hashes.

    Sum over probed substrings of one slot-table join: ``n_query * V(L, r)`` probes
    (``V`` = Hamming-ball volume), each scanning the table width chosen for the
    expected ``n_index / 2**L`` entries per bucket, plus the table build; priced with
    the ``COST_*`` constants.
    """
    return sum(
        _join_cost_ns(n_index, n_query, length, r)
        for length, r in zip(plan.lengths, plan.radii, strict=True)
        if r >= 0
    )


def plan_mih(
    k: int,
    n_index: int,
    n_query: int | None = None,
    *,
    m: int | None = None,
    radii: Sequence[int] | None = None,
) -> MIHPlan:
    """Choose an exact MIH plan for threshold ``k`` and the given sizes.

    ``m`` (number of substrings) defaults to the value in ``1..k+1`` minimising
    :func:`estimate_mih_cost_ns` with tight :func:`pigeonhole_radii`; the intuition is
    ``m ~ 64 / log2(n)`` so that each bucket holds ~1 random entry (Norouzi et al.).
    For random hashes this gives e.g. k=10: m=5 at 10k, m=4 at 100k, m=3 at 1M.  Pass
    ``m`` and/or ``radii`` to override (radii are validated for exactness).
    """
    k = _check_k(k)
    n_query = n_index if n_query is None else n_query
    if m is not None:
        return make_plan(k, m, radii)
    if radii is not None:
        return make_plan(k, len(radii), radii)
    best: tuple[float, MIHPlan] | None = None
    for cand_m in range(1, min(HASH_BITS, k + 1) + 1):
        try:
            plan = make_plan(k, cand_m)
        except ValueError:
            continue
        cost = estimate_mih_cost_ns(plan, n_index, n_query)
        if best is None or cost < best[0]:
            best = (cost, plan)
    assert best is not None
    logger.debug("plan_mih(k=%d, n=%d): m=%d radii=%s", k, n_index, best[1].m, best[1].radii)
    return best[1]


def _substring(hashes: NDArray[np.uint64], start: int, length: int) -> NDArray[np.uint64]:
    shifted = hashes >> np.uint64(start) if start else hashes
    if length >= HASH_BITS:
        return shifted.copy()
    return shifted & np.uint64((1 << length) - 1)


def substring_keys(hashes: ArrayLike, plan: MIHPlan) -> NDArray[np.uint64]:
    """Index-side keys: ``out[i, z]`` = value of substring ``z`` of ``hashes[i]``.

    The grouping key of a distributed join is ``(z, out[i, z])``; substrings with
    radius ``-1`` are included (harmless) so that column ``z`` is always substring ``z``.
    """
    h = as_hashes(hashes)
    out = np.empty((h.shape[0], plan.m), np.uint64)
    for z, (s, ln) in enumerate(zip(plan.starts, plan.lengths, strict=True)):
        out[:, z] = _substring(h, s, ln)
    return out


def band_keys(hashes: ArrayLike, k: int) -> NDArray[np.uint64]:
    """Band values ``(N, k+1)`` of :func:`plan_bands`; group by ``(band, value)``."""
    return substring_keys(hashes, plan_bands(k))


@lru_cache(maxsize=64)
def _ball_masks(length: int, radius: int) -> NDArray[np.uint64]:
    """All ``length``-bit XOR masks of popcount ``<= radius`` (read-only, cached)."""
    masks: list[int] = [0]
    for t in range(1, min(radius, length) + 1):
        for bits in itertools.combinations(range(length), t):
            v = 0
            for b in bits:
                v |= 1 << b
            masks.append(v)
    arr = np.array(masks, dtype=np.uint64)
    arr.setflags(write=False)
    return arr


def probe_keys(
    hashes: ArrayLike, plan: MIHPlan
) -> tuple[NDArray[np.int64], NDArray[np.int16], NDArray[np.uint64]]:
    """Query-side keys: every ``(z, value)`` within radius ``radii[z]`` of each hash.

    Returns flat arrays ``(row, z, value)``: hash ``row`` must meet every index entry
    whose substring ``z`` equals ``value``.  Query with both pHash and mirror hashes
    against a pHash index to cover the mirror rule.  With :func:`plan_bands` this is
    exactly :func:`band_keys` flattened.
    """
    h = as_hashes(hashes)
    rows: list[NDArray[np.int64]] = []
    zs: list[NDArray[np.int16]] = []
    vals: list[NDArray[np.uint64]] = []
    for z, (s, ln, r) in enumerate(zip(plan.starts, plan.lengths, plan.radii, strict=True)):
        if r < 0:
            continue
        masks = _ball_masks(ln, r)
        sub = _substring(h, s, ln)
        vals.append((sub[:, None] ^ masks[None, :]).ravel())
        rows.append(np.repeat(np.arange(h.shape[0], dtype=np.int64), masks.shape[0]))
        zs.append(np.full(h.shape[0] * masks.shape[0], z, np.int16))
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int16), np.empty(0, np.uint64)
    return np.concatenate(rows), np.concatenate(zs), np.concatenate(vals)


# ======================================================================================
# Bucket index (shared by MIH and LSH)
# ======================================================================================


class _SortedIndex:
    """Bucket index for long keys (> ``DENSE_TABLE_MAX_BITS`` bits): sorted keys plus
    binary search; candidates are expanded bucket by bucket and verified."""

    def __init__(self, keys: NDArray[np.uint64], full: NDArray[np.uint64]) -> None:
        order = np.argsort(keys, kind="stable")
        self.ids: NDArray[np.int64] = order.astype(np.int64)
        self.full: NDArray[np.uint64] = full[order]
        self.sorted_keys: NDArray[np.uint64] = keys[order]

    def matches(
        self,
        probe: NDArray[np.uint64],
        probe_row: NDArray[np.int64],
        query_full: NDArray[np.uint64],
        k: int,
        max_candidates: int = 1 << 22,
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """``(row, index_id)`` with ``H(query_full[row], full[index_id]) <= k`` for every
        probe key ``probe[t]`` issued by query row ``probe_row[t]``."""
        lo = np.searchsorted(self.sorted_keys, probe, side="left").astype(np.int64)
        hi = np.searchsorted(self.sorted_keys, probe, side="right").astype(np.int64)
        return _expand_verify(
            lo, hi - lo, probe_row, self.full, self.ids, query_full, k, max_candidates
        )


def _expand_verify(
    lo: NDArray[np.int64],
    cnt: NDArray[np.int64],
    probe_row: NDArray[np.int64],
    full: NDArray[np.uint64],
    ids: NDArray[np.integer],
    query_full: NDArray[np.uint64],
    k: int,
    max_candidates: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Expand buckets ``full[lo[t]:lo[t]+cnt[t]]`` against ``query_full[probe_row[t]]``
    and keep entries within ``k`` bits; at most ~``max_candidates`` are materialised at
    once (a single larger bucket is expanded on its own)."""
    nz = np.flatnonzero(cnt)
    if nz.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    lo, cnt, rows = lo[nz], cnt[nz], probe_row[nz]
    csum = np.cumsum(cnt)
    total = int(csum[-1])
    if total <= max_candidates:
        cuts = [0, cnt.shape[0]]
    else:
        inner = np.searchsorted(csum, np.arange(max_candidates, total, max_candidates))
        cuts = sorted({0, cnt.shape[0], *(int(c) + 1 for c in inner)})
    out_r: list[NDArray[np.int64]] = []
    out_i: list[NDArray[np.int64]] = []
    for a, b in itertools.pairwise(cuts):
        if a >= b:
            continue
        c = cnt[a:b]
        pos = np.repeat(lo[a:b], c) + _ragged_arange(c)
        row = np.repeat(rows[a:b], c)
        ok = np.flatnonzero(popcount64(full[pos] ^ query_full[row]) <= k)
        out_r.append(row[ok])
        out_i.append(ids[pos[ok]].astype(np.int64))
    return np.concatenate(out_r), np.concatenate(out_i)


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


def _sentinels(key_bits: int, positions: NDArray[np.int64]) -> NDArray[np.uint64]:
    """For every key value ``v`` (``2**key_bits`` of them): a 64-bit word whose key bits
    (hash bits ``positions``) are ``~v`` and all other bits 0.

    A query probing bucket ``v`` with a key within ``r`` bits of ``v`` is at least
    ``key_bits - r`` bits away from the sentinel, so sentinels fill empty table slots
    without ever matching when ``key_bits - r > k``.
    """
    nb = 1 << key_bits
    inv = ~np.arange(nb, dtype=np.uint64) & np.uint64(nb - 1)
    pos = positions.tolist()
    if pos == list(range(pos[0], pos[0] + key_bits)):
        return inv << np.uint64(pos[0])
    out = np.zeros(nb, np.uint64)
    values = np.arange(256, dtype=np.uint64)
    for chunk in range(0, key_bits, 8):
        lut = np.zeros(256, np.uint64)
        for t in range(chunk, min(chunk + 8, key_bits)):
            lut |= ((values >> np.uint64(t - chunk)) & _ONE) << np.uint64(pos[t])
        out |= lut[((inv >> np.uint64(chunk)) & np.uint64(255)).astype(np.intp)]
    return out


class _SlotIndex:
    """Dense bucket table for keys of at most ``DENSE_TABLE_MAX_BITS`` bits.

    ``table[v, s]`` holds the full hash of the ``s``-th entry with key ``v``; the width
    ``B`` minimises :func:`_width_cost_ns` for the actual bucket sizes and the expected
    number of probes, entries beyond ``B`` go to a CSR overflow.  A probe is one
    contiguous ``np.take`` of ``B`` words plus XOR/popcount, with no per-candidate
    bookkeeping.  Empty slots hold a sentinel that
    cannot match (see :func:`_sentinels`) or, when that is impossible, are masked by
    the bucket count.
    """

    def __init__(
        self,
        keys: NDArray[np.intp],
        full: NDArray[np.uint64],
        key_bits: int,
        positions: NDArray[np.int64],
        radius: int,
        k: int,
        probes: float,
    ) -> None:
        n = keys.shape[0]
        nb = 1 << key_bits
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        counts = np.bincount(sk, minlength=nb)
        offsets = np.zeros(nb + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        width = _slot_width(counts, probes, max(1, MAX_TABLE_ENTRIES // nb))
        slot = np.arange(n, dtype=np.int64) - offsets[sk]
        inside = slot < width
        id_dtype = np.int32 if n < 2**31 else np.int64
        self.width = width
        self.use_sentinel = key_bits - radius > k
        if self.use_sentinel:
            self.table = np.repeat(_sentinels(key_bits, positions)[:, None], width, axis=1)
            self.valid_count: NDArray[np.int32] | None = None
        else:
            self.table = np.zeros((nb, width), np.uint64)
            self.valid_count = np.minimum(counts, width).astype(np.int32)
        si, ss, so = sk[inside], slot[inside], order[inside]
        self.table[si, ss] = full[so]
        self.ids = np.full((nb, width), -1, id_dtype)
        self.ids[si, ss] = so
        self.slots = np.arange(width, dtype=np.int32)
        outside = ~inside
        self.has_overflow = bool(outside.any())
        if self.has_overflow:
            ok_keys = sk[outside]
            self.ovf_ids = order[outside].astype(np.int64)
            self.ovf_full = full[self.ovf_ids]
            ovf_counts = np.bincount(ok_keys, minlength=nb)
            self.ovf_offsets = np.zeros(nb + 1, np.int64)
            np.cumsum(ovf_counts, out=self.ovf_offsets[1:])
            self.ovf_count = ovf_counts.astype(np.int32)

    def matches(
        self,
        qkeys: NDArray[np.intp],
        qfull: NDArray[np.uint64],
        row0: int,
        masks: NDArray[np.intp],
        k: int,
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """``(row0 + q, index_id)`` for every query ``q`` of this chunk and every entry in
        a bucket ``qkeys[q] ^ masks[t]`` whose full hash is within ``k`` bits of
        ``qfull[q]``."""
        nmask = masks.shape[0]
        width = self.width
        probe = qkeys[:, None] ^ masks[None, :]  # (c, V)
        x = np.take(self.table, probe, axis=0)  # (c, V, B)
        x ^= qfull[:, None, None]
        ok = popcount64(x) <= k
        if self.valid_count is not None:
            ok &= np.take(self.valid_count, probe)[..., None] > self.slots
        w = np.flatnonzero(ok)
        flat_probe = w // width
        rows = flat_probe // nmask + row0
        ids = self.ids[probe.ravel()[flat_probe], w % width].astype(np.int64)
        if not self.has_overflow:
            return rows, ids
        pflat = probe.ravel()
        ocnt = np.take(self.ovf_count, pflat)
        nz = np.flatnonzero(ocnt)
        if nz.size == 0:
            return rows, ids
        lo = self.ovf_offsets[pflat[nz]]
        prow = nz // nmask
        r2, i2 = _expand_verify(
            lo, ocnt[nz].astype(np.int64), prow, self.ovf_full, self.ovf_ids, qfull, k, 1 << 22
        )
        return np.concatenate([rows, r2 + row0]), np.concatenate([ids, i2])


def _join_on_keys(
    index_keys: NDArray[np.uint64],
    index_full: NDArray[np.uint64],
    query_keys: NDArray[np.uint64],
    query_full: NDArray[np.uint64],
    key_bits: int,
    positions: NDArray[np.int64],
    radius: int,
    k: int,
    *,
    n_self: int = 0,
    chunk_elems: int = 1 << 18,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """All ``(q, u)`` such that ``H(query_keys[q], index_keys[u]) <= radius`` and
    ``H(query_full[q], index_full[u]) <= k``.  Keys are ``key_bits``-bit values made of
    hash bits ``positions`` (used only for sentinels).

    ``n_self > 0`` declares that query ``q < n_self`` *is* index entry ``q``.  Such an
    unordered pair ``{a, b}`` only needs to be found from one side, so those queries
    probe only the masks whose highest set bit is 0 in their own key (the probe lands
    on a larger key; the partner with the smaller key finds the pair), plus mask 0
    (found from both sides).  This halves their work; the result then holds each such
    pair in at least one orientation.
    """
    nq = query_keys.shape[0]
    if nq == 0 or index_keys.shape[0] == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    out_q: list[NDArray[np.int64]] = [np.empty(0, np.int64)]
    out_u: list[NDArray[np.int64]] = [np.empty(0, np.int64)]
    if key_bits > DENSE_TABLE_MAX_BITS:
        masks64 = _ball_masks(key_bits, radius)
        sorted_index = _SortedIndex(index_keys, index_full)
        chunk = max(1, chunk_elems // masks64.shape[0])
        for c0 in range(0, nq, chunk):
            c1 = min(nq, c0 + chunk)
            probe = (query_keys[c0:c1, None] ^ masks64[None, :]).ravel()
            row = np.repeat(np.arange(c0, c1, dtype=np.int64), masks64.shape[0])
            q, u = sorted_index.matches(probe, row, query_full, k)
            out_q.append(q)
            out_u.append(u)
        return np.concatenate(out_q), np.concatenate(out_u)

    masks = _ball_masks(key_bits, radius).astype(np.intp)
    qk = query_keys.astype(np.intp)
    n_self = min(max(n_self, 0), nq)
    # Work items (bit, masks): bit None = all non-self queries with all masks; bit -1 =
    # self queries with mask 0; bit b = self queries whose key has bit b clear, with the
    # masks whose highest set bit is b.  Rows are materialised one item at a time.
    top = np.full(masks.shape[0], -1, np.int64)
    for bit in range(key_bits):
        top[(masks >> bit) & 1 == 1] = bit
    self_keys = qk[:n_self]
    work: list[tuple[int | None, NDArray[np.intp]]] = []
    probes = 0.0
    if n_self < nq:
        work.append((None, masks))
        probes += float(nq - n_self) * masks.shape[0]
    if n_self:
        for bit in range(-1, key_bits):
            sub = masks[top == bit]
            if sub.size == 0:
                continue
            work.append((bit, sub))
            n_rows = n_self if bit < 0 else int(np.count_nonzero((self_keys >> bit) & 1 == 0))
            probes += float(n_rows) * sub.shape[0]
    index = _SlotIndex(
        index_keys.astype(np.intp), index_full, key_bits, positions, radius, k, probes
    )
    for bit, sub in work:
        if bit is None:
            rows = np.arange(n_self, nq, dtype=np.int64)
        elif bit < 0:
            rows = np.arange(n_self, dtype=np.int64)
        else:
            rows = np.flatnonzero((self_keys >> bit) & 1 == 0).astype(np.int64)
        chunk = max(1, chunk_elems // (sub.shape[0] * index.width))
        for c0 in range(0, rows.shape[0], chunk):
            r = rows[c0 : c0 + chunk]
            q, u = index.matches(qk[r], query_full[r], 0, sub, k)
            out_q.append(r[q])
            out_u.append(u)
    return np.concatenate(out_q), np.concatenate(out_u)


def _mih_join(
    index_vals: NDArray[np.uint64],
    query_vals: NDArray[np.uint64],
    k: int,
    plan: MIHPlan,
    *,
    n_self: int = 0,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """All ``(q, u)`` with ``H(query_vals[q], index_vals[u]) <= k`` (exact for an exact
    plan); may contain duplicates (a pair can be found through several substrings).
    ``n_self``: see :func:`_join_on_keys` (self pairs then appear in >= 1 orientation)."""
    out_q: list[NDArray[np.int64]] = [np.empty(0, np.int64)]
    out_u: list[NDArray[np.int64]] = [np.empty(0, np.int64)]
    for s, ln, r in zip(plan.starts, plan.lengths, plan.radii, strict=True):
        if r < 0:
            continue
        q, u = _join_on_keys(
            _substring(index_vals, s, ln),
            index_vals,
            _substring(query_vals, s, ln),
            query_vals,
            ln,
            np.arange(s, s + ln, dtype=np.int64),
            r,
            k,
            n_self=n_self,
        )
        out_q.append(q)
        out_u.append(u)
    return np.concatenate(out_q), np.concatenate(out_u)


# ======================================================================================
# Bit-sampling LSH
# ======================================================================================


@dataclass(frozen=True)
class LSHParams:
    """Bit-sampling LSH: ``n_tables`` tables, each keyed by ``bits_per_table`` bit positions
    drawn without replacement from the 64 hash bits with ``np.random.default_rng(seed)``."""

    bits_per_table: int
    n_tables: int
    seed: int = 0

    def positions(self) -> NDArray[np.int64]:
        """Sampled bit positions, shape ``(n_tables, bits_per_table)``, sorted per table."""
        return lsh_bit_positions(self.bits_per_table, self.n_tables, self.seed)


def lsh_bit_positions(bits_per_table: int, n_tables: int, seed: int = 0) -> NDArray[np.int64]:
    """Deterministic bit positions ``(n_tables, bits_per_table)`` for bit-sampling LSH."""
    if not 1 <= bits_per_table <= HASH_BITS:
        raise ValueError(f"bits_per_table must be in [1, {HASH_BITS}]")
    if n_tables < 1:
        raise ValueError("n_tables must be >= 1")
    rng = np.random.default_rng(seed)
    out = np.empty((n_tables, bits_per_table), np.int64)
    for t in range(n_tables):
        out[t] = np.sort(rng.choice(HASH_BITS, size=bits_per_table, replace=False))
    return out


def _lsh_luts(positions: NDArray[np.int64]) -> list[tuple[int, NDArray[np.uint64]]]:
    """Per used byte of the hash: a 256-entry table mapping the byte to its key bits."""
    values = np.arange(256, dtype=np.uint64)
    luts: list[tuple[int, NDArray[np.uint64]]] = []
    for byte in range(8):
        lut = np.zeros(256, np.uint64)
        used = False
        for t, pos in enumerate(positions.tolist()):
            if pos // 8 == byte:
                lut |= ((values >> np.uint64(pos % 8)) & _ONE) << np.uint64(t)
                used = True
        if used:
            luts.append((byte, lut))
    return luts


def _lsh_table_key(
    byte_view: NDArray[np.uint8], luts: list[tuple[int, NDArray[np.uint64]]]
) -> NDArray[np.uint64]:
    key = np.zeros(byte_view.shape[0], np.uint64)
    for byte, lut in luts:
        key |= lut[byte_view[:, byte]]
    return key


def _bytes_le(h: NDArray[np.uint64]) -> NDArray[np.uint8]:
    """Bytes of each hash, least significant first: column b holds bits 8b..8b+7."""
    return np.ascontiguousarray(h, dtype="<u8").view(np.uint8).reshape(-1, 8)


def lsh_keys(hashes: ArrayLike, params: LSHParams) -> NDArray[np.uint64]:
    """Table keys ``(N, n_tables)``: bit ``t`` of ``out[i, T]`` is hash bit
    ``positions[T, t]``.  Distributed grouping key: ``(T, out[i, T])``."""
    h = as_hashes(hashes)
    view = _bytes_le(h)
    pos = params.positions()
    out = np.empty((h.shape[0], params.n_tables), np.uint64)
    for t in range(params.n_tables):
        out[:, t] = _lsh_table_key(view, _lsh_luts(pos[t]))
    return out


def lsh_collision_probability(d: int, bits_per_table: int) -> float:
    """Probability that two hashes ``d`` bits apart agree on all sampled positions of one
    table: ``C(64 - d, b) / C(64, b)`` (positions drawn without replacement)."""
    return math.comb(HASH_BITS - d, bits_per_table) / math.comb(HASH_BITS, bits_per_table)


def lsh_recall_at(d: int, params: LSHParams) -> float:
    """Theoretical probability that a pair at distance ``d`` is found (any table)."""
    p = lsh_collision_probability(d, params.bits_per_table)
    return 1.0 - (1.0 - p) ** params.n_tables


def estimate_lsh_cost_ns(n_nodes: int, bits_per_table: int, n_tables: int) -> float:
    """Estimated nanoseconds of an LSH self-join over ``n_nodes`` unique hashes with
    mirror queries (``2 * n_nodes`` exact-key probes per table), random hashes."""
    per_table = 2 * n_nodes * COST_LSH_KEY_NS + _join_cost_ns(
        n_nodes, 2 * n_nodes, bits_per_table, 0
    )
    return n_tables * per_table


def plan_lsh(
    k: int,
    n_nodes: int,
    *,
    target_recall: float = 0.95,
    seed: int = 0,
    bits_per_table: int | None = None,
    n_tables: int | None = None,
) -> LSHParams:
    """Choose LSH parameters so a pair at distance exactly ``k`` is found with
    probability ``>= target_recall`` (closer pairs: higher), at minimal estimated cost.

    ``n_tables = ceil(log(1 - R) / log(1 - p_k(b)))`` for each candidate ``b``; the
    ``b`` minimising :func:`estimate_lsh_cost_ns` wins (about ``log2(n_nodes)``: e.g.
    k=10, R=0.95, 1M nodes -> b=20, L~180).  Either value can be fixed by the caller.
    """
    k = _check_k(k)
    if not 0.0 < target_recall < 1.0:
        raise ValueError("target_recall must be in (0, 1)")

    def tables_for(b: int) -> int:
        p = lsh_collision_probability(k, b)
        if p >= 1.0:
            return 1
        if p <= 0.0:
            raise ValueError(f"b={b} bits cannot find pairs at distance {k}")
        return max(1, math.ceil(math.log(1.0 - target_recall) / math.log1p(-p)))

    if bits_per_table is not None:
        L = n_tables if n_tables is not None else tables_for(bits_per_table)
        return LSHParams(bits_per_table, L, seed)
    best: tuple[float, LSHParams] | None = None
    for b in range(4, min(40, HASH_BITS - k) + 1):
        L = n_tables if n_tables is not None else tables_for(b)
        cost = estimate_lsh_cost_ns(n_nodes, b, L)
        if best is None or cost < best[0]:
            best = (cost, LSHParams(b, L, seed))
    assert best is not None
    logger.debug("plan_lsh(k=%d, n=%d): %s", k, n_nodes, best[1])
    return best[1]


# ======================================================================================
# Self-join on unique nodes
# ======================================================================================


def _filter_self(
    q: NDArray[np.int64], u: NDArray[np.int64], n: int, mirrored: bool
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Map raw self-join matches to node pairs.

    Queries ``0..n-1`` are the pHashes of nodes ``0..n-1``, queries ``n..2n-1`` their
    mirrors; self matches are dropped, orientation and duplicates are left to
    :func:`_canonical_pairs`.
    """
    node = np.where(q < n, q, q - n) if mirrored else q
    keep = node != u
    return node[keep], u[keep]


def _finish_node_pairs(
    a: NDArray[np.int64],
    b: NDArray[np.int64],
    p: NDArray[np.uint64],
    m: NDArray[np.uint64] | None,
    k: int,
) -> PairSet:
    i, j, _ = _canonical_pairs(a, b)
    d = pair_distance(p[i], None if m is None else m[i], p[j], None if m is None else m[j])
    if np.any(d > k):  # pragma: no cover - would be a bug in the join
        raise AssertionError("join produced an unverified pair")
    return PairSet(i, j, d.astype(np.uint8))


def _self_join_queries(n: int, mirrored: bool) -> int:
    """Query-equivalents of an MIH self-join: pHash queries probe half of the Hamming
    ball (``n_self`` trick of :func:`_join_on_keys`), mirror queries all of it."""
    return n // 2 + (n if mirrored else 0)


def _self_join_exact(
    p: NDArray[np.uint64], m: NDArray[np.uint64] | None, k: int, plan: MIHPlan | None
) -> PairSet:
    n = p.shape[0]
    queries = p if m is None else np.concatenate([p, m])
    plan = plan if plan is not None else plan_mih(k, n, _self_join_queries(n, m is not None))
    q, u = _mih_join(p, queries, k, plan, n_self=n)
    a, b = _filter_self(q, u, n, m is not None)
    return _finish_node_pairs(a, b, p, m, k)


def _self_join_lsh(
    p: NDArray[np.uint64], m: NDArray[np.uint64] | None, k: int, params: LSHParams
) -> PairSet:
    n = p.shape[0]
    queries = p if m is None else np.concatenate([p, m])
    pview = _bytes_le(p)
    mview = None if m is None else _bytes_le(m)
    pos = params.positions()
    out_a: list[NDArray[np.int64]] = []
    out_b: list[NDArray[np.int64]] = []
    for t in range(params.n_tables):
        luts = _lsh_luts(pos[t])
        pkeys = _lsh_table_key(pview, luts)
        qkeys = pkeys if mview is None else np.concatenate([pkeys, _lsh_table_key(mview, luts)])
        q, u = _join_on_keys(
            pkeys,
            p,
            qkeys,
            queries,
            params.bits_per_table,
            pos[t],
            0,
            k,
        )
        a, b = _filter_self(q, u, n, m is not None)
        out_a.append(a)
        out_b.append(b)
    if not out_a:
        return PairSet.empty()
    return _finish_node_pairs(np.concatenate(out_a), np.concatenate(out_b), p, m, k)


def choose_mode(
    n: int,
    k: int,
    *,
    target_recall: float = 0.95,
    max_exact_slowdown: float = 4.0,
    always_exact_below_s: float = 10.0,
) -> Literal["brute", "exact", "lsh"]:
    """Pick a search mode for ``n`` unique hashes (with mirror queries) and threshold ``k``.

    Rule (all costs from the calibrated models :func:`estimate_mih_cost_ns`,
    :func:`estimate_lsh_cost_ns`, ``COST_BRUTE_PAIR_NS``):

    * ``"brute"`` when the ``n(n-1)/2`` brute-force pairs are cheaper than the best MIH
      plan (only tiny inputs, ~ a few thousand hashes);
    * otherwise ``"exact"`` when the MIH estimate is below ``always_exact_below_s``
      seconds, or at most ``max_exact_slowdown`` times the LSH estimate at
      ``target_recall`` (exactness is worth up to that factor);
    * otherwise ``"lsh"``.

    Model numbers (uniform random hashes, with mirror queries, LSH at 95 % recall at
    distance k): k=4 exact costs about the same as LSH at every size; k=8 exact/LSH is
    ~2-3 up to 10M (switch at ~19M); k=10 the ratio is 1.3 at 100k, 2.3 at 1M
    (benchmark, same run: 1.5 and 2.3), 3.0 at 3M and 5.1 at 10M, so with the default
    factor 4 the switch to LSH happens at ~6M unique hashes; k=12 switches at ~3.7M.
    """
    k = _check_k(k)
    if n < 2:
        return "exact"
    n_query = _self_join_queries(n, True)
    exact = estimate_mih_cost_ns(plan_mih(k, n, n_query), n, n_query)
    brute = COST_BRUTE_PAIR_NS * n * (n - 1) / 2
    if brute <= exact:
        return "brute"
    if exact <= always_exact_below_s * 1e9:
        return "exact"
    lsh_params = plan_lsh(k, n, target_recall=target_recall)
    lsh = estimate_lsh_cost_ns(n, lsh_params.bits_per_table, lsh_params.n_tables)
    mode: Literal["exact", "lsh"] = "exact" if exact <= max_exact_slowdown * lsh else "lsh"
    logger.debug(
        "choose_mode(n=%d, k=%d): exact=%.3gs lsh=%.3gs -> %s", n, k, exact * 1e-9, lsh * 1e-9, mode
    )
    return mode


def find_node_pairs(
    groups: HashGroups,
    k: int,
    *,
    mode: Mode = "auto",
    plan: MIHPlan | None = None,
    lsh: LSHParams | None = None,
) -> PairSet:
    """Near-duplicate pairs between *distinct* nodes of ``groups`` (node indices).

    ``mode``: ``"exact"`` (MIH, ``plan`` overrides :func:`plan_mih`), ``"lsh"`` (``lsh``
    overrides :func:`plan_lsh`), ``"brute"`` or ``"auto"`` (:func:`choose_mode`).
    """
    k = _check_k(k)
    p, m = groups.node_phash, groups.node_mirror
    n = groups.n_nodes
    if mode == "auto":
        mode = "exact" if plan is not None else choose_mode(n, k)
    logger.debug("find_node_pairs: %d nodes, k=%d, mode=%s", n, k, mode)
    if mode == "brute":
        return brute_force_pairs(p, m, k)
    if mode == "exact":
        return _self_join_exact(p, m, k, plan)
    if mode == "lsh":
        return _self_join_lsh(p, m, k, lsh if lsh is not None else plan_lsh(k, n))
    raise ValueError(f"unknown mode {mode!r}")


def find_near_duplicates(
    phash: ArrayLike,
    mirror: ArrayLike | None,
    k: int,
    *,
    mode: Mode = "auto",
    plan: MIHPlan | None = None,
    lsh: LSHParams | None = None,
) -> PairSet:
    """All item pairs with pair distance ``<= k`` (``"exact"``/``"brute"``: identical to
    :func:`brute_force_pairs`; ``"lsh"``: a subset of it).

    Identical ``(phash, mirror)`` values are collapsed before searching and expanded
    afterwards; the output is quadratic in the size of identical groups.
    """
    groups = collapse_identical(phash, mirror)
    return expand_node_pairs(groups, find_node_pairs(groups, k, mode=mode, plan=plan, lsh=lsh))


def band_pairs(phash: ArrayLike, mirror: ArrayLike | None, k: int) -> PairSet:
    """Exact pairs via the ``k + 1`` band formulation (:func:`plan_bands`)."""
    return find_near_duplicates(phash, mirror, k, mode="exact", plan=plan_bands(k))


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


# ======================================================================================
# Connected components and keep rule
# ======================================================================================


class UnionFind:
    """Disjoint sets over ``0..n-1``: iterative ``find`` with path halving, union by size
    (no recursion, so arbitrarily long chains are fine)."""

    def __init__(self, n: int) -> None:
        self.parent: list[int] = list(range(n))
        self.size: list[int] = [1] * n

    def find(self, x: int) -> int:
        """Root of ``x``'s set."""
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        """Merge the sets of ``a`` and ``b``; False when already together."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True

    def union_many(self, i: ArrayLike, j: ArrayLike) -> None:
        """Union every pair ``(i[t], j[t])``."""
        for a, b in zip(np.asarray(i).tolist(), np.asarray(j).tolist(), strict=True):
            self.union(a, b)

    def labels(self) -> NDArray[np.int64]:
        """Component label per element: the smallest element of its component."""
        n = len(self.parent)
        roots = np.array([self.find(x) for x in range(n)], dtype=np.int64)
        return _min_index_labels(roots, n)


def _min_index_labels(labels: NDArray[np.integer], n: int) -> NDArray[np.int64]:
    """Relabel components by their smallest member (canonical, deterministic)."""
    if n == 0:
        return np.empty(0, np.int64)
    labels = np.asarray(labels, np.int64)
    smallest = np.full(int(labels.max()) + 1, n, np.int64)
    np.minimum.at(smallest, labels, np.arange(n, dtype=np.int64))
    return smallest[labels]


def connected_components(
    n: int,
    i: ArrayLike,
    j: ArrayLike,
    *,
    method: Literal["scipy", "union_find"] = "scipy",
) -> NDArray[np.int64]:
    """Component label (smallest member index) of each of ``n`` nodes given edges.

    ``"scipy"`` uses ``scipy.sparse.csgraph.connected_components`` (iterative C code);
    ``"union_find"`` the pure-Python :class:`UnionFind`.  Both give identical labels.
    """
    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)
    if method == "union_find":
        uf = UnionFind(n)
        uf.union_many(i, j)
        return uf.labels()
    if method != "scipy":
        raise ValueError(f"unknown method {method!r}")
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as _cc

    if n == 0:
        return np.empty(0, np.int64)
    graph = coo_matrix((np.ones(i.shape[0], np.int8), (i, j)), shape=(n, n))
    _, labels = _cc(graph, directed=True, connection="weak")
    return _min_index_labels(labels, n)


def rank_positions(*keys: ArrayLike) -> NDArray[np.int64]:
    """Position of each item in the total order by ``keys`` (primary key first,
    ascending; ties broken by item index).  Position 0 is the best item."""
    if not keys:
        raise ValueError("need at least one key")
    arrays = [np.asarray(key) for key in keys]
    n = arrays[0].shape[0]
    if any(a.shape != (n,) for a in arrays):
        raise ValueError("all keys must be 1-D of the same length")
    order = np.lexsort(tuple(reversed(arrays)))  # lexsort: last key is primary; stable
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n, dtype=np.int64)
    return pos


def rank_by_area(
    width: ArrayLike, height: ArrayLike, key: ArrayLike | None = None
) -> NDArray[np.int64]:
    """Rank positions for "largest image (pixels) first, then smallest ``key``"."""
    area = np.asarray(width, np.int64) * np.asarray(height, np.int64)
    return rank_positions(-area) if key is None else rank_positions(-area, key)


@dataclass(frozen=True, eq=False)
class KeepResult:
    """Outcome of the keep rule, per item.

    ``keep[i]``; ``duplicate_of[i]`` = the kept item that caused the drop (``-1`` if
    kept); ``distance[i]`` = pair distance in bits to it (``-1`` if kept);
    ``component[i]`` = smallest item index of ``i``'s connected component.
    """

    keep: NDArray[np.bool_]
    duplicate_of: NDArray[np.int64]
    distance: NDArray[np.int16]
    component: NDArray[np.int64]


def greedy_keep(n: int, edges: PairSet, rank: ArrayLike) -> KeepResult:
    """Keep rule over a verified edge set on items ``0..n-1``.

    Items are visited in order of ``rank`` (smaller = better, ties by index; arbitrary
    sortable values or :func:`rank_positions`).  An item is kept unless it has an edge to
    an already kept item; otherwise it is dropped and ``duplicate_of`` is its best-ranked
    kept neighbour (necessarily better ranked than itself).  Components are independent,
    so a global pass equals a per-component pass.  Guarantees: every component keeps its
    best-ranked item (so >= 1 item); no edge joins two kept items; every dropped item's
    ``duplicate_of`` is kept and joined to it by an edge of that distance.  Chains
    ``a-b-c`` with ``a``, ``c`` not joined are handled by the rule itself (``c`` is kept
    when ``b`` was dropped).  Cost: O(n log n + E) with a Python loop over non-isolated
    items (degree sum); collapse identical hashes first (:func:`deduplicate`) when huge
    cliques are expected.
    """
    pos = rank_positions(np.asarray(rank))
    if pos.shape[0] != n:
        raise ValueError(f"rank has {pos.shape[0]} entries, expected {n}")
    ei = np.asarray(edges.i, np.int64)
    ej = np.asarray(edges.j, np.int64)
    ed = np.asarray(edges.dist)
    loops = ei == ej
    if loops.any():
        ei, ej, ed = ei[~loops], ej[~loops], ed[~loops]
    component = connected_components(n, ei, ej)
    src = np.concatenate([ei, ej])
    dst = np.concatenate([ej, ei])
    dd = np.concatenate([ed, ed]).astype(np.int16)
    order = np.argsort(src, kind="stable")
    src, dst, dd = src[order], dst[order], dd[order]
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    keep = np.ones(n, dtype=bool)
    active = np.flatnonzero(indptr[1:] > indptr[:-1])
    if active.size:
        visit = active[np.argsort(pos[active], kind="stable")].tolist()
        kept_flag = [False] * n  # unvisited items count as not kept
        nbrs = dst.tolist()
        starts = indptr.tolist()
        for x in visit:
            ok = True
            for y in nbrs[starts[x] : starts[x + 1]]:
                if kept_flag[y]:
                    ok = False
                    break
            kept_flag[x] = ok
        keep[active] = np.asarray(kept_flag, dtype=bool)[active]
    duplicate_of = np.full(n, -1, np.int64)
    distance = np.full(n, -1, np.int16)
    cand = ~keep[src] & keep[dst]
    cs, cd, cdist = src[cand], dst[cand], dd[cand]
    if cs.size:
        o = np.lexsort((pos[cd], cs))
        cs, cd, cdist = cs[o], cd[o], cdist[o]
        first = np.ones(cs.size, dtype=bool)
        first[1:] = cs[1:] != cs[:-1]
        duplicate_of[cs[first]] = cd[first]
        distance[cs[first]] = cdist[first]
    return KeepResult(keep, duplicate_of, distance, component)


def deduplicate(
    phash: ArrayLike,
    mirror: ArrayLike | None,
    k: int,
    rank: ArrayLike,
    *,
    mode: Mode = "auto",
    plan: MIHPlan | None = None,
    lsh: LSHParams | None = None,
) -> KeepResult:
    """Search + keep rule without expanding identical-hash groups (linear in N).

    Equivalent to ``greedy_keep(N, find_near_duplicates(...), rank)``: within a group
    of identical ``(phash, mirror)`` only the best-ranked item can be kept (every other
    member is at distance 0 from it), and all members share the fate of that
    representative; so the greedy pass runs on groups ordered by their best item.
    """
    k = _check_k(k)
    p, m = _as_pair(phash, mirror)
    n = p.shape[0]
    pos = rank_positions(np.asarray(rank))
    if pos.shape[0] != n:
        raise ValueError(f"rank has {pos.shape[0]} entries, expected {n}")
    groups = collapse_identical(p, m)
    node_edges = find_node_pairs(groups, k, mode=mode, plan=plan, lsh=lsh)
    if n == 0:
        empty = np.empty(0, np.int64)
        return KeepResult(np.empty(0, bool), empty, np.empty(0, np.int16), empty)
    starts = groups.offsets[:-1]
    node_pos = np.minimum.reduceat(pos[groups.items], starts)
    item_at_pos = np.empty(n, np.int64)
    item_at_pos[pos] = np.arange(n, dtype=np.int64)
    rep = item_at_pos[node_pos]
    res = greedy_keep(groups.n_nodes, node_edges, node_pos)
    node = groups.item_node
    is_rep = rep[node] == np.arange(n)
    keep = is_rep & res.keep[node]
    node_dup = np.where(res.keep, rep, rep[np.maximum(res.duplicate_of, 0)])
    node_dist = np.where(res.keep, 0, res.distance).astype(np.int16)
    duplicate_of = np.where(keep, -1, node_dup[node])
    distance = np.where(keep, -1, node_dist[node]).astype(np.int16)
    node_min_item = groups.items[starts]
    comp_min = np.full(groups.n_nodes, n, np.int64)
    np.minimum.at(comp_min, res.component, node_min_item)
    component = comp_min[res.component[node]]
    return KeepResult(keep, duplicate_of.astype(np.int64), distance, component)


# ======================================================================================
# Matching against a reference set (decontamination)
# ======================================================================================


@dataclass(frozen=True, eq=False)
class ReferenceMatch:
    """Closest reference per item: ``ref_index[i]`` (``-1`` when none within ``k``),
    ``distance[i]`` in bits (``-1`` when none), ``ref_key[i]`` when keys were given
    (``None`` when none within ``k``).  Ties go to the smallest reference index."""

    ref_index: NDArray[np.int64]
    distance: NDArray[np.int16]
    ref_key: list[object] | None = None


def match_reference(
    phash: ArrayLike,
    mirror: ArrayLike | None,
    ref_phash: ArrayLike,
    ref_mirror: ArrayLike | None,
    k: int,
    *,
    ref_keys: Sequence[object] | None = None,
    mode: Literal["exact", "brute"] = "exact",
    plan: MIHPlan | None = None,
) -> ReferenceMatch:
    """For every item, the closest reference hash within ``k`` (exact).

    Distance is the pair distance ``min(H(p, p'), H(p, m'), H(m, p'))`` (mirror terms
    skipped when the respective mirror is ``None``).  Both sides are collapsed to
    unique ``(phash, mirror)`` values first; ``"exact"`` runs MIH joins against the
    reference pHash index (item pHash and mirror queries) and the reference mirror
    index (item pHash queries).
    """
    k = _check_k(k)
    p, m = _as_pair(phash, mirror)
    rp, rm = _as_pair(ref_phash, ref_mirror)
    n = p.shape[0]
    if ref_keys is not None and len(ref_keys) != rp.shape[0]:
        raise ValueError("ref_keys must have one key per reference hash")
    items = collapse_identical(p, m)
    refs = collapse_identical(rp, rm)
    ip, im = items.node_phash, items.node_mirror
    qp, qm = refs.node_phash, refs.node_mirror
    if mode == "brute":
        a, b, _ = brute_force_join(ip, im, qp, qm, k)
    elif mode == "exact":
        parts_a: list[NDArray[np.int64]] = []
        parts_b: list[NDArray[np.int64]] = []
        nq = ip.shape[0]
        queries = ip if im is None else np.concatenate([ip, im])
        pl = plan if plan is not None else plan_mih(k, qp.shape[0], queries.shape[0])
        qa, qb = _mih_join(qp, queries, k, pl)
        parts_a.append(np.where(qa < nq, qa, qa - nq))
        parts_b.append(qb)
        if qm is not None:
            pl2 = plan if plan is not None else plan_mih(k, qm.shape[0], nq)
            qa, qb = _mih_join(qm, ip, k, pl2)
            parts_a.append(qa)
            parts_b.append(qb)
        a, b = np.concatenate(parts_a), np.concatenate(parts_b)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    ref_index = np.full(n, -1, np.int64)
    distance = np.full(n, -1, np.int16)
    if a.size:
        d = pair_distance(
            ip[a], None if im is None else im[a], qp[b], None if qm is None else qm[b]
        )
        ref_rep = refs.items[refs.offsets[:-1]][b]  # smallest reference index of the node
        o = np.lexsort((ref_rep, d, a))
        a, d, ref_rep = a[o], d[o], ref_rep[o]
        first = np.ones(a.size, dtype=bool)
        first[1:] = a[1:] != a[:-1]
        best_ref = np.full(items.n_nodes, -1, np.int64)
        best_d = np.full(items.n_nodes, -1, np.int16)
        best_ref[a[first]] = ref_rep[first]
        best_d[a[first]] = d[first]
        ref_index = best_ref[items.item_node]
        distance = best_d[items.item_node]
    keys = None
    if ref_keys is not None:
        keys = [None if r < 0 else ref_keys[r] for r in ref_index.tolist()]
    return ReferenceMatch(ref_index, distance, keys)


# ======================================================================================
# Synthetic data (tests and benchmarks)
# ======================================================================================


def _flip_masks(rng: np.random.Generator, counts: NDArray[np.int64]) -> NDArray[np.uint64]:
    """One random 64-bit mask per entry with exactly ``counts[t]`` bits set."""
    counts = np.asarray(counts, np.int64)
    perm = np.argsort(rng.random((counts.shape[0], HASH_BITS)), axis=1)
    chosen = np.arange(HASH_BITS)[None, :] < counts[:, None]
    bits = np.where(chosen, np.left_shift(_ONE, perm.astype(np.uint64)), np.uint64(0))
    return np.bitwise_or.reduce(bits, axis=1).astype(np.uint64)


def synthetic_hashes(
    n_random: int,
    *,
    k: int = 10,
    n_planted: int = 0,
    n_mirror_planted: int = 0,
    n_chains: int = 0,
    chain_length: int = 8,
    hot_sizes: Sequence[int] = (),
    seed: int = 0,
) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """Random ``(phash, mirror)`` with planted near duplicates, for tests and benchmarks.

    * ``n_random`` independent uniform hashes (mirror independent of phash);
    * ``n_planted`` copies of random base items with ``d = t % (k + 1)`` bits flipped in
      the pHash (every distance 0..k is planted) and ``d`` other bits in the mirror;
    * ``n_mirror_planted`` items whose pHash is a base item's mirror with ``d`` flips
      (and mirror = base pHash with ``d`` flips): near duplicates via the mirror rule;
    * ``n_chains`` chains of ``chain_length`` items, consecutive ones ``k`` bits apart
      (items two steps apart are usually more than ``k`` apart);
    * for each ``g`` in ``hot_sizes``: ``g - 1`` exact copies of one base item plus one
      item with the same pHash but a different mirror.

    The result is shuffled deterministically (``np.random.default_rng(seed)``).
    """
    k = _check_k(k)
    rng = np.random.default_rng(seed)
    hi = np.iinfo(np.uint64).max
    p = [rng.integers(0, hi, size=n_random, dtype=np.uint64, endpoint=True)]
    m = [rng.integers(0, hi, size=n_random, dtype=np.uint64, endpoint=True)]
    if n_random == 0 and (n_planted or n_mirror_planted or hot_sizes):
        raise ValueError("planting needs n_random > 0")
    if n_planted:
        base = rng.integers(0, n_random, size=n_planted)
        d = np.arange(n_planted) % (k + 1)
        p.append(p[0][base] ^ _flip_masks(rng, d))
        m.append(m[0][base] ^ _flip_masks(rng, d))
    if n_mirror_planted:
        base = rng.integers(0, n_random, size=n_mirror_planted)
        d = np.arange(n_mirror_planted) % (k + 1)
        p.append(m[0][base] ^ _flip_masks(rng, d))
        m.append(p[0][base] ^ _flip_masks(rng, d))
    for _ in range(n_chains):
        start_p = rng.integers(0, hi, size=1, dtype=np.uint64, endpoint=True)
        steps_p = _flip_masks(rng, np.full(chain_length - 1, k))
        chain_p = np.bitwise_xor.accumulate(np.concatenate([start_p, steps_p]))
        p.append(chain_p)
        m.append(rng.integers(0, hi, size=chain_length, dtype=np.uint64, endpoint=True))
    for g in hot_sizes:
        b = int(rng.integers(0, n_random))
        p.append(np.full(g, p[0][b], np.uint64))
        mm = np.full(g, m[0][b], np.uint64)
        mm[-1] = rng.integers(0, hi, dtype=np.uint64, endpoint=True)
        m.append(mm)
    allp = np.concatenate(p)
    allm = np.concatenate(m)
    perm = rng.permutation(allp.shape[0])
    return allp[perm], allm[perm]
