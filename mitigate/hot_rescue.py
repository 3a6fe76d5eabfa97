"""Stranded followers of hot identical-hash groups (:mod:`mitigate.hot`) get a second
chance: a follower whose leader the search dropped as a near duplicate of ``x``, and
that does not verify against ``x``, is verified against the other kept samples of the
hot groups within k (every kept leader and every keeper of a dropped leader; a few a
group), and becomes a ``near_duplicate`` of the first it verifies against (nearest
first, then key). Every merge is still a verified pair with a kept sample; the cost is
bounded a follower (``ROUNDS * MAX_LEADERS`` pairs). Both search modes call it with the
same inputs.

The scan is vectorised: the pool's hashes are parsed once (:class:`Pool`), and a block
of stranded followers x the pool is measured at once (XOR and popcount, at most
:data:`BLOCK_CELLS` cells a block, so memory is bounded whatever the pool and the
number of stranded followers); the nearest ``ROUNDS * MAX_LEADERS`` within k of each
follower are then scored rank by rank (all followers still unplaced try their next
candidate in one call), so a follower that verifies against its nearest kept sample
costs one pair. Beam-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from mitigate import centre, hot, neardup, verify
from mitigate.records import Reason

#: Follower x pool cells measured at once (each a few bytes: the XOR of two uint64
#: and the distance), so a block's memory is ~10-30 MB whatever the sizes.
BLOCK_CELLS = 1 << 20
#: Stranded followers whose candidates are gathered and scored together (bounded
#: memory: ``FOLLOWER_CHUNK * ROUNDS * MAX_LEADERS`` candidate indices).
FOLLOWER_CHUNK = 4096


@dataclass(frozen=True, eq=False)
class Pool:
    """The kept samples a stranded follower may try (:func:`kept`), by key, with their
    hashes parsed once: pHash and mirror, the centre view (and whether present) and
    whether the sample has a signature."""

    items: list[hot.Item]
    index: dict[str, int]
    p: NDArray[np.uint64]
    m: NDArray[np.uint64]
    c: NDArray[np.uint64]
    cm: NDArray[np.uint64]
    has_centre: NDArray[np.bool_]
    signed: NDArray[np.bool_]


def kept(
    leaders: Iterable[hot.Item],
    fates: Mapping[str, tuple[str, str, int]],
    keepers: Mapping[str, hot.Item],
) -> dict[str, hot.Item]:
    """The kept samples a stranded follower may try: every leader the search kept
    (absent from ``fates``) and every keeper of a dropped leader."""
    out = {x.key: x for x in leaders if x.key not in fates}
    out.update(keepers)
    return out


def pool_of(others: Mapping[str, hot.Item]) -> Pool:
    """:class:`Pool` of ``others`` (as :func:`kept` gives them), in key order."""
    items = sorted(others.values(), key=lambda x: x.key)
    c, cm, has_centre = centre.centre_arrays([x.centre for x in items])
    return Pool(
        items=items,
        index={x.key: t for t, x in enumerate(items)},
        p=neardup.hex_to_uint64([x.phash for x in items]),
        m=neardup.hex_to_uint64([x.mirror for x in items]),
        c=c,
        cm=cm,
        has_centre=has_centre,
        signed=np.asarray([hot._signed(x) for x in items], dtype=bool),
    )


def _distances(followers: list[hot.Item], pool: Pool, use_centre: bool) -> NDArray[np.uint8]:
    """Pair distance (:func:`mitigate.hot._distance`) of every follower x every pool
    sample, ``(len(followers), len(pool.items))``."""
    p = neardup.hex_to_uint64([x.phash for x in followers])[:, None]
    m = neardup.hex_to_uint64([x.mirror for x in followers])[:, None]
    d = neardup.pair_distance(p, m, pool.p[None, :], pool.m[None, :])
    if use_centre:
        c, cm, has = centre.centre_arrays([x.centre for x in followers])
        both = has[:, None] & pool.has_centre[None, :]
        if both.any():
            dc = neardup.pair_distance(c[:, None], cm[:, None], pool.c[None, :], pool.cm[None, :])
            d = np.where(both, np.minimum(d, dc), d)
    return d


def _nearest(
    followers: list[hot.Item],
    excluded: list[str],
    pool: Pool,
    k: int,
    use_centre: bool,
) -> tuple[NDArray[np.int64], NDArray[np.uint8]]:
    """For each follower, the pool indices of its nearest signed pool samples within
    ``k`` (distance, then key; not itself nor its ``excluded`` keeper), at most
    ``ROUNDS * MAX_LEADERS``, padded with -1, and their distances. Measured in blocks of
    at most :data:`BLOCK_CELLS` cells."""
    n_pool = len(pool.items)
    width = hot.ROUNDS * hot.MAX_LEADERS
    idx = np.full((len(followers), width), -1, np.int64)
    dist = np.zeros((len(followers), width), np.uint8)
    rows = max(1, BLOCK_CELLS // max(n_pool, 1))
    for lo in range(0, len(followers), rows):
        block = followers[lo : lo + rows]
        d = _distances(block, pool, use_centre)
        ok = (d <= k) & pool.signed[None, :]
        for t, (it, x_key) in enumerate(zip(block, excluded[lo : lo + rows], strict=True)):
            for key in (it.key, x_key):
                j = pool.index.get(key)
                if j is not None:
                    ok[t, j] = False
        r, c = np.nonzero(ok)  # row-major: by row, then pool index (= key order)
        if not r.size:
            continue
        dd = d[r, c]
        order = np.lexsort((c, dd, r))
        r, c, dd = r[order], c[order], dd[order]
        first = np.searchsorted(r, r, side="left")
        rank = np.arange(r.size) - first
        take = rank < width
        idx[lo + r[take], rank[take]] = c[take]
        dist[lo + r[take], rank[take]] = dd[take]
    return idx, dist


def rescue(
    out: list[hot.HotDecision],
    roles: Iterable[hot.Role],
    items: Mapping[str, hot.Item],
    others: Mapping[str, hot.Item] | Pool,
    k: int,
    threshold: float,
    score_pairs: hot.ScorePairs,
    use_centre: bool,
    counts: dict[str, int],
) -> dict[str, int]:
    """Stranded followers (``not_merged`` decisions in ``out``, of
    :func:`mitigate.hot.resolve` on ``roles``, on followers: refused by their leader's
    keeper; an orphan's is left alone)
    verified against the other kept samples of ``others`` (:func:`kept`, or its
    :class:`Pool`) within ``k`` (nearest first, then key; at most
    ``ROUNDS * MAX_LEADERS`` a follower): one that verifies becomes a
    ``near_duplicate`` of the first (its decision in ``out`` replaced). Returns
    ``counts`` with the pairs verified added and the followers merged taken off
    ``stranded``."""
    pool = others if isinstance(others, Pool) else pool_of(others)
    follows = {r.key for r in roles if r.role == hot.FOLLOWER}
    stranded = [
        t
        for t, (key, reason, _, _, _) in enumerate(out)
        if reason == Reason.NOT_MERGED
        and key in follows
        and key in items
        and hot._signed(items[key])
    ]
    if not stranded or not pool.items:
        return counts
    scored = merged = 0
    for lo in range(0, len(stranded), FOLLOWER_CHUNK):
        chunk = stranded[lo : lo + FOLLOWER_CHUNK]
        followers = [items[out[t][0]] for t in chunk]
        idx, dist = _nearest(followers, [out[t][2] for t in chunk], pool, k, use_centre)
        pending = np.arange(len(chunk))
        for rank in range(idx.shape[1]):  # every unplaced follower: its next candidate
            pending = pending[idx[pending, rank] >= 0]
            if not pending.size:
                break
            cand = idx[pending, rank]
            a = [followers[t] for t in pending.tolist()]
            b = [pool.items[j] for j in cand.tolist()]
            s = hot._scores(a, b, threshold, score_pairs)
            ok = verify.verified(s, threshold)
            scored += len(a)
            for t, j, sc in zip(
                pending[ok].tolist(), cand[ok].tolist(), s[ok].tolist(), strict=True
            ):
                key = out[chunk[t]][0]
                d = int(dist[t, rank])
                out[chunk[t]] = (key, Reason.NEAR_DUPLICATE, pool.items[j].key, d, float(sc))
                merged += 1
            pending = pending[~ok]
    return {
        **counts,
        "verified_pairs": counts.get("verified_pairs", 0) + scored,
        "stranded": counts.get("stranded", 0) - merged,
    }
