"""The report's SVG charts (mitigate.report.svgplot): ticks, the data-to-box mapping,
and charts whose bars, lines and labels say what the data say."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mitigate.report import svgplot
from mitigate.report.data import Funnel, FunnelStep, Histogram
from mitigate.report.filters import _hist_plot
from mitigate.report.funnel import _funnel_plot
from mitigate.report.rebalancing import _probe_plot, _weights_plot
from mitigate.report.stats import weight_histogram

SVG = "{http://www.w3.org/2000/svg}"


def _parse(chart: svgplot.Chart) -> ET.Element:
    return ET.fromstring(chart.svg())  # well-formed XML, or this raises


def _bars(root: ET.Element) -> list[dict[str, float | str]]:
    """The data rectangles (not the background, not legend keys: those are 10 x 10)."""
    out = []
    for r in root.iter(f"{SVG}rect"):
        if r.get("width") == "100%" or (r.get("width"), r.get("height")) == ("10", "10"):
            continue
        out.append(
            {
                "x": float(r.get("x")),
                "y": float(r.get("y")),
                "w": float(r.get("width")),
                "h": float(r.get("height")),
                "fill": r.get("fill"),
            }
        )
    return out


def _texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


@given(
    lo=st.floats(-1e6, 1e6, allow_nan=False),
    span=st.floats(1e-6, 1e7, allow_nan=False),
    most=st.integers(2, 10),
)
def test_nice_ticks_cover_the_range_on_a_round_step(lo, span, most):
    assume(span > 1e-4 * max(1.0, abs(lo)))  # a chart's range, not float64's last digits
    hi = lo + span
    ticks = svgplot.nice_ticks(lo, hi, most)
    assert 1 <= len(ticks) <= most + 1
    if len(ticks) >= 2:
        step = ticks[1] - ticks[0]
        # inside the range, but for a millionth of a step (the ends are rounded so)
        assert all(lo - 1e-6 * step <= t <= hi + 1e-6 * step for t in ticks)
        mantissa = step / 10 ** math.floor(math.log10(step))
        assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 2.5, 5, 10))
        assert np.allclose(np.diff(ticks), step, rtol=1e-6)
        # no gap wider than a step at either end
        assert ticks[0] - lo < step * (1 + 1e-6) and hi - ticks[-1] < step * (1 + 1e-6)


def test_ticks_and_labels_of_common_ranges():
    assert svgplot.nice_ticks(0, 2000) == [0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000]
    assert svgplot.nice_ticks(0.0, 1.0, 5) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert [svgplot.tick_label(v, [0, 250]) for v in (0, 1250)] == ["0", "1,250"]
    assert svgplot.tick_label(0.5, [0.25, 0.5]) == "0.50"
    assert svgplot.tick_label(0.4, [0.2, 0.4]) == "0.4"
    assert svgplot.log_ticks(0.7, 2000) == [1, 10, 100, 1000]
    assert svgplot.nice_ticks(3, 3) == [3]  # no span: one tick, no division by zero


def test_a_panel_maps_its_ranges_onto_its_box_and_clips_a_log_axis():
    (p,) = svgplot.Chart().panels()
    p.set_x(10, 20)
    p.set_y(1, 1000, log=True)
    assert (p.x(10), p.x(20)) == (p.left, p.right)
    assert p.y(1) == pytest.approx(p.bottom) and p.y(1000) == pytest.approx(p.top)
    assert p.y(10) == pytest.approx(p.bottom - (p.bottom - p.top) / 3)
    assert p.y(0) == pytest.approx(p.bottom)  # log(0): clipped to the axis, not an error
    assert p.y(1e9) == pytest.approx(p.top)


def test_a_histogram_draws_one_bar_a_non_empty_bin_taller_for_more():
    counts = np.array([500, 0, 40, 3, 1])
    hist = Histogram(np.linspace(0.0, 1.0, 6), counts, int(counts.sum()), 0)
    chart = svgplot.Chart()
    _hist_plot(chart, hist, 0.55, "score")
    root = _parse(chart)
    bars = _bars(root)
    assert len(bars) == 4  # the empty bin draws nothing
    heights = [b["h"] for b in sorted(bars, key=lambda b: b["x"])]
    assert heights[0] > heights[1] > heights[2] > heights[3] > 0
    # log axis: 500 vs 40 is log10(12.5) of a decade's height apart
    (p,) = svgplot.Chart().panels()
    decade = (p.bottom - p.top) / math.log10(500 * 2.0 / 0.7)
    assert heights[0] - heights[1] == pytest.approx(math.log10(500 / 40) * decade, abs=0.05)
    # bins at or above the threshold in the filtered colour, the others not
    fills = [b["fill"] for b in sorted(bars, key=lambda b: b["x"])]
    assert fills == ["#546e7a", "#546e7a", "#ef6c00", "#ef6c00"]
    assert "threshold 0.55" in _texts(root)
    assert {"1", "10", "100", "1,000"} <= set(_texts(root))
    assert "samples (log)" in _texts(root) and "score" in _texts(root)


def test_a_threshold_outside_the_bins_is_still_shown():
    hist = Histogram(np.linspace(130.0, 1024.0, 11), np.full(10, 5), 50, 0)
    chart = svgplot.Chart()
    _hist_plot(chart, hist, 64.0, "shorter side (px)", "below")
    root = _parse(chart)
    line = next(iter(root.iter(f"{SVG}line")))
    bars = _bars(root)
    assert float(line.get("x1")) < min(b["x"] for b in bars)  # left of every bar
    assert float(line.get("x1")) >= 90.0  # inside the box


def test_the_funnel_shows_every_step_its_count_and_share():
    funnel = Funnel(
        input_count=1600,
        steps=[
            FunnelStep("errors", "error", 0, 0.0, 1600, []),
            FunnelStep("filtered", "filtered", 11, 11 / 1600, 1589, []),
            FunnelStep("near duplicates", "duplicate", 675, 675 / 1600, 914, []),
        ],
        kept=914,
        kept_share=914 / 1600,
        consistent=True,
    )
    chart = svgplot.Chart()
    _funnel_plot(chart, funnel)
    root = _parse(chart)
    texts = _texts(root)
    for label in ("input", "errors", "filtered", "near duplicates", "kept"):
        assert label in texts
    assert " 675 (42.2%)" in texts and " 914 (57.1%)" in texts and " 0 (0.0%)" in texts
    bars = _bars(root)
    assert len(bars) == 4  # no bar for the 0 errors
    widths = {b["fill"]: b["w"] for b in bars}
    assert widths["#455a64"] / widths["#2e7d32"] == pytest.approx(1600 / 914, rel=1e-3)


def test_grouped_bars_and_legend_of_the_bias_probes():
    probes = {
        "women": {"unfiltered": 0.10, "filtered": 0.05, "reweighted": 0.09},
        "men": {"unfiltered": 0.08, "filtered": 0.08, "reweighted": 0.08},
    }
    chart = svgplot.Chart()
    _probe_plot(chart, probes)
    root = _parse(chart)
    bars = _bars(root)
    assert len(bars) == 6
    by_fill: dict[str, list[dict]] = {}
    for b in bars:
        by_fill.setdefault(str(b["fill"]), []).append(b)
    women = {fill: min(bs, key=lambda b: b["x"])["h"] for fill, bs in by_fill.items()}
    assert women["#546e7a"] == pytest.approx(2 * women["#ef6c00"], rel=1e-2)
    for label in ("unfiltered", "kept", "kept, reweighted", "women", "men"):
        assert label in _texts(root)


def test_weights_with_and_without_samples():
    chart = svgplot.Chart()
    _weights_plot(
        chart,
        {"0.01": 0.5, "0.5": 1.0, "0.99": 2.0},
        weight_histogram(np.array([0.5, 1.0, 1.0, 2.0])),
    )
    root = _parse(chart)
    assert len(list(root.iter(f"{SVG}polyline"))) == 1
    assert len(list(root.iter(f"{SVG}circle"))) == 3
    assert {"0.5", "1", "2"} <= set(_texts(root))  # the three quantiles' notes
    odd = svgplot.Chart()  # a quantile that is not a number is left out, not drawn as "nan"
    _weights_plot(odd, {"0.01": float("nan"), "0.5": 1.0}, weight_histogram(np.array([1.0])))
    assert "nan" not in odd.svg() and len(list(_parse(odd).iter(f"{SVG}circle"))) == 1
    empty = svgplot.Chart()
    _weights_plot(empty, {}, weight_histogram(np.array([])))
    assert _bars(_parse(empty)) == []


def test_the_same_data_give_the_same_bytes_and_text_is_escaped():
    def draw() -> str:
        chart = svgplot.Chart()
        _probe_plot(chart, {"<b>&": {"unfiltered": 0.1, "filtered": 0.2, "reweighted": 0.3}})
        return chart.svg()

    assert draw() == draw()
    assert "&lt;b&gt;&amp;" in draw() and "<b>" not in draw()
