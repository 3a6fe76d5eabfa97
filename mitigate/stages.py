"""The per-sample and per-group steps of the pipeline, as plain functions.

Beam code in :mod:`mitigate.pipeline` only routes records to these; every decision
the pipeline makes can be reproduced by calling them on plain lists.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Iterator, Sequence

from mitigate import hashing
from mitigate.config import DecodeConfig
from mitigate.decode import DecodedImage, DecodeFailure, decode_images
from mitigate.filters import Drop, Filter, ScoringItem
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
from mitigate.sidecar import carried_captions, other_captions, parse_sidecar, refused
from mitigate.sources import CAPTION_EXTS, FORMAT_EXTS, IMAGE_EXTS, JSON_EXT, parse_payload
from mitigate.tables import read_errors
from mitigate.text import shown


def load_payloads(
    records: Sequence[SampleRecord],
    open_source: Opener,
    max_image_bytes: int,
    max_caption_bytes: int | None = None,
) -> list[tuple[SampleRecord, bytes | None]]:
    """Read the image bytes (and check caption/sidecar) of records from one source.

    Tar records are read by member offset from one open handle of their shard; table
    records by opening their image path, or from the table at their row where it holds
    the images. Read failures become ``error`` records.
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
                    data = reader.members(record, {*IMAGE_EXTS, *CAPTION_EXTS, JSON_EXT})
                    payload = parse_payload(record, data, max_caption_bytes)
                    if isinstance(payload, SampleRecord):
                        out.append((payload, None))
                        continue
                    record.caption = payload.caption
                    record.other_captions = payload.others
                    out.append((record, payload.image))
                else:
                    out.append(_read_image_file(record, reader, max_image_bytes))
            except (OSError, EOFError) as exc:
                name = getattr(exc, "filename", None)
                why = f"{exc.strerror}: {shown(str(name))}" if name and exc.strerror else exc
                out.append((record.with_error(Reason.READ_ERROR, f"cannot read: {why}"), None))
    return out


def fill_other_captions(
    records: Sequence[SampleRecord], open_source: Opener, max_caption_bytes: int | None = None
) -> list[SampleRecord]:
    """Each record's other captions where its manifest had no such column (a run before
    they were read: a redecide kept a sidecar's harmful alt text, helper-44): from a
    table row's carried columns, or from its tar sample's ``.json`` sidecar, read again,
    held to ``max_caption_bytes`` as a fresh run holds them. The records are the
    redecide's own, just rebuilt from their rows: filled in place."""
    out = []
    with SampleReader(open_source) as reader:
        for record in records:
            if record.other_captions is not None or record.state == ERROR:
                out.append(record)
                continue
            caption = record.caption or ""
            if not record.members:
                record.other_captions = carried_captions(record.row_fields, caption)
            else:
                try:
                    data = reader.members(record, {JSON_EXT})
                except (OSError, EOFError):
                    data = {}  # gone or changed since: the shard writer says so
                meta = parse_sidecar(data[JSON_EXT])[0] if JSON_EXT in data else None
                record.other_captions = other_captions(meta, caption)
            problem = refused(record.other_captions, max_caption_bytes)
            out.append(record.with_error(*problem) if problem else record)
    return out


def _read_image_file(
    record: SampleRecord, reader: SampleReader, max_image_bytes: int
) -> tuple[SampleRecord, bytes | None]:
    if record.image_column is not None:
        return _read_embedded(record, reader, max_image_bytes)
    path = record.image_path or ""
    try:
        data = reader.file(path, max_image_bytes)
    except FileNotFoundError:
        hint = " (a Windows path? write / between folders)" if "\\" in path else ""
        detail = f"image file not found: {shown(path)}{hint}"
        return record.with_error(Reason.MISSING_IMAGE, detail), None
    if len(data) > max_image_bytes:
        detail = f"{path} is larger than max_image_bytes {max_image_bytes}"
        return record.with_error(Reason.IMAGE_TOO_LARGE, detail), None
    record.n_bytes = len(data)
    return record, data


def _read_embedded(
    record: SampleRecord, reader: SampleReader, max_image_bytes: int
) -> tuple[SampleRecord, bytes | None]:
    """A table's image bytes at ``record``'s row (a Parquet binary or datasets Image)."""
    where = f"column {record.image_column!r}, row {record.index}"
    try:
        data = reader.embedded(record)
    except (KeyError, *read_errors("parquet")) as exc:
        detail = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return record.with_error(Reason.READ_ERROR, f"cannot read {where}: {detail}"), None
    if data is None:
        return record.with_error(Reason.MISSING_IMAGE, f"{where} holds no image (null)"), None
    if len(data) > max_image_bytes:
        detail = f"{where}: {len(data)} bytes > max_image_bytes {max_image_bytes}"
        return record.with_error(Reason.IMAGE_TOO_LARGE, detail), None
    record.n_bytes = len(data)
    return record, data


def compute_signals(
    records: Sequence[tuple[SampleRecord, bytes | None]],
    decode: DecodeConfig,
    filters: Sequence[Filter] = (),
) -> list[ScoringItem]:
    """Decode each image once: sha256, size, pHash pair, and the working image.

    A sample that one of ``filters`` drops from its sha256 alone
    (:meth:`~mitigate.filters.Filter.score_before_decoding`, e.g. a blocklisted sha256)
    is decided here without being decoded; it has no pixels and no pHash.
    """
    items: list[ScoringItem | None] = []
    to_decode: list[tuple[int, SampleRecord, bytes]] = []  # (place in items, ...)
    for record, data in records:
        if data is None or record.state == ERROR:
            items.append(ScoringItem(record, None))
            continue
        record.n_bytes = len(data)
        record.sha256 = hashlib.sha256(data).hexdigest()
        early = _decide_before_decoding(record, filters)
        if early is not None:
            items.append(ScoringItem(early, None))
            continue
        to_decode.append((len(items), record, data))
        items.append(None)
    # one decode each, the chunk's hashes in one call (decode_images: the same bits)
    results = decode_images(
        [data for _, _, data in to_decode],
        max_pixels=decode.max_pixels,
        working_size=decode.working_side,
        hash_mode=decode.hash_mode,
    )
    for (at, record, _), result in zip(to_decode, results, strict=True):
        items[at] = _signals(record, result)
    return [item for item in items if item is not None]


def _signals(record: SampleRecord, result: DecodedImage | DecodeFailure) -> ScoringItem:
    """The scoring item of a decoded sample: its record with the decode's signals."""
    if isinstance(result, DecodeFailure):
        return ScoringItem(record.with_error(result.reason, result.detail), None)
    record.width, record.height, record.format = result.width, result.height, result.format
    record.quality = result.quality
    if not record.members:  # a table's image: its format names it, not its file name
        record.image_ext = FORMAT_EXTS.get(result.format, result.format.lower())
    record.phash = hashing.to_hex(result.phash)
    record.phash_mirror = hashing.to_hex(result.phash_mirror)
    record.signature = result.signature
    if result.centre is not None:
        record.phash_centre = hashing.to_hex_pair(*result.centre)
    return ScoringItem(record, result.working)


def _decide_before_decoding(record: SampleRecord, filters: Sequence[Filter]) -> SampleRecord | None:
    """``record`` filtered by the first filter (config order) whose score from the sha256
    alone drops it, with that score stored; ``None`` when none does."""
    for flt in filters:
        score = flt.score_before_decoding(record)
        if score is None:
            continue
        scored = record.copy()
        scored.scores[flt.filter_id] = float(score.value)
        if score.info:
            scored.score_info[flt.filter_id] = score.info
        drop = flt.decide(scored)
        if drop is not None:
            return _dropped(scored, flt, drop)
    return None


def _dropped(record: SampleRecord, flt: Filter, drop: Drop) -> SampleRecord:
    return dataclasses.replace(
        record,
        state=FILTERED,
        reason=drop.reason,
        detail=drop.detail,
        filter=flt.filter_id,
        threshold=drop.threshold,
    )


def is_settled(record: SampleRecord) -> bool:
    """Errors are facts about the input, not filter decisions, and a sample filtered
    before decoding (hashed, never decoded: a sha256 on the blocklist) has no signals to
    decide it again: neither is ever re-decided. Nor is a blocklist drop without its
    score, from a run made before the blocklist was a filter (no other filter scored it).
    """
    if record.state == ERROR:
        return True
    if record.state != FILTERED:
        return False
    if record.reason == Reason.BLOCKLIST and record.filter not in record.scores:
        return True
    return record.sha256 is not None and record.phash is None


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
            return _dropped(record, flt, drop)
    return dataclasses.replace(record, state=PENDING, reason=None, detail=None, filter=None)


def _reiterable(records: Iterable[SampleRecord]) -> Iterable[SampleRecord]:
    """``records`` if they can be read twice (a list, a GroupByKey's values), else a list."""
    return list(records) if isinstance(records, Iterator) else records


def resolve_duplicate_keys(records: Iterable[SampleRecord]) -> Iterator[SampleRecord]:
    """Records sharing one key: the first occurrence (by source, index) stands; each
    later one becomes an ``error``/``duplicate_key`` naming the first. A record whose
    key is itself invalid (``invalid_key``: empty, absolute, ``..``) owns no key and
    keeps its own error: two empty keys are two invalid keys, not a duplicate. A later
    occurrence that is an error already (``decode_error``, ``missing_caption``, ...)
    keeps its reason, its detail naming the first occurrence too: it is written
    nowhere, and its own reason says what is wrong with it.

    Two passes over ``records`` (a GroupByKey's values are read again, not held): a key
    that a million samples share (a table whose key column is constant) costs no memory
    a sample. The records come out in the order they came in."""
    records = _reiterable(records)
    keyed = (r.order for r in records if r.reason != Reason.INVALID_KEY)
    first = min(keyed, default=None)
    if first is None:
        yield from records
        return
    detail = f"already used at {first[0]} (sample {first[1]})"
    alike = (
        "; inputs that name their samples alike (two img2dataset downloads)? "
        "input.key_prefix: source keeps both"
    )
    for rec in records:
        if rec.reason == Reason.INVALID_KEY or rec.order == first:
            yield rec
        elif rec.state == ERROR:
            yield dataclasses.replace(rec, detail=f"{rec.detail}; its key is {detail}")
        else:
            hint = alike if rec.source != first[0] else ""
            yield rec.with_error(Reason.DUPLICATE_KEY, f"key {rec.key!r} {detail}{hint}")


def resolve_exact_duplicates(records: Iterable[SampleRecord]) -> Iterator[SampleRecord]:
    """Records with identical image bytes: keep the best by :func:`keep_rank` (highest
    resolution, then smallest key); the others become ``duplicate`` of it.

    Two passes over ``records``, as :func:`resolve_duplicate_keys`: one image that a
    million samples share (a crawl's placeholder image) costs no memory a sample. The
    records come out in the order they came in."""
    records = _reiterable(records)
    best = min((keep_rank(r) for r in records), default=None)
    if best is None:
        return
    key = best[1]
    for rec in records:
        if keep_rank(rec) == best:
            yield rec
            continue
        yield dataclasses.replace(
            rec,
            state=DUPLICATE,
            reason=Reason.EXACT_DUPLICATE,
            detail=f"same image bytes (sha256 {rec.sha256}) as {key!r}",
            duplicate_of=key,
            distance=0,
        )


def reopen(record: SampleRecord) -> SampleRecord:
    """A finished record made undecided again, for re-deciding from stored signals.

    Errors and samples filtered before decoding stay as they are (:func:`is_settled`).
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


def rescore_from_signals(record: SampleRecord, filters: Sequence[Filter]) -> SampleRecord:
    """``record`` (a copy) with the score of every filter that scores from stored
    signals alone (:attr:`~mitigate.filters.Filter.scores_from_signals`, e.g. the
    blocklist) computed again, so that ``redecide`` applies the filter as configured now
    (a changed blocklist file) rather than as it was when the run scored it."""
    chosen = [f for f in filters if f.scores_from_signals]
    if not chosen or is_settled(record):
        return record
    out = record.copy()
    for flt in chosen:
        (score,) = flt.score([ScoringItem(out, None)])
        out.scores[flt.filter_id] = float(score.value)
        if score.info:
            out.score_info[flt.filter_id] = score.info
        else:
            out.score_info.pop(flt.filter_id, None)
    return out


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
