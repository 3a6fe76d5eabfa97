"""The ``funnel`` section: input -> errors -> filtered -> duplicates -> kept."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mitigate.report.common import _PALETTE, _esc, _f, _pct, _plot, _table, _td
from mitigate.report.data import Funnel, _share
from mitigate.report.svgplot import CHAR_WIDTH, Chart, nice_ticks

# ----------------------------------------------------------------------- sections


def _funnel_plot(chart: Chart, funnel: Funnel) -> None:
    labels = ["input"] + [s.label for s in funnel.steps] + ["kept"]
    lefts = [0.0]
    widths = [float(funnel.input_count)]
    colours = [_PALETTE["input"]]
    for step in funnel.steps:
        lefts.append(float(step.remaining))
        widths.append(float(step.count))
        colours.append(_PALETTE[step.state])
    lefts.append(0.0)
    widths.append(float(funnel.kept))
    colours.append(_PALETTE["kept"])
    # room for the longest step name left of the axis
    (ax,) = chart.panels(left=max(90.0, 20 + CHAR_WIDTH * max(len(x) for x in labels)))
    n = len(labels)
    y = [float(n - 1 - k) for k in range(n)]
    ax.set_x(0, max(funnel.input_count, 1) * 1.25)
    ax.set_y(-0.6, n - 0.4)
    ax.hbars(y, lefts, widths, colours)
    for yi, left, width in zip(y, lefts, widths, strict=True):
        share = _share(int(width), funnel.input_count)
        ax.text(left + width, yi, f" {int(width):,} ({share:.1%})", dx=2, dy=4, size=11)
    ax.axes(
        xticks=[t for t in nice_ticks(ax.x0, ax.x1) if t == int(t)],  # samples: whole
        yticks=y,
        ylabels=labels,
        xlabel="samples",
    )


def _section_funnel(summary: Mapping[str, Any], funnel: Funnel) -> str:
    rows = [
        [_td("input"), _td(""), _td(""), _td(f"{funnel.input_count:,}", True), _td("100.0%", True)]
    ]
    for step in funnel.steps:
        rows.append(
            [
                f"<td><b>− {_esc(step.label)}</b></td>",
                _td(""),
                _td(""),
                _td(f"{step.count:,}", True),
                _td(_pct(step.share), True),
            ]
        )
        for reason, filt, n in step.breakdown:
            rows.append(
                [
                    _td(""),
                    _td(filt or ""),
                    _td(reason),
                    _td(f"{n:,}", True),
                    _td(_pct(_share(n, funnel.input_count)), True),
                ]
            )
    rows.append(
        [
            "<td><b>= kept</b></td>",
            _td(""),
            _td(""),
            _td(f"{funnel.kept:,}", True),
            _td(_pct(funnel.kept_share), True),
        ]
    )
    run = summary.get("run", {})
    cons = summary.get("conservation", {})
    ok = cons.get("ok")
    check = (
        f'<span class="bad">counts do not add up: {_esc("; ".join(funnel.problems))}</span>'
        if funnel.problems  # summary.json edited, or not this manifest's
        else '<span class="ok">counts add up</span>'
        if ok
        else f'<span class="bad">conservation check failed: {_esc(cons.get("problems"))}</span>'
        if ok is False
        else '<span class="muted">no conservation check recorded</span>'
    )
    runner = run.get("runner", {}) or {}
    workers = runner.get("direct_num_workers")
    runner_text = _esc(runner.get("name", "?")) + (
        f", {_esc(workers)} worker(s)" if workers else ""
    )
    note = (
        ""
        if funnel.consistent
        else (
            '<p class="bad">The manifest\'s filtered rows do not match summary.json; '
            "the per-filter breakdown is omitted.</p>"
        )
    )
    return (
        '<section id="funnel"><h2>Funnel</h2>'
        f"<p>{funnel.input_count:,} input samples from {_esc(summary.get('sources', '?'))} "
        f"source file(s); {funnel.kept:,} kept ({_pct(funnel.kept_share)}), "
        f"{summary.get('samples_written', funnel.kept):,} written to "
        f"{len(summary.get('shards', []))} shard(s). {check}.</p>"
        f"<p>Wall time <b>{_f(run.get('wall_seconds'), '.1f')} s</b>, "
        f"throughput <b>{_f(run.get('samples_per_second'), '.1f')} samples/s</b>"
        f" (runner {runner_text}).</p>"
        + _plot(_funnel_plot, funnel, alt="funnel: samples left after each step")
        + note
        + _table(["step", "filter", "reason", "samples", "share of input"], rows)
        + "</section>"
    )
