"""Connected components of the near-duplicate pair graph in rounds, and the keep rule
applied to one component (Beam-free; :mod:`mitigate.pipeline.near_partitioned` runs the
rounds as Beam stages).

Components: the large-star / small-star algorithm (Kiveris et al., "Connected
Components in MapReduce and Beyond", SoCC 2014). Nodes are sample keys (strings, so
"smaller" is string order); one round is a group-by-node of the undirected edges:

* :func:`large_star` (node ``u``, its neighbours): connect every *larger* neighbour to
  ``m = min(u, neighbours)``;
* :func:`small_star`: connect ``u`` and every *smaller* neighbour to ``m``.

Both keep the components and shrink their diameter; O(log² n) rounds suffice, and in
practice a few do. After a bounded number of rounds every node ``v`` takes
``m(v) = min(v, neighbours of v)`` (:func:`min_neighbour`); an edge whose ends disagree
on ``m`` means its component is not a star yet. Those edges, written on the ``m``
values, are the *remaining graph*; :func:`finish` labels it in one worker (union-find),
and ``label(v) = finish(...).get(m(v), m(v))``. The labels are exactly the smallest key
of each component, whatever the number of rounds: rounds only make the remaining graph
small.

Keep rule: :func:`keep_component` decides one component with the same greedy rule as
the single-worker path (:func:`mitigate.neardup.greedy_keep`), so both give the same
kept set and the same ``duplicate_of`` whenever they see the same pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from mitigate import neardup
from mitigate.near import HashItem


@dataclass(frozen=True, order=True)
class KeyPair:
    """One near-duplicate pair of samples, ``a < b`` (keys), ``distance`` in bits (the
    pair distance of :mod:`mitigate.neardup`). The partitioned search emits these; a
    pair verification step can filter them before components are computed."""

    a: str
    b: str
    distance: int

    @staticmethod
    def of(x: str, y: str, distance: int) -> KeyPair:
        return KeyPair(x, y, distance) if x < y else KeyPair(y, x, distance)


def search_pairs(items: Sequence[HashItem], k: int, mode: str = "auto") -> list[KeyPair]:
    """Every pair of ``items`` within ``k`` bits (exact unless ``mode="lsh"``), with the
    existing search of :func:`mitigate.neardup.find_near_duplicates`."""
    p = neardup.hex_to_uint64([i.phash for i in items])
    m = neardup.hex_to_uint64([i.mirror for i in items])
    return search_arrays([i.key for i in items], p, m, k, mode)


def search_arrays(
    keys: Sequence[str], p: np.ndarray, m: np.ndarray, k: int, mode: str = "auto"
) -> list[KeyPair]:
    """:func:`search_pairs` on keys and uint64 hash arrays (one partition's content)."""
    if len(keys) < 2:
        return []
    chosen = neardup.choose_mode(len(keys), k) if mode == "auto" else mode
    found = neardup.find_near_duplicates(p, m, k, mode=chosen)  # type: ignore[arg-type]
    return [
        KeyPair.of(keys[a], keys[b], d)
        for a, b, d in zip(found.i.tolist(), found.j.tolist(), found.dist.tolist(), strict=True)
    ]


def large_star(u: str, neighbours: Iterable[str]) -> list[tuple[str, str]]:
    """Edges ``(v, m)`` for every neighbour ``v > u``, ``m = min(u, neighbours)``."""
    nbrs = set(neighbours)
    nbrs.discard(u)
    if not nbrs:
        return []
    m = min(min(nbrs), u)
    return [(v, m) for v in sorted(nbrs) if v > u]


def small_star(u: str, neighbours: Iterable[str]) -> list[tuple[str, str]]:
    """Edges ``(v, m)`` for ``u`` and every neighbour ``v < u``, ``m = min(u, neighbours)``
    (self loops dropped)."""
    nbrs = set(neighbours)
    nbrs.discard(u)
    if not nbrs:
        return []
    m = min(min(nbrs), u)
    return [(v, m) for v in [*sorted(x for x in nbrs if x < u), u] if v != m]


def min_neighbour(u: str, neighbours: Iterable[str]) -> str:
    """``m(u) = min(u, neighbours)``."""
    return min(min(neighbours, default=u), u)


def finish(edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Smallest node of the component of every node of the remaining graph (one
    worker; the graph is small after the rounds)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:  # the smaller root wins, so every root is its set's minimum
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in list(parent)}


def _normalise(edges: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(min(a, b), max(a, b)) for a, b in edges if a != b}


def _adjacency(edges: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    adj: dict[str, list[str]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    return adj


def star_round(edges: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """One large-star then one small-star step on an in-memory edge list (the pipeline
    does the same grouped by node)."""
    big = _normalise(e for u, n in _adjacency(edges).items() for e in large_star(u, n))
    return _normalise(e for u, n in _adjacency(big).items() for e in small_star(u, n))


def remaining_graph(edges: Iterable[tuple[str, str]]) -> tuple[dict[str, str], set]:
    """``m(v)`` of every node and the remaining graph: ``(m(u), m(v))`` for every edge
    whose ends disagree."""
    edges = list(edges)
    m = {u: min_neighbour(u, n) for u, n in _adjacency(edges).items()}
    return m, _normalise((m[a], m[b]) for a, b in edges if m[a] != m[b])


def component_labels(edges: Iterable[tuple[str, str]], rounds: int) -> tuple[dict[str, str], int]:
    """Smallest node of every non-isolated node's component, by ``rounds`` star rounds
    and :func:`finish` on what remains; also the size (edges) of the remaining graph.
    The in-memory twin of the pipeline's stages (tests, benchmarks)."""
    current = _normalise(edges)
    for _ in range(rounds):
        current = star_round(current)
    m, rest = remaining_graph(current)
    done = finish(rest)
    return {v: done.get(mv, mv) for v, mv in m.items()}, len(rest)


def rank(item: HashItem) -> tuple[int, str]:
    """Keep order: highest resolution first, then smallest key (the single-worker rule)."""
    return (-item.resolution, item.key)


def keep_component(
    nodes: Sequence[HashItem], pairs: Iterable[KeyPair]
) -> dict[str, tuple[str, int] | None]:
    """The keep rule on one connected component: ``None`` for a kept node, else
    ``(duplicate_of, distance)``, a kept node joined to it by a pair.

    Greedy in :func:`rank` order (:func:`mitigate.neardup.greedy_keep`): a node is kept
    unless it has a pair with an already kept node; a dropped node points at its
    best-ranked kept neighbour. This is the one place the distributed path applies the
    rule, after components; change it here to change it for partitioned runs.
    """
    ordered = sorted(nodes, key=rank)
    index = {item.key: i for i, item in enumerate(ordered)}
    pairs = list(pairs)
    edges = neardup.PairSet(
        np.asarray([index[p.a] for p in pairs], np.int64),
        np.asarray([index[p.b] for p in pairs], np.int64),
        np.asarray([p.distance for p in pairs], np.uint8),
    )
    n = len(ordered)
    res = neardup.greedy_keep(n, edges, np.arange(n))
    out: dict[str, tuple[str, int] | None] = {}
    for i, item in enumerate(ordered):
        if res.keep[i]:
            out[item.key] = None
        else:
            out[item.key] = (ordered[int(res.duplicate_of[i])].key, int(res.distance[i]))
    return out
