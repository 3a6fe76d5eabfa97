"""Near-duplicate removal with no worker holding every hash (``dedup.partition``
``auto``/``clusters``): the record-level wrapper around the batched graph of
:mod:`mitigate.pipeline.near_batched` (steps in :mod:`mitigate.partition_batch`,
partitions in :mod:`mitigate.partition`).

::

    survivors ─ HashItem (key, hashes, resolution, signature)
      ─ batches by a stable hash of the key (GroupByKey, sorted by key)
      ─ decontaminate each batch against the reference side input ─ eval_overlap
      ─ Batch arrays ─ PartitionedSearch ─ near_duplicate / not_merged decisions
    decisions ─ CoGroupByKey(key) with the survivors (after the recall check)

With ``K = 1`` (``auto`` and N ≤ ``max_partition_size``) the single partition is the
exact single-worker search, and the decisions equal ``dedup.partition: none`` (verified
pairs, ``dedup.keep``, not_merged evidence: the same rules on the same pairs).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import AsSingleton

from mitigate import neardup, partition
from mitigate import partition_batch as pb
from mitigate.config import DecodeConfig, DedupConfig
from mitigate.near import EVAL_OVERLAP, Decision, HashItem, references
from mitigate.pipeline import near_hot
from mitigate.pipeline.near_batched import STAR_ROUNDS, PartitionedSearch
from mitigate.records import PENDING

logger = logging.getLogger(__name__)

N_LARGEST, N_TOP_MEMBERS, N_EXAMPLES = 6, 12, 4

MAIN = "main"

BATCH: int = 2048
"""Samples per batch (the unit every later step moves: ids, hashes, signatures)."""

__all__ = ["PartitionedNearDedup", "PartitionedSearch", "RecallTooLow", "check_recall"]


class _Route(beam.PTransform):
    """Split ``(tag, value)`` pairs into one PCollection per tag with filters: Beam's
    Dask runner mixes up the outputs of multi-output ParDos (see README), so no step
    here uses ``with_outputs``."""

    def __init__(self, *tags: str) -> None:
        super().__init__()
        self.tags = tags

    def expand(self, tagged: beam.PCollection) -> dict[str, beam.PCollection]:
        return {
            tag: tagged
            | f"Only_{tag}" >> beam.Filter(lambda tv, tag=tag: tv[0] == tag)
            | f"Value_{tag}" >> beam.Map(lambda tv: tv[1])
            for tag in self.tags
        }


BATCH: int = 2048
"""Hashes per batch for the vectorised steps (decontamination, assignment, recall)."""


def _bucket(item: HashItem, n: int) -> tuple[int, HashItem]:
    return partition.stable_hash(item.key) % max(1, -(-n // BATCH)), item


class _Batch(beam.PTransform):
    """``(batch id, items sorted by key)`` of about BATCH items, formed by a GroupByKey on
    a stable hash of the key (not BatchElements: Beam's Dask runner drops output
    emitted from finish_bundle), so the batches are the same on every runner."""

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        n = items | "Count" >> beam.combiners.Count.Globally()
        return (
            items
            | "Bucket" >> beam.Map(_bucket, AsSingleton(n))
            | "Group" >> beam.GroupByKey()
            | "Sort" >> beam.Map(lambda kv: (kv[0], sorted(kv[1], key=lambda it: it.key)))
        )


class RecallTooLow(RuntimeError):
    """The measured pair recall is below ``dedup.min_recall``."""


def _decontaminate(
    element: tuple[int, list[HashItem]], shard_refs: list, dedup: DedupConfig
) -> Iterator[Any]:
    """Items of a batch within k of a reference become eval_overlap decisions (tagged
    ``overlap``); the rest go on to the search as one :class:`Batch` (tagged ``main``).
    Per item the closest reference (ties to the first) does not depend on the batch, so
    this equals the one-worker match."""
    bid, batch = element
    refs = references(shard_refs, dedup)
    rest = batch
    if refs and batch:
        p = neardup.hex_to_uint64([i.phash for i in batch])
        m = neardup.hex_to_uint64([i.mirror for i in batch])
        rp = neardup.hex_to_uint64([r[1] for r in refs])
        rm_values = [r[2] for r in refs]
        rm = None if any(v is None for v in rm_values) else neardup.hex_to_uint64(rm_values)
        match = neardup.match_reference(p, m, rp, rm, dedup.k)
        rest = []
        for i, item in enumerate(batch):
            r = int(match.ref_index[i])
            if r < 0:
                rest.append(item)
            else:
                d = Decision(item.key, EVAL_OVERLAP, str(refs[r][0]), int(match.distance[i]))
                yield "overlap", d
    if rest:
        yield MAIN, pb.Batch.of_items(bid, rest)


def check_recall(recall: dict, dedup: DedupConfig) -> bool:
    """Fail the run (before any near-duplicate decision is applied) when the measured
    pair recall is below ``dedup.min_recall``; an unmeasurable recall (no true pair in
    the sample) passes."""
    est = recall.get("estimate")
    d = dedup
    if est is not None and est < d.min_recall:
        lo, hi = recall["ci"]
        raise RecallTooLow(
            f"dedup.min_recall: measured pair recall {est:.3f} (95% CI {lo:.3f}-{hi:.3f}, "
            f"{recall.get('queries')} sampled hashes) is "
            f"below {d.min_recall}; raise dedup.clusterings (now {d.clusterings}) or "
            f"dedup.max_partition_size (now {d.max_partition_size})"
        )
    return True


class _ReportFn(beam.CombineFn):
    """Cluster sizes and the largest clusters, without holding every cluster."""

    def create_accumulator(self) -> tuple[collections.Counter, list]:
        return (collections.Counter(), [])

    def add_input(self, acc: tuple, cluster: tuple) -> tuple:
        return self.merge_accumulators([acc, (collections.Counter([cluster[0]]), [cluster])])

    def merge_accumulators(self, accs: Iterable[tuple]) -> tuple:
        sizes: collections.Counter = collections.Counter()
        largest: list = []
        for s, top in accs:
            sizes.update(s)
            largest = sorted(largest + top, key=lambda c: (-c[0], c[1]))[:N_LARGEST]
        return (sizes, largest)

    def extract_output(self, acc: tuple) -> dict[str, Any]:
        sizes, largest = acc
        return {
            "cluster_sizes": {str(s): n for s, n in sorted(sizes.items())},
            "largest_clusters": [c[2] for c in largest],
            "largest_cluster_sizes": [c[0] for c in largest],
        }


class _ExamplesFn(beam.CombineFn):
    """Per distance, the first examples in key order, ``[keeper, duplicate, verification
    score]`` (score None for an unverified pair), as the single-worker report."""

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, acc: dict, d: Decision) -> dict:
        return self.merge_accumulators(
            [acc, {d.distance: [(d.key, d.duplicate_of, d.verify_score)]}]
        )

    def merge_accumulators(self, accs: Iterable[dict]) -> dict:
        out: dict = {}
        for acc in accs:
            for dist, ex in acc.items():
                out[dist] = sorted(out.get(dist, []) + ex, key=lambda e: e[:2])[:N_EXAMPLES]
        return out

    def extract_output(self, acc: dict) -> dict:
        return {
            str(d): [[keeper, key, score] for key, keeper, score in v]
            for d, v in sorted(acc.items())
        }


def _report(
    base: dict,
    recall: dict,
    sizes: dict[str, int],
    plan: partition.PartitionPlan,
    clusters: dict,
    examples: dict,
    counts: dict,
    refused: dict,
    dedup: DedupConfig,
) -> dict[str, Any]:
    report = dict(base)
    report.update(
        k=dedup.k,
        mode=dedup.mode,
        partition="clusters" if plan.n_partitions > 1 else "single",
        partitions=sizes["partitions"],
        largest_partition=sizes["largest_partition"],
        search_tasks=sizes["search_tasks"],
        largest_search=sizes["largest_search"],
        clusterings=plan.n_clusterings,
        clusters_per_clustering=plan.n_clusters,
        pair_recall=recall,
        keep=dedup.keep,
        near_duplicates=counts.get("near_duplicates", 0),
        pairs=counts.get("merged", 0) + counts.get("refused", 0),
        components={"rounds": STAR_ROUNDS, "remaining_edges": counts.get("remaining", 0)},
        cluster_sizes=clusters.get("cluster_sizes", {}),
        largest_clusters=clusters.get("largest_clusters", []),
        examples_by_distance=examples,
    )
    if dedup.verify:
        report["verify"] = {
            "threshold": dedup.verify_threshold,
            "merged_pairs": counts.get("merged_pairs", 0),
            "centre_view": dedup.centre_view,
            "centre_only_pairs": counts.get("centre_only_pairs", 0),
            **refused,
        }
    return report


def _count(pcoll: beam.PCollection, name: str) -> beam.PCollection:
    return (
        pcoll
        | f"Count{name}" >> beam.combiners.Count.Globally()
        | f"Name{name}" >> beam.Map(lambda n, name=name: (name, n))
    )


class PartitionedNearDedup(beam.PTransform):
    """Records in, records out (survivors decided), plus a one-dict report; the same
    contract as :class:`mitigate.pipeline.near.NearDedup`."""

    def __init__(self, dedup: DedupConfig, decode: DecodeConfig, light: bool = False) -> None:
        super().__init__()
        self.dedup = dedup
        self.decode = decode  # to hash reference shards as the run hashes its input
        self.light = light  # records out without their signatures (as NearDedup's)

    def expand(self, records: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        from mitigate.pipeline.near import (
            _expand_glob,
            _item,
            apply_joined,
            join_key,
            lighten,
            reference_hashes,
        )

        dedup = self.dedup
        pipeline = records.pipeline
        pending = records | "Pending" >> beam.Filter(lambda r: r.state == PENDING)
        # pending records and exact duplicates meet the decisions (an exact duplicate
        # its kept copy's: near.join_key); the other settled records pass by
        joinable = records | "Joinable" >> beam.Filter(lambda r: join_key(r) is not None)
        others = lighten(
            records | "Settled" >> beam.Filter(lambda r: join_key(r) is None),
            self.light,
            "SettledLight",
        )
        items = pending | "HashItems" >> beam.Map(_item, False, dedup.mirror)
        shard_refs = (
            pipeline
            | "ReferenceShards" >> beam.Create(list(dedup.reference_shards))
            | "ReferenceFiles" >> beam.FlatMap(_expand_glob)
            | "ReferenceHashes" >> beam.FlatMap(reference_hashes, self.decode)
            | "AllReferences" >> beam.combiners.ToList()
        )
        batched = items | "DeconBatch" >> _Batch()
        threshold = dedup.verify_threshold if dedup.verify else None
        if dedup.near:  # hot identical-hash groups: only their leaders are searched
            leaders = near_hot.hot_leaders(items, batched, threshold, dedup.keep)
            condensed = (
                batched
                | "HotRoles" >> beam.FlatMap(near_hot.roles, AsSingleton(leaders), threshold)
                | "RouteHot" >> _Route(near_hot.SEARCH, near_hot.HELD, near_hot.STATS)
            )
            batched = condensed[near_hot.SEARCH]
        checked = (
            batched
            | "Decontaminate" >> beam.FlatMap(_decontaminate, AsSingleton(shard_refs), dedup)
            | "RouteDecontaminate" >> _Route("overlap", MAIN)
        )
        n_items = _count(items, "items")
        n_refs = shard_refs | "NRefs" >> beam.Map(
            lambda refs: ("references", len(refs) + len(dedup.reference_hashes))
        )
        n_overlap = _count(checked["overlap"], EVAL_OVERLAP)
        base = (
            (n_items, n_refs, n_overlap)
            | "BaseCounts" >> beam.Flatten()
            | "BaseDict" >> beam.combiners.ToDict()
        )
        decisions = [checked["overlap"]]
        if dedup.near:
            followers = condensed[near_hot.HELD] | "HotFollowers" >> near_hot.Followers(
                checked["overlap"]
            )
            out = checked[MAIN] | "Search" >> PartitionedSearch(dedup, followers)
            decisions.append(out["decisions"])
            report = (
                pipeline
                | "ReportSeed" >> beam.Create([None])
                | "Report"
                >> beam.Map(
                    lambda _, *args: _report(*args, dedup=dedup),
                    AsSingleton(base),
                    AsSingleton(out["recall"]),
                    AsSingleton(out["sizes"]),
                    AsSingleton(out["plan"]),
                    AsSingleton(out["clusters"]),
                    AsSingleton(out["examples"]),
                    AsSingleton(out["counts"]),
                    AsSingleton(out["verify"]),
                )
            )
            ok = out["recall"] | "CheckRecall" >> beam.Map(check_recall, dedup)
            searched = decisions | "SearchDecisions" >> beam.Flatten()
            fates = near_hot.fates_of(searched, leaders)
            resolved = (
                condensed[near_hot.HELD]
                | "HotResolve"
                >> beam.FlatMap(
                    near_hot.resolve,
                    AsSingleton(fates),
                    AsSingleton(near_hot.keepers_of(items, fates)),
                    threshold,
                    threshold is not None and dedup.centre_view,
                    AsSingleton(leaders),
                    dedup.k,
                )
                | "RouteResolved" >> _Route(MAIN, near_hot.STATS)
            )
            decisions.append(resolved[MAIN])
            hot_stats = (
                (
                    near_hot.leader_stats(leaders),
                    condensed[near_hot.STATS],
                    resolved[near_hot.STATS],
                )
                | "AllHotStats" >> beam.Flatten()
                | "HotStats" >> beam.CombineGlobally(near_hot.StatsFn())
            )
            report = report | "HotReport" >> beam.Map(_with_hot, AsSingleton(hot_stats))
        else:
            report = base | "Report" >> beam.Map(_decontamination_report, dedup)
            ok = pipeline | "NoRecall" >> beam.Create([True])
        all_decisions = (
            decisions
            | "AllDecisions" >> beam.Flatten()
            | "DecisionByKey" >> beam.Map(lambda d: (d.key, d))
        )
        keyed = lighten(joinable, self.light, "PendingLight") | "ByKey" >> beam.Map(
            lambda r: (join_key(r), r)
        )
        joined = (
            {"record": keyed, "decision": all_decisions}
            | "Join" >> beam.CoGroupByKey()
            | "Apply" >> beam.FlatMap(lambda e, _ok: apply_joined(e), AsSingleton(ok))
        )
        return (joined, others) | "Rejoin" >> beam.Flatten(), report


def _with_hot(report: dict[str, Any], stats: dict[str, int]) -> dict[str, Any]:
    """The hot-group counters (``hot``; ``verify.leader_groups``) and the near
    duplicates and eval overlaps decided on hot-group members, as the one-worker report
    has them."""
    report = dict(report)
    stats = dict(stats)
    report["near_duplicates"] = report.get("near_duplicates", 0) + stats.pop("near_duplicates")
    report["eval_overlap"] = report.get("eval_overlap", 0) + stats.pop("eval_overlap")
    report["hot"] = stats
    if "verify" in report:
        report["verify"] = {**report["verify"], "leader_groups": stats["groups"]}
    return report


def _decontamination_report(base: dict, dedup: DedupConfig) -> dict[str, Any]:
    """``near: false``: the decontamination counts, and a report that claims nothing
    about near duplicates (as the single-worker path)."""
    report = dict(base)
    report.update(
        k=dedup.k,
        mode="none",
        partition="none",
        cluster_sizes={},
        largest_clusters=[],
        examples_by_distance={},
        pair_recall=None,
        near_duplicates=0,
    )
    return report
