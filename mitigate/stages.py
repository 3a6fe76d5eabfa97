"""The per-sample and per-group steps of the pipeline, as plain functions.

Beam code in :mod:`mitigate.pipeline` only routes records to these; every decision
the pipeline makes can be reproduced by calling them on plain lists.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence

from mitigate import hashing
from mitigate.config import DecodeConfig
from mitigate.decode import DecodeFailure, decode_image
from mitigate.filters import Filter, ScoringItem
from mitigate.near import BLOCKLIST, Blocklist
from mitigate.records import (
    DUPLICATE,
    ERROR,
    FILTERED,
    KEPT,
    PENDING,
    Reason,
    SampleRecord,
    keep_rank,
)
from mitigate.samples import Opener, SampleReader
from mitigate.sources import CAPTION_EXT, IMAGE_EXTS, JSON_EXT, parse_payload


def load_payloads(
    records: Sequence[SampleRecord], open_source: Opener, max_image_bytes: int
) -> list[tuple[SampleRecord, bytes | None]]:
    """Read the image bytes (and check caption/sidecar) of records from one source.

    Tar records are read by member offset from one open handle of their shard; table
    records by opening their image path. Read failures become ``error`` records.
    """
    out: list[tuple[SampleRecord, bytes | None]] = []
    with SampleReader(open_source) as reader:
        for record in records:
            record = record.copy()  # later stages fill in signals on this copy
            if record.state == ERROR:
                out.append((record, None))
                continue
            try:
                if record.members:
                    data = reader.members(record, {*IMAGE_EXTS, CAPTION_EXT, JSON_EXT})
                    payload = parse_payload(record, data)
                    if isinstance(payload, SampleRecord):
                        out.append((payload, None))
                        continue
                    record.caption = payload.caption
                    out.append((record, payload.image))
                else:
                    out.append(_read_image_file(record, reader, max_image_bytes))
            except (OSError, EOFError) as exc:
                out.append((record.with_error(Reason.READ_ERROR, f"cannot read: {exc}"), None))
    return out


def _read_image_file(
    record: SampleRecord, reader: SampleReader, max_image_bytes: int
) -> tuple[SampleRecord, bytes | None]:
    path = record.image_path or ""
    try:
        data = reader.file(path, max_image_bytes)
    except FileNotFoundError:
        return record.with_error(Reason.MISSING_IMAGE, f"image file not found: {path}"), None
    if len(data) > max_image_bytes:
        detail = f"{path} is larger than max_image_bytes {max_image_bytes}"
        return record.with_error(Reason.IMAGE_TOO_LARGE, detail), None
    record.n_bytes = len(data)
    return record, data


def compute_signals(
    records: Sequence[tuple[SampleRecord, bytes | None]],
    decode: DecodeConfig,
    blocklist: Blocklist | None = None,
) -> list[ScoringItem]:
    """Decode each image once: sha256, size, pHash pair, and the working image.

    A sample whose sha256 is on the ``blocklist`` is filtered without being decoded; one
    whose pHash (or mirror pHash) matches a listed pHash is filtered after hashing.
    """
    items = []
    for record, data in records:
        if data is None or record.state == ERROR:
            items.append(ScoringItem(record, None))
            continue
        record.n_bytes = len(data)
        record.sha256 = hashlib.sha256(data).hexdigest()
        if blocklist is not None and record.sha256 in blocklist.sha256:
            items.append(ScoringItem(_blocked(record, "sha256 is on the blocklist", 0), None))
            continue
        result = decode_image(
            data,
            max_pixels=decode.max_pixels,
            working_size=decode.working_size,
            hash_mode=decode.hash_mode,
        )
        if isinstance(result, DecodeFailure):
            items.append(ScoringItem(record.with_error(result.reason, result.detail), None))
            continue
        record.width, record.height, record.format = result.width, result.height, result.format
        record.phash = hashing.to_hex(result.phash)
        record.phash_mirror = hashing.to_hex(result.phash_mirror)
        record.signature = result.signature
        hit = blocklist.match_phash(record.phash, record.phash_mirror) if blocklist else None
        if hit is not None:
            detail = f"pHash within {hit[1]} bits of listed {hashing.to_hex(hit[0])}"
            items.append(ScoringItem(_blocked(record, detail, hit[1]), None))
            continue
        items.append(ScoringItem(record, result.working))
    return items


def _blocked(record: SampleRecord, detail: str, distance: int) -> SampleRecord:
    return dataclasses.replace(
        record,
        state=FILTERED,
        reason=BLOCKLIST,
        filter=BLOCKLIST,
        detail=detail,
        threshold=None,
        distance=distance,
    )


def is_settled(record: SampleRecord) -> bool:
    """Errors and blocklist hits are facts about the input, not filter decisions: they
    are never re-decided."""
    return record.state == ERROR or record.reason == BLOCKLIST


def score_and_decide(items: Sequence[ScoringItem], filters: Sequence[Filter]) -> list[SampleRecord]:
    """Run every filter over the decodable items (batched), then decide each one."""
    score_items(items, filters)
    return [decide(item.record, filters) for item in items]


def score_items(items: Sequence[ScoringItem], filters: Sequence[Filter]) -> None:
    """Store every filter's score on each decodable item's record (batched per filter)."""
    live = [item for item in items if not is_settled(item.record)]
    for flt in filters:
        if not live:
            break
        scores = flt.score(live)
        if len(scores) != len(live):
            raise RuntimeError(
                f"filter {flt.filter_id} returned {len(scores)} scores for {len(live)}"
            )
        for item, score in zip(live, scores, strict=True):
            item.record.scores[flt.filter_id] = float(score.value)
            if score.info:
                item.record.score_info[flt.filter_id] = score.info


def decide(record: SampleRecord, filters: Sequence[Filter]) -> SampleRecord:
    """Apply filter decisions, in config order, to a record with stored scores.

    Errors stay errors. The first filter that drops the sample names the state;
    otherwise the record stays ``pending`` for deduplication.
    """
    if is_settled(record):
        return record
    for flt in filters:
        drop = flt.decide(record)
        if drop is not None:
            return dataclasses.replace(
                record,
                state=FILTERED,
                reason=drop.reason,
                detail=drop.detail,
                filter=flt.filter_id,
                threshold=drop.threshold,
            )
    return dataclasses.replace(record, state=PENDING, reason=None, detail=None, filter=None)


def resolve_duplicate_keys(records: Iterable[SampleRecord]) -> list[SampleRecord]:
    """Records sharing one key: the first occurrence (by source, index) stands; each
    later one becomes an ``error``/``duplicate_key`` naming the first."""
    ordered = sorted(records, key=lambda r: r.order)
    first = ordered[0]
    out = [first]
    for rec in ordered[1:]:
        detail = f"key {rec.key!r} already used at {first.source} (sample {first.index})"
        out.append(rec.with_error(Reason.DUPLICATE_KEY, detail))
    return out


def resolve_exact_duplicates(records: Iterable[SampleRecord]) -> list[SampleRecord]:
    """Records with identical image bytes: keep the best by :func:`keep_rank` (highest
    resolution, then smallest key); the others become ``duplicate`` of it."""
    ordered = sorted(records, key=keep_rank)
    best = ordered[0]
    out = [best]
    for rec in ordered[1:]:
        out.append(
            dataclasses.replace(
                rec,
                state=DUPLICATE,
                reason=Reason.EXACT_DUPLICATE,
                detail=f"same image bytes (sha256 {best.sha256}) as {best.key!r}",
                duplicate_of=best.key,
                distance=0,
            )
        )
    return out


def reopen(record: SampleRecord) -> SampleRecord:
    """A finished record made undecided again, for re-deciding from stored signals.

    Errors and blocklist hits stay as they are: they describe the input, not a policy.
    """
    if is_settled(record):
        return record
    return dataclasses.replace(
        record,
        state=PENDING,
        reason=None,
        detail=None,
        filter=None,
        threshold=None,
        duplicate_of=None,
        distance=None,
        verify_score=None,  # recomputed by near-dedup among the new survivors
        weight=None,
        copies=None,
    )


def finalize(record: SampleRecord) -> SampleRecord:
    """A record that survived every stage is kept."""
    return dataclasses.replace(record, state=KEPT) if record.state == PENDING else record


# A source's last chunks are cut to near-equal sizes over at most this many chunks' worth
# of records (light records only, so memory stays bounded per source).
BALANCE_CHUNKS = 16


def balanced_chunks(records: list[SampleRecord], chunk_size: int) -> list[list[SampleRecord]]:
    """``records`` in order, cut into the fewest chunks of at most ``chunk_size``, with
    sizes differing by at most one.

    Why: the local runner hands the chunks of a stage to its workers round-robin in
    arrival order, so a fixed short remainder per source (100 samples in chunks of 32:
    32, 32, 32, 4) landed on the same worker every time; with 2 workers one did 64 % of
    the decoding. Equal chunks balance the workers (BENCHMARKS.md, issue 14).
    """
    if not records:
        return []
    n_chunks = -(-len(records) // chunk_size)
    base, extra = divmod(len(records), n_chunks)
    out, start = [], 0
    for i in range(n_chunks):
        size = base + (1 if i < extra else 0)
        out.append(records[start : start + size])
        start += size
    return out
