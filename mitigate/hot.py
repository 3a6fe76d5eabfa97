"""Hot identical-hash groups: bounded verification of many samples with one pHash.

Real pre-training data holds many copies of one picture re-encoded (an "image not
available" placeholder, a logo, a stock watermark): 10^4-10^5 samples with the same
``(pHash, mirror)`` but different bytes, so the exact (sha256) stage does not collapse
them. Verifying every pair of such a group is quadratic (1,000 copies: ~500k pairs;
10^5: 5*10^9). A group of more than :data:`HOT_MIN` samples with identical
``(phash, mirror)`` (a *hot group*) is therefore verified against a few *leaders*:

1. *candidates*: the group's first ``CANDIDATES / 2`` members in keep order (highest
   resolution, then smallest key; :func:`candidate_order`) and its first
   ``CANDIDATES / 2`` by a stable hash of the key (:func:`sample_order`: a sample of
   the group, so a kind of copy that is common in the group but not at its top, a
   crop, a look-alike, is likely among them), in keep order. Under
   ``dedup.keep: medoid`` (with verification and every candidate signed) the candidates
   are re-ordered by the number of other candidates they verify against (most first),
   then their mean verification score to the other candidates (the medoid), then
   resolution, then key;
2. *leaders* (greedy leader clustering over the candidates in that order): a candidate
   joins the first leader it verifies against (score <= threshold); otherwise it
   becomes a leader while fewer than :data:`MAX_LEADERS` exist;
3. every other member is verified against the leaders in order and *follows* the first
   it verifies against; one that verifies against none is an *orphan*;
4. *rounds* (:func:`group_roles`, at most :data:`ROUNDS`): the orphans are a group of
   their own for steps 1-3 (their candidates, their leaders, verified against those
   only), and their new leaders go after the others; the orphans of the last round
   stay orphans. A member's role is the same as one pass over every round's leaders
   in order gives (:func:`assign`), which is how the partitioned graph assigns it.

Only the leaders go on to the near-duplicate search (the rest of the pipeline, both
search modes, unchanged). Afterwards (:func:`resolve`) a follower of a kept leader is a
``near_duplicate`` of it (distance 0, its score); a follower of a leader that the search
dropped as a duplicate of ``x`` is verified against ``x`` (one more pair) and becomes a
``near_duplicate`` of ``x`` if it verifies, else it stays kept with ``not_merged``
evidence (a *stranded* follower). An orphan stays kept with ``not_merged`` evidence
against its closest leader. A stranded follower then tries the other kept samples
within k of it, the kept leaders and keepers of all hot groups
(:mod:`mitigate.hot_rescue`). A pair where a sample has no signature is taken on pHash
alone, as everywhere (the member follows the first leader); without verification every
member follows the first leader.

Cost: per round at most ``CANDIDATES * MAX_LEADERS`` pairs (plus ``CANDIDATES^2 / 2``
for the medoid order) per group, and ``ROUNDS * MAX_LEADERS + 1`` per member, so linear
in the group size. Precision does not drop: every merge is a verified pair. What recall
it can lose (compared with verifying all pairs): copies of an image that get no leader
in ``ROUNDS`` rounds (more than ``MAX_LEADERS`` distinct images a round share the hash)
stay orphans and are not merged with each other; leaders that refuse each other stay
apart (each kept, and in separate clusters of the report) even where members verify
against both; a follower is not searched itself, so a near duplicate only it (not its
leader) has in another hash group, or on the centre view (:mod:`mitigate.centre`), is
not found; a stranded follower that verifies against no kept sample of the hot groups
stays kept. Groups of at most ``HOT_MIN`` samples are
verified pair by pair exactly as before.

Every function here depends only on a group's members and their signatures (not on how
samples are batched), so the one-worker path (:mod:`mitigate.near`) and the partitioned
pipeline (:mod:`mitigate.pipeline.near_partitioned`) decide identically. Beam-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mitigate import centre, neardup, partition, verify
from mitigate.records import Reason

#: A group of more than this many samples with identical ``(phash, mirror)`` is hot.
#: Groups up to this size are verified pair by pair (at most 2,016 pairs).
HOT_MIN = 64
#: Members of a hot group the leaders are chosen from (half the top in keep order, half
#: a stable sample).
CANDIDATES = 64
#: Leaders a round of a hot group has at most (distinct images verified apart).
MAX_LEADERS = 8
#: Rounds of leaders a hot group has at most: the leaders of round ``r > 1`` are chosen
#: (as those of round 1) among the members that verified against no leader of the
#: rounds before, so at most ``ROUNDS * MAX_LEADERS`` leaders a group. 1: one round (the
#: rule before the rounds; benchmarks/bench_hot.py measures both).
ROUNDS = 3

#: Pairs scored in one call (bounded memory: their signature table, ~9 MB).
SCORE_CHUNK = 4096

#: Role of a member of a hot group.
LEADER, FOLLOWER, ORPHAN = "leader", "follower", "orphan"


class Item(Protocol):
    """What this module needs of a sample (:class:`mitigate.near.HashItem`)."""

    @property
    def key(self) -> str: ...
    @property
    def phash(self) -> str: ...
    @property
    def mirror(self) -> str: ...
    @property
    def size(self) -> int: ...  # mitigate.keep.size_key: pixels, then JPEG quality
    @property
    def signature(self) -> bytes | None: ...
    @property
    def centre(self) -> str | None: ...


@dataclass(frozen=True)
class Role:
    """What a member of a hot group is: a leader, a follower of ``leader`` (verified
    with ``score``; None = taken on pHash alone) or an orphan (``leader``: its closest
    leader, refused with ``score``)."""

    key: str
    group: str
    role: str
    leader: str
    score: float | None
    checked: int  # pairs verified to decide this role


#: A decision on a member of a hot group: ``(key, reason, duplicate_of, distance, score)``.
HotDecision = tuple[str, str, str, int, float | None]

ScorePairs = Callable[..., np.ndarray]


def group_of(item: Item) -> str:
    """The group id of a sample: its ``phash`` and ``mirror`` hex strings."""
    return f"{item.phash}:{item.mirror}"


def candidate_order(item: Item) -> tuple[int, str]:
    """Order candidates are drawn in: largest first (pixels, then JPEG quality:
    :func:`mitigate.keep.size_key`), then smallest key."""
    return (-int(item.size), item.key)


def sample_order(item: Item) -> tuple[int, str]:
    """A deterministic pseudo-random order of a group (stable hash of the key)."""
    return (partition.stable_hash("hot:" + item.key), item.key)


def candidates_of(members: Iterable[Item]) -> list[Item]:
    """The candidates of a hot group (module docstring) in keep order, from any subset
    of its members that holds its first ``CANDIDATES / 2`` in :func:`candidate_order`
    and in :func:`sample_order` (the whole group, or those two tops merged)."""
    members = list(members)
    half = CANDIDATES // 2
    top = sorted(members, key=candidate_order)[:half]
    sample = sorted(members, key=sample_order)[:half]
    unique = {it.key: it for it in top + sample}
    return sorted(unique.values(), key=candidate_order)


def hot_groups(items: Iterable[Item]) -> dict[str, list[Item]]:
    """Groups of more than :data:`HOT_MIN` items with identical hashes, by group id."""
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(group_of(it), []).append(it)
    return {g: v for g, v in groups.items() if len(v) > HOT_MIN}


def _signed(item: Item) -> bool:
    return verify.is_signature(item.signature)


def _scores(
    a: Sequence[Item], b: Sequence[Item], threshold: float, score_pairs: ScorePairs
) -> np.ndarray:
    """Verification score of each pair ``(a[t], b[t])`` (both signed), each scored with
    the smaller key first as the one-worker path does; pairs with byte-identical
    signatures (in the same order, within a chunk of :data:`SCORE_CHUNK` pairs) are
    scored once. Memory beyond the inputs: one chunk's signature table."""
    out = [
        _scores_chunk(a[s : s + SCORE_CHUNK], b[s : s + SCORE_CHUNK], threshold, score_pairs)
        for s in range(0, len(a), SCORE_CHUNK)
    ]
    return np.concatenate(out) if out else np.empty(0)


def _scores_chunk(
    a: Sequence[Item], b: Sequence[Item], threshold: float, score_pairs: ScorePairs
) -> np.ndarray:
    first = [x if x.key < y.key else y for x, y in zip(a, b, strict=True)]
    second = [y if x.key < y.key else x for x, y in zip(a, b, strict=True)]
    table: dict[bytes, int] = {}
    idx = np.empty((len(first), 2), np.int64)
    for t, (x, y) in enumerate(zip(first, second, strict=True)):
        for s, it in enumerate((x, y)):
            idx[t, s] = table.setdefault(it.signature, len(table))  # type: ignore[arg-type]
    if not len(first):
        return np.empty(0)
    pairs, inverse = np.unique(idx, axis=0, return_inverse=True)
    sigs = verify.as_signatures(list(table))
    got = score_pairs(pairs[:, 0], pairs[:, 1], sigs, stop_above=threshold)
    return np.asarray(got, np.float64)[np.asarray(inverse).reshape(-1)]


def _medoid_order(cands: list[Item], threshold: float, score_pairs: ScorePairs) -> list[Item]:
    """Candidates by the number of other candidates they verify against (most first:
    the leader that covers most of the group, so copies that refuse each other but
    both verify against it are not split between leaders), then mean score to the
    other candidates (the medoid), then keep order."""
    n = len(cands)
    ii, jj = np.triu_indices(n, 1)
    s = _scores([cands[i] for i in ii], [cands[j] for j in jj], np.inf, score_pairs)
    total = np.bincount(ii, weights=s, minlength=n) + np.bincount(jj, weights=s, minlength=n)
    mean = total / max(n - 1, 1)
    ok = verify.verified(s, threshold).astype(np.float64)
    degree = np.bincount(ii, weights=ok, minlength=n) + np.bincount(jj, weights=ok, minlength=n)
    order = sorted(
        range(n), key=lambda t: (-int(degree[t]), float(mean[t]), candidate_order(cands[t]))
    )
    return [cands[t] for t in order]


def choose_leaders(
    candidates: Iterable[Item],
    threshold: float | None,
    keep_rule: str,
    score_pairs: ScorePairs = verify.pair_scores,
) -> tuple[list[Item], int]:
    """The leaders of a hot group (in leader order) from its candidates (any subset of
    its members that :func:`candidates_of` accepts), and the number of pairs verified
    to choose them."""
    cands = candidates_of(candidates)
    checked = 0
    if (
        keep_rule == "medoid"
        and threshold is not None
        and len(cands) > 1
        and all(_signed(c) for c in cands)
    ):
        cands = _medoid_order(cands, threshold, score_pairs)
        checked += len(cands) * (len(cands) - 1) // 2
    leaders: list[Item] = []
    for c in cands:
        if not leaders:
            leaders.append(c)
            continue
        if threshold is None:
            continue  # everything follows the first leader
        roles = _against(c, leaders, threshold, score_pairs)
        checked += roles[2]
        if roles[0] is None and len(leaders) < MAX_LEADERS:
            leaders.append(c)
    return leaders, checked


def _against(
    item: Item, leaders: Sequence[Item], threshold: float, score_pairs: ScorePairs
) -> tuple[int | None, tuple[float, int] | None, int]:
    """(index of the first leader ``item`` verifies against or None, the closest
    refused ``(score, index)``, pairs verified) for one item."""
    signed = [t for t, lead in enumerate(leaders) if _signed(item) and _signed(lead)]
    s = np.full(len(leaders), np.nan)
    if signed:
        s[signed] = _scores(
            [item] * len(signed), [leaders[t] for t in signed], threshold, score_pairs
        )
    for t in range(len(leaders)):
        if t not in signed or verify.verified(s[t : t + 1], threshold)[0]:
            return t, None, t + 1
    best = int(np.argmin(s))
    return None, (float(s[best]), best), len(leaders)


def assign(
    members: Sequence[Item],
    leaders: Sequence[Item],
    threshold: float | None,
    score_pairs: ScorePairs = verify.pair_scores,
    prior: Sequence[Role] | None = None,
) -> list[Role]:
    """The role of every member of one hot group (any subset of it, e.g. one batch's
    members: a member's role depends only on the leaders), in ``members`` order.

    ``prior``: the members' roles against the first leaders of ``leaders`` (every one an
    orphan, e.g. of the rounds before); only the leaders after those are tried then,
    and the roles equal those of one call with every leader."""
    if not leaders:
        raise ValueError("a hot group needs at least one leader")
    group = group_of(leaders[0])
    lead_keys = {x.key for x in leaders}
    index = {x.key: t for t, x in enumerate(leaders)}
    out: list[Role | None] = [None] * len(members)
    pending: list[int] = []
    closest: dict[int, tuple[float, int]] = {}
    start = 0
    if prior is not None:
        if len(prior) != len(members) or any(r.role != ORPHAN for r in prior):
            raise ValueError("prior roles must be one orphan role a member")
        start = max((r.checked for r in prior), default=0)
        for t, r in enumerate(prior):
            if r.score is not None:
                closest[t] = (r.score, index[r.leader])
    for t, it in enumerate(members):
        if group_of(it) != group:
            raise ValueError(f"{it.key!r} is not in hot group {group}")
        if it.key in lead_keys:
            out[t] = Role(it.key, group, LEADER, it.key, None, 0)
        elif threshold is None:
            out[t] = Role(it.key, group, FOLLOWER, leaders[0].key, None, 1)
        else:
            pending.append(t)
    # leader by leader, all pending members at once (a verified member stops)
    for li, lead in enumerate(leaders):
        if li < start:
            continue
        if not pending:
            break
        unsigned = [t for t in pending if not (_signed(members[t]) and _signed(lead))]
        for t in unsigned:
            out[t] = Role(members[t].key, group, FOLLOWER, lead.key, None, li + 1)
        signed = [t for t in pending if _signed(members[t]) and _signed(lead)]
        s = _scores([members[t] for t in signed], [lead] * len(signed), threshold, score_pairs)
        ok = verify.verified(s, threshold)
        rest = []
        for t, sc, good in zip(signed, s.tolist(), ok.tolist(), strict=True):
            if good:
                out[t] = Role(members[t].key, group, FOLLOWER, lead.key, sc, li + 1)
            else:
                if t not in closest or sc < closest[t][0]:
                    closest[t] = (sc, li)
                rest.append(t)
        pending = rest
    for t in pending:
        sc, li = closest[t]
        out[t] = Role(members[t].key, group, ORPHAN, leaders[li].key, sc, len(leaders))
    return [r for r in out if r is not None]


def orphans(
    members: Sequence[Item],
    leaders: Sequence[Item],
    threshold: float | None,
    score_pairs: ScorePairs = verify.pair_scores,
) -> list[Item]:
    """The members (any subset of one hot group) that verify against none of
    ``leaders``: those the next round's leaders are chosen among."""
    if threshold is None:
        return []
    roles = assign(members, leaders, threshold, score_pairs)
    return [it for it, r in zip(members, roles, strict=True) if r.role == ORPHAN]


def next_round(
    candidates: Iterable[Item],
    leaders: Sequence[Item],
    checked: int,
    threshold: float | None,
    keep_rule: str,
    score_pairs: ScorePairs = verify.pair_scores,
) -> tuple[list[Item], int]:
    """A hot group's leaders and pairs verified after one more round: the leaders
    chosen (:func:`choose_leaders`) among ``candidates`` (orphans of ``leaders``, any
    subset of them :func:`candidates_of` accepts), after ``leaders``."""
    new, more = choose_leaders(candidates, threshold, keep_rule, score_pairs)
    return [*leaders, *new], checked + more


def group_roles(
    members: Sequence[Item],
    threshold: float | None,
    keep_rule: str,
    score_pairs: ScorePairs = verify.pair_scores,
) -> tuple[list[Item], int, list[Role]]:
    """One hot group, whole: its leaders over every round (:data:`ROUNDS`), the pairs
    verified to choose them, and the role of every member (``members`` order; the
    same roles as :func:`assign` with those leaders gives)."""
    leaders, checked = choose_leaders(members, threshold, keep_rule, score_pairs)
    roles = assign(members, leaders, threshold, score_pairs)
    for _ in range(1, ROUNDS):
        idx = [t for t, r in enumerate(roles) if r.role == ORPHAN]
        if not idx:
            break
        left = [members[t] for t in idx]
        leaders, checked = next_round(left, leaders, checked, threshold, keep_rule, score_pairs)
        got = assign(left, leaders, threshold, score_pairs, prior=[roles[t] for t in idx])
        for t, r in zip(idx, got, strict=True):
            roles[t] = r
    return leaders, checked, roles


def _distance(a: Item, b: Item, use_centre: bool) -> int:
    """Pair distance of two samples: pHash view, and the centre view where both have it."""
    p = neardup.hex_to_uint64([a.phash, b.phash])
    m = neardup.hex_to_uint64([a.mirror, b.mirror])
    d = int(neardup.pair_distance(p[:1], m[:1], p[1:], m[1:])[0])
    if use_centre and a.centre is not None and b.centre is not None:
        c, cm, _ = centre.centre_arrays([a.centre, b.centre])
        d = min(d, int(neardup.pair_distance(c[:1], cm[:1], c[1:], cm[1:])[0]))
    return d


def resolve(
    roles: Sequence[Role],
    items: Mapping[str, Item],
    fates: Mapping[str, tuple[str, str, int]],
    keepers: Mapping[str, Item],
    threshold: float | None,
    score_pairs: ScorePairs = verify.pair_scores,
    use_centre: bool = False,
) -> tuple[list[HotDecision], dict[str, int]]:
    """Decisions on the followers and orphans of ``roles`` once the search decided on
    the leaders, and counters: ``verified_pairs`` (followers of dropped leaders checked
    against their leader's keeper) and ``stranded`` (of them, those refused).

    ``items``: the members named in ``roles``; ``fates``: leader key -> ``(reason,
    duplicate_of, distance)`` for every leader the search did not keep
    (``near_duplicate`` or ``eval_overlap``); ``keepers``: the samples those leaders are
    near duplicates of. A leader absent from ``fates`` was kept. Stranded followers
    may then try other kept samples (:func:`mitigate.hot_rescue.rescue`)."""
    out: list[HotDecision] = []
    again: list[tuple[Role, str, Item]] = []
    for r in roles:
        if r.role == LEADER:
            continue
        fate = fates.get(r.leader)
        if fate is not None and fate[0] == Reason.EVAL_OVERLAP:
            # identical hashes: the same reference match as the leader's
            out.append((r.key, Reason.EVAL_OVERLAP, fate[1], int(fate[2]), None))
        elif r.role == ORPHAN:
            out.append((r.key, Reason.NOT_MERGED, r.leader, 0, r.score))
        elif fate is None:
            out.append((r.key, Reason.NEAR_DUPLICATE, r.leader, 0, r.score))
        else:
            again.append((r, fate[1], keepers[fate[1]]))
    checked = stranded = 0
    if again:
        mine = [items[r.key] for r, _, _ in again]
        other = [x for _, _, x in again]
        both = [
            threshold is not None and _signed(a) and _signed(b)
            for a, b in zip(mine, other, strict=True)
        ]
        sel = [t for t, f in enumerate(both) if f]
        s = np.full(len(again), np.nan)
        if sel:
            assert threshold is not None
            s[sel] = _scores(
                [mine[t] for t in sel], [other[t] for t in sel], threshold, score_pairs
            )
        checked = len(sel)
        for t, (r, x_key, x) in enumerate(again):
            d = _distance(mine[t], x, use_centre)
            if not both[t]:
                out.append((r.key, Reason.NEAR_DUPLICATE, x_key, d, None))
            elif verify.verified(s[t : t + 1], threshold)[0]:  # type: ignore[arg-type]
                out.append((r.key, Reason.NEAR_DUPLICATE, x_key, d, float(s[t])))
            else:
                out.append((r.key, Reason.NOT_MERGED, x_key, d, float(s[t])))
                stranded += 1
    return out, {"verified_pairs": checked, "stranded": stranded}


#: A cluster of the report (``cluster_sizes``, ``largest_clusters``): its size, its
#: smallest key, its best-ranked keys (at most :data:`CLUSTER_KEYS`).
Cluster = tuple[int, str, list[str]]
#: Keys a cluster of the report lists at most.
CLUSTER_KEYS = 12
#: Per leader: how many members follow it, and the first :data:`CLUSTER_KEYS` of their
#: keys in key order.
Followers = dict[str, tuple[int, list[str]]]


def followers_of(roles: Iterable[Role]) -> Followers:
    """Per leader, its followers (:data:`Followers`) among ``roles``."""
    keys: dict[str, list[str]] = {}
    for r in roles:
        if r.role == FOLLOWER:
            keys.setdefault(r.leader, []).append(r.key)
    return {lead: (len(v), sorted(v)[:CLUSTER_KEYS]) for lead, v in keys.items()}


def merge_followers(parts: Iterable[Followers]) -> Followers:
    """:func:`followers_of` of the union of the roles ``parts`` were made of."""
    out: Followers = {}
    for part in parts:
        for lead, (n, keys) in part.items():
            m, had = out.get(lead, (0, []))
            out[lead] = (m + n, sorted(had + keys)[:CLUSTER_KEYS])
    return out


def add_followers(cluster: Cluster, leaders: Sequence[str], followers: Followers) -> Cluster:
    """A cluster of the searched samples (a connected component of the verified pairs)
    with the followers of its hot-group leaders counted in: a follower verified against
    its leader, so it is in the leader's component (stranded followers too; orphans
    are not). ``leaders``: the cluster's members, in keep-rank order (those that are
    not leaders are skipped); the listed keys go on with their followers in that
    order, by key."""
    size, first, keys = cluster
    extra = [followers[x] for x in leaders if x in followers]
    if not extra:
        return cluster
    size += sum(n for n, _ in extra)
    first = min([first, *(ks[0] for _, ks in extra if ks)])
    listed = [*keys, *(k for _, ks in extra for k in ks)][:CLUSTER_KEYS]
    return size, first, listed


def new_stats() -> dict[str, int]:
    """Counters of the hot-group stage (``summary.json`` ``dedup.hot``)."""
    return {
        "groups": 0,
        "members": 0,
        "leaders": 0,
        "followers": 0,
        "orphans": 0,
        "stranded": 0,
        "verified_pairs": 0,
    }


def add_stats(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {k: int(a.get(k, 0)) + int(b.get(k, 0)) for k in new_stats()}


def role_stats(roles: Iterable[Role]) -> dict[str, int]:
    """Counters of assigned roles (members, followers, orphans, pairs verified)."""
    s = new_stats()
    for r in roles:
        s["members"] += 1
        s["followers"] += r.role == FOLLOWER
        s["orphans"] += r.role == ORPHAN
        s["verified_pairs"] += r.checked
    return s


def condense(
    items: Sequence[Item],
    threshold: float | None,
    keep_rule: str,
    score_pairs: ScorePairs = verify.pair_scores,
) -> tuple[list[Item], list[Role], dict[str, Any]]:
    """One worker's hot-group stage: the items that go on to the search (every item
    outside a hot group, and the leaders), the roles of every hot-group member, and the
    counters so far (``stranded`` and the follow-up pairs are added by :func:`resolve`'s
    caller)."""
    groups = hot_groups(items)
    stats = new_stats()
    if not groups:
        return list(items), [], stats
    roles: list[Role] = []
    for gid in sorted(groups):
        members = sorted(groups[gid], key=lambda it: it.key)
        leaders, checked, got = group_roles(members, threshold, keep_rule, score_pairs)
        stats["groups"] += 1
        stats["leaders"] += len(leaders)
        stats["verified_pairs"] += checked
        roles.extend(got)
    stats = add_stats(stats, role_stats(roles))
    held = {r.key for r in roles if r.role != LEADER}
    return [it for it in items if it.key not in held], roles, stats
