"""Table sources (Parquet, JSONL, CSV or TSV): a key column, an image path relative to the
table (or to ``input.image_root``), and a caption, read into light :class:`SampleRecord`
references like the tar index (no Beam here). Column names are checked from the schema
or header before any work (:func:`table_problems`); a default column that is absent
falls back to a common name.
"""

from __future__ import annotations

import csv
import decimal
import itertools
import json
import math
import posixpath
import re
import uuid
from collections.abc import Iterator, Sequence
from typing import IO, Any

from mitigate.records import Reason, SampleRecord
from mitigate.sidecar import carried_captions, refused, row_fields
from mitigate.sources import (
    LONE_SURROGATE,
    NUL_IN_TEXT,
    SourceIssue,
    SourceLimits,
    key_problem,
    not_text,
)
from mitigate.table_rows import (
    SHORT_ROW,
    Embedded,
    OpenQuote,
    binary_values,
    carried_columns,
    csv_header,
    image_kind,
    jsonl_lines,
    read_rows,
    temporal,
    too_many_cells,
)
from mitigate.text import escape_surrogates, shown

_IMAGES = ("image", "image_path", "path", "file", "filename", "file_name", "jpg", "png", "webp")
# Table columns tried, in order, when the configured column is the default and absent.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    "key_column": ("key", "id", "__key__"),
    # file_name: a Hugging Face imagefolder's metadata.jsonl/.csv
    "image_column": _IMAGES,
    "caption_column": ("caption", "text", "txt"),
}
#: ``input.key_column`` value (and the default's fallback where a table has no key
#: column): a row's key is the table's name and its row number, ``train-000000003``.
ROW_KEY = "#row"
_MISSING_REASON = {
    "key_column": Reason.INVALID_KEY,
    "image_column": Reason.MISSING_IMAGE,
    "caption_column": Reason.MISSING_CAPTION,
}


def resolve_columns(
    present: Sequence[str], configured: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Which table column serves each of ``key_column``/``image_column``/
    ``caption_column``: the configured one when the table has it; when that is the
    default name and absent, the first common name present (``image_path``, ``text``,
    ...). Returns (field -> column, field -> problem text for the fields found in no
    column; the text lists the table's columns and the setting to change)."""
    used: dict[str, str] = {}
    problems: dict[str, str] = {}
    listed = ", ".join(repr(c) for c in present) or "none"
    for field, name in configured.items():
        aliases = COLUMN_ALIASES[field]
        if name in present:
            used[field] = name
            continue
        found = [a for a in aliases if a in present] if name == aliases[0] else []
        if not found:  # "Image", " caption ": a name as a spreadsheet user typed it
            wanted = aliases if name == aliases[0] else (name,)
            found = [c for a in wanted for c in present if c.strip().lower() == a.lower()]
        if found:
            used[field] = found[0]
            continue
        if field == "key_column" and name in (aliases[0], ROW_KEY):
            used[field] = ROW_KEY  # no key column: the row numbers name the rows
            continue
        tried = f" (nor {', '.join(repr(a) for a in aliases[1:])})" if name == aliases[0] else ""
        url = (
            "; a 'url' column holds addresses to download, which mitigate does not do "
            "(download first, e.g. with img2dataset)"
            if field == "image_column" and "url" in (c.strip().lower() for c in present)
            else ""
        )
        problems[field] = (
            f"no column {name!r}{tried}; the table's columns are {listed}: set input.{field}{url}"
        )
        used[field] = name
    return used, problems


def table_columns(fileobj: IO[bytes], fmt: str) -> list[str]:
    """A table's column names without reading its rows: the Parquet schema, the CSV
    header, the keys of the first JSONL object."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.ParquetFile(fileobj).schema_arrow.names)
    if fmt == "csv":
        header, dialect = csv_header(fileobj)
        return next(csv.reader([header], **dialect), [])
    if fmt == "jsonl":
        for raw in jsonl_lines(fileobj):
            if raw.strip():
                try:
                    row = json.loads(raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw)
                except RecursionError:
                    raise ValueError("the first line is JSON nested too deeply") from None
                if not isinstance(row, dict):
                    raise ValueError("the first line is not a JSON object")
                return list(row)
        return []
    raise ValueError(f"unknown table format {fmt!r}")


def table_problems(
    fileobj: IO[bytes], fmt: str, configured: dict[str, str]
) -> tuple[dict[str, str], list[str]]:
    """(columns used, problems) of one table, for ``mitigate validate``: every problem
    names the column, the columns present and the setting to change."""
    try:
        present = table_columns(fileobj, fmt)
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
        return {}, [f"cannot read the table's columns: {exc}"]
    if not present and fmt != "parquet":  # no columns missing: no table at all
        what = "no header line" if fmt == "csv" else "no row"
        return {}, [f"the table is empty ({what}): nothing to read"]
    used, problems = resolve_columns(present, configured)
    found = list(problems.values())
    for field, column in used.items():
        if field not in problems and present.count(column) > 1:
            found.append(
                f"column {column!r} appears {present.count(column)} times: which one is "
                f"input.{field} cannot be told; rename the others"
            )
    if fmt == "parquet" and not found:
        fileobj.seek(0)
        found += _type_problems(fileobj, used)
    if "image_column" in used and not found:
        try:
            fileobj.seek(0)
            key, image = used.get("key_column", ROW_KEY), used["image_column"]
            # a Parquet column of the images' bytes is read at decode time, not here
            schema = _schema(fileobj) if fmt == "parquet" else None
            paths = schema is None or image_kind(schema, image) is None
            columns = [*([image] if paths else []), *([key] if key != ROW_KEY else [])]
            first = _first_values(fileobj, fmt, columns) if columns else {}
            found += _unreadable_images(image, first[image]) if paths else []
            held = [f.name for f in schema or () if image_kind(_one(f), f.name)]
            if found and held:  # img2dataset's url column beside its jpg bytes (helper-41)
                found[-1] += f" (the table's {held[0]!r} holds images: input.image_column)"
            if key != ROW_KEY and not found:
                found += _dotted_keys(key, first[key])
        except (OSError, ValueError, UnicodeDecodeError, csv.Error) as exc:
            found.append(f"cannot read the table's first rows: {exc}")
    return used, found


def _first_values(fileobj: IO[bytes], fmt: str, columns: list[str]) -> dict[str, list[Any]]:
    """The ``columns``' values in the table's first :data:`URL_SAMPLE_ROWS` rows (one
    read: a CSV's or JSONL's reader closes the file)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        file = pq.ParquetFile(fileobj)
        batch = next(file.iter_batches(batch_size=URL_SAMPLE_ROWS, columns=columns), None)
        return {c: [] if batch is None else batch.column(c).to_pylist() for c in columns}
    rows = [r for r in itertools.islice(read_rows(fileobj, fmt), URL_SAMPLE_ROWS)]
    return {c: [r.get(c) for r in rows if isinstance(r, dict)] for c in columns}


def _dotted_keys(column: str, values: list[Any]) -> list[str]:
    """A problem when every key of the table's first rows holds a dot (file names as
    keys, ``cat.jpg``: every row would be ``invalid_key``, :func:`dotted_key`)."""
    keys = [key_text(v)[0] for v in values]
    dotted = [k for k in keys if k and dotted_key(k)]
    if not keys or len(dotted) < len(keys):
        return []
    return [
        f"column {column!r} holds keys with a dot ({len(dotted)} of the first {len(keys)} "
        f"rows, e.g. {dotted[0]!r}): {dotted_key(dotted[0]).partition(': ')[2]}"
    ]


def dotted_key(key: str) -> str | None:
    """Why a table's key cannot name a kept sample's files: a dot in its name. WebDataset
    takes a key up to the first dot of a name, so ``cat.jpg.jpg`` and ``cat.jpg.txt``
    are sample ``cat`` with members ``jpg.jpg`` and ``jpg.txt`` (no image, no caption)."""
    folder, slash, name = key.rpartition("/")
    if "." not in name:
        return None
    read_as = folder + slash + name.partition(".")[0]
    return (
        f"key {key!r} holds a dot: its shard's files ({key}.jpg, {key}.txt) would be read "
        f"as sample {read_as!r} (a key ends at the first dot of a name); use a column "
        'without dots as input.key_column, or key_column: "#row"'
    )


def _type_problems(fileobj: IO[bytes], used: dict[str, str]) -> list[str]:
    """A Parquet key or caption column of a type no row of it can be read as: every
    row would be the same error (a list of captions a row, timestamp keys)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.ParquetFile(fileobj).schema_arrow
    found = []
    for field, allowed, what in (
        ("key_column", _key_type, "text or integers"),
        ("caption_column", _text_type, "text, one caption a row"),
    ):
        column = used.get(field)
        if column is None or column == ROW_KEY or column not in schema.names:
            continue
        kind = schema.field(column).type
        if not allowed(pa, kind):
            found.append(
                f"column {column!r} holds {kind} values, not {what}: set input.{field}"
                + (" (or keep one caption of each list)" if pa.types.is_list(kind) else "")
            )
    return found


def _text_type(pa: Any, kind: Any) -> bool:
    """Strings (or bytes without the UTF-8 annotation, read as text), a dictionary of
    them, or a column of nulls only."""
    if binary_values(kind):
        return True
    kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    tests = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)
    return any(test(kind) for test in tests) or pa.types.is_null(kind)


def _key_type(pa: Any, kind: Any) -> bool:
    numbers = (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal)
    uuid = getattr(kind, "extension_name", None) == "arrow.uuid"
    return _text_type(pa, kind) or any(test(kind) for test in numbers) or uuid


#: Rows read before any work to tell whether a table names its images by web address.
URL_SAMPLE_ROWS = 100


def _one(field: Any) -> Any:
    """A schema of ``field`` alone (a table may name two columns alike)."""
    import pyarrow as pa

    return pa.schema([field])


def _schema(fileobj: IO[bytes]) -> Any:
    import pyarrow.parquet as pq

    schema = pq.ParquetFile(fileobj).schema_arrow
    fileobj.seek(0)
    return schema


def _unreadable_images(column: str, values: list[Any]) -> list[str]:
    """A problem when every image of the table's first :data:`URL_SAMPLE_ROWS` rows
    that has one is a web address (a LAION-style table of URLs: every sample would be an
    ``image_url`` error); nothing when some are paths (those rows say so one by one).
    Not called for a column of the images' bytes (a Parquet table's binary column or
    Hugging Face datasets ``Image`` structs, read at decode time)."""
    images = [v for v in values if isinstance(v, str) and v.strip()]
    inline = [v for v in images if inline_image(v)]
    if images and len(inline) == len(images):
        return [
            f"column {column!r} holds images written inline ({len(inline)} of the first "
            f"{len(values)} rows, e.g. {shown(inline[0][:40])}...: base64 or data: URIs), not "
            "paths: write them to files, or to a Parquet binary column"
        ]
    urls = [v for v in images if v.lower().startswith(WEB_SCHEMES)]
    if not images or len(urls) < len(images):
        return []
    return [
        f"column {column!r} holds web addresses ({len(urls)} of the first {len(values)} "
        f"rows, e.g. {urls[0]!r}): images are not downloaded here; fetch them first (e.g. "
        "img2dataset, which writes WebDataset tars) and give the tars or a table of "
        "local paths"
    ]


#: Image paths a table may not name: web addresses (the pipeline downloads nothing).
WEB_SCHEMES = ("http://", "https://", "ftp://")


def _split_uri(path: str) -> tuple[str, str]:
    """('gs://bucket', '/a/b') for a URI, ('', path) for a local path."""
    if "://" in path:
        scheme, _, rest = path.partition("://")
        host, slash, tail = rest.partition("/")
        return f"{scheme}://{host}", slash + tail
    return "", path


def resolve_image_path(image: str, root: str) -> str | None:
    """The image path of a table row, or None when it leaves ``root``.

    Relative paths are taken from ``root`` (the table's folder, or ``input.image_root``);
    absolute paths and URIs must lie inside it. ``..`` is resolved lexically first, so
    no row can make the pipeline read a file outside the folder the user named.
    """
    if image.lower().startswith("file://") and "://" not in root:
        image = image[len("file://") :]  # a local file named as a URI: its path
    root_prefix, root_path = _split_uri(root)
    absolute = "://" in image or image.startswith("/")
    prefix, path = (
        _split_uri(image) if absolute else (root_prefix, posixpath.join(root_path, image))
    )
    if prefix != root_prefix:
        return None
    norm_root = posixpath.normpath(root_path or "/")
    norm = posixpath.normpath(path)
    if norm_root == ".":  # a table named without a folder: the working directory
        inside = not (norm == ".." or norm.startswith(("../", "/")))
    else:
        inside = norm_root == "/" or norm == norm_root or norm.startswith(norm_root + "/")
    return prefix + norm if inside else None


_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


def inline_image(value: str) -> bool:
    """Whether a path cell holds an image written inline: a ``data:`` URI, or base64
    text longer than any path and without its dot (a JPEG's starts ``/9j/``, a PNG's
    ``iVBOR``)."""
    head = value[:4096]
    return value[:5].lower() == "data:" or (
        len(value) > 1024 and "." not in head and bool(_BASE64.fullmatch(head))
    )


def _not_text(column: str, value: Any) -> str:
    """Why a row's ``column`` holds no usable text: empty (or null), or another type."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"column {column!r} is empty"
    kind = type(value).__name__
    return f"column {column!r} holds {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not text"


def key_text(value: Any) -> tuple[str, str | None]:
    """A key cell as text, and why it cannot be a key (None if it can). Text and
    integers are keys; a float with no fraction is its integer (pandas makes an integer
    column with a gap float: ``7.0`` is key ``7``); a NaN or null is an empty key; a
    bool, a list or a dict is no key (the wrong column, most likely)."""
    if isinstance(value, bytes):  # a string column written without its UTF-8 annotation
        value = value.decode("utf-8", "surrogateescape")  # not UTF-8: key_problem says so
    if isinstance(value, uuid.UUID):  # duckdb's and Spark's UUID ids
        return str(value), None
    if isinstance(value, decimal.Decimal) and value.is_finite():  # DECIMAL(18, 0) ids
        return str(int(value)) if value == value.to_integral_value() else str(value), None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", None  # empty: key_problem says so
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        kind = type(value).__name__
        return str(
            value
        ), f"key {value!r} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}, not text or an integer"
    if isinstance(value, float) and math.isinf(value):
        return str(value), f"key {value!r} is no number a key can be"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)), None
    return str(value), None


def read_errors(fmt: str) -> tuple[type[BaseException], ...]:
    """What reading a table of format ``fmt`` raises for a bad file (not a bug here): a
    Parquet file's may be any of pyarrow's (``ArrowNotImplementedError`` for an
    encoding it lacks, ``ArrowTypeError``), not only its ``ValueError`` and ``OSError``."""
    errors: tuple[type[BaseException], ...] = (OSError, ValueError, UnicodeDecodeError, csv.Error)
    if fmt == "parquet":
        import pyarrow as pa

        errors = (*errors, pa.ArrowException)
    return errors


def iter_table(
    fileobj: IO[bytes],
    source: str,
    fmt: str,
    *,
    key_column: str,
    image_column: str,
    caption_column: str,
    image_root: str | None = None,
    limits: SourceLimits | None = None,
    row_name: str | None = None,
    fields: bool = False,
) -> Iterator[SampleRecord | SourceIssue]:
    """Yield one record per table row. Image paths are relative to ``image_root``
    (default: the table's folder); a path that leaves it is an error, never read.
    ``row_name``: what names the rows of a table without a key column (default the
    table's file name without its extension; see :func:`row_names`). ``fields``: a
    record carries its row's other columns (:func:`row_fields`, its shard's KEY.json)."""
    limits = limits or SourceLimits()
    folder = source.rsplit("/", 1)[0] if "/" in source else "."
    root = image_root or folder
    index = -1
    configured = {
        "key_column": key_column,
        "image_column": image_column,
        "caption_column": caption_column,
    }
    absent: dict[str, str] | None = None  # per field: why its column is missing
    stem = row_name or source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    columns = None
    as_text: list[str] = []  # carried Parquet columns of dates and times (table_rows._plain)
    if fmt == "parquet":  # the schema decides, and only the columns in use are read
        try:
            import pyarrow.parquet as pq

            schema = pq.ParquetFile(fileobj).schema_arrow  # the footer, read once here
            present = list(schema.names)
            fileobj.seek(0)
        except read_errors(fmt) as exc:
            yield SourceIssue(source, Reason.READ_ERROR, f"not a readable Parquet table: {exc}")
            return
        used, absent = resolve_columns(present, configured)
        key_column = used["key_column"]
        image_column = used["image_column"]
        caption_column = used["caption_column"]
        columns = [c for f, c in used.items() if f not in absent and c != ROW_KEY]
        if fields:
            carried = carried_columns(schema, source, set(columns) | {image_column})
            columns += carried
            as_text = temporal(schema, carried)
        for field, problem in absent.items():
            yield SourceIssue(source, _MISSING_REASON[field], problem, count=0)
    try:
        quote: OpenQuote | None = None
        for row in read_rows(fileobj, fmt, columns, image_column, as_text):
            if isinstance(row, OpenQuote):  # the row it precedes holds other rows
                quote = row
                continue
            index += 1
            cut = row.pop(SHORT_ROW, "") if isinstance(row, dict) else ""  # csv_dicts' hint
            if isinstance(row, str):
                rec = SampleRecord(key=f"{source}#{index}", source=source, index=index)
                yield rec.with_error(Reason.INVALID_JSON, row)
                continue
            if absent is None:
                # The first row's columns decide (a table's schema, a CSV header); a
                # column found in none is said once here, and again in each row's detail.
                used, absent = resolve_columns(list(row), configured)
                key_column = used["key_column"]
                image_column = used["image_column"]
                caption_column = used["caption_column"]
                for field, problem in absent.items():
                    yield SourceIssue(source, _MISSING_REASON[field], problem, count=0)
            row_key = f"{stem.replace('.', '_')}-{index:09d}"  # a dot would split it
            key = row_key if key_column == ROW_KEY else row.get(key_column)
            text, problem = key_text(key)
            rec = SampleRecord(key=escape_surrogates(text), source=source, index=index)
            problem = problem or key_problem(text) or dotted_key(text)
            if quote is not None:
                yield rec.with_error(
                    Reason.INVALID_ROW,
                    f"lines {quote.first}-{quote.last}: a quoted cell runs over {quote.rows} "
                    'line(s) that look like rows of their own: a quote (") at the start of a '
                    "cell that is not closed there? Those rows are read as this one",
                )
                yield SourceIssue(
                    source,
                    Reason.SWALLOWED_ROWS,
                    f"lines {quote.first + 1}-{quote.last}: {quote.rows} row(s) read into "
                    f"one quoted cell of row {index} (its key {text!r}); quote the cell, or "
                    'double a quote inside it ("")',
                    count=quote.rows,
                )
                quote = None
                continue
            extra = row.get(None) if fmt == "csv" else None  # a caption's tail, unfiltered
            if not problem and extra and any(str(c).strip() for c in extra):
                yield rec.with_error(Reason.INVALID_ROW, too_many_cells(len(row) - 1, extra))
                continue
            if problem:
                detail = absent.get("key_column") or f"column {key_column!r}: {problem}"
                yield rec.with_error(Reason.INVALID_KEY, detail + cut)
                continue
            image = row.get(image_column)
            if isinstance(image, dict) and isinstance(image.get("path"), str):
                if image.get("bytes") is not None:  # bytes in JSON: read from Parquet only
                    detail = (
                        f"column {image_column!r} holds the image's bytes as text (a string "
                        "field 'bytes'), not binary: write them as a binary field"
                        if fmt == "parquet"
                        else f"column {image_column!r} holds the image's bytes in a {fmt} "
                        "table, which are read from Parquet tables only: write the table as "
                        "Parquet"
                    )
                    yield rec.with_error(Reason.MISSING_IMAGE, detail)
                    continue
                image = image["path"]  # a datasets Image that names its file
            embedded = image if isinstance(image, Embedded) else None
            if embedded is None and (not isinstance(image, str) or not image.strip()):
                detail = absent.get("image_column") or _not_text(image_column, image)
                yield rec.with_error(Reason.MISSING_IMAGE, detail + cut)
                continue
            if embedded is None and inline_image(image):
                yield rec.with_error(
                    Reason.INVALID_IMAGE_PATH,
                    f"column {image_column!r} holds an image written inline "
                    f"({shown(image[:40])}...: base64 or a data: URI), not a path",
                )
                continue
            bad = None if embedded else LONE_SURROGATE.search(image)
            if bad:
                yield rec.with_error(
                    Reason.INVALID_IMAGE_PATH,
                    f"column {image_column!r}: the path is not UTF-8 text ({not_text(bad.group())}"
                    "): no manifest can hold it; write the table's paths in UTF-8",
                )
                continue
            caption = row.get(caption_column)
            raw_caption = isinstance(caption, bytes)  # a string column without UTF-8 annotation
            if raw_caption:
                caption = caption.decode("utf-8", "surrogateescape")
            if not isinstance(caption, str) or not caption.strip():
                detail = absent.get("caption_column") or _not_text(caption_column, caption)
                yield rec.with_error(Reason.MISSING_CAPTION, detail + cut)
                continue
            bad = LONE_SURROGATE.search(caption)
            if bad and (fmt == "csv" or raw_caption):  # bytes that are not UTF-8, as in a .txt
                yield rec.with_error(
                    Reason.INVALID_CAPTION_ENCODING,
                    f"column {caption_column!r}: caption is not UTF-8 ({not_text(bad.group())})",
                )
                continue
            if "\x00" in caption:
                detail = f"column {caption_column!r}: caption {NUL_IN_TEXT}"
                yield rec.with_error(Reason.INVALID_CAPTION_ENCODING, detail)
                continue
            if bad:  # half of a pair escaped in JSON: U+FFFD stands for it
                caption = LONE_SURROGATE.sub("\ufffd", caption)
            n_caption = len(caption.encode("utf-8", "surrogatepass"))
            if n_caption > limits.max_caption_bytes:
                yield rec.with_error(
                    Reason.CAPTION_TOO_LARGE,
                    f"caption of {n_caption} bytes > max_caption_bytes {limits.max_caption_bytes}",
                )
                continue
            if fields:
                used_names = (key_column, image_column, caption_column)
                rec.row_fields = row_fields(row, used_names, limits.max_table_fields_bytes)
                rec.other_captions = carried_captions(rec.row_fields, caption)
                if problem := refused(rec.other_captions, limits.max_caption_bytes):
                    yield rec.with_error(*problem)
                    continue
            if embedded is not None:  # the bytes are the table's, at this row: nothing to resolve
                rec.image_column = image_column
                rec.caption = caption
                yield rec
                continue
            if image.lower().startswith(WEB_SCHEMES):
                yield rec.with_error(
                    Reason.IMAGE_URL,
                    f"{shown(image)} is a web address: images are not downloaded here; fetch "
                    "them first (e.g. img2dataset, which writes WebDataset tars) and give "
                    "the tars or a table of local paths",
                )
                continue
            path = resolve_image_path(image, root)
            if path is None:
                yield rec.with_error(
                    Reason.IMAGE_PATH_OUTSIDE_ROOT,
                    f"{shown(image)} is outside {root} (set input.image_root to allow another "
                    "folder)",
                )
                continue
            rec.image_path = path
            rec.image_ext = image.rsplit(".", 1)[-1].lower() if "." in image else ""
            rec.caption = caption
            yield rec
    except read_errors(fmt) as exc:
        yield SourceIssue(
            source,
            Reason.READ_ERROR,
            (
                f"table unreadable after row {index}: {exc}; the rows after it are lost"
                if index >= 0
                else f"table unreadable from its first row: {exc}; its rows are lost"
            ),
        )
