"""Beam glue for quarantine shards (see :mod:`mitigate.quarantine`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import apache_beam as beam
from apache_beam.metrics import Metrics

from mitigate import output, quarantine
from mitigate.config import OutputConfig
from mitigate.filters import FilterConfig
from mitigate.pipeline import fs, sigstore
from mitigate.pipeline.build import part_key
from mitigate.pipeline.signatures import WithSignatures, attach
from mitigate.records import SampleRecord
from mitigate.samples import SampleReader, shard_sample

NAMESPACE = "mitigate"


class WriteQuarantine(beam.DoFn):
    """All quarantined records of one reason in one block of a source (its manifest
    part's samples, ``output.samples_per_manifest_part``) -> their shards (atomic)."""

    def __init__(
        self,
        root: str,
        filter_ids: list[str],
        per_shard: int,
        store: str | None = None,
        per_part: int = 1,
        carry: tuple[bool, bool] = (True, True),
    ) -> None:
        self.root = root
        # output.extra_members, output.table_fields: copy the samples' other tar members,
        # a table row's other columns
        self.extras, self.fields = carry
        self.filter_ids = filter_ids
        self.per_shard = per_shard
        self.store = store  # the signatures for the sidecars' rows (pipeline/sigstore.py)
        self.per_part = per_part

    def process(
        self, element: tuple[tuple[str, int, int], Iterable[SampleRecord]]
    ) -> Iterator[dict]:
        (reason, ordinal, block), group = element
        group = list(group)
        if self.store is not None and group:
            signatures = sigstore.read_block(self.store, group[0].source, block, self.per_part)
            group = attach(group, signatures)
        for number, records in enumerate(quarantine.chunks(group, self.per_shard)):
            path = quarantine.shard_path(reason, ordinal, number, block)
            name = fs.join(self.root, path)
            with fs.atomic_write(name) as f:
                writer = output.ShardWriter(f)
                try:
                    # one reader per shard: one open handle per source, not per sample
                    with SampleReader(fs.open_read) as reader:
                        for record in records:
                            got = shard_sample(reader, record, self.extras, self.fields)
                            extra = quarantine.manifest_extra(record, self.filter_ids)
                            writer.add(
                                record, got.image, got.caption, got.meta, extra=extra,
                                members=got.members, not_copied=got.not_copied,
                            )  # fmt: skip
                finally:
                    writer.close()
            Metrics.counter(NAMESPACE, f"quarantined/{reason}").inc(writer.count)
            yield {"shard": path, "samples": writer.count}


class Quarantine(beam.PTransform):
    """Final records -> quarantine shards of the dropped ones (per reason and source)."""

    def __init__(
        self,
        output: OutputConfig,
        filters: Sequence[FilterConfig],
        root: str,
        ordinals: dict[str, int],
        signatures: beam.PCollection | None = None,
        store: str | None = None,
    ) -> None:
        super().__init__()
        self.output = output
        # (order, signature) pairs taken out of the records (pipeline/signatures.py), or
        # the store they wait in (pipeline/sigstore.py)
        self.signatures = signatures
        self.store = store
        self.filter_ids = [f.filter_id for f in filters]  # the manifest row's score columns
        self.root = root
        self.ordinals = ordinals

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        out = self.output
        filter_ids = self.filter_ids
        ordinals = self.ordinals
        per_part = out.samples_per_manifest_part
        dropped = records | "Dropped" >> beam.Filter(
            quarantine.wanted, out.quarantine, out.quarantine_duplicates
        )
        if self.signatures is not None:  # the sidecars' manifest rows carry them
            dropped = dropped | "WithSignatures" >> WithSignatures(self.signatures)
        return (
            dropped
            # embeddings stay out of the shuffle: the shards do not carry them
            | "ByReasonSource"
            >> beam.Map(
                lambda r: (
                    (r.reason, *part_key(ordinals[r.source], r.index, per_part)),
                    dataclasses.replace(r, embeddings={}),
                )
            )
            | "GroupReasonSource" >> beam.GroupByKey()
            | "WriteQuarantine"
            >> beam.ParDo(
                WriteQuarantine(
                    self.root,
                    filter_ids,
                    out.samples_per_shard,
                    self.store,
                    per_part,
                    (out.extra_members, out.table_fields),
                )
            )
        )
