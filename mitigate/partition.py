"""Partitioned near-duplicate search: which partitions a hash goes to (Beam-free math).

DALL·E 2 found near duplicates at scale by clustering the images and comparing only
within clusters, with several independent clusterings to catch pairs that one
clustering splits. This module does the same for 64-bit perceptual hashes:

* :func:`fit_clusterings` fits ``C`` independent sets of ``K`` centroids in Hamming
  space (k-modes: assign to the nearest centroid, move each centroid to the bitwise
  majority of its members) on a bounded, deterministic sample of hashes;
* :func:`assign` sends every node (a distinct ``(pHash, mirror)``) to the nearest
  centroid of its pHash **and** of its mirror pHash in every clustering, so a pair
  within ``k`` by either the plain or the mirror rule can meet in one partition;
  partition ids are ``clustering * K + centroid``; with ``plan.probes > 1`` (multi-probe,
  ``dedup.probes``) to its ``probes`` nearest centroids, which catches pairs near a
  cell boundary at less cost than more clusterings (measured, BENCHMARKS.md);
* the pipeline then runs the existing exact search (:mod:`mitigate.neardup`) inside
  every partition; a pair met in several partitions is reported once;
* :func:`recall_from_counts` turns the per-query counts of the sampled brute-force
  check into the same estimate and interval as :func:`mitigate.neardup.estimate_pair_recall`.

``K = 1`` is a single partition holding every node: the exact single-worker search.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mitigate import neardup
from mitigate.neardup.bits import canonical_pairs

FIT_SAMPLE_SIZE: int = 20_000
"""Nodes in the deterministic sample the centroids are fitted on (bounded, not N)."""

FIT_ITERATIONS: int = 4
"""k-modes iterations (assignment + majority update) per clustering."""

FILL: float = 0.5
"""Target mean partition size as a fraction of ``max_partition_size``: each node lands
in up to ``2 * probes`` partitions per clustering (pHash, mirror) and clusters are
unequal (the largest ~1.6-1.8x the mean on random hashes), so the mean is kept at half
the bound; a partition that still outgrows it (a dense region of real data) is searched
in blocks (:mod:`mitigate.partition_split`), and the largest partition and search task
are reported every run."""


@dataclass(frozen=True)
class PartitionPlan:
    """How nodes are partitioned: ``centroids[c, j]`` is centroid ``j`` of clustering
    ``c``; ``n_clusters == 1`` means one partition (exact search in one worker)."""

    centroids: NDArray[np.uint64]
    k: int
    probes: int = 1  # nearest centroids a hash goes to, per clustering (multi-probe)

    @property
    def n_clusterings(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def n_clusters(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def n_partitions(self) -> int:
        return self.n_clusterings * self.n_clusters


def stable_hash(key: str) -> int:
    """A 64-bit hash of ``key`` that is the same in every process and on every runner
    (Python's ``hash`` of a string is salted per process)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


def n_clusters_for(n_nodes: int, max_partition_size: int, probes: int = 1) -> int:
    """Centroids per clustering so the mean partition holds ``FILL * max_partition_size``
    entries (``2 * probes`` entries a node: pHash and mirror, each to its ``probes``
    nearest centroids); 1 when every node fits in one."""
    if n_nodes <= max_partition_size:
        return 1
    return max(2, math.ceil(2 * probes * n_nodes / (FILL * max_partition_size)))


def _nearest(
    points: NDArray[np.uint64], centroids: NDArray[np.uint64], block: int = 4096
) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """Index of (and distance to) the nearest centroid of every point; ties to the
    smaller index. Memory bounded by ``block * len(centroids)``."""
    n = points.shape[0]
    idx = np.empty(n, np.int64)
    dist = np.empty(n, np.uint8)
    for s in range(0, n, block):
        d = neardup.popcount64(points[s : s + block, None] ^ centroids[None, :])
        idx[s : s + block] = d.argmin(axis=1)
        dist[s : s + block] = d[np.arange(d.shape[0]), idx[s : s + block]]
    return idx, dist


def _majority(points: NDArray[np.uint64], label: NDArray[np.int64], old: NDArray[np.uint64]):
    """Bitwise majority of each cluster's points; ties and empty clusters keep ``old``."""
    k = old.shape[0]
    counts = np.bincount(label, minlength=k)
    out = np.zeros(k, np.uint64)
    for bit in range(neardup.HASH_BITS):
        ones = np.bincount(
            label,
            weights=((points >> np.uint64(bit)) & np.uint64(1)).astype(np.float64),
            minlength=k,
        )
        old_bit = (old >> np.uint64(bit)) & np.uint64(1)
        new_bit = np.where(2 * ones > counts, np.uint64(1), np.where(2 * ones < counts, 0, old_bit))
        out |= new_bit.astype(np.uint64) << np.uint64(bit)
    return out


def fit_clusterings(
    phash: ArrayLike,
    mirror: ArrayLike | None,
    n_clusters: int,
    n_clusterings: int,
    *,
    k: int = 10,
    iterations: int = FIT_ITERATIONS,
    seed: int = 0,
) -> PartitionPlan:
    """Fit ``n_clusterings`` independent k-modes clusterings of ``n_clusters`` centroids
    on the sample ``(phash, mirror)`` (pHashes and mirrors pooled as points).

    Deterministic for a given sample order and seed: clustering ``c`` starts from
    ``n_clusters`` distinct points drawn with ``default_rng(seed + c)``. With
    ``n_clusters == 1`` the plan is one partition (one clustering, centroid 0).
    """
    p = neardup.as_hashes(phash, "phash")
    points = p if mirror is None else np.concatenate([p, neardup.as_hashes(mirror, "mirror")])
    if n_clusters <= 1 or points.size == 0:
        return PartitionPlan(np.zeros((1, 1), np.uint64), k)
    unique = np.unique(points)
    if unique.size < n_clusters:
        raise ValueError(
            f"cannot fit {n_clusters} clusters on a sample of {unique.size} distinct hashes"
        )
    out = np.empty((n_clusterings, n_clusters), np.uint64)
    for c in range(n_clusterings):
        rng = np.random.default_rng(seed + c)
        cent = unique[np.sort(rng.choice(unique.size, size=n_clusters, replace=False))]
        for _ in range(iterations):
            label, _ = _nearest(points, cent)
            cent = _majority(points, label, cent)
        out[c] = cent
    return PartitionPlan(out, k)


def _nearest_few(
    points: NDArray[np.uint64], centroids: NDArray[np.uint64], probes: int, block: int = 4096
) -> NDArray[np.int64]:
    """Indices of the ``probes`` nearest centroids of every point (ties to the smaller
    index), shape ``(n, probes)``."""
    n = points.shape[0]
    out = np.empty((n, probes), np.int64)
    for s in range(0, n, block):
        d = neardup.popcount64(points[s : s + block, None] ^ centroids[None, :]).astype(np.int64)
        key = d * centroids.shape[0] + np.arange(centroids.shape[0])  # distance, then index
        part = np.argpartition(key, probes - 1, axis=1)[:, :probes]
        out[s : s + block] = part
    return out


def assign(plan: PartitionPlan, phash: ArrayLike, mirror: ArrayLike | None) -> list[list[int]]:
    """Sorted partition ids of every node: per clustering, the nearest centroid (the
    ``plan.probes`` nearest) of its pHash and of its mirror (duplicates once)."""
    p = neardup.as_hashes(phash, "phash")
    n = p.shape[0]
    if plan.n_partitions == 1:
        return [[0] for _ in range(n)]
    m = None if mirror is None else neardup.as_hashes(mirror, "mirror")
    cols = []
    for c in range(plan.n_clusterings):
        base = c * plan.n_clusters
        for h in (p, m):
            if h is None:
                continue
            if plan.probes == 1:
                cols.append((_nearest(h, plan.centroids[c])[0] + base)[:, None])
            else:
                cols.append(_nearest_few(h, plan.centroids[c], plan.probes) + base)
    ids = np.sort(np.concatenate(cols, axis=1), axis=1)
    return [sorted(set(row)) for row in ids.tolist()]


def partition_pairs(
    plan: PartitionPlan, phash: ArrayLike, mirror: ArrayLike | None, k: int, mode: str = "auto"
) -> tuple[neardup.PairSet, list[int]]:
    """All pairs the partitioned search finds on in-memory hashes (for tests and
    benchmarks: the pipeline does the same with one partition per worker), and the
    size of every non-empty partition."""
    p = neardup.as_hashes(phash, "phash")
    m = None if mirror is None else neardup.as_hashes(mirror, "mirror")
    members: dict[int, list[int]] = {}
    for node, ids in enumerate(assign(plan, p, m)):
        for pid in ids:
            members.setdefault(pid, []).append(node)
    parts_i, parts_j, parts_d = [], [], []
    for pid in sorted(members):
        idx = np.asarray(members[pid], np.int64)
        if idx.size < 2:
            continue
        chosen = neardup.choose_mode(idx.size, k) if mode == "auto" else mode
        found = neardup.find_near_duplicates(
            p[idx],
            None if m is None else m[idx],
            k,
            mode=chosen,  # type: ignore[arg-type]
        )
        parts_i.append(idx[found.i])
        parts_j.append(idx[found.j])
        parts_d.append(found.dist)
    sizes = [len(v) for _, v in sorted(members.items())]
    if not parts_i:
        return neardup.PairSet.empty(), sizes
    i, j, d = canonical_pairs(
        np.concatenate(parts_i), np.concatenate(parts_j), np.concatenate(parts_d)
    )
    assert d is not None
    return neardup.PairSet(i, j, d), sizes


def recall_from_counts(
    true_per_query: Sequence[int], found_per_query: Sequence[int], confidence: float = 0.95
) -> neardup.RecallEstimate:
    """Pair recall estimate and interval from per-query counts of true near-duplicate
    neighbours (brute force) and of those the search found; the same ratio estimator
    and cluster-robust Wilson interval as :func:`mitigate.neardup.estimate_pair_recall`
    (queries without a true neighbour count as queries)."""
    t_q = np.asarray(true_per_query, np.float64)
    f_q = np.asarray(found_per_query, np.float64)
    s = int(t_q.shape[0])
    n_true, n_found = int(t_q.sum()), int(f_q.sum())
    if n_true == 0:
        return neardup.RecallEstimate(float("nan"), 0.0, 1.0, confidence, s, 0, 0, 0.0)
    r = n_found / n_true
    clusters = int(np.count_nonzero(t_q))
    var_r = 0.0
    if s > 1:
        tbar = t_q.mean()
        resid = f_q - r * t_q
        var_r = float(np.sum(resid * resid)) / (s * (s - 1) * tbar * tbar)
    if var_r > 0.0 and 0.0 < r < 1.0:
        n_eff = min(float(n_true), max(float(clusters), r * (1.0 - r) / var_r))
    else:
        n_eff = float(clusters)
    lo, hi = neardup.wilson_interval(r * n_eff, n_eff, confidence)
    return neardup.RecallEstimate(r, lo, hi, confidence, s, n_true, n_found, n_eff)
