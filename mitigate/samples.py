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

from collections.abc import Callable
from types import TracebackType
from typing import IO

from mitigate.records import SampleRecord
from mitigate.sources import CAPTION_EXTS, JSON_EXT, parse_payload, read_members
from mitigate.table_rows import EmbeddedImages

Opener = Callable[[str], IO[bytes]]


class SampleReader:
    """Reads samples' bytes through ``opener``; use as a context manager (it keeps the
    current source open between calls and closes it at the end)."""

    def __init__(self, opener: Opener) -> None:
        self._opener = opener
        self._handle: IO[bytes] | None = None
        self._source: str | None = None
        self._table: EmbeddedImages | None = None  # the source's image column, if read

    def _open(self, source: str) -> IO[bytes]:
        if self._source != source:
            self.close()
            self._handle, self._source = self._opener(source), source
        assert self._handle is not None
        return self._handle

    def members(self, record: SampleRecord, exts: set[str]) -> dict[str, bytes]:
        """The data of ``record``'s tar members whose extension is in ``exts``; raises
        ``OSError``/``EOFError`` if the shard cannot be read or is shorter than indexed."""
        return read_members(self._open(record.source), record, exts)

    def embedded(self, record: SampleRecord) -> bytes | None:
        """The image bytes a table holds at ``record``'s row (None where it holds
        none); ``KeyError`` when the table has no such row or image column."""
        handle = self._open(record.source)
        if self._table is None or self._table.column != record.image_column:
            self._table = EmbeddedImages(handle, record.image_column or "")
        return self._table.get(record.index)

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
        self._handle, self._source, self._table = None, None, None

    def __enter__(self) -> SampleReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def shard_sample(reader: SampleReader, record: SampleRecord) -> tuple[bytes, bytes, dict | None]:
    """What an output shard holds of ``record``: the original image bytes, the caption
    bytes and the sidecar metadata (kept and quarantine shards alike). A tar sample
    that no longer parses changed since it was scored: RuntimeError, never a silent
    substitute."""
    if not record.members:
        return reader.image(record), (record.caption or "").encode(), None
    data = reader.members(record, {record.image_ext or "", *CAPTION_EXTS, JSON_EXT})
    payload = parse_payload(record, data)
    if isinstance(payload, SampleRecord):
        raise RuntimeError(f"{record.key}: input changed during the run ({payload.detail})")
    return payload.image, payload.caption_bytes, payload.meta
