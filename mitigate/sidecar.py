"""A sample's ``KEY.json`` sidecar: parsed defensively, and the captions it holds.

A sidecar often holds a caption of its own (img2dataset's ``"caption"``, a
recaptioning tool's ``"text"`` or ``"prompt"``), and a kept shard's ``KEY.json`` keeps
the sidecar's fields. A caption there that differs from the one the filters read
(``KEY.txt``: a recaption beside the original alt text) would reach a trainer that
reads it unfiltered, so :func:`other_captions` names them for the caption filters too.
A table row's carried columns (its ``KEY.json``) are read the same way.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from typing import Any

from mitigate.reasons import Reason
from mitigate.text import (
    ENCODING_NAMES,
    LONE_SURROGATE,
    NUL_IN_TEXT,
    escape_surrogates,
    normalize_text,
    text_encoding,
)

#: The sidecar's string fields read as a caption, the first present taken where a tar
#: sample has no caption member; the others (and this one, beside a caption member)
#: are the sample's other captions when their text differs (:func:`other_captions`).
SIDECAR_CAPTION_FIELDS = ("caption", "text", "prompt", "txt")

MAX_JSON_DEPTH = 64  # sidecars nest a few levels; deeper is hostile or broken


def _depth_ok(value: Any, limit: int) -> bool:
    """Iteratively (no recursion to exhaust) check that ``value`` nests <= limit."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return True


def parse_sidecar(data: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """A ``KEY.json`` sidecar as a dict, or why it is unusable."""
    codec = text_encoding(data[:4])  # a byte-order mark: Notepad's UTF-8, PowerShell 5's
    try:  # UTF-16 (Out-File), as a caption member may be
        meta = json.loads(data.decode(codec))
    except UnicodeDecodeError as exc:
        return None, f"sidecar .json is not {ENCODING_NAMES[codec]} text: {exc}"
    except ValueError as exc:  # not UTF-8, not JSON; an integer of more than 4,300
        # digits (Python's limit on converting one) ended the run (helper-38)
        return None, f"sidecar .json: {str(exc).split('; use sys.')[0]}"
    except RecursionError:
        return None, "sidecar .json is nested too deeply to parse"
    if not isinstance(meta, dict):
        return None, f"sidecar .json is a {type(meta).__name__}, not an object"
    if not _depth_ok(meta, MAX_JSON_DEPTH):
        return None, f"sidecar .json nests deeper than {MAX_JSON_DEPTH} levels"
    return meta, None


def sidecar_caption_field(meta: dict[str, Any] | None) -> str | None:
    """The sidecar field holding the caption (:data:`SIDECAR_CAPTION_FIELDS`), or None."""
    values = meta or {}
    return next((f for f in SIDECAR_CAPTION_FIELDS if isinstance(values.get(f), str)), None)


def other_captions(meta: dict[str, Any] | None, caption: str) -> tuple[tuple[str, str], ...]:
    """``(field, text)`` of each string field of :data:`SIDECAR_CAPTION_FIELDS` in
    ``meta`` (top level) whose text differs from ``caption`` and from the fields before
    it once normalised (:func:`~mitigate.text.normalize_text`; blank ones left out), in
    that order: what a kept shard's ``KEY.json`` would carry unfiltered."""
    seen = {normalize_text(caption)}
    out = []
    for field in SIDECAR_CAPTION_FIELDS:
        value = (meta or {}).get(field)
        if not isinstance(value, str):
            continue
        text = LONE_SURROGATE.sub("\ufffd", value)
        norm = normalize_text(text)
        if norm and norm not in seen:
            seen.add(norm)
            out.append((field, text))
    return tuple(out)


def refused(others: tuple[tuple[str, str], ...], limit: int | None) -> tuple[str, str] | None:
    """(reason, detail) where one of a sample's other captions is refused as the caption
    itself would be: over ``limit`` bytes in UTF-8 (``decode.max_caption_bytes``), or
    holding a NUL (helper-47: ``g\\u0000ore`` passed the caption filters), else None."""
    for field, text in others:
        size = len(text.encode("utf-8", "surrogatepass"))
        if limit is not None and size > limit:
            return Reason.CAPTION_TOO_LARGE, (
                f"caption (.json {field!r}) of {size} bytes > max_caption_bytes {limit}"
            )
        if "\x00" in text:
            return Reason.INVALID_CAPTION_ENCODING, f"caption (.json {field!r}) {NUL_IN_TEXT}"
    return None


def carried_captions(row_fields: str | None, caption: str) -> tuple[tuple[str, str], ...]:
    """:func:`other_captions` of a table row's carried columns (``row_fields``' JSON)."""
    if not row_fields or not any(f'"{f}"' in row_fields for f in SIDECAR_CAPTION_FIELDS):
        return ()
    return other_captions(json.loads(row_fields), caption)


def _json_value(value: Any) -> Any:
    """A table value JSON has no type for: dates and times in ISO 8601, others (Decimal,
    UUID) as their text."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray):  # a CSV/JSONL value never is: a nested one
        return None
    return str(value)


def json_ready(value: Any) -> Any:
    """``value`` as strict JSON holds it, at any depth: a NaN or infinite float is None
    (JSON has no word for them: Python writes ``NaN``, which JSON readers refuse), a lone
    surrogate in a string its escape (``\\xe9`` for a byte that was not UTF-8)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return escape_surrogates(value)
    if isinstance(value, dict):  # a name too: a CSV header's byte that is not UTF-8
        return {json_ready(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def json_text(value: Any, sort_keys: bool = True) -> str:
    """``value`` as strict JSON text (UTF-8-encodable), through :func:`json_ready` only
    where it needs it."""
    try:
        text = json.dumps(
            value, sort_keys=sort_keys, ensure_ascii=False, default=_json_value, allow_nan=False
        )
        text.encode("utf-8")
        return text
    except (ValueError, UnicodeEncodeError):  # NaN, infinity, a lone surrogate
        return json.dumps(
            json_ready(value), sort_keys=sort_keys, ensure_ascii=False, default=_json_value
        )


#: Where a row's fields name the columns left out to keep under the limit.
NOT_CARRIED = "_not_carried"


def row_fields(row: dict[Any, Any], used: Sequence[str], limit: int) -> str | None:
    """A table row's columns besides ``used`` (key, image, caption) as one JSON object,
    sorted by name, for its shard's KEY.json (None where it has none), of at most
    ``limit`` bytes (``output.max_table_fields_bytes``): the record carries it through
    the run, so an embedding a row (768 floats: ~15 KB of JSON) made a run 2.3x slower
    and its memory grow with the data. Over the limit, the largest columns are left
    out, their names under :data:`NOT_CARRIED`. A CSV row's cells past its header (the
    csv module keys them ``None``) are not: blank ones are nothing, others make the row
    an ``invalid_row`` (:func:`mitigate.table_rows.too_many_cells`)."""
    fields = {k: v for k, v in row.items() if k not in used and isinstance(k, str)}
    if not fields:
        return None
    text = json_text(fields)
    if len(text.encode("utf-8")) <= limit:
        return text
    size = {k: len(json_text({k: v}).encode("utf-8")) for k, v in fields.items()}
    left: list[str] = []
    for name in sorted(fields, key=lambda k: (-size[k], k)):  # largest first
        del fields[name]
        left.append(name)
        text = json_text({**fields, NOT_CARRIED: sorted(left)})
        if len(text.encode("utf-8")) <= limit or not fields:
            return text
    return text


def summary_bytes(summary: Any) -> bytes:
    """``summary.json``'s bytes: strict JSON, a NaN or infinity written ``null`` (a run
    that kept nothing wrote its weight quantiles as ``NaN``, which JSON readers refuse:
    helper-44)."""
    return json.dumps(json_ready(summary), indent=2, sort_keys=True, allow_nan=False).encode()
