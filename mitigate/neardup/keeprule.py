"""Connected components and the greedy keep rule over verified edges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mitigate.neardup.bits import PairSet, _as_pair, _check_k
from mitigate.neardup.groups import collapse_identical
from mitigate.neardup.lsh import LSHParams
from mitigate.neardup.plan import MIHPlan
from mitigate.neardup.search import Mode, find_node_pairs

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
