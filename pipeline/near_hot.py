"""Hot identical-hash groups in the partitioned graph (the rules: :mod:`mitigate.hot`).

::

    items ─ count per (pHash, mirror) ─ groups of more than HOT_MIN ─┐ side input
      ─ candidates per hot group (CombinePerKey) ─ leaders ─ dict ─┐ round 1
    batches ─ orphans of round 1's leaders ─ candidates ─ more leaders ─ dict ─┤
    orphans ─ orphans of the leaders added since ─ candidates ─ more leaders ─ dict ─┤
      (ROUNDS - 1 passes in all; group -> leaders of every round)
    batches ─ HotRoles: members of hot groups verified against their leaders
      ─ search: items outside hot groups and leaders ─ (the partitioned search)
      ─ held: followers and orphans (per batch)
    decisions on leaders ─ dict ─┐ keepers of dropped leaders ─ dict ─┐
    held ─ HotResolve ─ decisions on followers and orphans (stranded followers: the
      other kept samples next, mitigate.hot_rescue), counters; per leader its
      followers ─ dict ─ the search's cluster report (followers counted in)

No worker holds a hot group: the candidates are a bounded combine per group, the leaders a
side input (at most ROUNDS * MAX_LEADERS samples a hot group), and members are assigned
and resolved batch by batch. A member's role depends only on its group's leaders, so the
decisions equal the one-worker path's (:func:`mitigate.near.decide_near_duplicates`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import AsSingleton

from mitigate import hot, hot_rescue
from mitigate.near import Decision, HashItem
from mitigate.records import Reason

SEARCH, HELD, STATS = "search", "held", "stats"


def _leaders(
    element: tuple[str, list[HashItem]], threshold: float | None, keep_rule: str
) -> tuple[str, tuple[list[HashItem], int]]:
    group, candidates = element
    return group, hot.choose_leaders(candidates, threshold, keep_rule)


def _leader_stats(leaders: dict) -> dict[str, int]:
    s = hot.new_stats()
    s["groups"] = len(leaders)
    s["leaders"] = sum(len(v[0]) for v in leaders.values())
    s["verified_pairs"] = sum(v[1] for v in leaders.values())
    return s


class CandidatesFn(beam.CombineFn):
    """A hot group's candidates (:func:`mitigate.hot.candidates_of`): its first
    ``CANDIDATES / 2`` members in keep order and in sample order, at most
    ``CANDIDATES`` items an accumulator."""

    def create_accumulator(self) -> list[HashItem]:
        return []

    def add_input(self, acc: list[HashItem], item: HashItem) -> list[HashItem]:
        return hot.candidates_of([*acc, item])

    def merge_accumulators(self, accs: Iterable[list[HashItem]]) -> list[HashItem]:
        return hot.candidates_of([it for acc in accs for it in acc])

    def extract_output(self, acc: list[HashItem]) -> list[HashItem]:
        return acc


def _by_group(items: list[HashItem], leaders: dict) -> dict[str, list[HashItem]]:
    """A batch's members of the hot groups in ``leaders``, by group (batch order)."""
    by_group: dict[str, list[HashItem]] = {}
    for it in items:
        g = hot.group_of(it)
        if g in leaders:
            by_group.setdefault(g, []).append(it)
    return by_group


def _left(
    element: tuple[int, list], leaders: dict, threshold: float | None, carried: bool
) -> Iterator[tuple[int, list[tuple[HashItem, hot.Role]]]]:
    """One batch's members of hot groups that verify against no leader so far, with
    their orphan roles, as a batch (none: nothing). ``carried``: the batch is one this
    step gave in the round before (``(item, role)`` rows: only the leaders after
    those roles' are tried, as :func:`mitigate.hot.group_roles` does), else a batch of
    items (the first pass: every member against the first round's leaders)."""
    bid, rows = element
    by_group: dict[str, list[tuple[HashItem, hot.Role | None]]] = {}
    for row in rows:
        it, role = row if carried else (row, None)
        g = hot.group_of(it)
        if g in leaders:
            by_group.setdefault(g, []).append((it, role))
    out: list[tuple[HashItem, hot.Role]] = []
    for g in sorted(by_group):
        members = [it for it, _ in by_group[g]]
        prior = [r for _, r in by_group[g] if r is not None] if carried else None
        got = hot.assign(members, leaders[g][0], threshold, prior=prior)
        out += [(it, r) for it, r in zip(members, got, strict=True) if r.role == hot.ORPHAN]
    if out:
        yield bid, out


def _merge_round(previous: dict, new: dict, threshold: float | None, keep_rule: str) -> dict:
    """Every group's leaders after one more round (``new``: group -> its orphans'
    candidates)."""
    out = dict(previous)
    for g, cands in new.items():
        out[g] = hot.next_round(cands, *previous[g], threshold, keep_rule)
    return out


def hot_leaders(
    items: beam.PCollection,
    batches: beam.PCollection,
    threshold: float | None,
    keep_rule: str,
) -> beam.PCollection:
    """One dict: hot group id -> (leaders of every round, pairs verified to choose
    them), as :func:`mitigate.hot.group_roles` chooses them. Round 2 verifies every
    member against round 1's leaders (a pass over ``batches``: its orphans); each later
    round verifies only those orphans against the leaders added since (a pass over the
    orphan batches), so a member that follows a leader of round 1 costs one pass."""
    leaders = items | "HotLeaders" >> HotLeaders(threshold, keep_rule)
    if threshold is None:
        return leaders
    left = batches
    for r in range(2, hot.ROUNDS + 1):
        # the first pass verifies every member against round 1's leaders; later ones
        # only the orphans of the pass before against the leaders added since
        left = left | f"HotOrphans{r}" >> beam.FlatMap(
            _left, AsSingleton(leaders), threshold, r > 2
        )
        cands = (
            left
            | f"HotOrphanGroup{r}"
            >> beam.FlatMap(lambda e: [(hot.group_of(it), it) for it, _ in e[1]])
            | f"HotCandidates{r}" >> beam.CombinePerKey(CandidatesFn())
            | f"HotCandidateDict{r}" >> beam.combiners.ToDict()
        )
        leaders = leaders | f"HotRound{r}" >> beam.Map(
            _merge_round, AsSingleton(cands), threshold, keep_rule
        )
    return leaders


class HotLeaders(beam.PTransform):
    """HashItems in; one dict out: hot group id -> (leaders, pairs verified to choose
    them)."""

    def __init__(self, threshold: float | None, keep_rule: str) -> None:
        super().__init__()
        self.threshold, self.keep_rule = threshold, keep_rule

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        sizes = (
            items
            | "GroupOf" >> beam.Map(lambda it: (hot.group_of(it), 1))
            | "GroupSize" >> beam.CombinePerKey(sum)
            | "Hot" >> beam.Filter(lambda kv: kv[1] > hot.HOT_MIN)
            | "HotDict" >> beam.combiners.ToDict()
        )
        return (
            items
            | "InHot" >> beam.Filter(lambda it, h: hot.group_of(it) in h, AsSingleton(sizes))
            | "ByGroup" >> beam.Map(lambda it: (hot.group_of(it), it))
            | "Candidates" >> beam.CombinePerKey(CandidatesFn())
            | "Leaders" >> beam.Map(_leaders, self.threshold, self.keep_rule)
            | "LeaderDict" >> beam.combiners.ToDict()
        )


def roles(
    element: tuple[int, list[HashItem]], leaders: dict, threshold: float | None
) -> Iterator[tuple[str, Any]]:
    """One batch: ``(search, (bid, items))`` for the items that go on to the search,
    ``(held, [(role, item)])`` for the followers and orphans, ``(stats, counters)``."""
    bid, items = element
    by_group = _by_group(items, leaders)
    if not by_group:
        yield SEARCH, (bid, items)
        return
    held: list[tuple[hot.Role, HashItem]] = []
    all_roles: list[hot.Role] = []
    for g in sorted(by_group):
        members = by_group[g]
        got = hot.assign(members, leaders[g][0], threshold)
        all_roles.extend(got)
        held.extend((r, it) for r, it in zip(got, members, strict=True) if r.role != hot.LEADER)
    gone = {r.key for r, _ in held}
    rest = [it for it in items if it.key not in gone]
    if rest:
        yield SEARCH, (bid, rest)
    if held:
        yield HELD, held
    yield STATS, hot.role_stats(all_roles)


#: The last rescue pool a worker parsed, with the side inputs it came from (held, so
#: their identities stay theirs): batches resolved against the same side-input objects
#: parse the pool's hashes once, not once a batch.
_POOL: list[tuple[dict, dict, dict, hot_rescue.Pool]] = []


def _rescue_pool(leaders: dict, fates: dict, keepers: dict) -> hot_rescue.Pool:
    """The kept samples stranded followers try (:func:`mitigate.hot_rescue.kept`),
    parsed (:func:`mitigate.hot_rescue.pool_of`) once for these side inputs."""
    last = _POOL[0] if _POOL else None
    if last is not None and last[0] is leaders and last[1] is fates and last[2] is keepers:
        return last[3]
    every = [x for v in leaders.values() for x in v[0]]
    pool = hot_rescue.pool_of(hot_rescue.kept(every, fates, keepers))
    _POOL[:] = [(leaders, fates, keepers, pool)]
    return pool


def resolve(
    held: list[tuple[hot.Role, HashItem]],
    fates: dict,
    keepers: dict,
    threshold: float | None,
    use_centre: bool,
    leaders: dict | None = None,
    k: int | None = None,
) -> Iterator[tuple[str, Any]]:
    """Decisions on one batch's followers and orphans (tagged ``main``) and counters
    (``leaders``: the hot groups' leaders, for the stranded followers' rescue:
    :func:`_rescue_pool`)."""
    items = {it.key: it for _, it in held}
    out, counts = hot.resolve(
        [r for r, _ in held], items, fates, keepers, threshold, use_centre=use_centre
    )
    if counts["stranded"] and threshold is not None and leaders is not None and k is not None:
        args = (k, threshold, hot.verify.pair_scores, use_centre, counts)
        pool = _rescue_pool(leaders, fates, keepers)
        counts = hot_rescue.rescue(out, [r for r, _ in held], items, pool, *args)
    n_dup = n_overlap = 0
    for d in out:
        n_dup += d[1] == Reason.NEAR_DUPLICATE
        n_overlap += d[1] == Reason.EVAL_OVERLAP
        yield "main", Decision(*d)
    s = hot.add_stats(hot.new_stats(), counts)
    yield STATS, {**s, "near_duplicates": n_dup, "eval_overlap": n_overlap}


class StatsFn(beam.CombineFn):
    """Sum of counter dicts (empty input: zeros)."""

    def create_accumulator(self) -> dict[str, int]:
        return {}

    def add_input(self, acc: dict[str, int], s: dict[str, int]) -> dict[str, int]:
        return {k: acc.get(k, 0) + s.get(k, 0) for k in set(acc) | set(s)}

    def merge_accumulators(self, accs: Iterable[dict[str, int]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in accs:
            out = self.add_input(out, a)
        return out

    def extract_output(self, acc: dict[str, int]) -> dict[str, int]:
        return {**hot.new_stats(), "near_duplicates": 0, "eval_overlap": 0, **acc}


def fates_of(decisions: beam.PCollection, leaders: beam.PCollection) -> beam.PCollection:
    """One dict: leader key -> (reason, duplicate_of, distance) of every leader the
    search did not keep."""
    keys = leaders | "LeaderKeys" >> beam.Map(
        lambda d: frozenset(x.key for v in d.values() for x in v[0])
    )
    return (
        decisions
        | "LeaderFates"
        >> beam.Filter(
            lambda d, lk: d.key in lk and d.reason in (Reason.NEAR_DUPLICATE, Reason.EVAL_OVERLAP),
            AsSingleton(keys),
        )
        | "FateKV" >> beam.Map(lambda d: (d.key, (d.reason, d.duplicate_of, d.distance)))
        | "FateDict" >> beam.combiners.ToDict()
    )


def keepers_of(items: beam.PCollection, fates: beam.PCollection) -> beam.PCollection:
    """One dict: key -> item of every sample a dropped leader is a near duplicate of."""
    keys = fates | "KeeperKeys" >> beam.Map(
        lambda f: frozenset(v[1] for v in f.values() if v[0] == Reason.NEAR_DUPLICATE)
    )
    return (
        items
        | "Keepers" >> beam.Filter(lambda it, kk: it.key in kk, AsSingleton(keys))
        | "KeeperKV" >> beam.Map(lambda it: (it.key, it))
        | "KeeperDict" >> beam.combiners.ToDict()
    )


class Followers(beam.PTransform):
    """Held ``[(role, item)]`` batches in; one dict out: per leader that goes on to the
    search (``overlap``: the decisions of the leaders matched to a reference before
    it), its followers (:func:`mitigate.hot.followers_of`: count and first keys), for
    the report's clusters."""

    def __init__(self, overlap: beam.PCollection) -> None:
        super().__init__()
        self.overlap = overlap

    def expand(self, held: beam.PCollection) -> beam.PCollection:
        matched = (
            self.overlap
            | "OverlapKey" >> beam.Map(lambda d: frozenset([d.key]))
            | "OverlapKeys" >> beam.CombineGlobally(lambda sets: frozenset().union(*sets))
        )
        return (
            held
            | "PerBatch" >> beam.Map(lambda h: hot.followers_of(r for r, _ in h))
            | "Merge" >> beam.CombineGlobally(hot.merge_followers)
            | "Searched"
            >> beam.Map(
                lambda f, gone: {k: v for k, v in f.items() if k not in gone},
                AsSingleton(matched),
            )
        )


def _lone_clusters(followers: hot.Followers, seen: frozenset[str]) -> Iterator[hot.Cluster]:
    """The clusters of the hot-group leaders that are searched alone (in no component
    of two or more searched samples): the leader and its followers."""
    for k in sorted(followers):
        if k not in seen:
            yield hot.add_followers((1, k, [k]), [k], followers)


def with_lone(
    clusters: beam.PCollection, seen: beam.PCollection, followers: beam.PCollection
) -> beam.PCollection:
    """The search's clusters (followers counted in: ``keep_components``) and those of
    the leaders it found alone (``seen``: sets of the leaders in its clusters)."""
    met = seen | "HotSeen" >> beam.CombineGlobally(lambda sets: frozenset().union(*sets))
    lone = (
        followers
        | "HotLoneStage" >> beam.Reshuffle()  # a stage of its own: it waits for met
        | "HotLone" >> beam.FlatMap(_lone_clusters, AsSingleton(met))
    )
    return (clusters, lone) | "HotClusters" >> beam.Flatten()


def leader_stats(leaders: beam.PCollection) -> beam.PCollection:
    return leaders | "LeaderStats" >> beam.Map(_leader_stats)
