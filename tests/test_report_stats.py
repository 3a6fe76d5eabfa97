"""The report's every-row numbers gathered a batch at a time (``mitigate.report.stats``)
are those of the whole table: checked against plain numpy over every row, for batches
of one row, of a few rows and of the whole table, with ties across batch boundaries."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from mitigate import report
from mitigate.report import stats as report_stats
from mitigate.report.data import FilterSpec, ValueRange, histogram_edges, score_histogram

SPECS = [
    FilterSpec("nsfw", "nsfw", "sexual", 0.3),
    FilterSpec("caption_terms", "caption_terms", "violence", 1.0),
    FilterSpec("blocklist", "blocklist", "quality", 4.0, drops_low=True),
    FilterSpec("image_quality", "image_quality", "quality", 4.0, min_side=32.0),
]
STATES = ["kept", "filtered", "duplicate", "error"]
ERRORS = ["decode_error", "missing_caption", "read_error"]


def _table(n: int, seed: int) -> pa.Table:
    """Rows with coarse scores (many ties), empty cells, and every state."""
    rng = np.random.default_rng(seed)
    state = rng.choice(STATES, n, p=[0.5, 0.25, 0.1, 0.15])
    which = rng.choice([s.filter_id for s in SPECS], n)
    reason = [
        f"{f}_drop" if s == "filtered" else (str(rng.choice(ERRORS)) if s == "error" else None)
        for s, f in zip(state, which, strict=True)
    ]

    def scores(values: np.ndarray) -> pa.Array:
        return pa.array(values, mask=(state == "error") | (rng.random(n) < 0.05))

    width = rng.integers(0, 200, n).astype(float)
    return pa.table(
        {
            "state": state.tolist(),
            "reason": reason,
            "filter": [f if s == "filtered" else None for s, f in zip(state, which, strict=True)],
            "weight": pa.array(np.round(rng.gamma(4.0, 0.25, n), 2), mask=state != "kept"),
            "score_nsfw": scores(np.round(rng.random(n), 1)),  # ties on 11 values
            "score_caption_terms": scores(rng.integers(0, 3, n).astype(float)),
            "score_blocklist": scores(rng.integers(0, 40, n).astype(float)),
            "score_image_quality": scores(np.round(rng.random(n) * 6, 2)),
            "width": pa.array(width, mask=state == "error"),
            "height": pa.array(rng.integers(1, 200, n).astype(float), mask=state == "error"),
        }
    )


def _numbers(table: pa.Table, name: str) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in table.column(name).to_pylist()])


def _first(rows: np.ndarray, values: np.ndarray, n: int, descending: bool) -> list[int]:
    order = np.argsort(-values if descending else values, kind="stable")[:n]
    return rows[order].tolist()


def _batched(table: pa.Table, size: int):
    return lambda: [table.slice(i, size) for i in range(0, table.num_rows, size)]


@pytest.mark.parametrize("size", [1, 7, 64, 5000])
def test_numbers_a_batch_at_a_time_are_the_whole_tables(size):
    table = _table(1500, seed=size)
    got = report.ManifestStats.of_batches(
        _batched(table, size), table.column_names, SPECS, max_thumbs=6, per_reason=3
    )
    assert got.rows == table.num_rows
    state = np.array(table.column("state").to_pylist())
    which = np.array([f or "" for f in table.column("filter").to_pylist()])
    reason = np.array([r or "" for r in table.column("reason").to_pylist()])
    for spec, data in zip(SPECS, got.filter_data(), strict=True):
        scores = _numbers(table, spec.column)
        finite = np.isfinite(scores)
        whole = score_histogram(scores, spec.threshold)
        assert np.array_equal(data.histogram.edges, whole.edges)
        assert np.array_equal(data.histogram.counts, whole.counts)
        assert (data.histogram.n_scored, data.histogram.n_missing) == (
            finite.sum(),
            (~finite).sum(),
        )
        mine = (state == "filtered") & (which == spec.filter_id)
        assert data.dropped == mine.sum() > 0
        assert data.dropped_by_reason == {f"{spec.filter_id}_drop": mine.sum()}
        drop = (
            scores[finite] <= spec.threshold if spec.drops_low else scores[finite] >= spec.threshold
        )
        assert data.at_or_above == drop.sum()
        kept = np.flatnonzero((state == "kept") & finite)
        dropped = np.flatnonzero(mine & finite)
        assert data.top_kept == _first(kept, scores[kept], 6, not spec.drops_low)
        assert data.bottom_dropped == _first(dropped, scores[dropped], 6, spec.drops_low)
        if spec.min_side is None:
            assert data.side_histogram is None
        else:
            side = np.fmin(_numbers(table, "width"), _numbers(table, "height"))
            side[~(side > 0)] = np.nan
            expected = score_histogram(side, spec.min_side)
            assert np.array_equal(data.side_histogram.counts, expected.counts)
            assert data.side_histogram.n_missing == expected.n_missing > 0
    # the funnel's filtered counts per (reason, filter)
    pairs = {
        (r, f): int(((state == "filtered") & (reason == r) & (which == f)).sum())
        for r, f in got.by_filter
    }
    assert got.by_filter == pairs and sum(pairs.values()) == (state == "filtered").sum()
    # the first three error rows of each reason, in input order
    examples = got.error_examples(lambda rows: [{"key": str(i)} for i in rows])
    assert sorted(examples) == sorted(ERRORS)
    for r in ERRORS:
        first = np.flatnonzero((state == "error") & (reason == r))[:3]
        assert [int(e.key) for e in examples[r]] == first.tolist()
    # the kept samples' weights
    weights = _numbers(table, "weight")[state == "kept"]
    counts, edges = np.histogram(
        weights, bins=report.HISTOGRAM_BINS, range=(weights.min(), weights.max())
    )
    hist = got.weight_histogram()
    assert np.array_equal(hist.counts, counts) and np.allclose(hist.edges, edges)


@pytest.mark.parametrize("seed", range(20))
def test_the_first_n_of_a_batch_are_a_stable_sorts(seed):
    rng = np.random.default_rng(seed)
    key = rng.integers(0, 1 + seed % 5, int(rng.integers(1, 60))).astype(float)
    n = int(rng.integers(1, 70))
    expected = np.argsort(key, kind="stable")[:n]
    assert report_stats._first_n(key, n).tolist() == expected.tolist()


def test_a_run_without_weights_or_scores_has_no_histograms():
    table = pa.table({"state": ["error", "duplicate"], "reason": ["read_error", "exact_duplicate"]})
    got = report.ManifestStats.of_table(table, SPECS[:1])
    assert got.weight_histogram() is None
    (data,) = got.filter_data()
    assert data.histogram.n_scored == 0 and data.histogram.n_missing == 2
    assert data.top_kept == data.bottom_dropped == []


def test_the_report_of_a_run_read_in_small_batches_is_the_same_page(default_run, monkeypatch):
    """The run's report with batches of 5 rows (many batches a part, top-N and error
    examples merged across them) is the page of batches larger than the run."""
    whole = report.build_report(default_run)
    monkeypatch.setattr(report_stats, "BATCH_ROWS", 5)
    seen: list[int] = []
    batches = report_stats.manifest_batches

    def spy(parts, columns):
        for batch in batches(parts, columns):
            seen.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(report_stats, "manifest_batches", spy)
    assert report.build_report(default_run) == whole
    assert max(seen) == 5 and len(seen) > 4


@pytest.mark.parametrize("values", [[0.9999999999999909, 0.9999999999999913], [3.0, 3.0]])
def test_weights_that_differ_within_rounding_get_bins(values):
    # numpy cannot cut 40 bins from a span of 4e-16: the report was not written
    table = pa.table({"state": ["kept"] * len(values), "weight": values})
    hist = report.ManifestStats.of_table(table).weight_histogram()
    assert hist.counts.sum() == len(values) and np.all(np.diff(hist.edges) > 0)
    span = ValueRange()
    span.add(np.array(values) + 0.5)  # a score of such values: not an integer count
    edges = histogram_edges(span)
    assert edges is not None and np.all(np.diff(edges) > 0)


def test_the_funnel_says_when_the_counts_do_not_add_up():
    # helper-34: an edited summary.json (input 12,345, kept 999) was shown beside
    # "counts add up"
    from mitigate.report.funnel import _section_funnel as funnel_section

    table = pa.table({"state": ["kept", "kept", "error"], "reason": [None, None, "decode_error"]})
    summary = {
        "input_count": 3,
        "counts": {"kept": {"total": 2}, "error": {"total": 1, "reasons": {"decode_error": 1}}},
        "conservation": {"ok": True},
    }
    assert report_stats.funnel_data(summary, table).problems == ()
    edited = {
        **summary,
        "input_count": 12_345,
        "counts": {**summary["counts"], "kept": {"total": 999}},
    }
    got = report_stats.funnel_data(edited, table)
    assert got.problems == (
        "summary.json: kept 999 != input minus removed 12,344",
        "the manifest holds 3 rows, summary.json 12,345 input samples",
    )
    page = funnel_section(edited, got)
    assert "counts do not add up" in page and "counts add up<" not in page
