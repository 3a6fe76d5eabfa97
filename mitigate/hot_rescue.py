"""Stranded followers of hot identical-hash groups (:mod:`mitigate.hot`) get a second
chance: a follower whose leader the search dropped as a near duplicate of ``x``, and
that does not verify against ``x``, is verified against the other kept samples of the
hot groups within k (every kept leader and every keeper of a dropped leader; a few a
group), and becomes a ``near_duplicate`` of the first it verifies against. Every merge
is still a verified pair with a kept sample; the cost is bounded a follower
(``ROUNDS * MAX_LEADERS`` pairs). Both search modes call it with the same inputs.
Beam-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from mitigate import hot, verify
from mitigate.records import Reason


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


def rescue(
    out: list[hot.HotDecision],
    roles: Iterable[hot.Role],
    items: Mapping[str, hot.Item],
    others: Mapping[str, hot.Item],
    k: int,
    threshold: float,
    score_pairs: hot.ScorePairs,
    use_centre: bool,
    counts: dict[str, int],
) -> dict[str, int]:
    """Stranded followers (``not_merged`` decisions in ``out``, of
    :func:`mitigate.hot.resolve` on ``roles``, on followers: refused by their leader's
    keeper; an orphan's is left alone)
    verified against the other kept samples of ``others`` (:func:`kept`) within ``k``
    (nearest first, then key; at most ``ROUNDS * MAX_LEADERS`` a follower): one that
    verifies becomes a ``near_duplicate`` of the first (its decision in ``out``
    replaced). Returns ``counts`` with the pairs verified added and the followers
    merged taken off ``stranded``."""
    follows = {r.key for r in roles if r.role == hot.FOLLOWER}
    pool = sorted(others.values(), key=lambda x: x.key)
    a: list[hot.Item] = []
    b: list[hot.Item] = []
    spans: list[tuple[int, int, int]] = []  # (index in out, first pair, end)
    for t, (key, reason, x_key, _, _) in enumerate(out):
        it = items.get(key)
        if reason != Reason.NOT_MERGED or key not in follows or it is None or not hot._signed(it):
            continue
        near = sorted(
            (d, x.key, x)
            for x in pool
            if x.key not in (x_key, key) and hot._signed(x)
            for d in [hot._distance(it, x, use_centre)]
            if d <= k
        )[: hot.ROUNDS * hot.MAX_LEADERS]
        if near:
            spans.append((t, len(a), len(a) + len(near)))
            a.extend([it] * len(near))
            b.extend(x for _, _, x in near)
    if not a:
        return counts
    s = hot._scores(a, b, threshold, score_pairs)
    ok = verify.verified(s, threshold)
    merged = 0
    for t, lo, hi in spans:
        hit = np.flatnonzero(ok[lo:hi])
        if hit.size:
            j = lo + int(hit[0])
            d = hot._distance(a[j], b[j], use_centre)
            out[t] = (out[t][0], Reason.NEAR_DUPLICATE, b[j].key, d, float(s[j]))
            merged += 1
    return {
        **counts,
        "verified_pairs": counts.get("verified_pairs", 0) + len(a),
        "stranded": counts.get("stranded", 0) - merged,
    }
