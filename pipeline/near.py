"""Near-duplicate removal and decontamination in Beam; the decisions are
:func:`mitigate.near.decide_near_duplicates`.

::

    survivors ─ (key, pHash, mirror pHash, resolution) ─ ToList ─┐
    reference shards ─ decode + hash ─ ToList ─┐                  ├─ decide (one worker)
    reference hash lists (from the config) ────┴─ side input ─────┘
    decisions ─ one dict (side input) ─ every record looked up by key in one Map
        ─ duplicate / eval_overlap records

The search runs in one worker over a ``HashItem`` per survivor (key, two pHashes,
resolution: about 340 bytes as Python objects, so ~340 MB for 1M samples, measured by
``benchmarks/hashitem_bytes.py``; exact multi-index search of 1M hashes takes ~60 s, see
BENCHMARKS.md; with ``dedup.verify`` each item also carries its 1,536-byte verification
signature, ~1.9 GB for 1M samples). The records themselves do not go to that worker:
they meet the decisions as a side input, one dict of the decisions by key (a decision
is ~100 bytes and exists only for the items that worker held: smaller than the items).
Every record, settled or not, passes one Map that looks its key up (pending records,
and exact duplicates their kept copy's: ``join_key``), so no record is split off and
rejoined: on the local runner a CoGroupByKey is a
Flatten and a GroupByKey, each an encode and decode of every record it carries, and the
rejoining Flatten a third (BENCHMARKS.md, "Fewer record encodes").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.pvalue import AsSingleton

from mitigate import keep, stages
from mitigate.config import DecodeConfig, DedupConfig
from mitigate.near import (
    NOT_MERGED,
    HashItem,
    decide_near_duplicates,
    references,
    without_mirror,
)
from mitigate.pipeline import fs, sigstore
from mitigate.pipeline.signatures import without_signature
from mitigate.records import DUPLICATE, PENDING, Reason, SampleRecord
from mitigate.sources import index_tar
from mitigate.workers import PairScorer


def reference_hashes(path: str, decode: DecodeConfig) -> Iterator[tuple[str, str, str]]:
    """(key, pHash, mirror pHash) of every decodable image of a reference shard."""
    with fs.open_read(path) as f:
        records = [
            r
            for r in index_tar(f, path, max_image_bytes=decode.max_image_bytes)
            if isinstance(r, SampleRecord)
        ]
    payloads = stages.load_payloads(
        records, fs.open_read, decode.max_image_bytes, decode.max_caption_bytes
    )
    for item in stages.compute_signals(payloads, decode):
        if item.record.phash is not None:
            yield (item.record.key, item.record.phash, item.record.phash_mirror)


def _decide(
    items: list[HashItem],
    shard_refs: list,
    dedup: DedupConfig,
    processes: int = 1,
    store: str | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """``store``: where the items' signatures wait (their ``ref``; pipeline/sigstore.py)."""
    if store is not None:
        items = sigstore.fill(store, items)
        if not dedup.mirror:  # the signatures read back: marked as _item marks them
            items = [without_mirror(it) for it in items]
    refs = references(shard_refs, dedup)
    with PairScorer(processes) as score_pairs:
        decisions, report = decide_near_duplicates(
            items,
            dedup.k,
            mode=dedup.mode,
            references=refs,
            search=dedup.near,
            verify_threshold=dedup.verify_threshold if dedup.verify else None,
            keep_rule=dedup.keep,
            score_pairs=score_pairs,
            centre_view=dedup.centre_view,
        )
    if dedup.near:
        from mitigate.pipeline.near_partitioned import check_recall

        report.update(partition="none", partitions=1, largest_partition=report["items"])
        report["clusterings"] = 1
        for view in ("pair_recall", "pair_recall_centre"):  # centre: LSH mode with it on
            if report.get(view):
                check_recall(report[view], dedup)
    return decisions, report


def decisions_by_key(
    decided: tuple[list[Any], dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``_decide``'s (decisions, report) with the decisions as ``{key: decision}`` (a
    key has one decision; were there two, the first in the list would stand, where the
    join took either)."""
    out: dict[str, Any] = {}
    for d in decided[0]:
        out.setdefault(d.key, d)
    return out, decided[1]


def join_key(record: SampleRecord) -> str | None:
    """The key whose near-dup decision ``record`` takes, or None: a pending record its
    own; an exact duplicate its kept copy's (``duplicate_of``), which near-dedup may
    remove in turn (:func:`_copy_of_removed`); any other settled record none."""
    if record.state == PENDING:
        return record.key
    if record.state == DUPLICATE and record.reason == Reason.EXACT_DUPLICATE:
        return record.duplicate_of
    return None


def _copy_of_removed(record: SampleRecord, d: Any) -> SampleRecord:
    """An exact duplicate whose kept copy near-dedup removed (decision ``d``): it follows
    that copy, so that ``duplicate_of`` names a kept sample (or, for an eval overlap, the
    reference) as it does for every other duplicate, not a sample that is gone. Same
    bytes, so the copy's distance and verification score are its own; the detail names
    both steps."""
    what = "a reference image" if d.reason == Reason.EVAL_OVERLAP else "a kept sample"
    verified = "" if d.verify_score is None else f", verification score {d.verify_score:.3f}"
    hashes = "pHash" if d.verify_score is None else "pHash or centre view"
    return dataclasses.replace(
        record,
        reason=d.reason,
        duplicate_of=d.duplicate_of,
        distance=d.distance,
        verify_score=d.verify_score,
        detail=f"same image bytes as {record.duplicate_of!r}, whose {hashes} is within "
        f"{d.distance} bits of {what}, {d.duplicate_of!r}{verified}",
    )


def _apply(record: SampleRecord, decisions: dict[str, Any], light: bool) -> SampleRecord:
    """``record`` with its near-dup decision applied (pending records, and exact
    duplicates whose kept copy near-dedup removed: :func:`join_key`; any other settled
    record, e.g. a later duplicate key, is never looked up), without its signature where
    ``light``."""
    if light:
        record = without_signature(record)
    if record.state != PENDING:
        key = join_key(record)
        d = None if key is None else decisions.get(key)
        if d is None or d.reason == NOT_MERGED:
            return record
        return _copy_of_removed(record, d)
    d = decisions.get(record.key)
    if d is None:
        return record
    if d.reason == NOT_MERGED:
        return dataclasses.replace(
            record,
            verify_score=d.verify_score,
            detail=f"not merged: within {d.distance} bits of {d.duplicate_of!r} on pHash "
            f"or the centre view "
            f"but verification score {d.verify_score:.3f} > threshold (different images)",
        )
    what = "a reference image" if d.reason == Reason.EVAL_OVERLAP else "a kept sample"
    verified = "" if d.verify_score is None else f", verification score {d.verify_score:.3f}"
    # a verified pair may come from the centre view (mitigate.centre): its distance is
    # the smaller of the two views'; unverified pairs and reference matches are pHash's
    hashes = "pHash" if d.verify_score is None else "pHash or centre view"
    return dataclasses.replace(
        record,
        state=DUPLICATE,
        reason=d.reason,
        duplicate_of=d.duplicate_of,
        distance=d.distance,
        verify_score=d.verify_score,
        detail=f"{hashes} within {d.distance} bits of {what}, {d.duplicate_of!r}{verified}",
    )


def apply_joined(element: tuple[str, dict[str, list]]) -> Iterator[SampleRecord]:
    """:func:`_apply` on a CoGroupByKey's group (the partitioned graph, whose decisions
    are too many for a side input): the records joined by one key (:func:`join_key`:
    the pending record of that key and the exact duplicates kept in its favour), and
    its decision if any."""
    key, grouped = element
    decisions = {key: grouped["decision"][0]} if grouped["decision"] else {}
    for record in grouped["record"]:
        yield _apply(record, decisions, False)


class NearDedup(beam.PTransform):
    """Records in, records out (survivors decided), plus a one-dict report.

    ``dedup.partitioned_on(runner)`` picks the partitioned graph
    (:mod:`mitigate.pipeline.near_partitioned`); otherwise the one-worker graph above."""

    def __init__(
        self,
        dedup: DedupConfig,
        decode: DecodeConfig,
        runner: str = "direct",
        processes: int = 1,
        light: bool = False,
        store: str | None = None,
    ) -> None:
        super().__init__()
        # the run's signature store (runner.spill_signatures): the records carry no
        # signature, their items a ref to it, read back by the one-worker decision
        self.store = store
        # records out without their signatures (read here, by the items, and taken out
        # for the manifest by the caller: pipeline/signatures.py)
        self.light = light
        self.dedup = dedup
        self.decode = decode  # to hash reference shards as the run hashes its input
        # processes that verify candidate pairs in the one-worker decision (decode.processes)
        self.processes = processes
        self.partitioned = dedup.partitioned_on(runner)

    def expand(self, records: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        if self.partitioned:
            from mitigate.pipeline.near_partitioned import PartitionedNearDedup

            return records | "Partitioned" >> PartitionedNearDedup(
                self.dedup, self.decode, self.light
            )
        pipeline = records.pipeline
        pending = records | "Pending" >> beam.Filter(lambda r: r.state == PENDING)
        items = (
            pending
            | "HashItems" >> beam.Map(_item, self.store is not None, self.dedup.mirror)
            | "AllHashes" >> Gather()
        )
        shard_refs = (
            pipeline
            | "ReferenceShards" >> beam.Create(list(self.dedup.reference_shards))
            | "ReferenceFiles" >> beam.FlatMap(_expand_glob)
            | "ReferenceHashes" >> beam.FlatMap(reference_hashes, self.decode)
            | "AllReferences" >> beam.combiners.ToList()
        )
        # (decisions by key, report): one element, so the decisions are pickled for Beam's
        # element-size estimates once, not again for a PCollection of the dict alone
        decided = items | "Decide" >> beam.Map(
            lambda i, refs, dedup, processes, store: decisions_by_key(
                _decide(i, refs, dedup, processes, store)
            ),
            AsSingleton(shard_refs),
            self.dedup,
            self.processes,
            self.store,
        )
        report = decided | "Report" >> beam.Map(lambda d: d[1])
        # one Map over every record (no split and rejoin: module docstring)
        joined = records | "Apply" >> beam.Map(
            lambda r, decided, light: _apply(r, decided[0], light), AsSingleton(decided), self.light
        )
        return joined, report


def _item(r: SampleRecord, stored: bool, mirror: bool = True) -> HashItem:
    """A pending record's item; with ``stored`` signatures its ``ref`` instead of a
    signature (the record has none: pipeline/sigstore.py). Without ``mirror``
    (``dedup.mirror: false``) its mirror hashes are its own and its signature marked
    (:func:`mitigate.near.without_mirror`): every search and verification after this,
    in either graph, then leaves mirror images apart."""
    item = HashItem(
        r.key,
        r.phash,
        r.phash_mirror,
        keep.size_key(r.resolution, r.quality),
        r.signature,
        r.phash_centre,
        sigstore.ref(r) if stored else None,
    )
    return item if mirror else without_mirror(item)


class Gather(beam.PTransform):
    """All elements as one list, also when there are none; ``beam.combiners.ToList``
    without its default injection, which hands the whole list to one more step as a
    side input (one more copy of every item, signatures included, on the local runner:
    BENCHMARKS.md, "Beam worker memory per sample"). Order is arbitrary, as ToList's."""

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        # one None-valued seed, so that the single group exists when the input is empty
        seed = pcoll.pipeline | "Seed" >> beam.Create([(None, None)])
        return (
            (pcoll | "Keyed" >> beam.Map(lambda x: (None, x)), seed)
            | "WithSeed" >> beam.Flatten()
            | "Group" >> beam.GroupByKey()
            | "List" >> beam.Map(lambda kv: [x for x in kv[1] if x is not None])
        )


def lighten(records: beam.PCollection, light: bool, label: str) -> beam.PCollection:
    """``records`` without their signatures where ``light`` (pipeline/signatures.py)."""
    if not light:
        return records
    return records | label >> beam.Map(without_signature)


def _expand_glob(pattern: str) -> list[str]:
    return next(iter(fs.match([pattern]).values()))
