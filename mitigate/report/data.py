"""The numbers a report is built from: summary, config, manifest columns, funnel,
histograms, per-filter examples and error examples (no HTML here).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

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
    path = Path(out_dir, layout.CONFIG)
    if not path.is_file():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


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


def funnel_data(summary: Mapping[str, Any], table: pa.Table | None = None) -> Funnel:
    """The funnel, with every count taken from ``summary.json``. ``table`` (manifest
    columns ``state``, ``reason``, ``filter``) only attributes the filtered reasons to
    filters; if its counts disagree with the summary the summary's reasons are shown
    without filter names and ``consistent`` is False."""
    total = int(summary["input_count"])
    counts = summary.get("counts", {})
    by_filter: dict[tuple[Any, ...], int] = {}
    consistent = True
    if table is not None and {"state", "reason", "filter"} <= set(table.column_names):
        filtered = table.filter(pc.equal(table.column("state"), "filtered"))
        by_filter = _value_counts(filtered, ["reason", "filter"])
        per_reason: dict[str, int] = {}
        for (reason, _), n in by_filter.items():
            per_reason[reason] = per_reason.get(reason, 0) + n
        if per_reason != dict(counts.get("filtered", {}).get("reasons", {})):
            log.warning("manifest filtered counts differ from summary.json; showing the summary")
            consistent = False
            by_filter = {}
    remaining = total
    steps = []
    for label, state in _STEPS:
        entry = counts.get(state, {"total": 0, "reasons": {}})
        n = int(entry["total"])
        remaining -= n
        if state == "filtered" and by_filter:
            breakdown = [(r, f, c) for (r, f), c in by_filter.items()]
        else:
            breakdown = [(r, None, int(c)) for r, c in entry.get("reasons", {}).items()]
        breakdown.sort(key=lambda b: (-b[2], b[1] or "", b[0]))
        steps.append(FunnelStep(label, state, n, _share(n, total), remaining, breakdown))
    kept = int(counts.get("kept", {}).get("total", 0))
    if kept != remaining:
        log.warning("summary.json: kept %d != input minus removed %d", kept, remaining)
    return Funnel(total, steps, kept, _share(kept, total), consistent)


@dataclass(frozen=True)
class Histogram:
    """Counts of a score column's finite values per bin (``edges`` has one more entry)."""

    edges: np.ndarray
    counts: np.ndarray
    n_scored: int
    n_missing: int  # rows without a score (errors before scoring)


def score_histogram(
    scores: np.ndarray, threshold: float | None = None, bins: int = HISTOGRAM_BINS
) -> Histogram:
    """Histogram of the finite scores. Probability-like scores (all in [0, 1]) get
    ``bins`` equal bins over [0, 1]; integer scores (counts) one bin per integer;
    anything else ``bins`` bins over [min, max], widened to include the threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    n_missing = int(scores.size - finite.size)
    if finite.size == 0:
        return Histogram(np.array([0.0, 1.0]), np.zeros(1, dtype=np.int64), 0, n_missing)
    lo, hi = float(finite.min()), float(finite.max())
    if threshold is not None and math.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    integer = bool(np.all(finite == np.round(finite)))
    if integer and lo >= 0.0:
        # Counts start at 0 and span at least 0..1, so the plot shows a count axis (a
        # caption with no match beside one with a match), not one bin at -0.5..0.5.
        lo, hi = 0.0, max(hi, 1.0)
    if lo >= 0.0 and hi <= 1.0 and not integer:
        edges = np.linspace(0.0, 1.0, bins + 1)
    elif integer and hi - lo <= 200:
        edges = np.arange(math.floor(lo) - 0.5, math.ceil(hi) + 1.0, 1.0)
    else:
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(finite, bins=edges)
    return Histogram(edges, counts.astype(np.int64), int(finite.size), n_missing)


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


def _top(indices: np.ndarray, scores: np.ndarray, n: int, descending: bool) -> list[int]:
    if indices.size == 0 or n <= 0:
        return []
    values = scores[indices]
    order = np.argsort(-values if descending else values, kind="stable")[:n]
    return [int(i) for i in indices[order]]


def filter_data(table: pa.Table, spec: FilterSpec, max_thumbs: int) -> FilterData:
    """Histogram, drop counts and the rows of the two thumbnail strips of one filter."""
    scores = _column_f64(table, spec.column)
    hist = score_histogram(scores, spec.threshold)
    finite = np.isfinite(scores)
    mine = _mask(table, "filter", spec.filter_id) & _mask(table, "state", "filtered")
    reasons = _value_counts(table.filter(pa.array(mine)), ["reason"]) if mine.any() else {}
    at_or_above = 0
    if spec.threshold is not None:
        on_drop_side = (
            scores[finite] <= spec.threshold if spec.drops_low else scores[finite] >= spec.threshold
        )
        at_or_above = int(np.count_nonzero(on_drop_side))
    kept = np.flatnonzero(_mask(table, "state", "kept") & finite)
    dropped = np.flatnonzero(mine & finite)
    return FilterData(
        spec=spec,
        histogram=hist,
        dropped=int(mine.sum()),
        dropped_by_reason={
            r[0]: n for r, n in sorted(reasons.items(), key=lambda x: (-x[1], str(x[0])))
        },
        at_or_above=at_or_above,
        # kept samples nearest the drop side, and dropped samples nearest the keep side
        top_kept=_top(kept, scores, max_thumbs, descending=not spec.drops_low),
        bottom_dropped=_top(dropped, scores, max_thumbs, descending=spec.drops_low),
        side_histogram=_side_histogram(table, spec),
    )


def _side_histogram(table: pa.Table, spec: FilterSpec) -> Histogram | None:
    """Shorter side (px) of each image with a size, against ``min_side``: what
    image_quality's ``image_too_small`` drops read (its score is the aspect ratio)."""
    if spec.min_side is None or "width" not in table.column_names:
        return None
    side = np.fmin(_column_f64(table, "width"), _column_f64(table, "height"))
    side[~(side > 0)] = np.nan  # no size: not decoded
    return score_histogram(side, spec.min_side)


@dataclass(frozen=True)
class ErrorExample:
    key: str
    source: str
    detail: str


def error_examples(
    table: pa.Table,
    per_reason: int = ERROR_EXAMPLES_PER_REASON,
    rows: Callable[[Sequence[int]], list[dict[str, Any]]] | None = None,
) -> dict[str, list[ErrorExample]]:
    """Up to ``per_reason`` example rows (input order) per error reason. ``rows`` reads
    the examples' source and detail where ``table`` does not hold those columns."""
    index = np.flatnonzero(_mask(table, "state", "error"))
    if index.size == 0 or "reason" not in table.column_names:
        return {}
    reasons = table.column("reason").take(pa.array(index)).to_pylist()
    chosen: dict[str, list[int]] = {}
    for i, reason in zip(index.tolist(), reasons, strict=True):
        if reason is not None and len(chosen.setdefault(reason, [])) < per_reason:
            chosen[reason].append(i)
    picked = [i for reason in sorted(chosen) for i in chosen[reason]]
    have = set(table.column_names)
    if rows is not None and not {"source", "detail"} <= have:
        shown = dict(zip(picked, rows(picked), strict=True))
    else:
        sub = table.take(pa.array(picked, type=pa.int64())).to_pylist() if picked else []
        shown = dict(zip(picked, sub, strict=True))
    return {
        reason: [
            ErrorExample(
                str(shown[i]["key"]),
                str(shown[i].get("source") or ""),
                str(shown[i].get("detail") or ""),
            )
            for i in chosen[reason]
        ]
        for reason in sorted(chosen)
    }


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
