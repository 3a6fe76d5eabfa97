"""The numbers a report is built from: summary, config, manifest columns, funnel,
histograms, per-filter examples and error examples (no HTML here).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mitigate import layout

log = logging.getLogger(__name__)
#: Example rows per error reason in the errors table.
ERROR_EXAMPLES_PER_REASON = 5
#: Bins of a score histogram on a continuous score.
HISTOGRAM_BINS = 40

# Config fields that hold the threshold on a filter's *score* (first one present wins):
# ONNX/NudeNet filters drop when score >= threshold, image_quality when the aspect
# ratio (its score) > max_aspect_ratio, caption_terms when the match count >= min_matches,
# blocklist when the distance in bits (its score) <= max_distance.
_THRESHOLD_FIELDS = ("threshold", "max_aspect_ratio", "min_matches", "max_distance")
# Filters whose low scores drop (the others drop high scores).
_DROP_AT_OR_BELOW = frozenset({"blocklist"})

_STEPS = (
    ("errors", "error"),
    ("filtered", "filtered"),
    ("duplicates", "duplicate"),
)


# --------------------------------------------------------------------------- inputs


def local_open(path: str) -> IO[bytes]:
    """The default opener: a local file, opened for binary reading."""
    return open(path, "rb")


def load_summary(out_dir: str | Path) -> dict[str, Any]:
    """A run's ``summary.json``."""
    return json.loads(Path(out_dir, layout.SUMMARY).read_text(encoding="utf-8"))


def load_run_config(out_dir: str | Path) -> dict[str, Any]:
    """A run's effective ``config.yaml`` (empty dict if the run has none)."""
    from mitigate.review import run_config

    if not Path(out_dir, layout.CONFIG).is_file():
        return {}
    return run_config(out_dir)


@dataclass(frozen=True)
class FilterSpec:
    """One configured filter as the report needs it."""

    filter_id: str
    name: str
    category: str
    threshold: float | None  # on the score column; None if the filter has no such field
    # image_quality's min_side (px): its size check reads the shorter side, not the score
    min_side: float | None = None
    # the drop side: scores at or below the threshold (blocklist distance), else at/above
    drops_low: bool = False

    @property
    def column(self) -> str:
        return f"score_{self.filter_id}"


def filter_specs(config: Mapping[str, Any], summary: Mapping[str, Any]) -> list[FilterSpec]:
    """The run's filters in config order (falling back to ``summary["filters"]``)."""
    entries = list(config.get("filters") or [])
    if not entries:
        entries = [{"name": f} for f in summary.get("filters", [])]
    specs = []
    for entry in entries:
        threshold = next(
            (float(entry[f]) for f in _THRESHOLD_FIELDS if entry.get(f) is not None), None
        )
        specs.append(
            FilterSpec(
                filter_id=entry.get("id") or entry["name"],
                name=entry["name"],
                category=entry.get("category") or "quality",
                threshold=threshold,
                min_side=None if entry.get("min_side") is None else float(entry["min_side"]),
                drops_low=entry["name"] in _DROP_AT_OR_BELOW,
            )
        )
    return specs


#: Columns the report shows for a few rows only (thumbnails, captions, error details):
#: read for those rows (:class:`mitigate.runtable.RunTable`), not for every row of a run.
SHOWN_ONLY = frozenset(
    {
        "key",
        "source",
        "index",
        "detail",
        "caption",
        "image_ext",
        "image_path",
        "image_column",
        "members",
        "row_fields",
    }
)


def manifest_columns(available: Sequence[str], specs: Sequence[FilterSpec]) -> list[str]:
    """The manifest columns the report reads for every row (of those the run has); the
    :data:`SHOWN_ONLY` ones are read for the rows it shows."""
    wanted = [
        "state",
        "reason",
        "filter",
        "weight",
        *(s.column for s in specs),
        *(("width", "height") if any(s.min_side is not None for s in specs) else ()),
    ]
    have = set(available)
    return [c for c in wanted if c in have]


#: Columns the report reads for every row as dictionary indices (a few distinct values).
ENCODED = ("state", "reason", "filter")


def _manifest_schema_names(out_dir: str | Path) -> list[str]:
    import pyarrow.parquet as pq

    from mitigate.review import manifest_parts

    return list(pq.read_schema(manifest_parts(out_dir)[0]).names)


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class FunnelStep:
    """One step of the funnel: samples removed in a state, and what is left after it."""

    label: str  # errors, filtered, duplicates
    state: str
    count: int
    share: float  # of the input count
    remaining: int
    # (reason, filter or None, count), largest first
    breakdown: list[tuple[str, str | None, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Funnel:
    input_count: int
    steps: list[FunnelStep]
    kept: int
    kept_share: float
    consistent: bool  # per-filter breakdown from the manifest matches summary.json
    # where the summary's own counts, or the manifest's rows, do not add up to its input
    problems: tuple[str, ...] = ()


def _share(n: int, total: int) -> float:
    return n / total if total else 0.0


def _value_counts(table: pa.Table, columns: Sequence[str]) -> dict[tuple[Any, ...], int]:
    """Rows per value of ``columns``, in the order the values first appear: grouped on
    one thread, since Arrow's threaded grouping orders its groups as its threads end
    (seen as a report's reasons of equal count swapping places between two runs)."""
    if table.num_rows == 0:
        return {}
    grouped = table.group_by(list(columns), use_threads=False).aggregate([([], "count_all")])
    cols = [grouped.column(c).to_pylist() for c in columns]
    counts = grouped.column("count_all").to_pylist()
    return {tuple(c[i] for c in cols): n for i, n in enumerate(counts)}


@dataclass(frozen=True)
class Histogram:
    """Counts of a score column's finite values per bin (``edges`` has one more entry)."""

    edges: np.ndarray
    counts: np.ndarray
    n_scored: int
    n_missing: int  # rows without a score (errors before scoring)


@dataclass
class ValueRange:
    """The finite values of a column seen so far: how many, their range, and whether
    all are integers (what a histogram's bins are chosen from)."""

    n_finite: int = 0
    n_missing: int = 0  # NaN or null: rows without a value
    lo: float = math.inf
    hi: float = -math.inf
    integer: bool = True

    def add(self, values: np.ndarray) -> np.ndarray:
        """Count ``values`` (float64) in; returns their finite ones."""
        finite = values[np.isfinite(values)]
        self.n_missing += int(values.size - finite.size)
        if finite.size:
            self.n_finite += int(finite.size)
            self.lo = min(self.lo, float(finite.min()))
            self.hi = max(self.hi, float(finite.max()))
            self.integer = self.integer and bool(np.all(finite == np.round(finite)))
        return finite


def histogram_edges(
    values: ValueRange, threshold: float | None = None, bins: int = HISTOGRAM_BINS
) -> np.ndarray | None:
    """Bin edges for the finite values (None if there are none). Probability-like
    scores (all in [0, 1]) get ``bins`` equal bins over [0, 1]; integer scores (counts)
    one bin per integer; anything else ``bins`` bins over [min, max], widened to
    include the threshold."""
    if values.n_finite == 0:
        return None
    lo, hi, integer = values.lo, values.hi, values.integer
    if threshold is not None and math.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    if integer and lo >= 0.0:
        # Counts start at 0 and span at least 0..1, so the plot shows a count axis (a
        # caption with no match beside one with a match), not one bin at -0.5..0.5.
        lo, hi = 0.0, max(hi, 1.0)
    if lo >= 0.0 and hi <= 1.0 and not integer:
        return np.linspace(0.0, 1.0, bins + 1)
    if integer and hi - lo <= 200:
        return np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.0, 1.0)
    lo, hi = widened(lo, hi, 0.5)
    return np.linspace(lo, hi, bins + 1)


def widened(lo: float, hi: float, pad: float) -> tuple[float, float]:
    """``(lo, hi)``, or ``(lo - pad, hi + pad)`` where the span is too narrow for bins:
    empty, or within rounding (weights of 0.9999999999999909 and ...913, whose bins
    numpy cannot cut)."""
    if hi - lo > 1e-9 * max(1.0, abs(lo), abs(hi)):
        return lo, hi
    return lo - pad, hi + pad


def score_histogram(
    scores: np.ndarray, threshold: float | None = None, bins: int = HISTOGRAM_BINS
) -> Histogram:
    """Histogram of the finite scores, binned as :func:`histogram_edges` says."""
    values = ValueRange()
    finite = values.add(np.asarray(scores, dtype=np.float64))
    edges = histogram_edges(values, threshold, bins)
    if edges is None:
        return Histogram(np.array([0.0, 1.0]), np.zeros(1, dtype=np.int64), 0, values.n_missing)
    counts, _ = np.histogram(finite, bins=edges)
    return Histogram(edges, counts.astype(np.int64), values.n_finite, values.n_missing)


def _column_f64(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    col = table.column(name)
    arr = pc.fill_null(pc.cast(col, pa.float64()), float("nan"))
    return arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _mask(table: pa.Table, name: str, value: str) -> np.ndarray:
    if name not in table.column_names:
        return np.zeros(table.num_rows, dtype=bool)
    eq = pc.fill_null(pc.equal(table.column(name), value), False)
    return eq.to_numpy(zero_copy_only=False).astype(bool, copy=False)


@dataclass(frozen=True)
class FilterData:
    spec: FilterSpec
    histogram: Histogram
    dropped: int  # rows whose state this filter decided
    dropped_by_reason: dict[str, int]
    at_or_above: int  # scored rows on the drop side of the threshold (any state)
    top_kept: list[int]  # manifest row indices, nearest the drop side first
    bottom_dropped: list[int]  # manifest row indices, nearest the keep side first
    # image_quality: shorter side (px) of every decoded image, against min_side
    side_histogram: Histogram | None = None


@dataclass(frozen=True)
class ErrorExample:
    key: str
    source: str
    detail: str


def cluster_size_bars(sizes: Mapping[int, int], max_bars: int = 20) -> list[tuple[str, int]]:
    """(label, clusters) bars of a cluster-size histogram: one bar per size when there are
    few sizes, otherwise powers-of-two buckets (``2``, ``3-4``, ``5-8``, ...)."""
    if not sizes:
        return []
    if max(sizes) - min(sizes) < max_bars:
        return [(str(k), sizes[k]) for k in sorted(sizes)]
    buckets: dict[int, int] = {}
    for size, n in sizes.items():
        b = max(1, math.ceil(math.log2(max(size, 2))))  # size in (2**(b-1), 2**b]
        buckets[b] = buckets.get(b, 0) + n
    out = []
    for b in sorted(buckets):
        lo, hi = 2 ** (b - 1) + 1, 2**b
        out.append((str(hi) if lo >= hi else f"{lo}-{hi}", buckets[b]))
    return out
