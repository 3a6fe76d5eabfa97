"""Reading a table's rows (no Beam): Parquet, with the images a column may hold read by
row at decode time (:class:`EmbeddedImages`); CSV, by the delimiter and encoding its
header and byte-order mark say, a quote left open named (:class:`OpenQuote`); JSONL,
line by line. :mod:`mitigate.tables` makes records of the rows.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from mitigate.text import text_encoding

log = logging.getLogger(__name__)


def jsonl_lines(fileobj: IO[bytes]) -> Iterator[bytes | str]:
    """A JSONL table's lines: bytes (UTF-8, so that one line that is not is one bad
    row), or text where a byte-order mark says UTF-16 or UTF-32 (PowerShell's ``>``
    writes UTF-16)."""
    # no `yield from`: closing this generator would close the file it reads (a caller
    # that stops after the first line seeks the file again)
    codec = peek_encoding(fileobj)
    if codec == "utf-8-sig":
        for line in fileobj:
            yield line
        return
    text = io.TextIOWrapper(fileobj, encoding=codec, newline=None)
    try:
        for line in text:
            yield line
    finally:
        text.detach()  # the caller's file stays open


def read_rows(
    fileobj: IO[bytes],
    fmt: str,
    columns: list[str] | None = None,
    image_column: str = "",
    as_text: Sequence[str] = (),
) -> Iterator[dict[str, Any] | str]:
    """Rows of a table as dicts; a string instead of a dict describes a bad row.
    ``columns``: a Parquet table's columns to read (None: all; ``image_column``'s bytes
    are not read, see :func:`_parquet_rows`); of them, ``as_text`` are given as JSON
    has them (:func:`_plain`: dates and times as text)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(fileobj, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
        rows = _parquet_rows(file, columns or file.schema_arrow.names, image_column, as_text)
        yield from rows
    elif fmt == "jsonl":
        # Line by line in bytes, so one line that is not UTF-8 is one bad row. CSV and
        # JSONL are read as "utf-8-sig": a byte-order mark, which Windows tools write at
        # the start of a file, is no part of the first column's name or line.
        for lineno, raw in enumerate(jsonl_lines(fileobj), 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw)
            except UnicodeDecodeError as exc:
                yield f"line {lineno}: not UTF-8: {exc}"
                continue
            except ValueError as exc:  # JSONDecodeError, an integer of over 4,300 digits
                yield f"line {lineno}: not valid JSON: {exc}"
                continue
            except RecursionError:
                yield f"line {lineno}: JSON nested too deeply"
                continue
            yield row if isinstance(row, dict) else f"line {lineno}: not a JSON object"
    elif fmt == "csv":
        yield from csv_dicts(fileobj)
    else:
        raise ValueError(f"unknown table format {fmt!r}")


class Embedded:
    """A row's image held in the table itself: its bytes are read at decode time (by
    :class:`EmbeddedImages`), and their format names the kept shard's member."""


EMBEDDED = Embedded()


def binary_values(typ: Any) -> bool:
    """Whether an Arrow type holds variable-length bytes: binary, large or view, or a
    dictionary of them (polars' and duckdb's categorical blobs)."""
    import pyarrow as pa

    typ = typ.value_type if pa.types.is_dictionary(typ) else typ
    tests = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)
    return any(test(typ) for test in tests)


def image_kind(schema: Any, column: str) -> str | None:
    """How a Parquet column holds images: ``"bytes"`` (a binary column, as img2dataset's
    ``jpg``), ``"struct"`` (a Hugging Face datasets ``Image``: a struct of ``bytes`` and
    ``path``, either may be null), None (paths, or the column is absent)."""
    import pyarrow as pa

    if column not in schema.names:
        return None
    kind = schema.field(column).type

    def holds_bytes(typ: Any) -> bool:
        return binary_values(typ) or pa.types.is_fixed_size_binary(typ)

    if holds_bytes(kind):
        return "bytes"
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        if holds_bytes(kind.field("bytes").type):
            return "struct"
    return None


#: Rows a Parquet table is read in (a column in use may hold images: a few MB a row).
PARQUET_BATCH_ROWS = 256


def _plain(batch: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """``batch``'s rows, its date, time and timestamp columns among ``names`` as ISO 8601
    text and its durations as seconds, converted by Arrow: Python's types hold neither
    nanoseconds (pyarrow then asks for pandas) nor a date past the year 9999 (an
    OverflowError ended the run); Arrow writes such a value as its out-of-range text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in names:
        i = batch.schema.get_field_index(name)
        if i < 0:
            continue
        column, typ = batch.column(i), batch.schema.field(i).type
        if pa.types.is_duration(typ):
            per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[typ.unit]
            seconds = pc.cast(pc.cast(column, pa.int64()), pa.float64())
            value = pc.divide(seconds, float(per_second))
        elif pa.types.is_temporal(typ):
            value = pc.cast(column, pa.string())
            if pa.types.is_timestamp(typ):
                value = pc.replace_substring_regex(value, r"^(-?\d+-\d\d-\d\d) ", r"\1T")
        else:
            continue
        batch = batch.set_column(i, name, value)
    return batch.to_pylist()


def temporal(schema: Any, names: Sequence[str]) -> list[str]:
    """The columns of ``names`` whose values :func:`_plain` converts."""
    import pyarrow as pa

    return [
        n
        for n in names
        if schema.get_field_index(n) >= 0 and pa.types.is_temporal(schema.field(n).type)
    ]


def _parquet_rows(
    file: Any, columns: list[str], image_column: str, as_text: Sequence[str] = ()
) -> Iterator[dict[str, Any]]:
    """Rows of a Parquet table as dicts of ``columns``. Where ``image_column`` holds the
    images' bytes, they are not read: the row's image is an :class:`Embedded` (with the
    struct's ``path``); a datasets ``Image`` row whose bytes are null keeps its path (a
    file, read as a table path is). Whether a row group's structs hold bytes comes from
    the column statistics' null count; where it is absent or mixed, from the bytes read
    for that row group."""
    kind = image_kind(file.schema_arrow, image_column) if image_column in columns else None
    if kind is None:
        for batch in file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            yield from _plain(batch, as_text)
        return
    rest = [c for c in columns if c != image_column]
    with_path = kind == "struct" and _has_field(file.schema_arrow, image_column, "path")
    for group in range(file.num_row_groups):
        n_rows = file.metadata.row_group(group).num_rows
        rows = (
            _group_values(file, group, rest, as_text=as_text)
            if rest
            else ({} for _ in range(n_rows))
        )
        if kind == "bytes":
            images: Iterator[Any] = itertools.repeat(EMBEDDED)
        else:
            paths: Iterator[Any] = (
                (
                    (value or {}).get("path")
                    for value in _group_values(file, group, [f"{image_column}.path"], image_column)
                )
                if with_path
                else itertools.repeat(None, n_rows)  # a struct of bytes alone
            )
            held = _bytes_held(file, group, image_column)
            images = (EMBEDDED if has else p for p, has in zip(paths, held, strict=True))
        for row, image in zip(rows, images, strict=False):
            row[image_column] = image
            yield row


def _has_field(schema: Any, column: str, name: str) -> bool:
    return bool(schema.field(column).type.get_field_index(name) >= 0)


def _group_values(
    file: Any, group: int, columns: list[str], only: str | None = None, as_text: Sequence[str] = ()
) -> Iterator[Any]:
    """One row group's rows as dicts of ``columns`` (or the values of column ``only``)."""
    for batch in file.iter_batches(
        batch_size=PARQUET_BATCH_ROWS, row_groups=[group], columns=columns
    ):
        if only is None:
            yield from _plain(batch, as_text)
        else:
            yield from batch.column(only).to_pylist()


def _bytes_held(file: Any, group: int, column: str) -> Iterator[bool]:
    """Per row of a row group: whether its datasets ``Image`` struct holds bytes."""
    meta = file.metadata.row_group(group)
    leaf = f"{column}.bytes"
    for i in range(meta.num_columns):
        chunk = meta.column(i)
        stats = chunk.statistics
        if chunk.path_in_schema == leaf and stats is not None and stats.has_null_count:
            if stats.null_count == 0:
                return itertools.repeat(True, meta.num_rows)
            if stats.null_count == meta.num_rows:
                return itertools.repeat(False, meta.num_rows)

    return _bytes_read(file, group, leaf)


def _bytes_read(file: Any, group: int, leaf: str) -> Iterator[bool]:
    for batch in file.iter_batches(
        batch_size=PARQUET_BATCH_ROWS, row_groups=[group], columns=[leaf]
    ):
        values = batch.column(0).flatten()[0]  # flatten: a null struct holds no bytes
        yield from values.is_valid().to_pylist()


#: Rows of image bytes :class:`EmbeddedImages` holds at a time.
EMBEDDED_BATCH_ROWS = 16
#: Bytes read from a Parquet table at a time where its images are read: pages are read
#: as they are needed, never a whole column chunk (img2dataset writes a shard of
#: 10,000 images as one row group).
PARQUET_BUFFER_BYTES = 1 << 20


class EmbeddedImages:
    """The images a Parquet table holds in a column, read by row number. Rows asked for
    in ascending order (a chunk of samples, a shard's kept samples) read the column once,
    :data:`EMBEDDED_BATCH_ROWS` rows at a time; a row behind the current one restarts
    its row group. ``KeyError`` when the table has no such row or column (it changed
    since it was indexed)."""

    def __init__(self, fileobj: IO[bytes], column: str) -> None:
        import pyarrow.parquet as pq

        self._file = pq.ParquetFile(fileobj, buffer_size=PARQUET_BUFFER_BYTES, pre_buffer=False)
        kind = image_kind(self._file.schema_arrow, column)
        if kind is None:
            raise KeyError(f"column {column!r} holds no image bytes")
        self.column = column
        self._nested = kind == "struct"
        self._column = f"{column}.bytes" if self._nested else column
        meta = self._file.metadata
        self._starts = list(
            itertools.accumulate(
                (meta.row_group(g).num_rows for g in range(meta.num_row_groups)), initial=0
            )
        )
        self._batches: Iterator[Any] = iter(())
        self._start = self._stop = self._group_stop = 0
        self._values: Any = None

    def get(self, row: int) -> bytes | None:
        """Row ``row``'s image bytes; None where the table holds none (a null)."""
        if not self._start <= row < self._stop:
            self._move_to(row)
        value = self._values[row - self._start]
        return value.as_py() if value.is_valid else None

    def _move_to(self, row: int) -> None:
        if not 0 <= row < self._starts[-1]:
            raise KeyError(f"the table has no row {row} (it has {self._starts[-1]})")
        if row < self._start or row >= self._group_stop:
            group = bisect_right(self._starts, row) - 1
            self._batches = self._file.iter_batches(
                batch_size=EMBEDDED_BATCH_ROWS, row_groups=[group], columns=[self._column]
            )
            self._stop, self._group_stop = self._starts[group], self._starts[group + 1]
        while self._stop <= row:
            batch = next(self._batches, None)
            if batch is None:  # the file holds fewer rows than its footer says
                raise KeyError(f"row {row}: the table's row group ends before it")
            values = batch.column(0)
            # a struct's bytes: flatten, so a null struct is a null
            self._values = values.flatten()[0] if self._nested else values
            self._start, self._stop = self._stop, self._stop + batch.num_rows


#: The largest CSV cell read (the rest of the table is lost after a larger one).
CSV_CELL_BYTES = 64 << 20

#: Delimiters a CSV table may use: the comma, and the semicolon of spreadsheets in
#: locales whose decimal mark is a comma, the tab of ``.tsv`` files, the bar.
CSV_DELIMITERS = (",", ";", "\t", "|")


#: A CSV row's key (not a column's: not text) for what :func:`csv_dicts` says of a
#: row with fewer cells than the header, added to the detail of its error if it has one.
SHORT_ROW = ("short_row",)


@dataclass(frozen=True)
class OpenQuote:
    """A CSV row whose quoted cell ran from line ``first`` to ``last`` over ``rows``
    lines that look like rows of their own (as many delimiters as the header): a quote
    that opened a cell and was never closed where the writer meant it to be."""

    first: int
    last: int
    rows: int


def too_many_cells(header: int, extra: list[str]) -> str:
    """Why a CSV row with cells past its header's is refused (helper-41: the tail of an
    unquoted caption went into KEY.json, the caption filters never read it)."""
    return (
        f"{header + len(extra)} cells, the header {header}: a delimiter inside a cell that "
        "is not quoted (a caption with a comma?) shifts the cells; quote it"
    )


def csv_dicts(fileobj: IO[bytes]) -> Iterator[dict[str, Any] | OpenQuote]:
    """The rows of a CSV table as dicts; an :class:`OpenQuote` before a row that holds
    other rows. Quoted cells over several lines are CSV (a caption with a line break);
    a stray ``"`` at the start of a cell makes the reader take every line up to the
    next quote as that cell, and those rows were lost without a word."""
    reader, before = _csv_rows(fileobj, csv.DictReader)
    assert isinstance(reader, csv.DictReader)
    names = reader.fieldnames or []
    if len(set(names)) < len(names):  # a name twice: each cell kept, as pandas names them
        seen: Counter[str] = Counter()
        renamed = []
        for name in names:
            renamed.append(f"{name}.{seen[name]}" if seen[name] else name)
            seen[name] += 1
        reader.fieldnames = renamed
    end = 1  # the header's last line (line numbers below are the file's)
    header = len(reader.fieldnames or ())
    for row in reader:
        start, (first, end) = end, (end + 1, reader.line_num)
        values = [v for k, v in row.items() if k is not None] + list(row.get(None) or ())
        if not any(v.strip() for v in values if isinstance(v, str)):
            continue  # ",,,": a spreadsheet's empty row, as a blank JSONL line
        cells = sum(value is not None for key, value in row.items() if key is not None)
        if cells < header and start > 1 and None not in row:
            row[SHORT_ROW] = (
                f" (line {first + before} holds {cells} of the header's {header} cells: the"
                f" rest of the row on line {start + before}, cut by a line break in a cell "
                "that is not quoted? Quote cells that hold line breaks)"
            )
        if end > first:
            delimiter = reader.reader.dialect.delimiter
            need = max(len(reader.fieldnames or ()) - 1, 1)
            rows = sum(
                line.count(delimiter) >= need
                for value in row.values()
                if isinstance(value, str)
                for line in _LINE_END.split(value)[1:]
            )
            if rows:
                yield OpenQuote(first + before, end + before, rows)
        yield row


def _csv_rows(
    fileobj: IO[bytes], reader: Callable[..., Iterator[Any]]
) -> tuple[Iterator[Any], int]:
    """``reader`` (``csv.reader`` or ``csv.DictReader``) over a CSV table whose
    delimiter is the one of :data:`CSV_DELIMITERS` its header line holds most often
    (a comma when it holds none: a one-column table), or the one Excel's ``sep=`` line
    before the header names; and the lines before the header (1 after such a line).
    Lines may end in CR LF, LF or a lone CR (old Mac spreadsheets)."""
    # bytes that are not UTF-8 become lone surrogates (U+DC80-U+DCFF), so such a cell is
    # one row's error (iter_table), not the end of the table. A table with a UTF-16 or
    # UTF-32 byte-order mark (Excel's "Unicode Text": tab-separated) is read as such.
    # a cell up to 64 MiB is read (the csv module's limit is 128 KiB: one long caption
    # ended the table); one over the caption limit is that row's caption_too_large
    csv.field_size_limit(max(csv.field_size_limit(), CSV_CELL_BYTES))
    codec = peek_encoding(fileobj)
    text = io.TextIOWrapper(fileobj, encoding=codec, errors="surrogateescape", newline="")
    header = text.readline()
    sep = excel_sep(header)
    if sep is not None:
        header = text.readline()
    return reader(itertools.chain([header], text), **csv_dialect(header, sep)), int(bool(sep))


_LINE_END = re.compile(r"\r\n|\r|\n")

#: Excel's first line naming a CSV's delimiter (``sep=;``), before the header.
_EXCEL_SEP = re.compile(r"sep=(.)\1*\r?\n?", re.IGNORECASE)  # `sep=;;;;`: re-saved


def excel_sep(line: str) -> str | None:
    """The delimiter an Excel ``sep=`` line names, or None if ``line`` is none."""
    match = _EXCEL_SEP.fullmatch(line)
    return match.group(1) if match else None


def csv_header(fileobj: IO[bytes]) -> tuple[str, dict[str, Any]]:
    """A CSV table's header line and the ``csv`` reader's arguments for it, reading
    the header alone (strictly decoded: a byte that is not UTF-8 in a row is that row's
    error, not the table's), past an Excel ``sep=`` line, whatever the line ends."""
    codec = peek_encoding(fileobj)
    if codec == "utf-8-sig":
        # the first lines only (a table with CR line ends has no LF to stop a readline)
        lines = fileobj.read(1 << 20).splitlines()[:2] or [b""]
        header = lines[0].decode(codec)
        sep = excel_sep(header)
        if sep is not None:
            header = lines[1].decode("utf-8") if len(lines) > 1 else ""
    else:  # UTF-16/32: a line ends in more than one byte
        text = io.TextIOWrapper(fileobj, encoding=codec, newline="")
        header = text.readline()
        sep = excel_sep(header)
        if sep is not None:
            header = text.readline()
        text.detach()  # the caller's file stays open
    return header.rstrip("\r\n"), csv_dialect(header, sep)


def peek_encoding(fileobj: IO[bytes]) -> str:
    """The codec of a text table by its byte-order mark (:func:`text_encoding`); the
    file is left where it was."""
    at = fileobj.tell()
    head = fileobj.read(4)
    fileobj.seek(at)
    return text_encoding(head)


def csv_dialect(header: str, delimiter: str | None = None) -> dict[str, Any]:
    """The ``csv`` reader's arguments for a table with this header line: its
    delimiter (``delimiter``, or the one the header holds most often), and spaces after
    one skipped where the header has them (``key, image, caption`` as typed by hand:
    every cell after the first begins with a space)."""
    delimiter = delimiter or csv_delimiter(header)
    return {"delimiter": delimiter, "skipinitialspace": f"{delimiter} " in header}


def csv_delimiter(header: str) -> str:
    """The one of :data:`CSV_DELIMITERS` a CSV header line holds most often (a comma
    when it holds none: a one-column table)."""
    counts = [header.count(d) for d in CSV_DELIMITERS]
    return CSV_DELIMITERS[counts.index(max(counts))] if max(counts) else ","


def row_names(sources: Sequence[str]) -> dict[str, str]:
    """What names the rows of each table without a key column: its file name without
    the extension, or, where tables share one (duckdb and Spark write a partitioned
    table as ``key=a/data_0.parquet``, ``key=b/data_0.parquet``), the fewest trailing
    folders that tell them apart (``key=a/data_0``), the extension kept where only it
    does (``t.csv``, ``t.parquet``). A lone table's keys stay its file name's. A folder
    input (``data.v2/``) has no extension: its name is kept whole."""

    def segments(path: str, extension: bool) -> list[str]:
        parts = [p for p in path.split("://", 1)[-1].split("/") if p]
        if not extension and "." in parts[-1] and not path.endswith("/"):
            parts[-1] = parts[-1].rsplit(".", 1)[0]
        return parts

    names: dict[str, str] = {}
    left = dict.fromkeys(sources)  # ordered, and removing one costs O(1)
    for extension in (False, True):
        split = {s: segments(s, extension) for s in sources}
        depth = 1
        while left and depth <= max(len(p) for p in split.values()):
            tails = {s: "/".join(p[-depth:]) for s, p in split.items()}
            counts = Counter(tails.values())
            for source in [s for s in left if counts[tails[s]] == 1]:
                names[source] = tails[source]
                del left[source]
            depth += 1
    for source in left:  # the same path twice
        names[source] = "/".join(segments(source, True))
    return names


def _holds_bytes(typ: Any) -> bool:
    """Whether an Arrow type holds variable-length bytes anywhere inside it (a binary
    column, a datasets ``Image`` struct, a list of them)."""
    import pyarrow as pa

    if binary_values(typ) or pa.types.is_fixed_size_binary(typ):  # bytes, UUIDs, digests
        return True
    if hasattr(typ, "value_type"):  # list, large_list, fixed_size_list, dictionary, map
        if hasattr(typ, "key_type") and _holds_bytes(typ.key_type):
            return True
        return _holds_bytes(typ.value_type)
    return any(_holds_bytes(typ.field(i).type) for i in range(getattr(typ, "num_fields", 0)))


def carried_columns(schema: Any, source: str, used: set[str]) -> list[str]:
    """A Parquet table's columns (``schema``: its Arrow schema) besides ``used`` that its
    records carry into their shards' KEY.json (:func:`mitigate.sidecar.row_fields`); a
    column that holds bytes (a second image, a mask) is not carried, said once in the
    log (JSON holds no bytes)."""
    carried, skipped = [], []
    names = Counter(schema.names)
    twice = sorted(n for n, count in names.items() if count > 1 and n not in used)
    for i, name in enumerate(schema.names):
        if name not in used and name not in twice:
            (skipped if _holds_bytes(schema.field(i).type) else carried).append(name)
    for left, why in (
        (skipped, "hold bytes, which KEY.json cannot"),
        (twice, "appear more than once: which value is which cannot be told"),
    ):
        if left:
            shown = ", ".join(map(repr, left))
            log.warning("%s: column(s) %s %s: not carried into the shards", source, shown, why)
    return carried
