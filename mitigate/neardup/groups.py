"""Hot values: items with identical ``(phash, mirror)`` collapse into one search node."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mitigate.neardup.bits import PairSet, _as_pair, canonical_pairs

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
    ci, cj, cd = canonical_pairs(
        np.concatenate([first, a_items]),
        np.concatenate([second, b_items]),
        np.concatenate([within_d, across_d]),
    )
    assert cd is not None
    return PairSet(ci, cj, cd)
