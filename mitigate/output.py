"""Output formats: kept-sample tar shards, the Parquet manifest, per-state counts.

Everything here writes to a binary file object and is deterministic: the same records
give the same bytes (fixed tar metadata, sorted JSON keys, explicit Parquet schema),
so two runs, or two runners, can be compared byte for byte.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mitigate.records import FINAL_STATES, Member, SampleRecord
from mitigate.sidecar import json_text

#: JPEG files by other names, written as ``KEY.jpg``: WebDataset's decoders and a
#: trainer's ``to_tuple("jpg;png")`` know ``jpg`` (helper-45: ``.mpo`` stayed bytes)
JPEG_NAMES = {"jfif": "jpg", "jpe": "jpg", "mpo": "jpg"}

SIDECAR_KEY = "mitigate"  # our signals go under this key of KEY.json, beside the input's own

_BASE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("key", pa.string()),
    ("source", pa.string()),
    ("index", pa.int64()),
    ("state", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
    ("filter", pa.string()),
    ("threshold", pa.float64()),
    ("duplicate_of", pa.string()),
    ("distance", pa.int32()),
    ("caption", pa.string()),
    ("other_captions", pa.list_(pa.struct([("field", pa.string()), ("text", pa.string())]))),
    ("image_ext", pa.string()),
    ("image_path", pa.string()),
    ("n_bytes", pa.int64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("format", pa.string()),
    ("quality", pa.int32()),
    ("sha256", pa.string()),
    ("phash", pa.string()),
    ("phash_mirror", pa.string()),
    ("weight", pa.float64()),
    ("copies", pa.int32()),
    ("verify_score", pa.float64()),
    ("signature", pa.binary()),
    ("phash_centre", pa.string()),
    ("image_column", pa.string()),
    ("row_fields", pa.string()),
]
# Where each member's data lies in the source tar (or, ``name``, which file of a folder
# source it is), so later tools (redecide, select) can read a sample's bytes again
# without re-indexing.
_MEMBERS = pa.list_(
    pa.struct(
        [("ext", pa.string()), ("offset", pa.int64()), ("size", pa.int64()), ("name", pa.string())]
    )
)


def manifest_schema(filter_ids: Sequence[str]) -> pa.Schema:
    """One column per base field, plus ``score_<id>`` and ``info_<id>`` per filter."""
    fields = [pa.field(name, typ) for name, typ in _BASE_COLUMNS]
    fields.append(pa.field("members", _MEMBERS))
    for fid in filter_ids:
        fields += [pa.field(f"score_{fid}", pa.float64()), pa.field(f"info_{fid}", pa.string())]
    return pa.schema(fields)


#: Columns a manifest of an earlier version may lack: its rows are read with them null
#: (``phash_centre``: pHash alone searches those samples; ``quality``: the keep rule
#: takes every copy as lossless; ``signature``: redecide's own check names it).
_ADDED_SINCE = frozenset(
    {
        "verify_score",
        "signature",
        "phash_centre",
        "image_column",
        "row_fields",
        "quality",
        "other_captions",
    }
)


def missing_columns(names: Sequence[str]) -> list[str]:
    """The base columns (and ``members``) of this version's manifest not in ``names``:
    a manifest of another version, whose rows :func:`record_from_row` cannot rebuild
    (without ``members`` no sample's bytes can be found again)."""
    have = set(names)
    wanted = [*(name for name, _ in _BASE_COLUMNS if name not in _ADDED_SINCE), "members"]
    return [n for n in wanted if n not in have]


def manifest_row(record: SampleRecord, filter_ids: Sequence[str]) -> dict[str, Any]:
    row = {name: getattr(record, name) for name, _ in _BASE_COLUMNS}
    row["members"] = [
        {"ext": m.ext, "offset": m.offset, "size": m.size, "name": m.name} for m in record.members
    ]
    row["other_captions"] = [{"field": f, "text": t} for f, t in record.other_captions or ()]
    for fid in filter_ids:
        row[f"score_{fid}"] = record.scores.get(fid)
        row[f"info_{fid}"] = record.score_info.get(fid)
    return row


def record_from_row(row: dict[str, Any], filter_ids: Sequence[str]) -> SampleRecord:
    """Rebuild a record from a manifest row (the inverse of :func:`manifest_row`,
    without embeddings, which live in their own files)."""
    fields = {name: row.get(name) for name, _ in _BASE_COLUMNS}
    others = row.get("other_captions")  # no such key: a manifest of an earlier version
    fields["other_captions"] = (
        tuple((o["field"], o["text"]) for o in others or ()) if "other_captions" in row else None
    )
    members = tuple(
        Member(m["ext"], m["offset"], m["size"], m.get("name")) for m in row.get("members") or []
    )
    scores = {f: row[f"score_{f}"] for f in filter_ids if row.get(f"score_{f}") is not None}
    info = {f: row[f"info_{f}"] for f in filter_ids if row.get(f"info_{f}") is not None}
    return SampleRecord(**fields, members=members, scores=scores, score_info=info)


def write_embeddings(records: Sequence[SampleRecord], filter_id: str, fileobj: IO[bytes]) -> int:
    """One float16 row per record (manifest order) as ``.npy``; NaN where the record
    has no embedding (errors, or samples the model never saw). Returns the width."""
    width = next((len(r.embeddings[filter_id]) for r in records if filter_id in r.embeddings), 0)
    matrix = np.full((len(records), width), np.nan, dtype=np.float16)
    for i, record in enumerate(records):
        if filter_id in record.embeddings:
            matrix[i] = record.embeddings[filter_id]
    np.save(fileobj, matrix, allow_pickle=False)
    return width


#: Rows of a manifest part's Parquet row group: the rows are made and written a group
#: at a time, so writing a part holds one group's rows and Arrow columns, not the
#: part's (a part of 100,000 rows peaked at 1.26 GB written as one table;
#: ``benchmarks/bench_manifest_blocks.py``).
ROW_GROUP_ROWS = 16_384


def write_manifest(
    records: Iterable[SampleRecord], filter_ids: Sequence[str], fileobj: IO[bytes]
) -> int:
    """Write records, in the given order, as one Parquet file (row groups of
    :data:`ROW_GROUP_ROWS`). Returns the row count."""
    schema = manifest_schema(filter_ids)
    count = 0
    with pq.ParquetWriter(fileobj, schema, compression="zstd") as writer:
        rows: list[dict[str, Any]] = []
        for record in records:
            rows.append(manifest_row(record, filter_ids))
            if len(rows) == ROW_GROUP_ROWS:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                count, rows = count + len(rows), []
        if rows or not count:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            count += len(rows)
    return count


def sidecar(
    record: SampleRecord, meta: dict[str, Any] | None, extra: dict[str, Any] | None = None
) -> bytes:
    """KEY.json of a kept sample: the input sidecar's fields, plus our signals (and
    ``extra`` beside them: a quarantined sample's manifest row)."""
    out = dict(meta or {})
    out[SIDECAR_KEY] = {
        "source": record.source,
        "sha256": record.sha256,
        "phash": record.phash,
        "phash_mirror": record.phash_mirror,
        "width": record.width,
        "height": record.height,
        "n_bytes": record.n_bytes,
        "scores": dict(sorted(record.scores.items())),
    }
    if record.weight is not None:
        out[SIDECAR_KEY]["weight"] = record.weight
    if extra:
        out[SIDECAR_KEY].update(extra)
    try:
        text = json.dumps(out, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    except ValueError:
        # NaN or infinity (a blocklist score where no entry is near, an input sidecar's
        # NaN): strict JSON has no word for them, they are null
        return (json_text(out) + "\n").encode("utf-8")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # a lone surrogate in the input sidecar (its JSON escaped half of a pair, as a
        # string cut in the middle of an emoji): the same values, escaped as they came
        return (json.dumps(out, sort_keys=True) + "\n").encode("ascii")


def _header(name: str, size: int) -> bytes:
    """A member's tar header (a PAX header before it where the name needs one), with
    the fixed metadata every shard member gets."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


class ShardWriter:
    """Writes WebDataset samples (image, caption, sidecar, the input's other members)
    with fixed tar metadata.

    The bytes are those of ``tarfile.open(fileobj, "w|", format=PAX_FORMAT)`` adding
    each member (tests compare them): its header, the data, NULs to a 512-byte block;
    at the close two zero blocks and NULs to a 10,240-byte record. Written here, each
    member goes to the file in at most three writes; ``tarfile``'s stream mode sliced
    every member through a 10 KB buffer (65 % of the shard writer's time, BENCHMARKS.md,
    issue 14, session 19)."""

    def __init__(self, fileobj: IO[bytes]) -> None:
        self._out = fileobj
        self._offset = 0
        self.count = 0

    def _add(self, name: str, data: bytes) -> None:
        self._add_chunks(name, len(data), (data,))

    def _add_chunks(self, name: str, size: int, chunks: Iterable[bytes]) -> None:
        """A member of ``size`` bytes written as ``chunks`` come (flat memory for a
        member of any size); ``EOFError`` if they do not add up to ``size``."""
        header = _header(name, size)
        self._out.write(header)
        written = 0
        for data in chunks:
            written += len(data)
            if written > size:
                break
            self._out.write(data)
        if written != size:
            raise EOFError(f"{name}: {written} bytes where {size} were expected")
        pad = -size % tarfile.BLOCKSIZE
        if pad:
            self._out.write(tarfile.NUL * pad)
        self._offset += len(header) + size + pad

    def add(
        self,
        record: SampleRecord,
        image: bytes,
        caption: bytes,
        meta: dict | None,
        key: str | None = None,
        extra: dict[str, Any] | None = None,
        members: Iterable[tuple[str, int, Iterable[bytes]]] = (),
        not_copied: Sequence[str] = (),
    ) -> None:
        """Add one sample; ``key`` overrides the record's (resampled copies).
        ``members`` are the sample's other members, ``(ext, size, data chunks)``,
        written after ``KEY.json``; ``not_copied`` names the members left out
        (``samples.extra_members``; the sidecar lists them under ``members_not_copied``)."""
        key = key or record.key
        if not_copied:
            extra = {**(extra or {}), "members_not_copied": list(not_copied)}
        ext = record.image_ext or ""
        self._add(f"{key}.{JPEG_NAMES.get(ext, ext)}", image)
        self._add(f"{key}.txt", caption)
        self._add(f"{key}.json", sidecar(record, meta, extra))
        for ext, size, chunks in members:
            self._add_chunks(f"{key}.{ext}", size, chunks)
        self.count += 1

    def close(self) -> None:
        end = self._offset + 2 * tarfile.BLOCKSIZE
        self._out.write(tarfile.NUL * (2 * tarfile.BLOCKSIZE + -end % tarfile.RECORDSIZE))


def count_states(records: Iterable[SampleRecord]) -> dict[str, int]:
    """Counts keyed ``state`` and ``state/reason`` (mergeable by addition)."""
    counts: Counter[str] = Counter()
    for r in records:
        counts[r.state] += 1
        if r.reason:
            counts[f"{r.state}/{r.reason}"] += 1
    return dict(counts)


def check_conservation(input_count: int, counts: dict[str, int], manifest_rows: int) -> list[str]:
    """Problems with the bookkeeping, empty when every input sample is accounted for."""
    problems = []
    per_state = sum(counts.get(s, 0) for s in FINAL_STATES)
    if manifest_rows != input_count:
        problems.append(f"manifest has {manifest_rows} rows but the input has {input_count}")
    if per_state != input_count:
        problems.append(f"per-state counts add up to {per_state}, not {input_count}")
    stray = sorted(k for k in counts if "/" not in k and k not in FINAL_STATES)
    if stray:
        problems.append(f"records left in non-final states: {stray}")
    return problems


def copies_of(record: SampleRecord) -> int:
    """How many times a kept sample goes into the shards (1 unless resampled)."""
    return 1 if record.copies is None else record.copies


def copy_key(key: str, copy: int, taken: Sequence[int] = ()) -> str:
    """Key of the ``copy``-th copy of a resampled sample: the first keeps its key, the
    others are ``KEY_r1``, ``KEY_r2``, ..., skipping the numbers in ``taken`` (those of
    input samples named ``KEY_rN``: a copy under such a key wrote two samples of one key
    into the shards, and the manifest's row of that key described the other; helper-48)."""
    if copy == 0:
        return key
    number = 0
    for _ in range(copy):
        number += 1
        while number in taken:
            number += 1
    return f"{key}_r{number}"


#: An input key that a resampled copy's key could be: ``BASE_rN``.
_COPY_KEY = re.compile(r"(.+)_r([1-9][0-9]*)", re.DOTALL)


def copy_key_claims(records: Iterable[SampleRecord]) -> Iterator[tuple[str, tuple[str, int]]]:
    """(base key, claim) pairs to group by base key: ``("copies", n)`` for a sample
    written ``n > 1`` times, ``("key", N)`` for a sample whose key is ``BASE_rN``."""
    for record in records:
        n = copies_of(record)
        if n > 1:
            yield record.key, ("copies", n)
        match = _COPY_KEY.fullmatch(record.key)
        if match is not None:
            yield match[1], ("key", int(match[2]))


def taken_copy_numbers(
    element: tuple[str, Iterable[tuple[str, int]]],
) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(base key, the copy numbers its samples' keys take) for a resampled sample that
    input samples named ``BASE_rN`` would clash with; nothing for any other key."""
    base, claims = element
    claims = list(claims)
    copies = max((n for kind, n in claims if kind == "copies"), default=0)
    taken = sorted({n for kind, n in claims if kind == "key"})
    if copies > 1 and taken:
        yield base, tuple(taken)
