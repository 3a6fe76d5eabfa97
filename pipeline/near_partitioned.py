"""Near-duplicate removal with no worker holding every hash (``dedup.partition``
``auto``/``clusters``); the math is :mod:`mitigate.partition` and
:mod:`mitigate.components`.

::

    survivors ─ HashItem ─ decontaminate (batches vs the reference side input) ─┐
      ─ collapse identical (pHash, mirror) into nodes (CombinePerKey) ─┐     eval_overlap
      ├─ bounded deterministic sample ─ fit C×K centroids ─ plan (side input)
      ├─ assign (batches) ─ GroupByKey(partition) ─ exact search ─ pairs (deduplicated)
      ├─ recall sample ─ brute force vs every node (batches) ─ join with pairs ─ estimate
      pairs ─ R × (large-star, small-star) ─ remaining graph ─ one worker ─ labels
      labels + nodes + pairs ─ CoGroupByKey(component) ─ keep rule ─ node decisions
      node decisions ─ CoGroupByKey((pHash, mirror)) with the items ─ item decisions
    item decisions ─ CoGroupByKey(key) with the survivors (after the recall check)

A worker holds one partition (at most ``max_partition_size`` hashes by design; the
largest is reported), one component, one identical-hash group, the reference set or
the fixed-size samples; the remaining graph after the rounds is the only other
gathered collection and is reported as ``components.remaining_edges``. With
``K = 1`` (``auto`` and N ≤ ``max_partition_size``) the single partition is the exact
single-worker search, and the decisions equal ``dedup.partition: none``.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.pvalue import AsSingleton

from mitigate import components, neardup, partition
from mitigate.components import KeyPair
from mitigate.config import DecodeConfig, DedupConfig
from mitigate.near import EVAL_OVERLAP, Decision, HashItem
from mitigate.records import PENDING, Reason

logger = logging.getLogger(__name__)

STAR_ROUNDS: int = 6
"""Large-star + small-star rounds run as Beam stages before the remaining graph is
finished in one worker (a chain of 5000 nodes in random key order leaves 32 edges
after 6 rounds, 2528 after none; tests/test_components.py)."""

RECALL_SAMPLES: int = 1000
"""Nodes whose true neighbours are brute-forced against every node to measure recall."""

N_LARGEST, N_TOP_MEMBERS, N_EXAMPLES = 6, 12, 4


MAIN = "main"


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
    """Batches of about BATCH hash items, formed by a GroupByKey on a stable hash of the
    key (not BatchElements: Beam's Dask runner drops output emitted from finish_bundle),
    each sorted by key, so the batches are the same on every runner."""

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        n = items | "Count" >> beam.combiners.Count.Globally()
        return (
            items
            | "Bucket" >> beam.Map(_bucket, AsSingleton(n))
            | "Group" >> beam.GroupByKey()
            | "Sort" >> beam.Map(lambda kv: sorted(kv[1], key=lambda it: it.key))
        )


class RecallTooLow(RuntimeError):
    """The measured pair recall is below ``dedup.min_recall``."""


# -------------------------------------------------------------------- identical hashes


class _NodeFn(beam.CombineFn):
    """Collapse items with identical (pHash, mirror): the best-ranked item represents
    them; also the count, the best-ranked members (for the report) and the smallest key."""

    def create_accumulator(self) -> tuple[Any, int, list, str | None]:
        return (None, 0, [], None)

    def add_input(self, acc: tuple, item: HashItem) -> tuple:
        return self.merge_accumulators([acc, (item, 1, [item], item.key)])

    def merge_accumulators(self, accs: Iterable[tuple]) -> tuple:
        rep, count, top, low = None, 0, [], None
        for r, c, t, lo in accs:
            if r is not None and (rep is None or components.rank(r) < components.rank(rep)):
                rep = r
            count += c
            top = sorted(top + t, key=components.rank)[:N_TOP_MEMBERS]
            if lo is not None and (low is None or lo < low):
                low = lo
        return (rep, count, top, low)

    def extract_output(self, acc: tuple) -> dict[str, Any]:
        rep, count, top, low = acc
        return {
            "rep": rep,
            "count": count,
            "ranked": [components.rank(t) for t in top],
            "min_key": low,
        }


# -------------------------------------------------------------------- decontamination


def _decontaminate(batch: list[HashItem], shard_refs: list, dedup: DedupConfig) -> Iterator[Any]:
    """Items of ``batch`` within k of a reference become eval_overlap decisions (tagged
    ``overlap``); the rest go on to the search. Per item the closest reference (ties
    to the first) does not depend on the batch, so this equals the one-worker match."""
    refs = sorted(shard_refs) + list(dedup.reference_hashes)
    if not refs:
        yield from ((MAIN, item) for item in batch)
        return
    p = neardup.hex_to_uint64([i.phash for i in batch])
    m = neardup.hex_to_uint64([i.mirror for i in batch])
    rp = neardup.hex_to_uint64([r[1] for r in refs])
    rm_values = [r[2] for r in refs]
    rm = None if any(v is None for v in rm_values) else neardup.hex_to_uint64(rm_values)
    match = neardup.match_reference(p, m, rp, rm, dedup.k)
    for i, item in enumerate(batch):
        r = int(match.ref_index[i])
        if r < 0:
            yield MAIN, item
        else:
            decision = Decision(item.key, EVAL_OVERLAP, str(refs[r][0]), int(match.distance[i]))
            yield "overlap", decision


# -------------------------------------------------------------------- partitions


def _plan(sample: list[HashItem], n_nodes: int, dedup: DedupConfig) -> partition.PartitionPlan:
    d = dedup
    n_clusters = partition.n_clusters_for(n_nodes, d.max_partition_size)
    if d.partition == "clusters":
        n_clusters = max(n_clusters, 2)
    sample = sorted(sample, key=lambda it: it.key)
    points = {h for it in sample for h in (it.phash, it.mirror)}
    n_clusters = min(n_clusters, len(points))
    p = neardup.hex_to_uint64([it.phash for it in sample])
    m = neardup.hex_to_uint64([it.mirror for it in sample])
    plan = partition.fit_clusterings(p, m, n_clusters, d.clusterings, k=d.k)
    logger.info(
        "near-dup partitions: %d nodes, %d clusterings x %d clusters (fitted on %d)",
        n_nodes,
        plan.n_clusterings,
        plan.n_clusters,
        len(sample),
    )
    return plan


def _assign(batch: list[HashItem], plan: partition.PartitionPlan) -> Iterator[tuple[int, Any]]:
    """(partition id, chunk) for every partition a node of ``batch`` goes to; a chunk is
    (keys, pHashes, mirrors) of the batch's nodes in that partition, so the shuffle
    carries arrays, not one element per (node, partition)."""
    p = neardup.hex_to_uint64([i.phash for i in batch])
    m = neardup.hex_to_uint64([i.mirror for i in batch])
    members: dict[int, list[int]] = {}
    for idx, ids in enumerate(partition.assign(plan, p, m)):
        for pid in ids:
            members.setdefault(pid, []).append(idx)
    for pid, idx in sorted(members.items()):
        sel = np.asarray(idx, np.int64)
        yield pid, ([batch[i].key for i in idx], p[sel], m[sel])


def _search(element: tuple[int, Iterable[Any]], dedup: DedupConfig) -> Iterator[Any]:
    """Exact search inside one partition (chunks from every worker, merged by key)."""
    _, chunks = element
    chunks = list(chunks)
    keys = [key for c in chunks for key in c[0]]
    p = np.concatenate([c[1] for c in chunks])
    m = np.concatenate([c[2] for c in chunks])
    order = sorted(range(len(keys)), key=keys.__getitem__)  # independent of arrival order
    sel = np.asarray(order, np.int64)
    keys = [keys[i] for i in order]
    yield "size", len(keys)
    for pair in components.search_arrays(keys, p[sel], m[sel], dedup.k, dedup.mode):
        yield MAIN, pair


# -------------------------------------------------------------------- recall


def _true_neighbours(
    batch: list[HashItem], sample: list[HashItem], k: int
) -> Iterator[tuple[tuple[str, str], int]]:
    """((sampled node, other node), 1) for every other node within k of a sampled one."""
    if not sample:
        return
    qp = neardup.hex_to_uint64([q.phash for q in sample])
    qm = neardup.hex_to_uint64([q.mirror for q in sample])
    p = neardup.hex_to_uint64([i.phash for i in batch])
    m = neardup.hex_to_uint64([i.mirror for i in batch])
    qi, xi, _ = neardup.brute_force_join(qp, qm, p, m, k)
    for q, x in zip(qi.tolist(), xi.tolist(), strict=True):
        if sample[q].key != batch[x].key:
            yield (sample[q].key, batch[x].key), 1


def _found_for_sample(pair: KeyPair, keys: frozenset[str]) -> Iterator[tuple]:
    if pair.a in keys:
        yield (pair.a, pair.b), 1
    if pair.b in keys:
        yield (pair.b, pair.a), 1


def _per_query(element: tuple[tuple[str, str], dict]) -> Iterator[tuple[str, tuple[int, int]]]:
    (q, _), grouped = element
    if grouped["true"]:
        yield q, (1, 1 if grouped["found"] else 0)


def _recall(counts: list[tuple[str, tuple[int, int]]], sample: list[HashItem]) -> dict:
    by_q: dict[str, list[int]] = {q.key: [0, 0] for q in sample}
    for q, (t, f) in counts:
        by_q[q][0] += t
        by_q[q][1] += f
    order = sorted(by_q)
    est = partition.recall_from_counts([by_q[q][0] for q in order], [by_q[q][1] for q in order])
    return {
        "estimate": None if np.isnan(est.recall) else float(est.recall),
        "ci": [float(est.ci_low), float(est.ci_high)],
        "queries": est.n_queries,
        "true_pairs": est.n_true_pairs,
        "found_pairs": est.n_found_pairs,
    }


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


# -------------------------------------------------------------------- components


def _both_ways(edge: tuple[str, str]) -> list[tuple[str, str]]:
    a, b = edge
    return [(a, b), (b, a)]


class _StarRound(beam.PTransform):
    def expand(self, edges: beam.PCollection) -> beam.PCollection:
        big = (
            edges
            | "Out" >> beam.FlatMap(_both_ways)
            | "ByNode" >> beam.GroupByKey()
            | "LargeStar" >> beam.FlatMap(lambda e: components.large_star(*e))
        )
        return (
            big
            | "Out2" >> beam.FlatMap(_both_ways)
            | "ByNode2" >> beam.GroupByKey()
            | "SmallStar" >> beam.FlatMap(lambda e: components.small_star(*e))
        )


def _m_per_edge(element: tuple[str, Iterable[str]]) -> Iterator[tuple[Any, Any]]:
    u, nbrs = element
    nbrs = set(nbrs)
    m = components.min_neighbour(u, nbrs)
    yield "m", (u, m)
    for v in nbrs:
        yield MAIN, ((min(u, v), max(u, v)), m)


def _disagree(element: tuple[tuple[str, str], Iterable[str]]) -> Iterator[tuple[str, str]]:
    ms = sorted(set(element[1]))
    if len(ms) > 1:
        yield ms[0], ms[1]


def _decide_component(element: tuple[str, dict]) -> Iterator[Any]:
    _label, grouped = element
    infos = list(grouped["node"])
    pairs = list(grouped["pair"])
    reps = [info["rep"] for info in infos]
    by_key = {rep.key: rep for rep in reps}
    for key, fate in components.keep_component(reps, pairs).items():
        yield MAIN, ((by_key[key].phash, by_key[key].mirror), fate)  # keyed like the items
    size = sum(info["count"] for info in infos)
    yield "cluster", (size, min(info["min_key"] for info in infos), _top_keys(infos))


def _top_keys(infos: list[dict]) -> list[str]:
    """The best-ranked members of a cluster, at most 12 (identical hashes can differ in
    resolution, so every listed member is ranked by its own (resolution, key))."""
    ranked = sorted(r for info in infos for r in info["ranked"])
    return [key for _, key in ranked[:N_TOP_MEMBERS]]


def _item_decisions(element: tuple[Any, dict]) -> Iterator[Any]:
    _, grouped = element
    fates = list(grouped["fate"])
    items = sorted(grouped["item"], key=components.rank)
    if not items:
        return
    rep = items[0]
    fate = fates[0] if fates else None
    if fate is None:
        if len(items) > 1 and not fates:  # identical hashes, no other neighbour
            yield "cluster", (len(items), min(i.key for i in items), [i.key for i in items][:12])
        for item in items[1:]:
            yield MAIN, Decision(item.key, Reason.NEAR_DUPLICATE, rep.key, 0)
    else:
        dup_of, dist = fate
        for item in items:
            yield MAIN, Decision(item.key, Reason.NEAR_DUPLICATE, dup_of, dist)


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
        }


class _ExamplesFn(beam.CombineFn):
    """Per distance, the first examples in key order (as the single-worker report)."""

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, acc: dict, d: Decision) -> dict:
        return self.merge_accumulators([acc, {d.distance: [(d.key, d.duplicate_of)]}])

    def merge_accumulators(self, accs: Iterable[dict]) -> dict:
        out: dict = {}
        for acc in accs:
            for dist, ex in acc.items():
                out[dist] = sorted(out.get(dist, []) + ex)[:N_EXAMPLES]
        return out

    def extract_output(self, acc: dict) -> dict:
        # [keeper, duplicate, verification score]: as the one-worker report, where the
        # score is None for unverified pairs (this graph does not verify yet)
        return {str(d): [[keeper, key, None] for key, keeper in v] for d, v in sorted(acc.items())}


# -------------------------------------------------------------------- the transform


def _by_hash(item: HashItem) -> tuple[tuple[str, str], HashItem]:
    return (item.phash, item.mirror), item


def _labelled(element: tuple[str, dict]) -> Iterator[tuple[str, Any]]:
    _, grouped = element
    labels = list(grouped["label"])
    if labels:
        for value in grouped["value"]:
            yield labels[0], value


def _report(
    base: dict,
    recall: dict,
    sizes: list[int],
    plan: partition.PartitionPlan,
    clusters: dict,
    examples: dict,
    counts: dict,
    dedup: DedupConfig,
) -> dict[str, Any]:
    report = dict(base)
    report.update(
        k=dedup.k,
        mode=dedup.mode,
        partition="clusters" if plan.n_partitions > 1 else "single",
        partitions=len(sizes),
        largest_partition=max(sizes, default=0),
        clusterings=plan.n_clusterings,
        clusters_per_clustering=plan.n_clusters,
        pair_recall=recall,
        near_duplicates=counts.get("near_duplicates", 0),
        pairs=counts.get("pairs", 0),
        components={"rounds": STAR_ROUNDS, "remaining_edges": counts.get("remaining", 0)},
        cluster_sizes=clusters.get("cluster_sizes", {}),
        largest_clusters=clusters.get("largest_clusters", []),
        examples_by_distance=examples,
    )
    return report


def _count(pcoll: beam.PCollection, name: str) -> beam.PCollection:
    return (
        pcoll
        | f"Count{name}" >> beam.combiners.Count.Globally()
        | f"Name{name}" >> beam.Map(lambda n, name=name: (name, n))
    )


class PartitionedSearch(beam.PTransform):
    """Hash items in (after decontamination); near-duplicate decisions, the partition
    sizes, the plan, the recall, cluster statistics and counts out."""

    def __init__(self, dedup: DedupConfig) -> None:
        super().__init__()
        self.dedup = dedup

    def expand(self, items: beam.PCollection) -> dict[str, beam.PCollection]:
        dedup = self.dedup
        k = dedup.k
        nodes = items | "ByHash" >> beam.Map(_by_hash) | "Nodes" >> beam.CombinePerKey(_NodeFn())
        reps = nodes | "Reps" >> beam.Map(lambda kv: kv[1]["rep"])
        n_nodes = reps | "CountNodes" >> beam.combiners.Count.Globally()
        fit_sample = reps | "FitSample" >> beam.combiners.Top.Smallest(
            partition.FIT_SAMPLE_SIZE, key=lambda it: partition.stable_hash(it.key)
        )
        plan = fit_sample | "Fit" >> beam.Map(_plan, AsSingleton(n_nodes), dedup)
        batches = reps | "Batch" >> _Batch()
        searched = (
            batches
            | "Assign" >> beam.FlatMap(_assign, AsSingleton(plan))
            | "ByPartition" >> beam.GroupByKey()
            | "Search" >> beam.FlatMap(_search, dedup)
            | "RouteSearch" >> _Route("size", MAIN)
        )
        pairs = (
            searched[MAIN]
            | "PairKey" >> beam.Map(lambda p: ((p.a, p.b), p.distance))
            | "DistinctPairs" >> beam.CombinePerKey(min)
            | "Pair" >> beam.Map(lambda kv: KeyPair(kv[0][0], kv[0][1], kv[1]))
        )
        sizes = searched["size"] | "Sizes" >> beam.combiners.ToList()

        # pair recall: brute force of a fixed-size sample of nodes against every node
        rsample = reps | "RecallSample" >> beam.combiners.Top.Smallest(
            RECALL_SAMPLES, key=lambda it: partition.stable_hash("recall:" + it.key)
        )
        truth = batches | "TrueNeighbours" >> beam.FlatMap(
            _true_neighbours, AsSingleton(rsample), k
        )
        sample_keys = rsample | "SampleKeys" >> beam.Map(lambda s: frozenset(q.key for q in s))
        found = pairs | "FoundForSample" >> beam.FlatMap(
            _found_for_sample, AsSingleton(sample_keys)
        )
        recall = (
            {"true": truth, "found": found}
            | "JoinRecall" >> beam.CoGroupByKey()
            | "PerQuery" >> beam.FlatMap(_per_query)
            | "AllQueries" >> beam.combiners.ToList()
            | "Recall" >> beam.Map(_recall, AsSingleton(rsample))
        )

        # connected components: star rounds, then the remaining graph in one worker
        edges = pairs | "Edges" >> beam.Map(lambda p: (p.a, p.b))
        for r in range(STAR_ROUNDS):
            edges = edges | f"StarRound{r}" >> _StarRound()
        settled = (
            edges
            | "FinalOut" >> beam.FlatMap(_both_ways)
            | "FinalByNode" >> beam.GroupByKey()
            | "MinNeighbour" >> beam.FlatMap(_m_per_edge)
            | "RouteMinNeighbour" >> _Route("m", MAIN)
        )
        remaining = (
            settled[MAIN] | "ByEdge" >> beam.GroupByKey() | "Disagree" >> beam.FlatMap(_disagree)
        )
        finished = (
            remaining
            | "Remaining" >> beam.combiners.ToList()
            | "Finish" >> beam.Map(components.finish)
        )
        labels = settled["m"] | "Label" >> beam.Map(
            lambda um, done: (um[0], done.get(um[1], um[1])), AsSingleton(finished)
        )

        # keep rule per component
        node_by_key = nodes | "NodeByKey" >> beam.Map(lambda kv: (kv[1]["rep"].key, kv[1]))
        labelled_nodes = (
            {"label": labels, "value": node_by_key}
            | "JoinNodeLabel" >> beam.CoGroupByKey()
            | "NodeLabel" >> beam.FlatMap(_labelled)
        )
        labelled_pairs = (
            {"label": labels, "value": pairs | "PairByA" >> beam.Map(lambda p: (p.a, p))}
            | "JoinPairLabel" >> beam.CoGroupByKey()
            | "PairLabel" >> beam.FlatMap(_labelled)
        )
        decided = (
            {"node": labelled_nodes, "pair": labelled_pairs}
            | "ByComponent" >> beam.CoGroupByKey()
            | "KeepRule" >> beam.FlatMap(_decide_component)
            | "RouteKeepRule" >> _Route("cluster", MAIN)
        )
        fates = decided[MAIN]
        items_by_hash = items | "ItemsByHash" >> beam.Map(_by_hash)
        applied = (
            {"item": items_by_hash, "fate": fates}
            | "JoinItemFate" >> beam.CoGroupByKey()
            | "ItemDecisions" >> beam.FlatMap(_item_decisions)
            | "RouteItemDecisions" >> _Route("cluster", MAIN)
        )
        clusters = (
            (decided["cluster"], applied["cluster"])
            | "AllClusters" >> beam.Flatten()
            | "ClusterReport" >> beam.CombineGlobally(_ReportFn())
        )
        examples = applied[MAIN] | "Examples" >> beam.CombineGlobally(_ExamplesFn())
        counts = (
            (
                _count(applied[MAIN], "near_duplicates"),
                _count(pairs, "pairs"),
                _count(remaining, "remaining"),
            )
            | "Counts" >> beam.Flatten()
            | "CountDict" >> beam.combiners.ToDict()
        )
        return {
            "decisions": applied[MAIN],
            "sizes": sizes,
            "plan": plan,
            "recall": recall,
            "clusters": clusters,
            "examples": examples,
            "counts": counts,
            "pairs": pairs,
        }


class PartitionedNearDedup(beam.PTransform):
    """Records in, records out (survivors decided), plus a one-dict report; the same
    contract as :class:`mitigate.pipeline.near.NearDedup`."""

    def __init__(self, dedup: DedupConfig, decode: DecodeConfig) -> None:
        super().__init__()
        self.dedup = dedup
        self.decode = decode  # to hash reference shards as the run hashes its input

    def expand(self, records: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        from mitigate.pipeline.near import _apply, _expand_glob, reference_hashes

        dedup = self.dedup
        pipeline = records.pipeline
        pending = records | "Pending" >> beam.Filter(lambda r: r.state == PENDING)
        others = records | "Settled" >> beam.Filter(lambda r: r.state != PENDING)
        items = pending | "HashItems" >> beam.Map(
            lambda r: HashItem(r.key, r.phash, r.phash_mirror, r.resolution)
        )
        shard_refs = (
            pipeline
            | "ReferenceShards" >> beam.Create(list(dedup.reference_shards))
            | "ReferenceFiles" >> beam.FlatMap(_expand_glob)
            | "ReferenceHashes" >> beam.FlatMap(reference_hashes, self.decode)
            | "AllReferences" >> beam.combiners.ToList()
        )
        checked = (
            items
            | "DeconBatch" >> _Batch()
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
            out = checked[MAIN] | "Search" >> PartitionedSearch(dedup)
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
                )
            )
            ok = out["recall"] | "CheckRecall" >> beam.Map(check_recall, dedup)
        else:
            report = base | "Report" >> beam.Map(_decontamination_report, dedup)
            ok = pipeline | "NoRecall" >> beam.Create([True])
        all_decisions = (
            decisions
            | "AllDecisions" >> beam.Flatten()
            | "DecisionByKey" >> beam.Map(lambda d: (d.key, d))
        )
        keyed = pending | "ByKey" >> beam.Map(lambda r: (r.key, r))
        joined = (
            {"record": keyed, "decision": all_decisions}
            | "Join" >> beam.CoGroupByKey()
            | "Apply" >> beam.FlatMap(lambda e, _ok: _apply(e), AsSingleton(ok))
        )
        return (joined, others) | "Rejoin" >> beam.Flatten(), report


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
