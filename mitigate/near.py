"""Near-duplicate decisions for the pipeline: decontamination against reference sets,
then near-duplicate removal among the survivors, plus the statistics the summary and
report show. Plain functions over light (key, hashes, size) items; the search itself is
:mod:`mitigate.neardup` (multi-index hashing, exact; or LSH with measured recall).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mitigate import centre, hashing, hot, hot_rescue, keep, neardup, verify
from mitigate.records import Reason, compact_pickling

EVAL_OVERLAP = Reason.EVAL_OVERLAP
BLOCKLIST = Reason.BLOCKLIST
#: Decision on a sample that stays kept: its closest pHash candidate was refused by
#: verification (evidence only, no state change).
NOT_MERGED = Reason.NOT_MERGED


@compact_pickling
@dataclass(frozen=True)
class HashItem:
    """What near-duplicate search needs of a sample."""

    key: str
    phash: str
    mirror: str
    size: int  # pixels and JPEG quality (mitigate.keep.size_key)
    signature: bytes | None = None  # mitigate.verify signature; None = pHash only
    centre: str | None = None  # centre view, 32 hex (mitigate.centre); None = pHash only
    # where the signature waits in the run's signature store until the decision reads it
    # (mitigate/pipeline/sigstore.py); None: ``signature`` is the signature
    ref: bytes | None = None


@compact_pickling
@dataclass(frozen=True)
class Decision:
    key: str
    reason: str  # near_duplicate | eval_overlap | not_merged
    duplicate_of: str  # for not_merged: the candidate verification refused
    distance: int
    verify_score: float | None = None  # None: pair not verified


def without_mirror(item: HashItem) -> HashItem:
    """``item`` as ``dedup.mirror: false`` searches it: its pHash in place of its mirror
    pHash and its centre hash in place of the centre's mirror, so that every search
    (one worker, partitions, hot groups, references) finds a pair by the as-is terms
    alone (``min(H(p, p'), H(p, m'), H(m, p'))`` is ``H(p, p')``), and its signature
    marked to be verified without mirroring (:func:`mitigate.verify.unmirrored`).
    The same item again for an item already without."""
    centre_view = None if item.centre is None else item.centre[:16] * 2
    signature = verify.unmirrored(item.signature)
    return dataclasses.replace(item, mirror=item.phash, centre=centre_view, signature=signature)


def references(shard_refs: Sequence[tuple], dedup: Any) -> list[tuple[str, str, str | None]]:
    """Every reference of a run, ``(key, pHash, mirror pHash or None)``: the reference
    shards' (sorted), then ``dedup.against``'s hash lists'; with ``dedup.mirror`` off
    without their mirror pHashes (matched on pHash alone)."""
    refs = sorted(shard_refs) + list(dedup.reference_hashes)
    return refs if dedup.mirror else [(key, phash, None) for key, phash, _ in refs]


def _arrays(items: Sequence[HashItem]) -> tuple[np.ndarray, np.ndarray]:
    p = neardup.hex_to_uint64([i.phash for i in items])
    m = neardup.hex_to_uint64([i.mirror for i in items])
    return p, m


def decide_near_duplicates(
    items: Sequence[HashItem],
    k: int,
    *,
    mode: str = "auto",
    references: Sequence[tuple[str, str, str | None]] = (),
    search: bool = True,
    recall_samples: int = 1000,
    n_examples: int = 4,
    n_largest: int = 6,
    verify_threshold: float | None = None,
    keep_rule: str = "resolution",
    score_pairs: Callable[..., np.ndarray] = verify.pair_scores,
    centre_view: bool = True,
) -> tuple[list[Decision], dict[str, Any]]:
    """Decide which items are near duplicates (of each other, or of a reference).

    Items within ``k`` bits of any reference (``(key, phash, mirror-or-None)``) become
    ``eval_overlap`` duplicates of the closest reference. Among the rest, connected
    groups of near duplicates keep their best item (``keep_rule``, see
    :mod:`mitigate.keep`) and every other item is a ``near_duplicate`` of a kept item
    within ``k``. With ``verify_threshold`` set, a candidate pair within ``k`` joins
    two items only if its verification score (:func:`mitigate.verify.pair_scores`) is
    at most the threshold (pairs where an item has no signature are taken on pHash
    alone); a kept item whose closest candidate was refused gets a ``not_merged``
    decision carrying that evidence. With verification, ``centre_view`` adds the
    candidates of the centre view (:mod:`mitigate.centre`: items with a centre hash,
    frames that agree); a pair's distance is then the smaller of its views'.
    ``search=False`` only decontaminates (no
    near-duplicate search among the items). ``score_pairs`` scores candidate pairs
    (:func:`mitigate.verify.pair_scores`, or a drop-in that spreads them over processes,
    :class:`mitigate.workers.PairScorer`). Returns the decisions and a report for
    ``summary.json``.
    """
    items = sorted(items, key=lambda i: i.key)
    decisions: list[Decision] = []
    report: dict[str, Any] = {"k": k, "items": len(items), "references": len(references)}
    # hot identical-hash groups: only their leaders are matched and searched; the other
    # members follow them afterwards (mitigate.hot), as in the partitioned graph
    all_items = {it.key: it for it in items}
    held: list[hot.Role] = []
    hot_stats = hot.new_stats()
    if search:
        items, held, hot_stats = hot.condense(items, verify_threshold, keep_rule, score_pairs)
    if references and items:
        p, m = _arrays(items)
        rp = neardup.hex_to_uint64([r[1] for r in references])
        rm_values = [r[2] for r in references]
        rm = None if any(v is None for v in rm_values) else neardup.hex_to_uint64(rm_values)
        match = neardup.match_reference(p, m, rp, rm, k, ref_keys=[r[0] for r in references])
        overlapping = []
        for i, item in enumerate(items):
            if match.ref_index[i] >= 0:
                ref_key = str(references[int(match.ref_index[i])][0])
                decisions.append(Decision(item.key, EVAL_OVERLAP, ref_key, int(match.distance[i])))
                overlapping.append(i)
        report["eval_overlap"] = len(overlapping)
        items = [it for i, it in enumerate(items) if match.ref_index[i] < 0]
    if len(items) < 2 or not search:
        report.update(
            mode="none",
            cluster_sizes={},
            largest_clusters=[],
            largest_cluster_sizes=[],
            examples_by_distance={},
            pair_recall=None,
            near_duplicates=0,
        )
        if search:
            report["near_duplicates"] = _finish_hot(
                held, all_items, decisions, verify_threshold, score_pairs, report, hot_stats
            )
            follow = hot.followers_of(held)
            alone = [hot.add_followers((1, it.key, [it.key]), [it.key], follow) for it in items]
            _cluster_report(report, [c for c in alone if c[0] > 1], n_largest)
        return decisions, report
    p, m = _arrays(items)
    chosen = neardup.choose_mode(len(items), k) if mode == "auto" else mode
    scores: dict[tuple[int, int], float] = {}
    refused: list[tuple[int, int, int, float]] = []
    if verify_threshold is None and keep_rule == "resolution":
        order = sorted(range(len(items)), key=lambda i: (-items[i].size, items[i].key))
        rank = np.empty(len(items), dtype=np.int64)
        rank[np.asarray(order)] = np.arange(len(items))
        result = neardup.deduplicate(p, m, k, rank, mode=chosen)
    else:
        use_centre = centre_view and verify_threshold is not None
        result, rank, scores, refused, n_centre = _verified_keep(
            items, p, m, k, chosen, verify_threshold, keep_rule, score_pairs, use_centre
        )
        report["verify"] = {
            "threshold": verify_threshold,
            "centre_view": use_centre,
            "centre_only_pairs": n_centre,
            "merged_pairs": len(scores),
            "refused_pairs": len(refused),
            "examples_refused": [
                [items[a].key, items[b].key, d, round(sc, 4)]
                for a, b, d, sc in sorted(refused, key=lambda r: (r[2], r[3]))[: n_examples * 3]
            ],
        }
    report["keep"] = keep_rule
    report["mode"] = chosen
    report["pair_recall"] = None
    if chosen == "lsh":
        found = neardup.find_near_duplicates(p, m, k, mode="lsh")
        est = neardup.estimate_pair_recall(p, m, k, found, n_samples=recall_samples)
        report["pair_recall"] = _recall_report(est)
        if report.get("verify", {}).get("centre_view"):  # the centre view's LSH search too
            c, cm, present = centre.centre_arrays([it.centre for it in items])
            if int(present.sum()) >= 2:
                c, cm = c[present], cm[present]
                found = neardup.find_near_duplicates(c, cm, k, mode="lsh")
                est = neardup.estimate_pair_recall(c, cm, k, found, n_samples=recall_samples)
                report["pair_recall_centre"] = _recall_report(est)
    by_distance: dict[int, list[list[str]]] = collections.defaultdict(list)
    for i in np.flatnonzero(~result.keep):
        j = int(result.duplicate_of[i])
        keeper = items[j].key
        dist = int(result.distance[i])
        score = scores.get((min(i, j), max(i, j)))
        decisions.append(Decision(items[i].key, Reason.NEAR_DUPLICATE, keeper, dist, score))
        if len(by_distance[dist]) < n_examples:
            by_distance[dist].append([keeper, items[i].key, score])
    closest: dict[int, tuple[float, int, int]] = {}
    for a, b, d, sc in refused:
        for x, y in ((a, b), (b, a)):
            if result.keep[x] and (x not in closest or (sc, y) < closest[x][:2]):
                closest[x] = (sc, y, d)
    for x, (sc, y, d) in sorted(closest.items()):
        decisions.append(Decision(items[x].key, NOT_MERGED, items[y].key, d, sc))
    n_hot_dropped = _finish_hot(
        held, all_items, decisions, verify_threshold, score_pairs, report, hot_stats
    )
    members: dict[int, list[int]] = collections.defaultdict(list)
    for i, comp in enumerate(result.component):
        members[int(comp)].append(i)
    # components of the searched samples, a hot-group leader's followers counted in
    follow = hot.followers_of(held)
    clusters = []
    for v in members.values():
        if len(v) > 1 or items[v[0]].key in follow:
            ranked = [items[i].key for i in sorted(v, key=lambda i: rank[i])]
            c = (len(v), items[v[0]].key, ranked[: hot.CLUSTER_KEYS])
            clusters.append(hot.add_followers(c, [k for k in ranked if k in follow], follow))
    report.update(
        near_duplicates=int((~result.keep).sum()) + n_hot_dropped,
        examples_by_distance={str(d): v for d, v in sorted(by_distance.items())},
    )
    _cluster_report(report, [c for c in clusters if c[0] > 1], n_largest)
    return decisions, report


def _cluster_report(report: dict[str, Any], clusters: list[hot.Cluster], n_largest: int) -> None:
    """``cluster_sizes`` and ``largest_clusters`` (largest first, then smallest key) of
    the clusters ``(size, smallest key, best-ranked keys)``."""
    sizes = collections.Counter(c[0] for c in clusters)
    largest = sorted(clusters, key=lambda c: (-c[0], c[1]))[:n_largest]
    report.update(
        cluster_sizes={str(s): n for s, n in sorted(sizes.items())},
        largest_clusters=[c[2] for c in largest],
        # a cluster's size: its keys above are its best-ranked few (a hot group of 78
        # was shown as "12 samples": helper-40)
        largest_cluster_sizes=[c[0] for c in largest],
    )


def _finish_hot(
    held: Sequence[hot.Role],
    items: dict[str, HashItem],
    decisions: list[Decision],
    threshold: float | None,
    score_pairs: Callable[..., np.ndarray],
    report: dict[str, Any],
    stats: dict[str, int],
) -> int:
    """Decide the followers and orphans of hot groups (:func:`mitigate.hot.resolve`)
    from the search's decisions on their leaders: appended to ``decisions``; the
    counters go to ``report`` (``hot``, ``verify.leader_groups``, inherited
    ``eval_overlap``). Returns the number of members decided ``near_duplicate``."""
    out: list[Decision] = []
    if held:
        fates = {
            d.key: (d.reason, d.duplicate_of, d.distance)
            for d in decisions
            if d.reason in (Reason.NEAR_DUPLICATE, EVAL_OVERLAP)
        }
        keepers = {f[1]: items[f[1]] for f in fates.values() if f[0] == Reason.NEAR_DUPLICATE}
        use_centre = bool(report.get("verify", {}).get("centre_view"))
        resolved, counts = hot.resolve(
            held, items, fates, keepers, threshold, score_pairs, use_centre
        )
        if counts["stranded"] and threshold is not None:  # other kept samples next
            leaders = [items[r.key] for r in held if r.role == hot.LEADER]
            others = hot_rescue.kept(leaders, fates, keepers)
            args = (report["k"], threshold, score_pairs, use_centre, counts)
            counts = hot_rescue.rescue(resolved, held, items, others, *args)
        out = [Decision(*d) for d in resolved]
        stats = hot.add_stats(stats, counts)
        decisions.extend(out)
    n_overlap = sum(d.reason == EVAL_OVERLAP for d in out)
    if n_overlap:
        report["eval_overlap"] = report.get("eval_overlap", 0) + n_overlap
    report["hot"] = stats
    if "verify" in report:
        report["verify"]["leader_groups"] = stats["groups"]
    return sum(d.reason == Reason.NEAR_DUPLICATE for d in out)


def _recall_report(est: neardup.RecallEstimate) -> dict[str, Any]:
    return {
        "estimate": None if np.isnan(est.recall) else float(est.recall),
        "ci": [float(est.ci_low), float(est.ci_high)],
        "queries": est.n_queries,
    }


def _verified_keep(
    items: Sequence[HashItem],
    p: np.ndarray,
    m: np.ndarray,
    k: int,
    mode: str,
    threshold: float | None,
    keep_rule: str,
    score_pairs: Callable[..., np.ndarray] = verify.pair_scores,
    use_centre: bool = False,
) -> tuple[
    neardup.KeepResult,
    np.ndarray,
    dict[tuple[int, int], float],
    list[tuple[int, int, int, float]],
    int,
]:
    """Candidate pairs within k (of both views with ``use_centre``), verified, then the
    keep rule over the verified pairs.

    Returns the keep result, the rank used, the verification score of every merged
    (verified) pair, the refused pairs ``(i, j, distance, score)`` and the number of
    candidates only the centre view proposed."""
    sigs = [it.signature for it in items]
    centres = [it.centre for it in items] if use_centre else None
    pairs, views = centre.candidate_pairs(p, m, centres, sigs, k, mode)
    n_centre = int(np.count_nonzero(views == centre.CENTRE))
    has_sig = np.asarray([verify.is_signature(s) for s in sigs], dtype=bool)
    ok = np.ones(len(pairs), dtype=bool)
    score = np.full(len(pairs), np.nan)
    if threshold is not None and len(pairs):
        both = has_sig[pairs.i] & has_sig[pairs.j]
        if both.any():
            idx = np.flatnonzero(both)
            # the signatures of the pairs' ends only (where most samples have no near
            # copy, a small part of them: one table of what is scored, not of every item)
            present = np.unique(np.concatenate([pairs.i[idx], pairs.j[idx]]))
            sub = np.full(len(items), -1, np.int64)
            sub[present] = np.arange(present.shape[0])
            table = verify.as_signatures([sigs[x] for x in present])
            score[idx] = score_pairs(
                sub[pairs.i[idx]], sub[pairs.j[idx]], table, stop_above=threshold
            )
            ok[idx] = verify.verified(score[idx], threshold)
    edges = neardup.PairSet(pairs.i[ok], pairs.j[ok], pairs.dist[ok])
    keys = [it.key for it in items]
    sizes = [it.size for it in items]
    # verified, so scored in full (at or below stop_above): the medoid measure reuses them
    merged = {
        (int(a), int(b)): float(sc)
        for a, b, sc in zip(edges.i, edges.j, score[ok], strict=True)
        if not np.isnan(sc)
    }
    if keep_rule == "medoid":
        component = neardup.connected_components(len(items), edges.i, edges.j)
        central = keep.centrality(component, keys, p, m, sigs, score_pairs, known=merged)
        rank = keep.keep_rank("medoid", keys, sizes, central, component)
    else:
        rank = keep.keep_rank(keep_rule, keys, sizes)
    result = neardup.greedy_keep(len(items), edges, rank)
    refused = [
        (int(a), int(b), int(d), float(sc))
        for a, b, d, sc in zip(pairs.i[~ok], pairs.j[~ok], pairs.dist[~ok], score[~ok], strict=True)
    ]
    return result, rank, merged, refused, n_centre


def read_hash_list(path: Path) -> list[tuple[str, str, str | None]]:
    """A reference hash list: one sample a line, ``phash`` or ``key,phash[,mirror]``
    (16 hex digits each, as imagehash writes them); ``#`` comments."""
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            if len(parts) == 1:
                out.append((f"{path.name}:{lineno}", _hex(parts[0]), None))
            else:
                mirror = _hex(parts[2]) if len(parts) > 2 and parts[2] else None
                out.append((parts[0], _hex(parts[1]), mirror))
        except ValueError as exc:
            raise ValueError(f"{path}:{lineno}: {exc}") from None
    return out


def _hex(text: str) -> str:
    return hashing.to_hex(hashing.from_hex(text))


@dataclass(frozen=True)
class Blocklist:
    """Known-bad image hashes: sha256 (checked before decoding) and pHash values, as
    the ``blocklist`` filter (:mod:`mitigate.filters.blocklist`) reads them."""

    sha256: frozenset[str]
    phash: frozenset[int]

    @classmethod
    def read(cls, path: Path) -> Blocklist:
        """Lines of 64 hex digits are sha256, of 16 hex digits pHash; an optional
        ``sha256:``/``phash:`` prefix says so explicitly; ``#`` comments."""
        sha, ph = set(), set()
        for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
            value = line.split("#", 1)[0].strip().lower()
            if not value:
                continue
            kind, _, body = value.rpartition(":")
            body = body.strip()
            if kind in ("", "sha256") and len(body) == 64 and _is_hex(body):
                sha.add(body)
            elif kind in ("", "phash") and len(body) == 16 and _is_hex(body):
                ph.add(int(body, 16))
            else:
                raise ValueError(f"{path}:{lineno}: not a sha256 (64 hex) or pHash (16 hex)")
        return cls(frozenset(sha), frozenset(ph))


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)
