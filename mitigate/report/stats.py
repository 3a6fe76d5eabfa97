"""The report's numbers over every manifest row, gathered a batch of rows at a time.

The report read its every-row columns (state, reason, filter, scores, weights, sizes)
of the whole run into one Arrow table, with the histograms' float64 copies and masks
beside it: ~0.11 KB a row (558 MB at 4,000,000 rows), so the report of a run of 10**8
samples could not be written on one machine. Here :class:`ManifestStats` reads the
manifest parts :data:`BATCH_ROWS` rows at a time, twice: the first pass counts, finds
each histogrammed column's range and picks the rows of the thumbnail strips and the
error examples; the second fills the histograms, whose bins the ranges decide. What it
holds does not grow with the rows (a few numbers and rows a filter, the examples), and
its numbers are those the whole table gave (the page is the same bytes).

``funnel_data``, ``filter_data`` and ``error_examples`` take one Arrow table (one
batch) as before, for tools and tests that hold one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mitigate.report.data import (
    _STEPS,
    ERROR_EXAMPLES_PER_REASON,
    HISTOGRAM_BINS,
    ErrorExample,
    FilterData,
    FilterSpec,
    Funnel,
    FunnelStep,
    Histogram,
    ValueRange,
    _column_f64,
    _mask,
    _share,
    _value_counts,
    histogram_edges,
    widened,
)

log = logging.getLogger(__name__)

#: Manifest rows read at a time (a part's row groups are 16,384 rows).
BATCH_ROWS = 65_536

Rows = Callable[[Sequence[int]], list[dict[str, Any]]]


def manifest_batches(parts: Sequence[Path], columns: Sequence[str]) -> Iterator[pa.Table]:
    """``columns`` (those a part has) of every part in turn, up to :data:`BATCH_ROWS`
    rows at a time, in input order."""
    for part in parts:
        with pq.ParquetFile(part) as file:
            have = set(file.schema_arrow.names)
            names = [c for c in columns if c in have]
            for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=names):
                yield pa.Table.from_batches([batch])


def _first_n(key: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` smallest values of ``key``, smallest first, a tie to the
    earlier position: what a stable argsort's first ``n`` are, without sorting all."""
    if key.size > n:
        kth = np.partition(key, n - 1)[n - 1]
        below = np.flatnonzero(key < kth)
        at = np.flatnonzero(key == kth)[: n - below.size]
        pos = np.concatenate([below, at])
    else:
        pos = np.arange(key.size)
    return pos[np.lexsort((pos, key[pos]))]


class _Top:
    """The ``n`` rows of the highest (``descending``) or lowest finite values seen, a tie
    to the earlier row: the rows a stable sort of every row would put first."""

    def __init__(self, n: int, descending: bool) -> None:
        self.n = n
        self.descending = descending
        self.rows = np.empty(0, dtype=np.int64)
        self.values = np.empty(0, dtype=np.float64)

    def add(self, rows: np.ndarray, values: np.ndarray) -> None:
        """``rows`` (ascending, after every row added before) and their values."""
        if self.n <= 0 or rows.size == 0:
            return
        pick = _first_n(-values if self.descending else values, self.n)
        rows = np.concatenate([self.rows, rows[pick]])
        values = np.concatenate([self.values, values[pick]])
        best = _first_n(-values if self.descending else values, self.n)
        self.rows, self.values = rows[best], values[best]

    def result(self) -> list[int]:
        return [int(i) for i in self.rows]


class _Binned:
    """One histogrammed column: its range (first pass), then its counts (second)."""

    def __init__(self, threshold: float | None) -> None:
        self.threshold = threshold
        self.range = ValueRange()
        self.edges: np.ndarray | None = None
        self.counts = np.zeros(1, dtype=np.int64)

    def fix_bins(self) -> None:
        self.edges = histogram_edges(self.range, self.threshold)
        if self.edges is not None:
            self.counts = np.zeros(self.edges.size - 1, dtype=np.int64)

    def count(self, values: np.ndarray) -> None:
        if self.edges is not None:
            finite = values[np.isfinite(values)]
            self.counts += np.histogram(finite, bins=self.edges)[0].astype(np.int64)

    def histogram(self) -> Histogram:
        r = self.range
        if self.edges is None:
            return Histogram(np.array([0.0, 1.0]), np.zeros(1, dtype=np.int64), 0, r.n_missing)
        return Histogram(self.edges, self.counts, r.n_finite, r.n_missing)


def _shorter_side(batch: pa.Table) -> np.ndarray:
    """Shorter side (px) of each row's image, NaN where it has no size (not decoded)."""
    side = np.fmin(_column_f64(batch, "width"), _column_f64(batch, "height"))
    side[~(side > 0)] = np.nan
    return side


class _FilterStats:
    """What the report shows of one filter, gathered over the batches."""

    def __init__(self, spec: FilterSpec, max_thumbs: int, sizes: bool) -> None:
        self.spec = spec
        self.scores = _Binned(spec.threshold)
        self.sides = _Binned(spec.min_side) if spec.min_side is not None and sizes else None
        self.dropped = 0
        self.reasons: dict[str, int] = {}
        self.at_or_above = 0
        # kept samples nearest the drop side, and dropped samples nearest the keep side
        self.top_kept = _Top(max_thumbs, descending=not spec.drops_low)
        self.bottom_dropped = _Top(max_thumbs, descending=spec.drops_low)

    def first(self, batch: pa.Table, start: int, kept: np.ndarray, filtered: np.ndarray) -> None:
        spec = self.spec
        scores = _column_f64(batch, spec.column)
        finite = np.isfinite(scores)
        values = self.scores.range.add(scores)
        mine = _mask(batch, "filter", spec.filter_id) & filtered
        if mine.any():
            self.dropped += int(np.count_nonzero(mine))
            for (reason,), n in _value_counts(batch.filter(pa.array(mine)), ["reason"]).items():
                self.reasons[reason] = self.reasons.get(reason, 0) + n
        if spec.threshold is not None:
            drop_side = values <= spec.threshold if spec.drops_low else values >= spec.threshold
            self.at_or_above += int(np.count_nonzero(drop_side))
        for top, rows in ((self.top_kept, kept & finite), (self.bottom_dropped, mine & finite)):
            at = np.flatnonzero(rows)
            top.add(at + start, scores[at])
        if self.sides is not None:
            self.sides.range.add(_shorter_side(batch))

    def second(self, batch: pa.Table) -> None:
        self.scores.count(_column_f64(batch, self.spec.column))
        if self.sides is not None:
            self.sides.count(_shorter_side(batch))

    def data(self) -> FilterData:
        return FilterData(
            spec=self.spec,
            histogram=self.scores.histogram(),
            dropped=self.dropped,
            dropped_by_reason={
                r: n for r, n in sorted(self.reasons.items(), key=lambda x: (-x[1], str(x[0])))
            },
            at_or_above=self.at_or_above,
            top_kept=self.top_kept.result(),
            bottom_dropped=self.bottom_dropped.result(),
            side_histogram=None if self.sides is None else self.sides.histogram(),
        )


class ManifestStats:
    """The report's every-row numbers, from batches of manifest rows in input order."""

    def __init__(
        self,
        columns: Iterable[str],
        specs: Sequence[FilterSpec] = (),
        max_thumbs: int = 12,
        per_reason: int = ERROR_EXAMPLES_PER_REASON,
    ) -> None:
        """``columns``: those the batches hold (a column the run's manifest lacks
        counts as unscored, as in a table without it)."""
        self.columns = frozenset(columns)
        self.rows = 0
        self.per_reason = per_reason
        sizes = "width" in self.columns
        self.filters = [_FilterStats(s, max_thumbs, sizes) for s in specs]
        # (reason, filter) of the filtered rows, in the order they first appear
        self.by_filter: dict[tuple[Any, ...], int] = {}
        self.examples: dict[str, list[int]] = {}
        self.weights = ValueRange()
        self._weight_bins: tuple[float, float] | None = None
        self._weight_counts = np.zeros(HISTOGRAM_BINS, dtype=np.int64)

    # ------------------------------------------------------------------ building

    @classmethod
    def of_batches(
        cls,
        batches: Callable[[], Iterable[pa.Table]],
        columns: Iterable[str],
        specs: Sequence[FilterSpec] = (),
        max_thumbs: int = 12,
        per_reason: int = ERROR_EXAMPLES_PER_REASON,
    ) -> ManifestStats:
        """Two passes over ``batches()`` (each call a new iterator over the same rows)."""
        stats = cls(columns, specs, max_thumbs, per_reason)
        for batch in batches():
            stats._first(batch)
        if stats._fix_bins():
            for batch in batches():
                stats._second(batch)
        return stats

    @classmethod
    def of_table(
        cls,
        table: pa.Table,
        specs: Sequence[FilterSpec] = (),
        max_thumbs: int = 12,
        per_reason: int = ERROR_EXAMPLES_PER_REASON,
    ) -> ManifestStats:
        return cls.of_batches(lambda: [table], table.column_names, specs, max_thumbs, per_reason)

    @classmethod
    def of_run(
        cls,
        parts: Sequence[Path],
        columns: Sequence[str],
        specs: Sequence[FilterSpec] = (),
        max_thumbs: int = 12,
    ) -> ManifestStats:
        """The numbers of a run's manifest ``parts``, reading ``columns`` of them."""
        return cls.of_batches(lambda: manifest_batches(parts, columns), columns, specs, max_thumbs)

    def _first(self, batch: pa.Table) -> None:
        start, self.rows = self.rows, self.rows + batch.num_rows
        kept = _mask(batch, "state", "kept")
        filtered = _mask(batch, "state", "filtered")
        if {"state", "reason", "filter"} <= self.columns and filtered.any():
            for group, n in _value_counts(
                batch.filter(pa.array(filtered)), ["reason", "filter"]
            ).items():
                self.by_filter[group] = self.by_filter.get(group, 0) + n
        for f in self.filters:
            f.first(batch, start, kept, filtered)
        weights = _column_f64(batch, "weight")
        self.weights.add(weights[kept])
        self._first_examples(batch, start)

    def _first_examples(self, batch: pa.Table, start: int) -> None:
        """The first ``per_reason`` error rows of each reason, in input order."""
        errors = np.flatnonzero(_mask(batch, "state", "error"))
        if errors.size == 0 or "reason" not in self.columns:
            return
        reasons = batch.column("reason").take(pa.array(errors))
        for reason in pc.unique(reasons).to_pylist():
            if reason is None:
                continue
            chosen = self.examples.setdefault(reason, [])
            room = self.per_reason - len(chosen)
            if room > 0:
                hits = pc.fill_null(pc.equal(reasons, reason), False)
                at = np.flatnonzero(hits.to_numpy(zero_copy_only=False))[:room]
                chosen.extend((errors[at] + start).tolist())

    def _fix_bins(self) -> bool:
        """The histograms' bins from the ranges; True if a second pass has bins to fill."""
        for f in self.filters:
            f.scores.fix_bins()
            if f.sides is not None:
                f.sides.fix_bins()
        if self.weights.n_finite:
            self._weight_bins = widened(self.weights.lo, self.weights.hi, 0.05)
        return bool(
            self._weight_bins
            or any(
                f.scores.edges is not None or (f.sides and f.sides.edges is not None)
                for f in self.filters
            )
        )

    def _second(self, batch: pa.Table) -> None:
        for f in self.filters:
            f.second(batch)
        if self._weight_bins is not None:
            weights = _column_f64(batch, "weight")
            weights = weights[np.isfinite(weights) & _mask(batch, "state", "kept")]
            counts, _ = np.histogram(weights, bins=HISTOGRAM_BINS, range=self._weight_bins)
            self._weight_counts += counts.astype(np.int64)

    # ------------------------------------------------------------------- results

    def filter_data(self) -> list[FilterData]:
        """Each filter's histogram, drop counts and thumbnail strips, in spec order."""
        return [f.data() for f in self.filters]

    def weight_histogram(self) -> Histogram | None:
        """The kept samples' finite weights: ``HISTOGRAM_BINS`` bins over their range
        (None if no kept sample has a weight)."""
        if self._weight_bins is None:
            return None
        edges = np.histogram_bin_edges([], bins=HISTOGRAM_BINS, range=self._weight_bins)
        return Histogram(edges, self._weight_counts, self.weights.n_finite, 0)

    def error_examples(self, rows: Rows) -> dict[str, list[ErrorExample]]:
        """Up to ``per_reason`` example rows (input order) per error reason, by reason;
        ``rows`` reads their key, source and detail."""
        picked = [i for reason in sorted(self.examples) for i in self.examples[reason]]
        shown = dict(zip(picked, rows(picked), strict=True)) if picked else {}
        return {
            reason: [
                ErrorExample(
                    str(shown[i]["key"]),
                    str(shown[i].get("source") or ""),
                    str(shown[i].get("detail") or ""),
                )
                for i in self.examples[reason]
            ]
            for reason in sorted(self.examples)
        }


def weight_histogram(weights: np.ndarray) -> Histogram | None:
    """The histogram the rebalancing section draws of these kept samples' weights."""
    values = np.asarray(weights, dtype=np.float64)
    table = pa.table({"state": ["kept"] * values.size, "weight": values})
    return ManifestStats.of_table(table).weight_histogram()


# ------------------------------------------------------------- one table at a time


def funnel_data(
    summary: Mapping[str, Any], table: pa.Table | ManifestStats | None = None
) -> Funnel:
    """The funnel, with every count taken from ``summary.json``. ``table`` (manifest
    columns ``state``, ``reason``, ``filter``, or the stats of them) only attributes the
    filtered reasons to filters; if its counts disagree with the summary the summary's
    reasons are shown without filter names and ``consistent`` is False."""
    stats = ManifestStats.of_table(table) if isinstance(table, pa.Table) else table
    total = int(summary["input_count"])
    counts = summary.get("counts", {})
    by_filter: dict[tuple[Any, ...], int] = {}
    consistent = True
    if stats is not None and {"state", "reason", "filter"} <= stats.columns:
        by_filter = dict(stats.by_filter)
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
    problems = []
    if kept != remaining:
        problems.append(f"summary.json: kept {kept:,} != input minus removed {remaining:,}")
    rows = stats.rows if stats is not None else None
    if rows is not None and rows != total:
        problems.append(f"the manifest holds {rows:,} rows, summary.json {total:,} input samples")
    for problem in problems:
        log.warning("%s", problem)
    return Funnel(total, steps, kept, _share(kept, total), consistent, tuple(problems))


def filter_data(table: pa.Table, spec: FilterSpec, max_thumbs: int) -> FilterData:
    """Histogram, drop counts and the rows of the two thumbnail strips of one filter."""
    return ManifestStats.of_table(table, [spec], max_thumbs).filter_data()[0]


def error_examples(
    table: pa.Table, per_reason: int = ERROR_EXAMPLES_PER_REASON, rows: Rows | None = None
) -> dict[str, list[ErrorExample]]:
    """Up to ``per_reason`` example rows (input order) per error reason. ``rows`` reads
    the examples' source and detail where ``table`` does not hold those columns."""
    stats = ManifestStats.of_table(table, per_reason=per_reason)
    if rows is None or {"source", "detail"} <= set(table.column_names):

        def rows(picked: Sequence[int]) -> list[dict[str, Any]]:
            return table.take(pa.array(picked, type=pa.int64())).to_pylist()

    return stats.error_examples(rows)
