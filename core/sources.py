"""Read input sources into light :class:`SampleRecord` references (no Beam here).

Two kinds of source:

* **WebDataset tar shards** (``KEY.jpg|jpeg|png|webp`` + ``KEY.txt`` + optional
  ``KEY.json``, consecutive members per sample, as img2dataset writes them).
  :func:`index_tar` streams the tar once, headers only in spirit: it records where each
  member's data lies and never extracts anything or uses a member name as a path.
  :func:`read_sample_payload` later reads one sample's members by offset.
* **Tables** (Parquet, JSONL, CSV) with a key column, an image path relative to the
  table, and a caption: :func:`iter_table`.

Problems with a single sample become ``error`` records with a reason; problems with a
whole file (not a tar, cut off) become :class:`SourceIssue` entries for the summary.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from mitigate.records import Member, Reason, SampleRecord

IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp"})
CAPTION_EXT = "txt"
JSON_EXT = "json"
# WebDataset's convention: the key is the path up to the first dot of the basename.
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


@dataclass(frozen=True)
class SourceIssue:
    """A problem with a whole source file rather than one sample."""

    source: str
    reason: str
    detail: str


def key_problem(key: str) -> str | None:
    """Why ``key`` is unusable as a sample key, or None. Keys become member names in
    the output shards, so anything that could act as a path escape is refused."""
    if not key:
        return "empty key"
    if "\x00" in key or "\\" in key:
        return "key contains a NUL or backslash"
    if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        return "key is an absolute path or has an empty, '.' or '..' segment"
    return None


def _finish(record: SampleRecord, max_image_bytes: int) -> SampleRecord:
    """Structural checks on one sample's members (everything that needs no data)."""
    problem = key_problem(record.key)
    if problem:
        return record.with_error(Reason.INVALID_KEY, f"{record.key!r}: {problem}")
    images = [m for m in record.members if m.ext in IMAGE_EXTS]
    if not images:
        exts = ", ".join(m.ext for m in record.members) or "none"
        return record.with_error(Reason.MISSING_IMAGE, f"no image member (members: {exts})")
    if len(images) > 1:
        exts = ", ".join(m.ext for m in images)
        return record.with_error(Reason.MULTIPLE_IMAGES, f"several image members: {exts}")
    image = images[0]
    record.image_ext = image.ext
    record.n_bytes = image.size
    if image.size > max_image_bytes:
        return record.with_error(
            Reason.IMAGE_TOO_LARGE, f"{image.size} bytes > max_image_bytes {max_image_bytes}"
        )
    if not any(m.ext == CAPTION_EXT for m in record.members):
        return record.with_error(Reason.MISSING_CAPTION, "no .txt member")
    return record


def index_tar(
    fileobj: IO[bytes], source: str, *, max_image_bytes: int
) -> Iterator[SampleRecord | SourceIssue]:
    """Stream a tar shard and yield one record per sample, then any source issues.

    A shard cut off mid-member yields every complete sample before the cut, an
    ``error``/``truncated_shard`` record for the sample being read, and an issue.
    """
    current: SampleRecord | None = None
    index = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            for info in tar:
                if info.isdir():
                    continue
                if not info.isfile():
                    yield SourceIssue(source, "skipped_member", f"{info.name!r} is not a file")
                    continue
                match = _KEY_EXT.match(info.name)
                if match is None:
                    yield SourceIssue(source, "skipped_member", f"{info.name!r} has no extension")
                    continue
                key, ext = match.group(1), match.group(2).lower()
                if current is None or key != current.key:
                    if current is not None:
                        yield _finish(current, max_image_bytes)
                        index += 1
                    current = SampleRecord(key=key, source=source, index=index)
                if any(m.ext == ext for m in current.members):
                    yield SourceIssue(source, "skipped_member", f"{info.name!r} repeated")
                    continue
                current.members = (*current.members, Member(ext, info.offset_data, info.size))
    except (tarfile.TarError, EOFError, OSError) as exc:
        if current is None:
            yield SourceIssue(source, Reason.READ_ERROR, f"not a readable tar: {exc}")
            return
        yield current.with_error(
            Reason.TRUNCATED_SHARD, f"shard ends inside this sample's members: {exc}"
        )
        yield SourceIssue(
            source,
            Reason.TRUNCATED_SHARD,
            f"shard is cut off after {index} complete samples ({exc}); the rest is lost",
        )
        return
    if current is not None:
        yield _finish(current, max_image_bytes)


@dataclass(frozen=True)
class Payload:
    image: bytes
    caption: str
    meta: dict[str, Any] | None


def read_members(fileobj: IO[bytes], record: SampleRecord, exts: set[str]) -> dict[str, bytes]:
    """Read the data of ``record``'s members whose extension is in ``exts``."""
    out = {}
    for member in sorted(record.members, key=lambda m: m.offset):
        if member.ext in exts:
            fileobj.seek(member.offset)
            data = fileobj.read(member.size)
            if len(data) != member.size:
                raise EOFError(f"{member.ext}: expected {member.size} bytes, got {len(data)}")
            out[member.ext] = data
    return out


def parse_payload(record: SampleRecord, data: dict[str, bytes]) -> Payload | SampleRecord:
    """Check caption and sidecar of a tar sample; an error record if either is bad."""
    try:
        caption = data[CAPTION_EXT].decode("utf-8")
    except UnicodeDecodeError as exc:
        return record.with_error(Reason.INVALID_CAPTION_ENCODING, f"caption is not UTF-8: {exc}")
    meta = None
    if JSON_EXT in data:
        try:
            meta = json.loads(data[JSON_EXT].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return record.with_error(Reason.INVALID_JSON, f"sidecar .json: {exc}")
        if not isinstance(meta, dict):
            return record.with_error(
                Reason.INVALID_JSON, f"sidecar .json is a {type(meta).__name__}, not an object"
            )
    if not caption.strip():
        return record.with_error(Reason.MISSING_CAPTION, "caption is empty")
    return Payload(data[record.image_ext or ""], caption, meta)


# --- tables ----------------------------------------------------------------------------

TABLE_FORMATS = ("parquet", "jsonl", "csv")


def table_format(path: str, configured: str) -> str:
    if configured != "auto":
        return configured
    lower = path.lower()
    for fmt, suffixes in {
        "webdataset": (".tar",),
        "parquet": (".parquet", ".pq"),
        "jsonl": (".jsonl", ".ndjson"),
        "csv": (".csv",),
    }.items():
        if lower.endswith(suffixes):
            return fmt
    raise ValueError(f"cannot tell the format of {path!r} from its extension; set input.format")


def _rows(fileobj: IO[bytes], fmt: str) -> Iterator[dict[str, Any] | str]:
    """Rows of a table as dicts; a string instead of a dict describes a bad row."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(fileobj).iter_batches(batch_size=4096):
            yield from batch.to_pylist()
    elif fmt == "jsonl":
        for lineno, line in enumerate(io.TextIOWrapper(fileobj, encoding="utf-8"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"line {lineno}: not valid JSON: {exc}"
                continue
            yield row if isinstance(row, dict) else f"line {lineno}: not a JSON object"
    elif fmt == "csv":
        yield from csv.DictReader(io.TextIOWrapper(fileobj, encoding="utf-8", newline=""))
    else:
        raise ValueError(f"unknown table format {fmt!r}")


def iter_table(
    fileobj: IO[bytes],
    source: str,
    fmt: str,
    *,
    key_column: str,
    image_column: str,
    caption_column: str,
    join: Callable[[str, str], str] = posixpath.join,
) -> Iterator[SampleRecord | SourceIssue]:
    """Yield one record per table row. Image paths are relative to the table's folder
    (absolute paths and URIs are used as given); ``join`` joins folder and path."""
    folder = source.rsplit("/", 1)[0] if "/" in source else "."
    index = -1
    try:
        for index, row in enumerate(_rows(fileobj, fmt)):
            if isinstance(row, str):
                rec = SampleRecord(key=f"{source}#{index}", source=source, index=index)
                yield rec.with_error(Reason.INVALID_JSON, row)
                continue
            key = row.get(key_column)
            rec = SampleRecord(key=str(key) if key is not None else "", source=source, index=index)
            problem = key_problem(rec.key)
            if problem:
                yield rec.with_error(Reason.INVALID_KEY, f"column {key_column!r}: {problem}")
                continue
            image = row.get(image_column)
            if not isinstance(image, str) or not image.strip():
                yield rec.with_error(Reason.MISSING_IMAGE, f"column {image_column!r} is empty")
                continue
            caption = row.get(caption_column)
            if not isinstance(caption, str) or not caption.strip():
                yield rec.with_error(Reason.MISSING_CAPTION, f"column {caption_column!r} is empty")
                continue
            absolute = "://" in image or image.startswith("/")
            rec.image_path = image if absolute else join(folder, image)
            rec.image_ext = image.rsplit(".", 1)[-1].lower() if "." in image else ""
            rec.caption = caption
            yield rec
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        yield SourceIssue(source, Reason.READ_ERROR, f"table unreadable after row {index}: {exc}")
