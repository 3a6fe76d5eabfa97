"""The partitioned near-duplicate search as a Beam graph over numpy batches; the steps
are :mod:`mitigate.partition_batch` (Beam-free) and the partitions
:mod:`mitigate.partition`.

::

    batches (≈BATCH samples, sorted by key; node id = batch << 32 | position)
      ├─ smallest key hashes ─ fit C×K centroids (side input: plan)
      ├─ assign ─ (partition, id/hash arrays) ─ GroupByKey ─ exact search ─ candidate pairs
      │     candidate pairs ─ join batch(a): key + signature of a ─ join batch(b): score
      │     ─ merged pairs / refused pairs
      ├─ recall sample ─ brute force per batch ─┐ with the candidates ─ estimate
      merged pairs ─ R × (large-star, small-star) over edge arrays by node bucket
        ─ m(u) ─ remaining graph ─ one worker ─ labels
      batch ⋈ labels ⋈ merged pairs (by batch) ─ members/edges by component bucket
        ─ keep rule (medoid | resolution) ─ decisions, clusters, kept ids
      refused pairs ⋈ dropped ids (by node bucket) ─ not_merged evidence

Every shuffled element is a batch or an array chunk (one per batch × partition, or per
bucket pair), never one per sample: on the DirectRunner the per-element cost is what
made the first version ~26x slower than the one-worker search. A worker holds one
partition, one batch, one bucket of edges or components, the fit/recall samples or the
remaining graph after the rounds (reported as ``components.remaining_edges``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.pvalue import AsSingleton

from mitigate import neardup, partition
from mitigate import partition_batch as pb
from mitigate import partition_split as ps
from mitigate.config import DedupConfig
from mitigate.near import NOT_MERGED, Decision
from mitigate.pipeline import near_hot
from mitigate.records import Reason

STAR_ROUNDS: int = 6
"""Large-star + small-star rounds before the remaining graph is finished in one worker
(a 5000-node chain in random order leaves 32 edges after 6 rounds; tests)."""

RECALL_SAMPLES: int = 1000
"""Samples whose true neighbours are brute-forced against every sample (recall)."""

EDGE_BUCKET_SAMPLES: int = 1_000_000
"""Samples per node bucket of the edge steps (buckets = ceil(N / this))."""

MAIN = "main"


def n_buckets(n: int) -> int:
    return max(1, math.ceil(n / EDGE_BUCKET_SAMPLES))


class _SmallestFn(beam.CombineFn):
    """The ``size`` samples with the smallest salted key hash, whatever the batching."""

    def __init__(self, size: int, salt: str) -> None:
        self.size, self.salt = size, salt

    def create_accumulator(self) -> Any:
        return None

    def add_input(self, acc: Any, batch: pb.Batch) -> Any:
        return pb.merge_smallest([acc, pb.smallest(batch, self.size, self.salt)], self.size)

    def merge_accumulators(self, accs: Iterable[Any]) -> Any:
        return pb.merge_smallest(list(accs), self.size)

    def extract_output(self, acc: Any) -> Any:
        return pb.merge_smallest([acc], self.size)


class _ConcatFn(beam.CombineFn):
    """Concatenate tuples of equal-length arrays (small collections only)."""

    def __init__(self, width: int) -> None:
        self.width = width

    def create_accumulator(self) -> list:
        return []

    def add_input(self, acc: list, part: tuple) -> list:
        acc.append(part)
        return acc

    def merge_accumulators(self, accs: Iterable[list]) -> list:
        return [p for acc in accs for p in acc]

    def extract_output(self, acc: list) -> tuple:
        if not acc:
            return tuple(np.empty(0, np.int64) for _ in range(self.width))
        return tuple(np.concatenate([p[i] for p in acc]) for i in range(self.width))


def _plan(
    sample: tuple, n: int, dedup: DedupConfig, view: str = "phash"
) -> partition.PartitionPlan:
    n_clusters = partition.n_clusters_for(n, dedup.max_partition_size, dedup.probes)
    if dedup.partition == "clusters":
        n_clusters = max(n_clusters, 2)
    _, ids, p, m, c, cm, has_c = sample
    if view == "centre":  # the centre view's partitions: fitted on its own hashes
        ids, p, m = ids[has_c], c[has_c], cm[has_c]
    order = np.argsort(ids)
    n_clusters = min(n_clusters, np.unique(np.r_[p, m]).size)
    plan = partition.fit_clusterings(p[order], m[order], n_clusters, dedup.clusterings, k=dedup.k)
    return dataclasses.replace(plan, probes=min(dedup.probes, plan.n_clusters))


def _search(element: tuple[ps.Task, Iterable[tuple]], dedup: DedupConfig) -> Iterator[Any]:
    task, chunks = element
    chunks = list(chunks)
    yield "size", sum(int(c[0].size) for c in chunks)
    a, b, d = ps.task_pairs(task, *pb.search_chunks(chunks, dedup.k, dedup.mode))
    view = np.full(a.size, pb.view_of_partition(task[0]), np.uint8)
    for bid, part in pb.split_by(pb.batch_of(a), a, b, d, view):
        yield MAIN, (bid, part)


def _only(tag: str):
    return lambda tv: tv[0] == tag


def _value(tv: tuple) -> Any:
    return tv[1]


def _route(pcoll: beam.PCollection, name: str, *tags: str) -> dict[str, beam.PCollection]:
    """One PCollection per tag (filters, not multi-output ParDos: see near_partitioned)."""
    return {
        t: pcoll | f"{name}Only{t}" >> beam.Filter(_only(t)) | f"{name}Val{t}" >> beam.Map(_value)
        for t in tags
    }


def _side(pcoll: beam.PCollection | None) -> Any:
    return None if pcoll is None else AsSingleton(pcoll)


def _one(grouped: dict, tag: str) -> Any:
    values = list(grouped[tag])
    return values[0] if values else None


def _attach(element: tuple[int, dict], with_sig: bool) -> Iterator[tuple[int, tuple]]:
    _, g = element
    batch = _one(g, "batch")
    if batch is not None:
        yield from pb.attach_a(batch, g["pairs"], with_sig)


def _verify(element: tuple[int, dict], threshold: float | None) -> Iterator[Any]:
    _, g = element
    batch = _one(g, "batch")
    if batch is None:
        return
    merged, refused, n_centre = pb.verify_b(batch, g["pairs"], threshold)
    if n_centre:
        yield "centre", n_centre
    if merged[0].size:
        yield MAIN, merged
    if refused[0].size:
        yield "refused", refused


def _directed(edges: tuple, nb: int) -> Iterator[tuple[int, tuple]]:
    u, v = pb.directed(edges[0], edges[1])
    yield from pb.split_by(pb.bucket_of(u, nb), u, v)


def _star(element: tuple[int, Iterable[tuple]], step: Any) -> Iterator[tuple]:
    _, parts = element
    parts = list(parts)
    u = np.concatenate([p[0] for p in parts])
    v = np.concatenate([p[1] for p in parts])
    a, b = step(u, v)
    if a.size:
        yield a, b


class _StarRound(beam.PTransform):
    def __init__(self, nb: Any) -> None:
        super().__init__()
        self.nb = nb

    def expand(self, edges: beam.PCollection) -> beam.PCollection:
        big = (
            edges
            | "Out" >> beam.FlatMap(_directed, self.nb)
            | "ByNode" >> beam.GroupByKey()
            | "LargeStar" >> beam.FlatMap(_star, pb.large_star)
        )
        return (
            big
            | "Out2" >> beam.FlatMap(_directed, self.nb)
            | "ByNode2" >> beam.GroupByKey()
            | "SmallStar" >> beam.FlatMap(_star, pb.small_star)
        )


def _min_neighbour(element: tuple[int, Iterable[tuple]], nb: int) -> Iterator[Any]:
    _, parts = element
    parts = list(parts)
    u = np.concatenate([p[0] for p in parts])
    v = np.concatenate([p[1] for p in parts])
    (nodes, m), (a, b, mm) = pb.min_neighbour_edges(u, v)
    yield "m", (nodes, m)
    for bucket, part in pb.split_by(pb.bucket_of(a, nb), a, b, mm):
        yield MAIN, (bucket, part)


def _disagree(element: tuple[int, Iterable[tuple]]) -> Iterator[tuple]:
    _, parts = element
    parts = list(parts)
    a, b = pb.disagreeing(*(np.concatenate([p[i] for p in parts]) for i in range(3)))
    if a.size:
        yield a, b


def _labels(m_part: tuple, done: tuple) -> Iterator[tuple[int, tuple]]:
    nodes, m = m_part
    lab = pb.final_labels(nodes, m, done)
    yield from pb.split_by(pb.batch_of(nodes), nodes, lab)


def _by_batch_a(part: tuple) -> Iterator[tuple[int, tuple]]:
    yield from pb.split_by(pb.batch_of(part[0]), *part)


def _members(element: tuple[int, dict], nb: int) -> Iterator[tuple[int, tuple]]:
    _, g = element
    batch = _one(g, "batch")
    if batch is not None:
        yield from pb.members_and_edges(batch, g["label"], g["edge"], nb)


def _keep(element: tuple[int, Iterable[tuple]], rule: str, followers: Any = None) -> Iterator[Any]:
    _, parts = element
    parts = list(parts)
    members, edges = [p for t, p in parts if t == "member"], [p for t, p in parts if t == "edge"]
    res = pb.keep_components(members, edges, rule, followers=followers)
    for key, keeper, dist, score, _ in res.dropped:
        yield MAIN, Decision(key, Reason.NEAR_DUPLICATE, keeper, dist, score)
    if res.dropped:
        yield "dropped", np.asarray([x[4] for x in res.dropped], np.int64)
    for cluster in res.clusters:
        yield "cluster", cluster
    if res.hot_leaders:
        yield "hot_seen", frozenset(res.hot_leaders)


def _refused_both(part: tuple, nb: int) -> Iterator[tuple[int, tuple]]:
    a, b, d, sc, ka, kb = part
    x, d2, s2 = np.r_[a, b], np.r_[d, d], np.r_[sc, sc]
    kx, ky = np.r_[ka, kb], np.r_[kb, ka]
    yield from pb.split_by(pb.bucket_of(x, nb), x, d2, s2, kx, ky)


def _not_merged(element: tuple[int, dict]) -> Iterator[Decision]:
    _, g = element
    dropped = [p[0] for p in g["dropped"]]
    for key, other, d, score in pb.not_merged(g["refused"], dropped):
        yield Decision(key, NOT_MERGED, other, d, score)


def _true_pairs(batch: pb.Batch, sample: tuple, k: int, centre_view: bool) -> Iterator[tuple]:
    """The sample's true candidates in a batch: within k on pHash, and with the centre
    view on, within k on the centre view (before the frame gate, as the search is)."""
    _, ids, p, m, c, cm, has_c = sample
    if ids.size == 0:
        return
    qi, xi, _ = neardup.brute_force_join(p, m, batch.phash, batch.mirror, k)
    q, x = ids[qi], batch.ids[xi]
    if centre_view:
        rows, bc, bcm = batch.view("centre")
        qi, xi, _ = neardup.brute_force_join(c[has_c], cm[has_c], bc, bcm, k)
        q, x = np.r_[q, ids[has_c][qi]], np.r_[x, batch.ids[rows][xi]]
    keep = q != x
    if keep.any():
        yield q[keep], x[keep]


def _found_for_sample(part: tuple[int, tuple], sample: tuple) -> Iterator[tuple]:
    a, b = part[1][0], part[1][1]
    ids = sample[1]
    in_a, in_b = np.isin(a, ids), np.isin(b, ids)
    q, x = np.r_[a[in_a], b[in_b]], np.r_[b[in_a], a[in_b]]
    if q.size:
        yield q, x


def _recall(truth: tuple, found: tuple, sample: tuple) -> dict:
    ids = np.sort(sample[1])
    tq, tx = truth
    fq, fx = found
    t = np.unique(np.stack([tq, tx], axis=1), axis=0) if tq.size else np.empty((0, 2), np.int64)
    f = np.unique(np.stack([fq, fx], axis=1), axis=0) if fq.size else np.empty((0, 2), np.int64)
    found_set = {(int(a), int(b)) for a, b in f.tolist()}
    t_per = np.zeros(ids.size, np.int64)
    f_per = np.zeros(ids.size, np.int64)
    for q, x in t.tolist():
        at = int(np.searchsorted(ids, q))
        t_per[at] += 1
        f_per[at] += (q, x) in found_set
    est = partition.recall_from_counts(t_per.tolist(), f_per.tolist())
    return {
        "estimate": None if np.isnan(est.recall) else float(est.recall),
        "ci": [float(est.ci_low), float(est.ci_high)],
        "queries": est.n_queries,
        "true_pairs": est.n_true_pairs,
        "found_pairs": est.n_found_pairs,
    }


def _count_arrays(pcoll: beam.PCollection, name: str) -> beam.PCollection:
    return (
        pcoll
        | f"Len{name}" >> beam.Map(lambda part: int(part[0].size))
        | f"Sum{name}" >> beam.CombineGlobally(sum)
        | f"Name{name}" >> beam.Map(lambda n, name=name: (name, n))
    )


class _RefusedFn(beam.CombineFn):
    """Refused-pair statistics for the report: counts and the examples the one-worker
    report shows (smallest distance, then score; keys in key order)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def create_accumulator(self) -> tuple[int, list]:
        return (0, [])

    def add_input(self, acc: tuple, part: tuple) -> tuple:
        _, _, d, sc, ka, kb = part
        ex = sorted(
            (int(dd), float(s), min(x, y), max(x, y))
            for dd, s, x, y in zip(d.tolist(), sc.tolist(), ka.tolist(), kb.tolist(), strict=True)
        )[: self.n]
        return self.merge_accumulators([acc, (int(d.size), ex)])

    def merge_accumulators(self, accs: Iterable[tuple]) -> tuple:
        n, ex = 0, []
        for c, e in accs:
            n += c
            ex = sorted(ex + e)[: self.n]
        return (n, ex)

    def extract_output(self, acc: tuple) -> dict:
        n, ex = acc
        return {
            "refused_pairs": n,
            "examples_refused": [[a, b, d, round(s, 4)] for d, s, a, b in ex],
        }


class _SizesFn(beam.CombineFn):
    """``("partition" | "task", entries)`` -> count, largest and total of each:
    partitions as the clusterings made them, tasks as searched (an oversized partition
    is several)."""

    def create_accumulator(self) -> dict[str, tuple[int, int, int]]:
        return {}

    def add_input(self, acc: dict, tagged: tuple[str, int]) -> dict:
        tag, n = tagged
        count, largest, total = acc.get(tag, (0, 0, 0))
        acc[tag] = (count + 1, max(largest, n), total + n)
        return acc

    def merge_accumulators(self, accs: Iterable[dict]) -> dict:
        out: dict[str, tuple[int, int, int]] = {}
        for acc in accs:
            for tag, (count, largest, total) in acc.items():
                c, m, t = out.get(tag, (0, 0, 0))
                out[tag] = (c + count, max(m, largest), t + total)
        return out

    def extract_output(self, acc: dict) -> dict[str, int]:
        partitions, largest, entries = acc.get("partition", (0, 0, 0))
        tasks, largest_task, _ = acc.get("task", (0, 0, 0))
        return {
            "partitions": partitions,
            "largest_partition": largest,
            "entries": entries,
            "search_tasks": tasks,
            "largest_search": largest_task,
        }


class PartitionedSearch(beam.PTransform):
    """:class:`mitigate.partition_batch.Batch` elements in; near-duplicate and
    not_merged decisions, partition sizes, plan, recall, clusters, counts out."""

    def __init__(self, dedup: DedupConfig, followers: beam.PCollection | None = None) -> None:
        """``followers``: counted in the clusters (:class:`near_hot.Followers`)."""
        super().__init__()
        self.dedup = dedup
        self.followers = followers

    def expand(self, batches: beam.PCollection) -> dict[str, beam.PCollection]:
        from mitigate.pipeline.near_partitioned import _ExamplesFn, _ReportFn

        dedup = self.dedup
        threshold = dedup.verify_threshold if dedup.verify else None
        n = batches | "BatchSize" >> beam.Map(len) | "N" >> beam.CombineGlobally(sum)
        nb = n | "NBuckets" >> beam.Map(n_buckets)
        fit = batches | "FitSample" >> beam.CombineGlobally(
            _SmallestFn(partition.FIT_SAMPLE_SIZE, "")
        )
        plan = fit | "Fit" >> beam.Map(_plan, AsSingleton(n), dedup)
        keyed = batches | "ByBatch" >> beam.Map(lambda b: (b.bid, b))
        assigned = batches | "Assign" >> beam.FlatMap(pb.assign_chunks, AsSingleton(plan))
        centre_view = threshold is not None and dedup.centre_view
        if centre_view:  # the centre view's own partitions, searched by the same steps
            plan_c = fit | "FitCentre" >> beam.Map(_plan, AsSingleton(n), dedup, "centre")
            assigned = (
                assigned,
                batches
                | "AssignCentre" >> beam.FlatMap(pb.assign_chunks, AsSingleton(plan_c), "centre"),
            ) | "BothViews" >> beam.Flatten()
        partition_sizes = (
            assigned
            | "EntryCounts" >> beam.Map(lambda part: (part[0], int(part[1][0].size)))
            | "PartitionSizes" >> beam.CombinePerKey(sum)
        )
        blocks = (
            partition_sizes
            | "Blocks"
            >> beam.Map(
                lambda ps_, mps: (ps_[0], ps.n_blocks(ps_[1], mps)), dedup.max_partition_size
            )
            | "Oversized" >> beam.Filter(lambda pb_: pb_[1] > 1)
            | "BlockDict" >> beam.combiners.ToDict()
        )
        searched = _route(
            assigned
            | "Tasks" >> beam.FlatMap(ps.to_tasks, AsSingleton(blocks))
            | "ByTask" >> beam.GroupByKey()
            | "Search" >> beam.FlatMap(_search, dedup),
            "Search",
            "size",
            MAIN,
        )
        candidates = searched[MAIN]
        sizes = (
            (
                partition_sizes | "TagPartition" >> beam.Map(lambda ps_: ("partition", ps_[1])),
                searched["size"] | "TagTask" >> beam.Map(lambda n: ("task", n)),
            )
            | "AllSizes" >> beam.Flatten()
            | "Sizes" >> beam.CombineGlobally(_SizesFn())
        )
        attached = (
            {"batch": keyed, "pairs": candidates}
            | "JoinA" >> beam.CoGroupByKey()
            | "AttachA" >> beam.FlatMap(_attach, threshold is not None)
        )
        checked = _route(
            {"batch": keyed, "pairs": attached}
            | "JoinB" >> beam.CoGroupByKey()
            | "Verify" >> beam.FlatMap(_verify, threshold),
            "Verify",
            MAIN,
            "refused",
            "centre",
        )
        merged, refused = checked[MAIN], checked["refused"]

        # recall of the search (candidates, before verification)
        rsample = batches | "RecallSample" >> beam.CombineGlobally(
            _SmallestFn(RECALL_SAMPLES, "recall:")
        )
        truth = (
            batches
            | "TrueNeighbours"
            >> beam.FlatMap(_true_pairs, AsSingleton(rsample), dedup.k, centre_view)
            | "AllTrue" >> beam.CombineGlobally(_ConcatFn(2))
        )
        found = (
            candidates
            | "FoundForSample" >> beam.FlatMap(_found_for_sample, AsSingleton(rsample))
            | "AllFound" >> beam.CombineGlobally(_ConcatFn(2))
        )
        recall = truth | "Recall" >> beam.Map(_recall, AsSingleton(found), AsSingleton(rsample))

        # connected components of the merged pairs
        edges = merged | "Edges" >> beam.Map(lambda part: (part[0], part[1]))
        for r in range(STAR_ROUNDS):
            edges = edges | f"StarRound{r}" >> _StarRound(AsSingleton(nb))
        settled = _route(
            edges
            | "FinalOut" >> beam.FlatMap(_directed, AsSingleton(nb))
            | "FinalByNode" >> beam.GroupByKey()
            | "MinNeighbour" >> beam.FlatMap(_min_neighbour, AsSingleton(nb)),
            "Settled",
            "m",
            MAIN,
        )
        remaining = (
            settled[MAIN] | "ByEdge" >> beam.GroupByKey() | "Disagree" >> beam.FlatMap(_disagree)
        )
        finished = (
            remaining
            | "Remaining" >> beam.CombineGlobally(_ConcatFn(2))
            | "Finish" >> beam.Map(lambda ab: pb.finish(*ab))
        )
        labels = settled["m"] | "Label" >> beam.FlatMap(_labels, AsSingleton(finished))

        # keep rule per bucket of components
        decided = _route(
            {
                "batch": keyed,
                "label": labels,
                "edge": merged | "EdgesByA" >> beam.FlatMap(_by_batch_a),
            }
            | "JoinMembers" >> beam.CoGroupByKey()
            | "Members" >> beam.FlatMap(_members, AsSingleton(nb))
            | "ByComponent" >> beam.GroupByKey()
            | "KeepRule" >> beam.FlatMap(_keep, dedup.keep, _side(self.followers)),
            "Keep",
            MAIN,
            "dropped",
            "cluster",
            "hot_seen",
        )
        evidence = (
            {
                "refused": refused
                | "RefusedByNode" >> beam.FlatMap(_refused_both, AsSingleton(nb)),
                "dropped": decided["dropped"]
                | "DroppedByNode"
                >> beam.FlatMap(lambda x, nb: pb.split_by(pb.bucket_of(x, nb), x), AsSingleton(nb)),
            }
            | "JoinRefused" >> beam.CoGroupByKey()
            | "NotMerged" >> beam.FlatMap(_not_merged)
        )
        decisions = (decided[MAIN], evidence) | "AllDecisions" >> beam.Flatten()
        clusters = decided["cluster"]
        if self.followers is not None:  # hot-group leaders searched alone, with followers
            clusters = near_hot.with_lone(clusters, decided["hot_seen"], self.followers)
        clusters = clusters | "ClusterReport" >> beam.CombineGlobally(_ReportFn())
        examples = decided[MAIN] | "Examples" >> beam.CombineGlobally(_ExamplesFn())
        verify_report = refused | "RefusedReport" >> beam.CombineGlobally(_RefusedFn(12))
        merged_scored = (
            merged
            | "Scored" >> beam.Map(lambda part: int(np.count_nonzero(~np.isnan(part[3]))))
            | "SumScored" >> beam.CombineGlobally(sum)
            | "NameScored" >> beam.Map(lambda c: ("merged_pairs", c))
        )
        counts = (
            (
                decided[MAIN]
                | "CountDropped" >> beam.combiners.Count.Globally()
                | "NameDropped" >> beam.Map(lambda c: ("near_duplicates", c)),
                _count_arrays(merged, "merged"),
                _count_arrays(refused, "refused"),
                _count_arrays(remaining, "remaining"),
                merged_scored,
                checked["centre"]
                | "SumCentre" >> beam.CombineGlobally(sum)
                | "NameCentre" >> beam.Map(lambda c: ("centre_only_pairs", c)),
            )
            | "Counts" >> beam.Flatten()
            | "CountDict" >> beam.combiners.ToDict()
        )
        return {
            "decisions": decisions,
            "sizes": sizes,
            "plan": plan,
            "recall": recall,
            "clusters": clusters,
            "examples": examples,
            "counts": counts,
            "verify": verify_report,
            "n": n,
        }
