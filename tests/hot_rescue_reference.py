"""The stranded-follower rescue as it was before it was vectorised (a Python scan of
every kept sample of the pool for each stranded follower, every candidate within k
scored): the plain reference :func:`mitigate.hot_rescue.rescue` must decide as, and the
baseline ``benchmarks/bench_hot_rescue.py`` measures it against. Test helper only."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from mitigate import hot, verify
from mitigate.records import Reason


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
