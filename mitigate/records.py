"""The per-sample record that flows through the pipeline and its states.

Reason codes live in :mod:`mitigate.reasons` (``Reason`` is re-exported here).

A :class:`SampleRecord` is deliberately light: it carries the signals computed for a
sample and a *reference* to where its bytes live (a byte span in a tar shard, or an
image path), never the image bytes themselves. Image bytes are read once for scoring
and once more, for kept samples only, when the output shards are written. That keeps
every shuffle and every runner-side buffer small, whatever the dataset size.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from mitigate.reasons import Reason as Reason  # re-exported: callers use records.Reason

# --- states -------------------------------------------------------------------------
PENDING = "pending"  # decoded and not dropped by any filter; dedup decides next
KEPT = "kept"
FILTERED = "filtered"
DUPLICATE = "duplicate"
ERROR = "error"
FINAL_STATES = (KEPT, FILTERED, DUPLICATE, ERROR)

_T = TypeVar("_T")


def compact_pickling(cls: type[_T]) -> type[_T]:
    """Class decorator for a dataclass whose instances travel between pipeline steps:
    pickle one as its class and its field values in order, not as a dict of field
    names and values (pickle's default for a dataclass).

    Beam's coder for these types is a pickle, and a record is encoded and decoded again
    ~20 times on the local runner (every shuffle and stage boundary), so the names were
    half of a light record's bytes and of its share of the runner's buffers
    (``benchmarks/bench_memory.py --record-bytes``; BENCHMARKS.md, "Compact pickles").
    Unpickling calls the dataclass's ``__init__`` with those values (no
    ``__post_init__`` may re-derive a field), and a change of the fields changes what
    an older pickle means: pickles are never stored, only passed within one run.
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if len(fields) < 2 or any(not f.init for f in fields):
        raise TypeError(
            f"{cls.__name__}: compact_pickling needs every field in __init__, and two or more"
        )
    values: Callable[[Any], tuple[Any, ...]] = operator.attrgetter(*(f.name for f in fields))

    def __reduce__(self: Any) -> tuple[type[_T], tuple[Any, ...]]:
        return cls, values(self)

    cls.__reduce__ = __reduce__  # type: ignore[assignment, method-assign]
    return cls


@compact_pickling
@dataclass(frozen=True)
class Member:
    """One member of a sample: its extension and where its data lies: in a tar shard
    (``name`` None) at ``offset``; in a folder source, the file ``name`` (relative to
    the folder, as found: ``sub/IMG_1.JPG``, whose ``ext`` is ``jpg``) from its start."""

    ext: str
    offset: int  # byte offset of the member's data (not its header) in the shard
    size: int  # bytes
    name: str | None = None  # a folder source's file (mitigate/folders.py)


@compact_pickling
@dataclass
class SampleRecord:
    """Everything the pipeline knows about one input sample, minus its image bytes.

    ``source`` and ``index`` identify the occurrence (two records may share a ``key``
    when the input repeats one; the later occurrence becomes an ``error``).
    """

    key: str
    source: str  # URI of the shard or table the sample came from
    index: int  # ordinal of the sample within ``source``
    # where the bytes are: tar members, or an image path (table input)
    members: tuple[Member, ...] = ()
    image_path: str | None = None
    image_ext: str | None = None
    # a Parquet table's column holding the image's bytes at row ``index`` of ``source``
    # (a Hugging Face datasets Image, an img2dataset ``jpg`` column); None elsewhere
    image_column: str | None = None
    caption: str | None = None
    # (field, text) of the sidecar's (or a table row's carried columns') captions that
    # differ from ``caption`` (mitigate.sidecar.other_captions): read by caption filters
    # (None: a record rebuilt from a manifest that has no such column)
    other_captions: tuple[tuple[str, str], ...] | None = ()
    # a table row's other columns as one JSON object (tables.row_fields), for KEY.json
    row_fields: str | None = None
    # signals
    n_bytes: int | None = None
    width: int | None = None  # after EXIF orientation, in pixels
    height: int | None = None
    format: str | None = None  # Pillow format name (JPEG, PNG, WEBP, ...)
    # a JPEG's quality (1-100, the IJG scale its luma table was made at:
    # mitigate.decode.jpeg_quality); None for other formats
    quality: int | None = None
    sha256: str | None = None
    phash: str | None = None  # 16 hex digits, imagehash's string form
    phash_mirror: str | None = None  # pHash of the horizontally mirrored image
    signature: bytes | None = None  # mitigate.verify signature (verify.SIG_BYTES bytes)
    # centre-view hash and its mirror (32 hex digits, hashing.to_hex_pair); None in
    # manifests written before it existed: such samples are searched on pHash only
    phash_centre: str | None = None
    scores: dict[str, float] = field(default_factory=dict)  # filter id -> score
    score_info: dict[str, str] = field(default_factory=dict)  # filter id -> detail
    # filter id -> image embedding (float16), only for filters that store them
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    # decision
    state: str = PENDING
    reason: str | None = None
    detail: str | None = None
    filter: str | None = None  # id of the filter that dropped the sample
    threshold: float | None = None
    duplicate_of: str | None = None
    distance: int | None = None  # Hamming distance to ``duplicate_of`` (0 = same bytes)
    # verification score of the pair with ``duplicate_of`` (mitigate.verify; lower = more
    # alike); on a kept sample, of the closest candidate verification refused to merge
    verify_score: float | None = None
    # rebalancing (kept samples only)
    weight: float | None = None  # density-ratio weight for loss reweighting; mean 1
    copies: int | None = None  # resample mode: times the sample is written (E = weight)

    @property
    def order(self) -> tuple[str, int]:
        """Position of the occurrence in the input, used wherever ties need breaking."""
        return (self.source, self.index)

    @property
    def resolution(self) -> int:
        return (self.width or 0) * (self.height or 0)

    def copy(self) -> SampleRecord:
        """An independent copy (its dicts too). Stages copy a record before changing
        it: runners may hand the same object to several consumers, and Beam forbids
        mutating an element a DoFn received."""
        return dataclasses.replace(
            self,
            scores=dict(self.scores),
            score_info=dict(self.score_info),
            embeddings=dict(self.embeddings),
        )

    def with_error(self, reason: str, detail: str) -> SampleRecord:
        return dataclasses.replace(self, state=ERROR, reason=reason, detail=detail)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def keep_rank(record: SampleRecord) -> tuple[int, str, str, int]:
    """Sort key for choosing which of several duplicates to keep: highest resolution,
    then smallest key, then earliest occurrence (smaller is better)."""
    return (-record.resolution, record.key, record.source, record.index)
