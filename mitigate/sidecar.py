"""A sample's ``KEY.json`` sidecar: parsed defensively, and the captions it holds.

A sidecar often holds a caption of its own (img2dataset's ``"caption"``, a
recaptioning tool's ``"text"`` or ``"prompt"``), and a kept shard's ``KEY.json`` keeps
the sidecar's fields. A caption there that differs from the one the filters read
(``KEY.txt``: a recaption beside the original alt text) would reach a trainer that
reads it unfiltered, so :func:`other_captions` names them for the caption filters too.
A table row's carried columns (its ``KEY.json``) are read the same way.
"""

from __future__ import annotations

import json
from typing import Any

from mitigate.text import LONE_SURROGATE, normalize_text

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
    try:  # a byte-order mark before it (Windows' Notepad, PowerShell) is no error
        meta = json.loads(data.decode("utf-8-sig"))
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


def carried_captions(row_fields: str | None, caption: str) -> tuple[tuple[str, str], ...]:
    """:func:`other_captions` of a table row's carried columns (``row_fields``' JSON)."""
    if not row_fields or not any(f'"{f}"' in row_fields for f in SIDECAR_CAPTION_FIELDS):
        return ()
    return other_captions(json.loads(row_fields), caption)
