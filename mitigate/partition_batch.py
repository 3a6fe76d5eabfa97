"""The steps of the partitioned near-duplicate graph on numpy batches (Beam-free; the
Beam wiring is :mod:`mitigate.pipeline.near_batched`).

Every sample is a *node* with a 64-bit id ``batch << 32 | position`` (its batch and its
place in the batch, which is sorted by key), so that edges, labels and partitions are
int64 arrays and a Beam element carries thousands of them. Batches are formed from a
stable hash of the key, so ids are the same on every runner. Identical hashes are *not*
collapsed: two samples with the same pHash are a candidate pair at distance 0 like any
other, and verification decides whether they merge (look-alikes that share a pHash stay
apart when their signatures differ).

Steps (each a plain function over arrays, tested against the one-worker path):

* :func:`assign_chunks`: the partitions of every node of a batch, as ``(partition,
  (ids, pHash, mirror))`` chunks (:mod:`mitigate.partition` picks the partitions);
* :func:`search_chunks`: the exact search (:func:`mitigate.neardup.find_near_duplicates`)
  on one partition's chunks, pairs as id arrays;
* :func:`attach_a` / :func:`verify_b`: the candidate pairs meet the signatures of their
  two ends in two joins by batch (the signature is shuffled once per join, not once per
  partition a node goes to), and are scored with :func:`mitigate.verify.pair_scores`;
* :func:`large_star`, :func:`small_star`, :func:`min_neighbour_edges`,
  :func:`disagreeing`, :func:`finish`: connected components of the verified pairs in
  rounds over edge arrays grouped by node bucket: large-star / small-star (Kiveris et
  al., "Connected Components in MapReduce and Beyond", SoCC 2014). Large-star joins
  every larger neighbour of ``u`` to ``m(u) = min(u, neighbours)``, small-star joins
  ``u`` and its smaller neighbours to ``m(u)``; both keep the components and shrink
  their diameter. After a bounded number of rounds an edge whose ends disagree on
  ``m`` is part of the *remaining graph*, labelled in one worker (:func:`finish`), and
  ``label(v) = finish(m(v))``: exactly the smallest node id of each component,
  whatever the number of rounds (rounds only make the remaining graph small);
* :func:`members_and_edges`, :func:`keep_components`: the keep rule (``dedup.keep``, medoid
  or resolution) of :mod:`mitigate.keep` / :func:`mitigate.neardup.greedy_keep` on every
  component of a bucket of components at once;
* :func:`not_merged`: the ``not_merged`` evidence of kept samples whose closest
  candidate verification refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from mitigate import centre, hot, keep, neardup, partition, verify
from mitigate.near import HashItem

ID_SHIFT = 32
I64 = NDArray[np.int64]

#: Partition ids of the centre view (:mod:`mitigate.centre`) start here, so the two
#: views' partitions are distinct keys of one search step.
CENTRE_PARTITIONS = 1 << 40


@dataclass(frozen=True, eq=False)
class Batch:
    """Samples of one batch, sorted by key; ``signatures`` are opaque bytes (or None)."""

    bid: int
    keys: NDArray[np.str_]
    phash: NDArray[np.uint64]
    mirror: NDArray[np.uint64]
    size: NDArray[np.int64]  # mitigate.keep.size_key
    signatures: list[bytes | None]
    #: centre view (:func:`mitigate.centre.centre_arrays`); None: no sample has one
    centre: tuple[NDArray[np.uint64], NDArray[np.uint64], NDArray[np.bool_]] | None = None

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    @property
    def ids(self) -> I64:
        return (np.int64(self.bid) << np.int64(ID_SHIFT)) + np.arange(len(self), dtype=np.int64)

    @staticmethod
    def of_items(bid: int, items: Sequence[HashItem]) -> Batch:
        items = sorted(items, key=lambda it: it.key)
        centres = [it.centre for it in items]
        return Batch(
            bid,
            np.asarray([it.key for it in items], dtype=np.str_),
            neardup.hex_to_uint64([it.phash for it in items]),
            neardup.hex_to_uint64([it.mirror for it in items]),
            np.asarray([it.size for it in items], dtype=np.int64),
            [it.signature for it in items],
            None if all(c is None for c in centres) else centre.centre_arrays(centres),
        )

    def view(self, name: str) -> tuple[I64, NDArray[np.uint64], NDArray[np.uint64]]:
        """``(positions, hash, mirror hash)`` of the samples that have view ``name``
        (``"phash"``: all; ``"centre"``: those with a centre hash)."""
        if name == "phash":
            return np.arange(len(self), dtype=np.int64), self.phash, self.mirror
        if self.centre is None:
            e = np.empty(0, np.uint64)
            return np.empty(0, np.int64), e, e
        c, cm, present = self.centre
        rows = np.flatnonzero(present).astype(np.int64)
        return rows, c[rows], cm[rows]


def batch_of(ids: I64) -> I64:
    return ids >> np.int64(ID_SHIFT)


def position(ids: I64) -> I64:
    return ids & np.int64((1 << ID_SHIFT) - 1)


def bucket_of(ids: I64, n_buckets: int) -> I64:
    """Bucket of node ids for the edge steps (batches spread over ``n_buckets``)."""
    return batch_of(ids) % max(1, n_buckets)


def split_by(values: I64, *arrays: np.ndarray) -> Iterable[tuple[int, tuple]]:
    """``(value, (arrays restricted to it))`` for every distinct value, in value order."""
    if values.size == 0:
        return
    order = np.argsort(values, kind="stable")
    v = values[order]
    cuts = np.flatnonzero(v[1:] != v[:-1]) + 1
    for s, e in zip(np.r_[0, cuts], np.r_[cuts, v.size], strict=True):
        sel = order[s:e]
        yield int(v[s]), tuple(a[sel] for a in arrays)


def stable_hashes(keys: Iterable[str], salt: str = "") -> NDArray[np.uint64]:
    """:func:`mitigate.partition.stable_hash` of every key (salted), as uint64."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b((salt + k).encode(), digest_size=8).digest(), "big")
            for k in keys
        ),
        dtype=np.uint64,
    )


def smallest(batch: Batch, size: int, salt: str) -> tuple:
    """The ``size`` samples of a batch with the smallest salted key hash:
    ``(hash, id, pHash, mirror, centre, centre mirror, has centre)`` arrays (merged
    across batches by :func:`merge_smallest`, so the sample does not depend on
    batching; centre hashes 0 and ``has centre`` False where a sample has none)."""
    h = stable_hashes(batch.keys.tolist(), salt)
    sel = np.argsort(h, kind="stable")[:size]
    if batch.centre is None:
        c = cm = np.zeros(len(batch), np.uint64)
        has = np.zeros(len(batch), bool)
    else:
        c, cm, has = batch.centre
    return h[sel], batch.ids[sel], batch.phash[sel], batch.mirror[sel], c[sel], cm[sel], has[sel]


def merge_smallest(parts: Iterable[tuple], size: int) -> tuple:
    parts = [p for p in parts if p is not None and p[0].size]
    if not parts:
        empty = np.empty(0, np.uint64)
        return empty, np.empty(0, np.int64), empty, empty, empty, empty, np.empty(0, bool)
    cat = [np.concatenate([p[i] for p in parts]) for i in range(7)]
    sel = np.lexsort((cat[1], cat[0]))[:size]
    return tuple(c[sel] for c in cat)


# -------------------------------------------------------------------- partitions


def assign_chunks(
    batch: Batch, plan: partition.PartitionPlan, view: str = "phash"
) -> list[tuple[int, tuple]]:
    """``(partition id, (ids, hash, mirror hash))`` for every partition a node of the
    batch goes to: one element per (batch, partition), not per node. ``view="centre"``:
    the nodes with a centre hash, partitioned by it (``plan`` fitted on centre hashes),
    partition ids from :data:`CENTRE_PARTITIONS` on."""
    rows_of, h, hm = batch.view(view)
    ids = batch.ids[rows_of]
    offset = CENTRE_PARTITIONS if view == "centre" else 0
    rows, pids = [], []
    for node, parts in enumerate(partition.assign(plan, h, hm) if rows_of.size else []):
        rows.extend([node] * len(parts))
        pids.extend(parts)
    rows_a, pids_a = np.asarray(rows, np.int64), np.asarray(pids, np.int64) + offset
    return [(pid, (ids[r], h[r], hm[r])) for pid, (r,) in split_by(pids_a, rows_a)]


def view_of_partition(pid: int) -> int:
    """The view flag (:data:`mitigate.centre.PHASH` or ``CENTRE``) of a partition id."""
    return centre.CENTRE if pid >= CENTRE_PARTITIONS else centre.PHASH


def search_chunks(chunks: Iterable[tuple], k: int, mode: str = "auto") -> tuple[I64, I64, Any]:
    """Every pair within ``k`` among one partition's nodes (exact unless
    ``mode="lsh"``): ``(a, b, distance)`` with ``a < b`` node ids."""
    chunks = list(chunks)
    ids = np.concatenate([c[0] for c in chunks])
    order = np.argsort(ids, kind="stable")  # independent of arrival order
    ids = ids[order]
    if ids.size < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8)
    p = np.concatenate([c[1] for c in chunks])[order]
    m = np.concatenate([c[2] for c in chunks])[order]
    chosen = neardup.choose_mode(ids.size, k) if mode == "auto" else mode
    found = neardup.find_near_duplicates(p, m, k, mode=chosen)  # type: ignore[arg-type]
    return ids[found.i], ids[found.j], found.dist


def unique_pairs(a: I64, b: I64, d: np.ndarray) -> tuple[I64, I64, np.ndarray]:
    """Pairs found in several partitions once, sorted by ``(a, b)``."""
    i, j, dist = neardup.bits.canonical_pairs(a, b, d)
    assert dist is not None
    return i, j, dist


# -------------------------------------------------------------------- verification


def attach_a(
    batch: Batch, pairs: Iterable[tuple], with_signature: bool = True
) -> list[tuple[int, tuple]]:
    """The candidate pairs ``(a, b, distance[, view])`` whose smaller end is in
    ``batch``, each once (found in several partitions or by both views: the smaller
    distance, the views OR-ed; :func:`mitigate.centre.merge_views`), with that end's key
    and signature (None without verification), keyed by the batch of the other end."""
    pairs = [p for p in pairs if p[0].size]
    if not pairs:
        return []
    a, b, d, view = centre.merge_views(
        *(np.concatenate([p[i] for p in pairs]) for i in range(3)),
        np.concatenate(
            [p[3] if len(p) > 3 else np.full(p[0].size, centre.PHASH, np.uint8) for p in pairs]
        ),
    )
    pos = position(a)
    keys = batch.keys[pos]
    sigs = np.empty(a.size, dtype=object)
    if with_signature:
        sigs[:] = [batch.signatures[x] for x in pos.tolist()]
    return [
        (bid, (a2, b2, d2, k2, list(s2), v2))
        for bid, (a2, b2, d2, k2, s2, v2) in split_by(batch_of(b), a, b, d, keys, sigs, view)
    ]


def verify_b(
    batch: Batch, parts: Iterable[tuple], threshold: float | None
) -> tuple[tuple, tuple, int]:
    """Score the pairs whose larger end is in ``batch``; returns the merged pairs
    ``(a, b, d, score)`` (score NaN when unverified: verification off or a signature
    missing, taken on pHash alone as the one-worker path does) and the refused pairs
    ``(a, b, d, score, key_a, key_b)``, and how many of the candidates only the centre
    view proposed. A pair only the centre view proposed is not a candidate unless both
    ends have a signature and their frames agree (:func:`mitigate.centre.gate`): it is
    dropped here, neither merged nor refused, as the one-worker search never proposes
    it."""
    parts = [p for p in parts if p[0].size]
    if not parts:
        e = np.empty(0, np.int64)
        return (
            (e, e, np.empty(0, np.uint8), np.empty(0)),
            (
                e,
                e,
                np.empty(0, np.uint8),
                np.empty(0),
                np.empty(0, np.str_),
                np.empty(0, np.str_),
            ),
            0,
        )
    a, b, d, key_a = (np.concatenate([p[i] for p in parts]) for i in range(4))
    sig_a = [s for p in parts for s in p[4]]
    view = np.concatenate(
        [p[5] if len(p) > 5 else np.full(p[0].size, centre.PHASH, np.uint8) for p in parts]
    )
    pos = position(b)
    if np.any(view == centre.CENTRE):
        sig_b_all = [batch.signatures[x] for x in pos.tolist()]
        live = centre.gate(view, centre.log_aspect(sig_a), centre.log_aspect(sig_b_all))
        a, b, d, key_a, pos = a[live], b[live], d[live], key_a[live], pos[live]
        sig_a = [s for s, ok in zip(sig_a, live.tolist(), strict=True) if ok]
        view = view[live]
    n_centre = int(np.count_nonzero(view == centre.CENTRE))
    key_b = batch.keys[pos]
    score = np.full(a.size, np.nan)
    ok = np.ones(a.size, dtype=bool)
    if threshold is not None:
        sig_b = [batch.signatures[x] for x in pos.tolist()]
        both = np.flatnonzero(
            [
                verify.is_signature(x) and verify.is_signature(y)
                for x, y in zip(sig_a, sig_b, strict=True)
            ]
        )
        if both.size:
            # the sample with the smaller key first, as the one-worker path scores a
            # pair (its items are in key order)
            first = (key_a[both] < key_b[both]).tolist()
            lo = [sig_a[t] if f else sig_b[t] for t, f in zip(both.tolist(), first, strict=True)]
            hi = [sig_b[t] if f else sig_a[t] for t, f in zip(both.tolist(), first, strict=True)]
            n = both.size
            score[both] = verify.pair_scores(
                np.arange(n), np.arange(n, 2 * n), lo + hi, stop_above=threshold
            )
            ok[both] = verify.verified(score[both], threshold)
    merged = (a[ok], b[ok], d[ok], score[ok])
    refused = (a[~ok], b[~ok], d[~ok], score[~ok], key_a[~ok], key_b[~ok])
    return merged, refused, n_centre


# -------------------------------------------------------------------- components


def directed(a: I64, b: I64) -> tuple[I64, I64]:
    """Both directions of undirected edges."""
    return np.concatenate([a, b]), np.concatenate([b, a])


def _grouped(u: I64, v: I64) -> tuple[I64, I64, I64, I64]:
    """Directed edges sorted and unique, self loops dropped; with ``m(u)`` per row."""
    keep_rows = u != v
    u, v = u[keep_rows], v[keep_rows]
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    if u.size:
        first = np.r_[True, (u[1:] != u[:-1]) | (v[1:] != v[:-1])]
        u, v = u[first], v[first]
    if u.size == 0:
        return u, v, u, u
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    m = np.minimum(np.minimum.reduceat(v, starts), u[starts])
    m_row = np.repeat(m, np.diff(np.r_[starts, u.size]))
    return u, v, m_row, starts


def _canonical(a: I64, b: I64) -> tuple[I64, I64]:
    i, j, _ = neardup.bits.canonical_pairs(a, b)
    return i, j


def large_star(u: I64, v: I64) -> tuple[I64, I64]:
    """Large-star step on the directed edges of a bucket of nodes ``u`` (every
    neighbour of each ``u`` present): edge ``(v, m(u))`` for every neighbour ``v > u``."""
    u, v, m, _ = _grouped(u, v)
    sel = v > u
    return _canonical(v[sel], m[sel])


def small_star(u: I64, v: I64) -> tuple[I64, I64]:
    """Small-star step: ``(v, m(u))`` for every neighbour ``v < u``, and ``(u, m(u))``."""
    u, v, m, starts = _grouped(u, v)
    sel = v < u
    return _canonical(np.r_[v[sel], u[starts]], np.r_[m[sel], m[starts]])


def min_neighbour_edges(u: I64, v: I64) -> tuple[tuple[I64, I64], tuple[I64, I64, I64]]:
    """``m(u)`` of every node of the bucket and, for every edge, ``(min, max, m(u))``."""
    u, v, m, starts = _grouped(u, v)
    a, b = np.minimum(u, v), np.maximum(u, v)
    return (u[starts], m[starts]), (a, b, m)


def disagreeing(a: I64, b: I64, m: I64) -> tuple[I64, I64]:
    """The remaining graph: ``(m(u), m(v))`` for every edge whose ends disagree (each
    edge arrives once from each end)."""
    order = np.lexsort((m, b, a))
    a, b, m = a[order], b[order], m[order]
    if a.size < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    same_edge = (a[1:] == a[:-1]) & (b[1:] == b[:-1])
    differ = same_edge & (m[1:] != m[:-1])
    return _canonical(m[:-1][differ], m[1:][differ])


def finish(a: I64, b: I64) -> tuple[I64, I64]:
    """Components of the remaining graph in one worker: ``(node, smallest node of its
    component)``, sorted by node."""
    nodes, inv = np.unique(np.r_[a, b], return_inverse=True)
    if nodes.size == 0:
        return nodes.astype(np.int64), nodes.astype(np.int64)
    n = a.size
    labels = neardup.connected_components(nodes.size, inv[:n], inv[n:])
    return nodes.astype(np.int64), nodes[labels].astype(np.int64)


def final_labels(u: I64, m: I64, done: tuple[I64, I64]) -> I64:
    """``label(u) = finish(m(u))`` where the remaining graph has it, else ``m(u)``."""
    nodes, labels = done
    out = m.copy()
    if nodes.size:
        at = np.clip(np.searchsorted(nodes, m), 0, nodes.size - 1)
        hit = nodes[at] == m
        out[hit] = labels[at[hit]]
    return out


# -------------------------------------------------------------------- keep rule


def members_and_edges(
    batch: Batch, labels: Iterable[tuple], edges: Iterable[tuple], n_buckets: int
) -> list[tuple[int, tuple[str, tuple]]]:
    """Join of one batch with the labels of its nodes and the merged pairs whose smaller
    end is in it: member rows and edges, keyed by the bucket of their component."""
    labels = [x for x in labels if x[0].size]
    out: list[tuple[int, tuple[str, tuple]]] = []
    if not labels:
        return out
    u = np.concatenate([x[0] for x in labels])
    lab = np.concatenate([x[1] for x in labels])
    order = np.argsort(u)
    u, lab = u[order], lab[order]
    pos = position(u)
    sigs = np.empty(u.size, dtype=object)
    sigs[:] = [batch.signatures[x] for x in pos.tolist()]
    for bucket, (uu, ll, kk, pp, mm, rr, ss) in split_by(
        bucket_of(lab, n_buckets),
        u,
        lab,
        batch.keys[pos],
        batch.phash[pos],
        batch.mirror[pos],
        batch.size[pos],
        sigs,
    ):
        out.append((bucket, ("member", (uu, ll, kk, pp, mm, rr, list(ss)))))
    edges = [e for e in edges if e[0].size]
    if edges:
        a, b, d, sc = (np.concatenate([e[i] for e in edges]) for i in range(4))
        at = np.searchsorted(u, a)
        la = lab[at]
        for bucket, part in split_by(bucket_of(la, n_buckets), a, b, d, sc):
            out.append((bucket, ("edge", part)))
    return out


@dataclass(frozen=True)
class BucketDecisions:
    """What the keep rule decided on a bucket of components."""

    dropped: list[tuple[str, str, int, float | None, int]]  # key, keeper, dist, score, id
    clusters: list[tuple[int, str, list[str]]]  # size, smallest key, best-ranked keys
    kept_ids: I64  # kept members (for not_merged)
    hot_leaders: list[str] = field(default_factory=list)  # leaders in clusters


def keep_components(
    members: list[tuple],
    edges: list[tuple],
    rule: str,
    top: int = 12,
    followers: hot.Followers | None = None,
) -> BucketDecisions:
    """The keep rule on every component of a bucket, exactly as the one-worker path
    (:func:`mitigate.near.decide_near_duplicates`) applies it to those components
    (ranks restricted to a component keep their order; components are independent).
    ``members`` and ``edges`` as :func:`members_and_edges`
    emits them. ``followers``: per hot-group leader its followers
    (:func:`mitigate.hot.followers_of`), counted in the clusters of their leaders
    (:func:`mitigate.hot.add_followers`); the leaders met are listed."""
    if not members:
        return BucketDecisions([], [], np.empty(0, np.int64))
    ids, comp, keys, p, m, res = (np.concatenate([x[i] for x in members]) for i in range(6))
    sigs = [s for x in members for s in x[6]]
    order = np.argsort(ids)
    ids, comp, keys, p, m, res = (x[order] for x in (ids, comp, keys, p, m, res))
    sigs = [sigs[t] for t in order.tolist()]
    n = ids.size
    if edges:
        a, b, d, sc = (np.concatenate([e[i] for e in edges]) for i in range(4))
    else:
        a, b, d, sc = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8), []
    ia, ib = np.searchsorted(ids, a), np.searchsorted(ids, b)
    key_list = keys.tolist()
    # merged pairs, verified with stop_above=threshold: whole scores, reused by the medoid
    score = {
        (int(x), int(y)): float(s)
        for x, y, s in zip(ia.tolist(), ib.tolist(), np.asarray(sc, float).tolist(), strict=True)
        if not np.isnan(s)
    }
    if rule == "medoid":
        _, comp_local = np.unique(comp, return_inverse=True)
        central = keep.centrality(comp_local.astype(np.int64), key_list, p, m, sigs, known=score)
        rank = keep.keep_rank("medoid", key_list, res.tolist(), central, comp_local)
    else:
        rank = keep.keep_rank(rule, key_list, res.tolist())
    edge_set = neardup.PairSet(ia.astype(np.int64), ib.astype(np.int64), np.asarray(d, np.uint8))
    result = neardup.greedy_keep(n, edge_set, rank)
    dropped = []
    for i in np.flatnonzero(~result.keep).tolist():
        j = int(result.duplicate_of[i])
        s = score.get((min(i, j), max(i, j)))
        dropped.append((key_list[i], key_list[j], int(result.distance[i]), s, int(ids[i])))
    clusters = []
    seen: list[str] = []
    for _, (rows,) in split_by(comp, np.arange(n)):
        if rows.size > 1:
            ranked = rows[np.argsort(rank[rows], kind="stable")]
            cluster = (
                int(rows.size),
                min(key_list[r] for r in rows),
                [key_list[r] for r in ranked[:top]],
            )
            if followers:
                leaders = [key_list[r] for r in ranked if key_list[r] in followers]
                seen.extend(leaders)
                cluster = hot.add_followers(cluster, leaders, followers)
            clusters.append(cluster)
    return BucketDecisions(dropped, clusters, ids[result.keep], seen)


def not_merged(
    refused: Iterable[tuple], dropped_ids: Iterable[I64]
) -> list[tuple[str, str, int, float]]:
    """``(key, candidate key, distance, score)`` for every sample of a bucket that is
    kept and has a refused candidate: the closest (smallest score, then key) one."""
    refused = [r for r in refused if r[0].size]
    if not refused:
        return []
    x, dist, sc, kx, ky = (np.concatenate([r[i] for r in refused]) for i in range(5))
    dropped = np.concatenate([np.empty(0, np.int64), *dropped_ids])
    live = ~np.isin(x, dropped)
    best: dict[str, tuple[float, str, int]] = {}
    for key, s, other, d in zip(
        kx[live].tolist(), sc[live].tolist(), ky[live].tolist(), dist[live].tolist(), strict=True
    ):
        if key not in best or (s, other) < best[key][:2]:
            best[key] = (s, other, int(d))
    return [(key, other, d, s) for key, (s, other, d) in sorted(best.items())]


def component_labels(a: I64, b: I64, rounds: int, n_buckets: int) -> tuple[I64, I64, int]:
    """The pipeline's component steps in memory, bucket by bucket (tests and
    benchmarks): ``(nodes, labels, remaining edges)`` for the undirected edges ``a-b``."""

    def by_bucket(parts: list[tuple]) -> list[tuple[I64, I64]]:
        groups: dict[int, list[tuple]] = {}
        for ea, eb in parts:
            u, v = directed(ea, eb)
            for bucket, (uu, vv) in split_by(bucket_of(u, n_buckets), u, v):
                groups.setdefault(bucket, []).append((uu, vv))
        return [
            (np.concatenate([g[0] for g in grp]), np.concatenate([g[1] for g in grp]))
            for _, grp in sorted(groups.items())
        ]

    edges: list[tuple] = [(np.asarray(a, np.int64), np.asarray(b, np.int64))]
    for _ in range(rounds):
        for step in (large_star, small_star):
            edges = [step(u, v) for u, v in by_bucket(edges)]
    m_parts, edge_groups = [], {}
    for u, v in by_bucket(edges):
        m_part, (ea, eb, em) = min_neighbour_edges(u, v)
        m_parts.append(m_part)
        for bucket, part in split_by(bucket_of(ea, n_buckets), ea, eb, em):
            edge_groups.setdefault(bucket, []).append(part)
    rest = [
        disagreeing(*(np.concatenate([p[i] for p in grp]) for i in range(3)))
        for grp in edge_groups.values()
    ]
    ra = np.concatenate([np.empty(0, np.int64), *[r[0] for r in rest]])
    rb = np.concatenate([np.empty(0, np.int64), *[r[1] for r in rest]])
    done = finish(ra, rb)
    nodes = np.concatenate([np.empty(0, np.int64), *[p[0] for p in m_parts]])
    ms = np.concatenate([np.empty(0, np.int64), *[p[1] for p in m_parts]])
    order = np.argsort(nodes)
    return nodes[order], final_labels(nodes[order], ms[order], done), int(ra.size)
