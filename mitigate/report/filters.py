"""The ``filters`` section: per filter, a score histogram with its threshold and
thumbnail strips of the highest-scored kept and lowest-scored dropped samples.
"""

from __future__ import annotations

from collections.abc import Sequence

from mitigate.report.common import (
    _PALETTE,
    _esc,
    _fmt_num,
    _number,
    _plot,
    _short_caption,
    _Thumbs,
)
from mitigate.report.data import FilterData, FilterSpec, Histogram
from mitigate.report.svgplot import Chart, histogram

# What a filter's score measures, where the column name alone does not say it.
_SCORE_LABELS = {
    "image_quality": "aspect ratio (longer side / shorter side)",
    "caption_terms": "matched terms per caption",
    "blocklist": "bits to the nearest listed hash (0: listed sha256)",
}


def _drops(c: float, thr: float, drop_side: str) -> bool:
    if drop_side == "below":
        return c < thr
    if drop_side == "at_or_below":
        return c <= thr
    return c >= thr


def _hist_plot(
    chart: Chart, hist: Histogram, thr: float | None, label: str, drop_side: str = "at_or_above"
) -> None:
    """Bars coloured by the side of ``thr`` that drops: ``at_or_above`` it for most
    scores, ``at_or_below`` for a distance (blocklist), ``below`` for a minimum size."""
    (ax,) = chart.panels()
    centres = (hist.edges[:-1] + hist.edges[1:]) / 2
    colours = [
        _PALETTE["filtered"]
        if thr is not None and _drops(c, thr, drop_side)
        else _PALETTE["unfiltered"]
        for c in centres
    ]
    histogram(
        ax,
        hist.edges.tolist(),
        hist.counts.tolist(),
        colours,
        ylabel="samples (log)",
        xlabel=label,
        also_x=thr,
    )
    if thr is not None:
        ax.vline(thr, "#c62828")
        ax.top_note(thr, f"threshold {thr:g}", "#c62828")


def _strip(thumbs: _Thumbs, indices: Sequence[int], spec: FilterSpec, blur: bool) -> str:
    if not indices:
        return '<p class="note">none</p>'
    thumbs.prefetch(indices)  # the shown rows only (report.data.SHOWN_ONLY)
    figs = []
    for idx in indices:
        row = thumbs.row(idx)
        lines = [
            f"score {_fmt_num(_number(row.get(spec.column)))}",
            row.get("reason") or row.get("state"),
            _short_caption(row.get("caption")),
        ]
        figs.append(thumbs.figure(idx, row["key"], blur, lines))
    return f'<div class="strip">{"".join(figs)}</div>'


def _section_filters(data: Sequence[FilterData], thumbs: _Thumbs, blur_sexual: bool) -> str:
    parts = ['<section id="filters"><h2>Filters</h2>']
    if not data:
        parts.append('<p class="note">No filters configured.</p>')
    for d in data:
        s = d.spec
        blur = blur_sexual and s.category == "sexual"
        hist = d.histogram
        reasons = ", ".join(f"{_esc(r)} {n:,}" for r, n in d.dropped_by_reason.items())
        thr = "no score threshold" if s.threshold is None else f"threshold {s.threshold:g}"
        if s.threshold is not None and s.drops_low:
            thr = f"drops a score at or below {s.threshold:g}"
        parts.append(
            f'<div class="filter" id="filter-{_esc(s.filter_id)}">'
            f"<h3>{_esc(s.filter_id)} <span class='muted'>({_esc(s.name)}, category "
            f"{_esc(s.category)}, {thr})</span></h3>"
            f"<p>Dropped (this filter decided the state): <b>{d.dropped:,}</b>"
            f"{' — ' + reasons if reasons else ''}. Scored: {hist.n_scored:,}; without a "
            f"score: {hist.n_missing:,}"
            + (
                f"; on the drop side of the threshold (any state): {d.at_or_above:,}"
                if s.threshold is not None and s.name != "image_quality"
                else ""
            )
            + ".</p>"
        )
        if hist.n_scored:
            what = _SCORE_LABELS.get(s.name)
            label = s.column if what is None else f"{s.column}: {what}"
            parts.append(
                _plot(
                    _hist_plot,
                    hist,
                    s.threshold,
                    label,
                    "at_or_below" if s.drops_low else "at_or_above",
                    alt=f"histogram of {s.column}",
                )
            )
        else:
            parts.append('<p class="note">No sample has a score.</p>')
        side = d.side_histogram
        if side is not None and side.n_scored:
            parts.append(
                f"<p>Its size check (<code>image_too_small</code>) reads the shorter side, "
                f"not the score: min side {s.min_side:g} px.</p>"
            )
            parts.append(
                _plot(
                    _hist_plot,
                    side,
                    s.min_side,
                    "shorter side (px)",
                    "below",
                    alt="histogram of the shorter side",
                )
            )
        blur_note = " (blurred: sexual-content filter)" if blur else ""
        high, low = ("Lowest", "Highest") if s.drops_low else ("Highest", "Lowest")
        parts.append(f"<p>{high}-scored <b>kept</b> samples{blur_note}:</p>")
        parts.append(_strip(thumbs, d.top_kept, s, blur))
        parts.append(f"<p>{low}-scored <b>dropped</b> samples{blur_note}:</p>")
        parts.append(_strip(thumbs, d.bottom_dropped, s, blur))
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)
