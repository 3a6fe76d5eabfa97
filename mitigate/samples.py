"""The one sample reader: a sample's bytes, from its tar members or its image path.

Tar samples are read by member offset (the index recorded where each member's data
lies); consecutive samples of one source share one open handle, so reading a chunk of a
shard opens it once. Table samples are read from their image path, or from the table's
image column at their row (a Parquet table that holds the images' bytes), a batch of
rows at a time. Scoring, shard
writing and the review/report helpers all read through here (no Beam: the caller passes
the opener, e.g. ``mitigate.pipeline.fs.open_read`` for ``gs://`` paths).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import IO

from mitigate.records import Member, SampleRecord
from mitigate.sources import (
    CAPTION_EXTS,
    JSON_EXT,
    UNREAD,
    caption_member,
    key_problem,
    parse_payload,
    read_members,
)
from mitigate.table_rows import EmbeddedImages

Opener = Callable[[str], IO[bytes]]

#: A local table's identity: its path, and the inode, size and time of the file there.
TableKey = tuple[str, str, int, int, int]


class _OpenTables:
    """The image columns of local Parquet tables a process has read, kept open between
    chunks: a table of one row group (img2dataset's, pyarrow's default of 1M rows a
    group) was read from its first row for every chunk of its samples, as Parquet has
    no row offset, so reading it cost rows x chunks (helper-38: 6,000 rows 2-3.6x the
    time of 500-row groups; 10,000 rows in chunks of 64, ~78 times the rows). Kept, the
    next chunk of the table's rows goes on from where the last one stopped. A table is
    known by its path, inode, size and time, so a file replaced at its path is opened
    anew; at most :data:`OPEN_TABLES` are kept (each with one batch of rows)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._held: OrderedDict[TableKey, tuple[IO[bytes], EmbeddedImages]] = OrderedDict()
        self._lock = threading.Lock()  # threads of one process take turns at a table

    def take(self, key: TableKey) -> tuple[IO[bytes], EmbeddedImages] | None:
        with self._lock:
            return self._held.pop(key, None)

    def give(self, key: TableKey, entry: tuple[IO[bytes], EmbeddedImages]) -> None:
        with self._lock:
            stale = [self._held.pop(key)] if key in self._held else []
            self._held[key] = entry
            while len(self._held) > self._size:
                stale.append(self._held.popitem(last=False)[1])
        for handle, _ in stale:
            handle.close()


OPEN_TABLES = 4
_TABLES = _OpenTables(OPEN_TABLES)


def _table_key(source: str, column: str) -> TableKey | None:
    """A local table's :data:`TableKey` (None for a remote one or a file not there)."""
    if "://" in source:
        return None
    try:
        st = os.stat(source)
    except OSError:
        return None
    return (source, column, st.st_ino, st.st_size, st.st_mtime_ns)


class SampleReader:
    """Reads samples' bytes through ``opener``; use as a context manager (it keeps the
    current source open between calls and closes it at the end)."""

    def __init__(self, opener: Opener) -> None:
        self._opener = opener
        self._handle: IO[bytes] | None = None
        self._source: str | None = None
        self._table: EmbeddedImages | None = None  # the source's image column, if read
        self._table_handle: IO[bytes] | None = None
        self._table_key: TableKey | None = None  # where it goes back to (_TABLES)
        self._table_source: tuple[str, str] | None = None

    def _open(self, source: str) -> IO[bytes]:
        if self._source != source:
            if self._handle is not None:
                self._handle.close()
            self._handle, self._source = self._opener(source), source
        assert self._handle is not None
        return self._handle

    def members(self, record: SampleRecord, exts: set[str]) -> dict[str, bytes]:
        """The data of ``record``'s members whose extension is in ``exts``; raises
        ``OSError``/``EOFError`` if the shard (a folder's file) cannot be read or is not
        the size indexed."""
        if not any(m.name is not None for m in record.members):
            return read_members(self._open(record.source), record, exts)
        return {m.ext: b"".join(self.chunks(record, m)) for m in record.members if m.ext in exts}

    def chunks(self, record: SampleRecord, member: Member) -> Iterator[bytes]:
        """``member``'s data, :data:`CHUNK_BYTES` at a time (a member of any size is
        copied in flat memory); ``EOFError`` where the shard is shorter than indexed (a
        folder's file is not the size indexed). Read lazily: consume one member's chunks
        before asking for the next's."""
        if member.name is None:
            yield from _read_exactly(self._open(record.source), record, member)
            return
        with self._opener(record.source + member.name) as handle:  # a folder's file
            yield from _read_exactly(handle, record, member)
            if handle.read(1):
                raise EOFError(
                    f"{record.source}{member.name}: longer than the {member.size} bytes "
                    "indexed: the input changed during the run"
                )

    def embedded(self, record: SampleRecord) -> bytes | None:
        """The image bytes a table holds at ``record``'s row (None where it holds
        none); ``KeyError`` when the table has no such row or image column."""
        column = record.image_column or ""
        if self._table is None or self._table_source != (record.source, column):
            self._release_table()
            key = _table_key(record.source, column)
            entry = _TABLES.take(key) if key is not None else None
            if entry is None:
                handle = self._opener(record.source)
                try:
                    entry = (handle, EmbeddedImages(handle, column))
                except BaseException:
                    handle.close()
                    raise
            self._table_handle, self._table = entry
            self._table_key, self._table_source = key, (record.source, column)
        return self._table.get(record.index)

    def _release_table(self) -> None:
        """The table read last back to :data:`_TABLES` (a local one), else closed."""
        if self._table is None or self._table_handle is None:
            return
        if self._table_key is not None:
            _TABLES.give(self._table_key, (self._table_handle, self._table))
        else:
            self._table_handle.close()
        self._table = self._table_handle = self._table_key = self._table_source = None

    def file(self, path: str, limit: int | None = None) -> bytes:
        """A table sample's image file; at most ``limit + 1`` bytes when ``limit`` is
        given (so the caller can tell "larger than the limit")."""
        with self._opener(path) as f:
            return f.read() if limit is None else f.read(limit + 1)

    def image(self, record: SampleRecord) -> bytes:
        """The sample's original image bytes, wherever they are."""
        if record.members:
            ext = record.image_ext or ""
            return self.members(record, {ext})[ext]
        if record.image_column is not None:
            data = self.embedded(record)
            if data is None:
                raise KeyError(f"{record.key}: the table holds no image at row {record.index}")
            return data
        return self.file(record.image_path or "")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle, self._source = None, None
        self._release_table()

    def __enter__(self) -> SampleReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


CHUNK_BYTES = 1 << 20  # an extra member is copied this many bytes at a time


def _read_exactly(handle: IO[bytes], record: SampleRecord, member: Member) -> Iterator[bytes]:
    """``member``'s ``size`` bytes from ``offset`` of ``handle``, in chunks."""
    handle.seek(member.offset)
    left = member.size
    while left:
        data = handle.read(min(left, CHUNK_BYTES))
        if not data:
            raise EOFError(
                f"{record.source}: {record.key}.{member.ext}: expected {member.size} bytes, "
                f"got {member.size - left}: the input changed during the run"
            )
        left -= len(data)
        yield data


def extra_members(record: SampleRecord) -> tuple[tuple[Member, ...], tuple[str, ...]]:
    """A tar sample's members besides its image, caption and ``.json`` sidecar, which
    its output shard copies byte for byte (``KEY.cls``, ``KEY.npy``, a mask), in
    extension order; and the extensions of those it does not copy: a second caption
    member (``KEY.caption`` beside ``KEY.txt``), which was not filtered, and a name no
    shard should hold (:func:`unsafe_ext`)."""
    used = caption_member(record)
    copied, refused = [], []
    for member in record.members:
        if member.ext in (record.image_ext, JSON_EXT) or member == used:
            continue
        # a caption by its last extension too (a.de.txt): text no filter read; a member
        # that is no regular file (sources.UNREAD): nothing to copy
        unsafe = member.ext.rpartition(".")[2] in CAPTION_EXTS or unsafe_ext(member.ext)
        unsafe = unsafe or member.offset == UNREAD
        (refused if unsafe else copied).append(member)
    copied.sort(key=lambda m: m.ext)
    return tuple(copied), tuple(sorted(m.ext for m in refused))


def unsafe_ext(ext: str) -> bool:
    """Whether ``KEY.<ext>`` is a name a cleaned shard must not hold: a backslash, a
    control character or bytes that were not UTF-8 (the rules of keys, :func:`key_problem`:
    a path escape or a terminal escape where the shard is unpacked), or a name WebDataset
    keeps for itself (``__key__``, ``__url__``: its reader refuses the shard)."""
    return ext.startswith("__") or key_problem(f"k.{ext}") is not None


@dataclass(frozen=True)
class ShardSample:
    """What an output shard holds of a sample, ready for ``ShardWriter.add``."""

    image: bytes
    caption: bytes
    meta: dict | None  # the input's sidecar fields
    members: tuple[tuple[str, int, Iterator[bytes]], ...] = ()  # (ext, size, data chunks)
    not_copied: tuple[str, ...] = ()  # caption members left out (see extra_members)


def shard_sample(
    reader: SampleReader, record: SampleRecord, extras: bool = True, fields: bool = True
) -> ShardSample:
    """What an output shard holds of ``record``: the original image bytes, the caption
    bytes, the sidecar metadata (with ``fields``, a table row's other columns) and
    (``extras``) the tar sample's other members, read as the shard writer writes them
    (kept and quarantine shards alike; ``output.extra_members``/``table_fields``, which
    a redecide may set otherwise than its run). A tar sample that no longer parses
    changed since it was scored: RuntimeError, never a silent substitute; so is an image
    whose bytes are no longer those its sha256 was taken of (rewritten at the same size),
    so that a shard's ``KEY.json`` always describes the bytes beside it."""
    if not record.members:  # a table row: its other columns are the sidecar's fields
        meta = json.loads(record.row_fields) if record.row_fields and fields else None
        image = _unchanged(record, reader.image(record))
        return ShardSample(image, (record.caption or "").encode(), meta)
    try:
        data = reader.members(record, {record.image_ext or "", *CAPTION_EXTS, JSON_EXT})
    except EOFError as exc:
        where = f"{record.source}: {record.key}"
        raise RuntimeError(f"{where}: input changed during the run ({exc})") from None
    payload = parse_payload(record, data)
    if isinstance(payload, SampleRecord):
        raise RuntimeError(f"{record.key}: input changed during the run ({payload.detail})")
    others = record.other_captions  # None: read from a manifest without the column
    if record.caption is not None and (payload.caption, payload.others) != (
        record.caption,
        payload.others if others is None else others,
    ):
        # rewritten at the same size since the filters read it (helper-35: a captioning
        # tool's edit in place went into a kept shard unfiltered)
        raise RuntimeError(
            f"{record.source}: {record.key}: input changed during the run (its caption is "
            "no longer the one the filters read)"
        )
    copied, not_copied = extra_members(record) if extras else ((), ())
    members = tuple((m.ext, m.size, reader.chunks(record, m)) for m in copied)
    image = _unchanged(record, payload.image)
    return ShardSample(image, payload.caption_bytes, payload.meta, members, not_copied)


def _unchanged(record: SampleRecord, image: bytes) -> bytes:
    """``image``, if it is the bytes the run hashed (or it hashed none)."""
    if record.sha256 is not None and hashlib.sha256(image).hexdigest() != record.sha256:
        raise RuntimeError(
            f"{record.source}: {record.key}: input changed during the run (the image's "
            f"sha256 is no longer {record.sha256[:12]}...)"
        )
    return image
