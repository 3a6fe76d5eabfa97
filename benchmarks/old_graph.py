"""The Beam graph's record routing as before stream 14f (the replaced code, verbatim),
for before/after rows in one run: exact dedup split the records into survivors and
settled ones and rejoined them with a Flatten; the one-worker near-dup join was a
CoGroupByKey of the pending records and the decisions, rejoined with the settled
records by another Flatten; rebalancing rejoined its kept and other records with a
third before the group by source. ``install()`` swaps them in (outputs are the same)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any


def install() -> None:
    import apache_beam as beam
    from apache_beam.pvalue import AsSingleton

    from mitigate import stages
    from mitigate.near import NOT_MERGED, HashItem
    from mitigate.pipeline import build, near
    from mitigate.records import DUPLICATE, PENDING, Reason, SampleRecord

    def _exact_dedup(records: beam.PCollection, enabled: bool) -> beam.PCollection:
        survivors = records | "Survivors" >> beam.Filter(lambda r: r.state == PENDING)
        decided = records | "Decided" >> beam.Filter(lambda r: r.state != PENDING)
        if enabled:
            survivors = (
                survivors
                | "BySha256" >> beam.Map(lambda r: (r.sha256, r))
                | "GroupSha256" >> beam.GroupByKey()
                | "ResolveExact" >> beam.FlatMap(lambda kv: stages.resolve_exact_duplicates(kv[1]))
            )
        return (survivors, decided) | "Rejoin" >> beam.Flatten()

    def _apply(element: tuple[str, dict[str, list]]) -> Iterator[SampleRecord]:
        _, grouped = element
        decisions = grouped["decision"]
        for record in grouped["record"]:
            if not decisions:
                yield record
                continue
            d = decisions[0]
            if d.reason == NOT_MERGED:
                yield dataclasses.replace(
                    record,
                    verify_score=d.verify_score,
                    detail=f"not merged: within {d.distance} bits of {d.duplicate_of!r} on "
                    f"pHash or the centre view "
                    f"but verification score {d.verify_score:.3f} > threshold (different images)",
                )
                continue
            what = "a reference image" if d.reason == Reason.EVAL_OVERLAP else "a kept sample"
            score = d.verify_score
            verified = "" if score is None else f", verification score {score:.3f}"
            hashes = "pHash" if d.verify_score is None else "pHash or centre view"
            yield dataclasses.replace(
                record,
                state=DUPLICATE,
                reason=d.reason,
                duplicate_of=d.duplicate_of,
                distance=d.distance,
                verify_score=d.verify_score,
                detail=f"{hashes} within {d.distance} bits of {what}, {d.duplicate_of!r}{verified}",
            )

    original = near.NearDedup.expand

    def expand(self: Any, records: beam.PCollection) -> Any:
        if self.partitioned:
            return original(self, records)
        pipeline = records.pipeline
        pending = records | "Pending" >> beam.Filter(lambda r: r.state == PENDING)
        others = near.lighten(
            records | "Settled" >> beam.Filter(lambda r: r.state != PENDING),
            self.light,
            "SettledLight",
        )
        items = (
            pending
            | "HashItems"
            >> beam.Map(
                lambda r: HashItem(
                    r.key, r.phash, r.phash_mirror, r.resolution, r.signature, r.phash_centre
                )
            )
            | "AllHashes" >> near.Gather()
        )
        shard_refs = (
            pipeline
            | "ReferenceShards" >> beam.Create(list(self.dedup.reference_shards))
            | "ReferenceFiles" >> beam.FlatMap(near._expand_glob)
            | "ReferenceHashes" >> beam.FlatMap(near.reference_hashes, self.decode)
            | "AllReferences" >> beam.combiners.ToList()
        )
        decided = items | "Decide" >> beam.Map(
            near._decide, AsSingleton(shard_refs), self.dedup, self.processes
        )
        decisions = decided | "Decisions" >> beam.FlatMap(lambda d: [(x.key, x) for x in d[0]])
        report = decided | "Report" >> beam.Map(lambda d: d[1])
        keyed = near.lighten(pending, self.light, "PendingLight") | "ByKey" >> beam.Map(
            lambda r: (r.key, r)
        )
        joined = (
            {"record": keyed, "decision": decisions}
            | "Join" >> beam.CoGroupByKey()
            | "Apply" >> beam.FlatMap(_apply)
        )
        return (joined, others) | "Rejoin" >> beam.Flatten(), report

    build._exact_dedup = _exact_dedup
    near.NearDedup.expand = expand
    install_rebalance()


def install_rebalance() -> None:
    """Rebalancing's records rejoined by a Flatten inside it, as before stream 14f."""
    from mitigate.pipeline import build

    class Rejoined(build.Rebalance):
        def __init__(self, cfg: Any, filters: Any, rejoin: bool = True) -> None:
            super().__init__(cfg, filters, rejoin=True)

        def expand(self, records: Any) -> Any:
            final, report = super().expand(records)
            return (final,), report

    build.Rebalance = Rejoined
