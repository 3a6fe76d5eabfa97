"""The Beam graph. It only routes records; every decision is a call into the core.

::

    sources ─ index (one element per shard/table) ─ chunks ─ Reshuffle
      ─ ProcessChunk: read bytes, decode once, signals, filter scores, decisions
      ─ group by key: later duplicate keys are errors
      ─ group by sha256 (survivors; settled records pass alone): exact duplicates
      ─ NearDedup (dedup.near / dedup.against; pipeline/near.py, one worker, or
        pipeline/near_partitioned.py): near duplicates, eval overlap
      ─ finalize ─ Rebalance (rebalance.enabled; pipeline/rebalance.py): fit on a
        bounded sample, weights as a side input
      ─ group by source: manifest part per source (sorted), kept lists
      ─ global offsets of kept samples ─ group by output shard ─ write shard
      ─ summary.json (after every writer, with the conservation check)

Image bytes exist only inside ``ProcessChunk`` and the shard writer; every shuffle
moves light records, so memory does not grow with image volume on any runner. The
verification signatures and stored embeddings do not ride along: with
``runner.spill_signatures`` (the local runner) the decode step writes them to files of
the staging folder, and the near-dup decision, rebalancing and the manifest and
quarantine writers read them back (pipeline/sigstore.py); otherwise the signatures leave
the records after exact dedup, the near-dup items take theirs in the same stage, the
manifest gets them back by source (pipeline/signatures.py). No step splits the records
and rejoins them with a Flatten (the local runner encodes every record a Flatten
carries once more): the only Flatten of records is the group by source's.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import AsDict, AsList, AsSingleton

from mitigate import output, progress, stages
from mitigate.config import Config, OutputConfig
from mitigate.decode_pool import plan_processes
from mitigate.filters import FilterConfig, build_filter
from mitigate.filters.probe import apply_heads, backbones, is_head
from mitigate.layout import Layout
from mitigate.pipeline import fs, sigstore
from mitigate.pipeline.index import CHUNKS, ISSUES, IndexSource
from mitigate.pipeline.near import NearDedup
from mitigate.pipeline.process import NAMESPACE, ProcessChunk
from mitigate.pipeline.rebalance import Rebalance
from mitigate.pipeline.signatures import (
    SourceSignature,
    attach,
    by_source,
    signature_of,
    without_signature,
)
from mitigate.records import KEPT, PENDING, SampleRecord
from mitigate.runners import beam_memo
from mitigate.samples import SampleReader, shard_sample
from mitigate.sidecar import summary_bytes
from mitigate.sources import SourceIssue

log = logging.getLogger(__name__)

# Beam's per-DoFn introspection, memoised: a fixed ~5 s a run otherwise (runners/beam_memo.py)
beam_memo.install()
# Multi-output DoFns here emit (tag, value) pairs that `split` routes: runners differ in
# how well they support tagged outputs (Beam's Dask runner mixes them up), plain
# filters work everywhere.
PARTS = "parts"
KEPT_TAG = "kept"


def split(tagged: beam.PCollection, label: str, tags: list[str]) -> dict[str, beam.PCollection]:
    """Route (tag, value) pairs to one PCollection per tag."""
    return {
        tag: tagged
        | f"{label}[{tag}]" >> beam.FlatMap(lambda tv, t: [tv[1]] if tv[0] == t else [], tag)
        for tag in tags
    }


def exact_key(record: SampleRecord) -> tuple:
    """The exact-dedup group of ``record``: its sha256 if it is undecided, else its
    own (``record.order`` names one input occurrence), so settled records pass through
    the same GroupByKey alone instead of being split off and rejoined."""
    if record.state == PENDING:
        return ("sha256", record.sha256)
    return ("settled", *record.order)


def resolve_exact(element: tuple[tuple, Iterable[SampleRecord]]) -> list[SampleRecord]:
    """One exact-dedup group out: undecided records resolved, a settled one as it is."""
    key, group = element
    if key[0] == "settled":
        return list(group)
    return stages.resolve_exact_duplicates(group)


def _exact_dedup(records: beam.PCollection, enabled: bool) -> beam.PCollection:
    # One GroupByKey of every record, no Flatten: on the local runner a Flatten writes
    # and reads every record it carries once more (BENCHMARKS.md, "Fewer record encodes")
    if not enabled:
        return records
    return (
        records
        | "BySha256" >> beam.Map(lambda r: (exact_key(r), r))
        | "GroupSha256" >> beam.GroupByKey()
        | "ResolveExact" >> beam.FlatMap(resolve_exact)
    )


PartKey = tuple[int, int]
"""(source ordinal, block): a manifest part; block ``index // samples_per_manifest_part``."""


def part_key(ordinal: int, index: int, per_part: int) -> PartKey:
    """The manifest part of sample ``index`` of source ``ordinal``."""
    return ordinal, index // per_part


class WriteManifestPart(beam.DoFn):
    """The records of one block of a source (``output.samples_per_manifest_part``
    samples) -> manifest/part-NNNNNN[_BBBBBB].parquet, sorted by index."""

    def __init__(
        self,
        layout: Layout,
        filter_ids: list[str],
        embedding_ids: list[str],
        store: str | None = None,
        per_part: int = 1,
    ) -> None:
        self.layout = layout
        self.filter_ids = filter_ids
        self.embedding_ids = embedding_ids
        self.store = store  # signatures read from files (pipeline/sigstore.py), or beside
        self.per_part = per_part

    def process(self, element: tuple[PartKey, Iterable[SampleRecord | None]]) -> Iterator[Any]:
        (ordinal, block), group = element
        # None: the marker every source sends to its first block (a source without a
        # sample gets its empty part); signatures come beside records (signatures.py).
        signatures: dict[int, bytes] = {}
        light: list[SampleRecord] = []
        for element in group:
            if isinstance(element, SourceSignature):
                signatures[element.index] = element.signature
            elif element is not None:
                light.append(element)
        if self.store is not None and light:
            signatures = sigstore.read_block(self.store, light[0].source, block, self.per_part)
        records = attach(sorted(light, key=lambda r: r.index), signatures)
        if self.store is not None:  # the embeddings the decode step kept in files
            records = sigstore.with_embeddings(
                self.store, records, self.embedding_ids, block, self.per_part
            )
        with fs.atomic_write(self.layout.manifest_part(ordinal, block)) as f:
            rows = output.write_manifest(records, self.filter_ids, f)
        for fid in self.embedding_ids:
            with fs.atomic_write(self.layout.embeddings_part(fid, ordinal, block)) as f:
                output.write_embeddings(records, fid, f)
        # written; downstream needs no embeddings nor signatures (copies: inputs are
        # never mutated)
        records = [
            dataclasses.replace(r, embeddings={}, signature=None)
            if r.embeddings or r.signature is not None
            else r
            for r in records
        ]
        counts = output.count_states(records)
        for name, n in counts.items():
            Metrics.counter(NAMESPACE, f"state/{name}").inc(n)
            progress.emit(f"state/{name}", n)
        kept = [r for r in records if r.state == KEPT]
        to_write = sum(output.copies_of(r) for r in kept)
        yield (
            PARTS,
            {"part": [ordinal, block], "rows": rows, "counts": counts, "to_write": to_write},
        )
        if kept:
            yield (KEPT_TAG, ((ordinal, block), kept))


def _offsets(counts: dict[PartKey, int]) -> dict[PartKey, int]:
    """Global index of each part's first kept sample, in input order."""
    out, total = {}, 0
    for key in sorted(counts):
        out[key] = total
        total += counts[key]
    return out


def _assign_shards(
    element: tuple[PartKey, list[SampleRecord]], offsets: dict[PartKey, int], per_shard: int
) -> Iterator[tuple[int, tuple[int, SampleRecord, int]]]:
    """(shard id, (global position, record, copy number)) for every sample to write;
    resampled samples appear once per copy, consecutively."""
    key, kept = element
    position = offsets[key]
    for record in kept:
        for copy in range(output.copies_of(record)):
            yield position // per_shard, (position, record, copy)
            position += 1


class WriteShard(beam.DoFn):
    """Kept records of one output shard -> shards/shard-NNNNNN.tar (atomic)."""

    def __init__(self, layout: Layout, output: OutputConfig) -> None:
        self.layout = layout
        # copy the samples' other tar members, a table row's other columns
        self.extras, self.fields = output.extra_members, output.table_fields

    def process(
        self,
        element: tuple[int, Iterable[tuple[int, SampleRecord, int]]],
        taken: dict[str, tuple[int, ...]] | None = None,
    ) -> Iterator[dict]:
        """``taken``: copy numbers input keys take, by resampled key (resample mode)."""
        shard_id, group = element
        members = sorted(group, key=lambda entry: entry[0])
        name = self.layout.shard(shard_id)
        with fs.atomic_write(name) as f:
            writer = output.ShardWriter(f)
            try:
                with SampleReader(fs.open_read) as reader:
                    for _, record, copy in members:
                        got = shard_sample(reader, record, self.extras, self.fields)
                        key = output.copy_key(record.key, copy, (taken or {}).get(record.key, ()))
                        writer.add(
                            record, got.image, got.caption, got.meta, key,
                            members=got.members, not_copied=got.not_copied,
                        )  # fmt: skip
            finally:
                writer.close()
        Metrics.counter(NAMESPACE, "samples_written").inc(writer.count)
        yield {"shard": name.rsplit("/", 1)[-1], "samples": writer.count}


class WriteSummary(beam.DoFn):
    """summary.json, written after every other writer (it waits on their outputs)."""

    def __init__(self, layout: Layout, header: dict[str, Any]) -> None:
        self.layout = layout
        self.header = header

    def process(
        self,
        _: Any,
        input_count: int,
        parts: list[dict],
        shards: list[dict],
        issues: list[SourceIssue],
        rebalance: list[dict],
        dedup: list[dict],
    ) -> Iterator[dict]:
        counts: dict[str, int] = {}
        for part in parts:
            for name, n in part["counts"].items():
                counts[name] = counts.get(name, 0) + n
        manifest_rows = sum(p["rows"] for p in parts)
        written = sum(s["samples"] for s in shards)
        to_write = sum(p["to_write"] for p in parts)
        problems = output.check_conservation(input_count, counts, manifest_rows)
        if written != to_write:
            problems.append(
                f"shards hold {written} samples but {to_write} were to be written "
                f"({counts.get(KEPT, 0)} kept)"
            )
        summary = {
            **self.header,
            "input_count": input_count,
            "manifest_rows": manifest_rows,
            "counts": summarize_counts(counts),
            "shards": sorted(shards, key=lambda s: s["shard"]),
            "source_issues": sorted(
                (
                    {"source": i.source, "reason": i.reason, "detail": i.detail, "count": i.count}
                    for i in issues
                ),
                key=lambda d: (d["source"], d["reason"], d["detail"]),
            ),
            "conservation": {
                "ok": not problems,
                "problems": problems,
                # members swallowed by damaged stretches of the input, where countable
                "members_lost_in_source_issues": sum(i.count or 0 for i in issues),
                "source_issues_of_unknown_size": sum(1 for i in issues if i.count is None),
            },
            "samples_written": written,
        }
        if rebalance:
            summary["rebalance"] = rebalance[0]
        if dedup:
            summary["dedup"] = dedup[0]
        fs.write_bytes(self.layout.summary, summary_bytes(summary))
        if problems:
            raise RuntimeError("conservation check failed: " + "; ".join(problems))
        yield summary


def summarize_counts(counts: dict[str, int]) -> dict[str, Any]:
    """{'kept': {'total': n, 'reasons': {...}}, ...} with every state present."""
    out: dict[str, Any] = {}
    for state in ("kept", "filtered", "duplicate", "error"):
        reasons = {
            k.split("/", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith(state + "/")
        }
        out[state] = {"total": counts.get(state, 0), "reasons": reasons}
    return out


def build(
    pipeline: beam.Pipeline,
    config: Config,
    sources: list[str],
    header: dict[str, Any],
) -> None:
    """Add the whole run to ``pipeline``. ``sources`` are the matched input files."""
    indexed = (
        pipeline
        | "Sources" >> beam.Create(list(enumerate(sources)))
        | "Index" >> beam.ParDo(IndexSource.of(config, sources))
    )
    routed = split(indexed, "Route", [CHUNKS, ISSUES])
    chunks, issues = routed[CHUNKS], routed[ISSUES]
    input_count = (
        chunks
        | "ChunkSizes" >> beam.Map(lambda c: len(c[1]))
        | "InputCount" >> beam.CombineGlobally(sum)
    )
    records = (
        chunks
        | "Distribute" >> beam.Reshuffle()
        | "Process" >> ProcessChunk(config, input_count)
        | "ByKey" >> beam.Map(lambda r: (r.key, r))
        | "GroupKey" >> beam.GroupByKey()
        | "ResolveKeys" >> beam.FlatMap(lambda kv: stages.resolve_duplicate_keys(kv[1]))
    )
    embedding_ids = [f.filter_id for f in config.filters if f.stores_embeddings]
    _finish(pipeline, config, sources, header, records, input_count, issues, embedding_ids)


class ReadRunPart(beam.DoFn):
    """One manifest part of a finished run -> its records, with the stored embeddings
    of that part attached (rows of ``embeddings/<id>/part-N.npy`` align with it)."""

    def __init__(
        self,
        source_run: str,
        stored_filters: list[str],
        embedding_ids: list[str],
        store: str | None = None,
        max_caption_bytes: int | None = None,
    ):
        self.source_run = source_run
        self.stored_filters = stored_filters
        self.embedding_ids = embedding_ids
        self.store = store  # the signatures go there (pipeline/sigstore.py), not downstream
        self.max_caption_bytes = max_caption_bytes

    def process(self, part: str) -> Iterator[SampleRecord]:
        import io

        import numpy as np
        import pyarrow.parquet as pq

        rows = pq.read_table(io.BytesIO(fs.read_bytes(part))).to_pylist()
        matrices = {
            fid: np.load(
                io.BytesIO(fs.read_bytes(Layout(self.source_run).embeddings_beside(fid, part)))
            )
            for fid in self.embedding_ids
        }
        records = []
        for i, row in enumerate(rows):
            record = output.record_from_row(row, self.stored_filters)
            for fid, matrix in matrices.items():
                if matrix.shape[1] and np.isfinite(matrix[i]).all():
                    record.embeddings[fid] = matrix[i]
            records.append(record)
        if rows and "other_captions" not in rows[0]:  # a run of an earlier version
            records = stages.fill_other_captions(records, fs.open_read, self.max_caption_bytes)
        if self.store is not None:
            records = sigstore.spill(self.store, records)
        yield from records


def build_redecide(
    pipeline: beam.Pipeline,
    config: Config,
    source_run: str,
    parts: list[str],
    sources: list[str],
    header: dict[str, Any],
    stored_filters: list[str],
    issues: list[SourceIssue],
) -> None:
    """Re-decide a finished run from its manifest: new thresholds, no model runs.

    Errors stay errors (they are facts about the input); every other sample is decided
    again from its stored scores with ``config``'s filters, then deduplicated and
    rebalanced again (with the stored embeddings, where the config uses them).
    """
    embedding_ids = [f.filter_id for f in config.filters if f.stores_embeddings]
    # heads are scored again from their backbone's stored embeddings
    read_ids = sorted(set(embedding_ids) | backbones(config.filters))
    records = (
        pipeline
        | "ManifestParts" >> beam.Create(parts)
        | "ReadParts"
        >> beam.ParDo(
            ReadRunPart(
                source_run,
                stored_filters,
                read_ids,
                sigstore.location(config),
                config.decode.max_caption_bytes,
            )
        )
        | "Redecide" >> beam.ParDo(Redecide(config.filters))
    )
    input_count = records | "InputCount" >> beam.combiners.Count.Globally()
    carried = pipeline | "SourceIssues" >> beam.Create(issues)
    # Embeddings are not re-computed; the caller copies the original files (same rows).
    _finish(pipeline, config, sources, header, records, input_count, carried, [])


class Redecide(beam.DoFn):
    def __init__(self, filters: Sequence[FilterConfig]) -> None:
        self.filter_configs = list(filters)

    def setup(self) -> None:
        self._filters = [build_filter(c) for c in self.filter_configs]
        self._heads = [f for f in self._filters if is_head(f)]

    def process(self, record: SampleRecord) -> Iterator[SampleRecord]:
        record = stages.rescore_from_signals(stages.reopen(record), self._filters)
        yield stages.decide(apply_heads(record, self._heads), self._filters)


def _finish(
    pipeline: beam.Pipeline,
    config: Config,
    sources: list[str],
    header: dict[str, Any],
    records: beam.PCollection,
    input_count: beam.PCollection,
    issues: beam.PCollection,
    embedding_ids: list[str],
) -> None:
    """Shared tail: exact dedup, manifest, shards, summary."""
    layout = Layout(config.output.path)
    filter_ids = [f.filter_id for f in config.filters]
    ordinals = {path: i for i, path in enumerate(sources)}
    records = _exact_dedup(records, config.dedup.exact)
    store = sigstore.location(config)
    signatures = None
    if store is None:
        # From here on the signatures travel beside the records (pipeline/signatures.py):
        # the near-dup items read them in this stage, the manifest gets them back by
        # source. (With a store they left the records at the decode: pipeline/sigstore.py.)
        signatures = records | "Signatures" >> beam.FlatMap(signature_of)
    if config.dedup.near or config.dedup.against:
        records, near_report = records | "NearDedup" >> NearDedup(
            config.dedup,
            config.decode,
            config.runner.name,
            plan_processes(config.decode, config.runner)[0],
            light=True,
            store=store,
        )
    else:
        records = records | "WithoutSignatures" >> beam.Map(without_signature)
        near_report = pipeline | "NoNearDedup" >> beam.Create([])
    final = records | "Finalize" >> beam.Map(stages.finalize)
    # the final records in parts, flattened only by the group by source below (a Flatten
    # writes and reads every record once more on the local runner)
    final_parts: tuple[beam.PCollection, ...] = (final,)
    if config.rebalance.enabled:
        final_parts, rebalance_report = final | "Rebalance" >> Rebalance(
            config.rebalance, config.filters, rejoin=False, store=store
        )
    else:
        rebalance_report = pipeline | "NoRebalance" >> beam.Create([])

    if config.output.quarantine or config.output.quarantine_duplicates:
        from mitigate.pipeline.quarantine import Quarantine

        _ = (
            final_parts
            | "FinalForQuarantine" >> beam.Flatten()
            | "Quarantine"
            >> Quarantine(config.output, config.filters, layout.root, ordinals, signatures, store)
        )

    per_part = config.output.samples_per_manifest_part
    markers = pipeline | "EverySource" >> beam.Create([((i, 0), None) for i in range(len(sources))])
    by_source_parts = [
        part
        | f"BySource{i or ''}"
        >> beam.Map(
            lambda r, ordinals: (part_key(ordinals[r.source], r.index, per_part), r),
            ordinals=ordinals,
        )
        for i, part in enumerate(final_parts)
    ]
    by_source_parts.append(markers)
    if signatures is not None:
        by_source_parts.append(by_source(signatures, ordinals, per_part, "SignaturesBySource"))
    written = (
        tuple(by_source_parts)
        | "WithEmptySources" >> beam.Flatten()
        | "GroupSource" >> beam.GroupByKey()
        | "Manifest"
        >> beam.ParDo(WriteManifestPart(layout, filter_ids, embedding_ids, store, per_part))
    )
    routed = split(written, "RouteManifest", [PARTS, KEPT_TAG])
    parts, kept = routed[PARTS], routed[KEPT_TAG]
    offsets = (
        kept
        | "KeptCounts" >> beam.Map(lambda kv: (kv[0], sum(output.copies_of(r) for r in kv[1])))
        | "CountsDict" >> beam.combiners.ToDict()
        | "Offsets" >> beam.Map(_offsets)
    )
    side: dict[str, Any] = {}
    if config.rebalance.enabled and config.rebalance.mode == "resample":
        # a copy is keyed KEY_rN: the numbers that input samples' keys take are skipped
        taken = (
            final_parts
            | "FinalForCopyKeys" >> beam.Flatten()
            | "CopyKeyClaims" >> beam.FlatMap(lambda r: output.copy_key_claims([r]))
            | "GroupCopyKeys" >> beam.GroupByKey()
            | "TakenCopyNumbers" >> beam.FlatMap(output.taken_copy_numbers)
        )
        side["taken"] = AsDict(taken)
    shards = (
        kept
        | "AssignShards"
        >> beam.FlatMap(
            _assign_shards, offsets=AsSingleton(offsets), per_shard=config.output.samples_per_shard
        )
        | "GroupShard" >> beam.GroupByKey()
        | "WriteShards" >> beam.ParDo(WriteShard(layout, config.output), **side)
    )
    _ = (
        pipeline
        | "SummaryTrigger" >> beam.Create([None])
        | "Summary"
        >> beam.ParDo(
            WriteSummary(layout, header),
            input_count=AsSingleton(input_count),
            parts=AsList(parts),
            shards=AsList(shards),
            issues=AsList(issues),
            rebalance=AsList(rebalance_report),
            dedup=AsList(near_report),
        )
    )
