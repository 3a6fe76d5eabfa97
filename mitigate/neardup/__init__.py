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
  From ``COMPILED_MIN_NODES`` unique hashes on (``engine="auto"``) the same search
  runs in a numba kernel (:mod:`.compiled`, :mod:`._kernels`): CSR buckets, the
  Hamming ball enumerated per bucket of queries, popcount verification, each pair
  emitted once by a canonical-discovery rule, its own cost-model plan; same pairs.
  ``m=k+1`` with all radii 0 is the *band* formulation ("k+1 bands, exact match on a
  band"): the band value is a plain grouping key.
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

Modules
-------
:mod:`.bits` (hash arrays, popcount, pair distance, :class:`PairSet`), :mod:`.brute`
(reference search), :mod:`.groups` (identical hashes collapsed to nodes), :mod:`.cost`
(cost model constants), :mod:`.plan` (MIH plans), :mod:`.mih` (bucket tables and joins),
:mod:`.compiled` (the compiled kernel's plan, engine choice and call; numba imported lazily),
:mod:`.lsh`, :mod:`.search` (mode choice, :func:`find_near_duplicates`), :mod:`.recall`,
:mod:`.keeprule` (components, greedy keep), :mod:`.reference` (held-out set matching),
:mod:`.synthetic` (planted test data).  This package re-exports their public names.
The partitioned pipeline (``pipeline/near_partitioned.py``) uses :mod:`mitigate.partition`
to route hashes to partitions and runs :func:`brute_force_join` / :func:`find_near_duplicates`
inside each one.

Hash bit order: bit ``t`` of the uint64 is ``(h >> t) & 1``; substring ``z`` covers bits
``[start_z, start_z + length_z)``.  :func:`hex_to_uint64` reads imagehash / imagededup
16-hex-digit strings (big-endian, so the first hex digit holds bits 60..63).
"""

from __future__ import annotations

from mitigate.neardup.bits import (
    HASH_BITS,
    PairSet,
    as_hashes,
    hamming,
    hex_to_uint64,
    pair_distance,
    popcount64,
    uint64_to_hex,
)
from mitigate.neardup.brute import (
    brute_force_join,
    brute_force_pairs,
)
from mitigate.neardup.compiled import (
    COMPILED_MIN_NODES,
    Engine,
    compiled_cost_terms,
    estimate_compiled_cost_ns,
    plan_compiled,
)
from mitigate.neardup.cost import (
    COST_BRUTE_PAIR_NS,
    COST_BUILD_ENTRY_NS,
    COST_BUILD_SLOT_NS,
    COST_CANDIDATE_NS,
    COST_JOIN_FIXED_NS,
    COST_LSH_KEY_NS,
    COST_MISS_NS,
    COST_OVF_CHECK_NS,
    COST_PROBE_NS,
    COST_SEARCH_STEP_NS,
    COST_SLOT_NS,
    DENSE_TABLE_MAX_BITS,
    MAX_TABLE_ENTRIES,
)
from mitigate.neardup.groups import (
    HashGroups,
    collapse_identical,
    expand_node_pairs,
)
from mitigate.neardup.keeprule import (
    KeepResult,
    UnionFind,
    connected_components,
    deduplicate,
    greedy_keep,
    rank_by_area,
    rank_positions,
)
from mitigate.neardup.lsh import (
    LSHParams,
    estimate_lsh_cost_ns,
    lsh_bit_positions,
    lsh_collision_probability,
    lsh_recall_at,
    plan_lsh,
)
from mitigate.neardup.plan import (
    MAX_PROBES_PER_SUBSTRING,
    MIHPlan,
    estimate_mih_cost_ns,
    make_plan,
    pigeonhole_radii,
    plan_mih,
    split_bits,
)
from mitigate.neardup.recall import (
    RecallEstimate,
    estimate_pair_recall,
    wilson_interval,
)
from mitigate.neardup.reference import (
    ReferenceMatch,
    match_reference,
)
from mitigate.neardup.search import (
    Mode,
    choose_mode,
    find_near_duplicates,
    find_node_pairs,
)
from mitigate.neardup.synthetic import (
    clustered_hashes,
    synthetic_hashes,
)

__all__ = [
    "COMPILED_MIN_NODES",
    "COST_BRUTE_PAIR_NS",
    "COST_BUILD_ENTRY_NS",
    "COST_BUILD_SLOT_NS",
    "COST_CANDIDATE_NS",
    "COST_JOIN_FIXED_NS",
    "COST_LSH_KEY_NS",
    "COST_MISS_NS",
    "COST_OVF_CHECK_NS",
    "COST_PROBE_NS",
    "COST_SEARCH_STEP_NS",
    "COST_SLOT_NS",
    "DENSE_TABLE_MAX_BITS",
    "HASH_BITS",
    "MAX_PROBES_PER_SUBSTRING",
    "MAX_TABLE_ENTRIES",
    "Engine",
    "HashGroups",
    "KeepResult",
    "LSHParams",
    "MIHPlan",
    "Mode",
    "PairSet",
    "RecallEstimate",
    "ReferenceMatch",
    "UnionFind",
    "as_hashes",
    "brute_force_join",
    "brute_force_pairs",
    "choose_mode",
    "clustered_hashes",
    "collapse_identical",
    "compiled_cost_terms",
    "connected_components",
    "deduplicate",
    "estimate_compiled_cost_ns",
    "estimate_lsh_cost_ns",
    "estimate_mih_cost_ns",
    "estimate_pair_recall",
    "expand_node_pairs",
    "find_near_duplicates",
    "find_node_pairs",
    "greedy_keep",
    "hamming",
    "hex_to_uint64",
    "lsh_bit_positions",
    "lsh_collision_probability",
    "lsh_recall_at",
    "make_plan",
    "match_reference",
    "pair_distance",
    "pigeonhole_radii",
    "plan_compiled",
    "plan_lsh",
    "plan_mih",
    "popcount64",
    "rank_by_area",
    "rank_positions",
    "split_bits",
    "synthetic_hashes",
    "uint64_to_hex",
    "wilson_interval",
]
