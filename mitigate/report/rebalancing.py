"""The ``rebalancing`` section: weight distribution, effective sample size, bias table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mitigate.report.common import _PALETTE, _f, _fmt_num, _pct, _plot, _table, _td
from mitigate.report.data import Histogram
from mitigate.report.svgplot import Chart, histogram, nice_ticks


def _weights_plot(chart: Chart, quantiles: Mapping[str, float], weights: Histogram | None) -> None:
    """The kept samples' weights: a histogram (left) and their quantiles (right)."""
    qs = sorted(  # a quantile of no weights is null (NaN before summary.json was strict)
        (float(p), float(v))
        for p, v in quantiles.items()
        if v is not None and math.isfinite(float(v))
    )
    if weights is not None and weights.n_scored:
        ax1, ax2 = chart.panels(2)
        histogram(
            ax1,
            weights.edges.tolist(),
            weights.counts.tolist(),
            _PALETTE["reweighted"],
            ylabel="kept samples (log)",
            xlabel="weight",
        )
    else:
        (ax2,) = chart.panels()
    values = [v for _, v in qs] + [1.0]
    lo, hi = min(values), max(values)
    pad = 0.08 * (hi - lo) if hi > lo else 0.5
    ax2.set_x(-0.03, 1.03)
    ax2.set_y(lo - pad, hi + pad)
    ax2.hline(1.0, "#888")
    if qs:
        ax2.polyline([p for p, _ in qs], [v for _, v in qs], _PALETTE["reweighted"], marker=True)
        for p, v in qs:
            if p in (0.01, 0.5, 0.99):
                ax2.text(p, v, f"{v:.3g}", anchor="middle", dy=-7, size=10)
    ax2.axes(
        xticks=nice_ticks(0.0, 1.0, 5),
        yticks=nice_ticks(ax2.y0, ax2.y1, 5),
        xlabel="quantile",
        ylabel="weight",
    )


def _probe_plot(chart: Chart, probes: Mapping[str, Mapping[str, Any]]) -> None:
    """Per probe group, the share of captions with a probe term: unfiltered, kept, and
    kept reweighted, side by side."""
    (ax,) = chart.panels()
    groups = list(probes)
    width = 0.27
    # summary.json's "filtered" is the set after filtering: the kept samples, unweighted.
    series = (
        ("unfiltered", "unfiltered", _PALETTE["unfiltered"]),
        ("filtered", "kept", _PALETTE["filtered"]),
        ("reweighted", "kept, reweighted", _PALETTE["reweighted"]),
    )
    values = {
        col: [100.0 * float(probes[g].get(col) or 0.0) for g in groups] for col, _, _ in series
    }
    top = max((v for vals in values.values() for v in vals), default=0.0)
    ax.set_x(-0.6, len(groups) - 0.4)
    ax.set_y(0.0, (top if top > 0 else 1.0) * 1.3)  # room for the legend
    for j, (col, _, colour) in enumerate(series):
        lefts = [k + (j - 1) * width - width / 2 for k in range(len(groups))]
        ax.bars(lefts, [width] * len(groups), values[col], colour)
    ax.axes(
        xticks=list(range(len(groups))),
        xlabels=groups,
        yticks=nice_ticks(0.0, ax.y1, 5),
        ylabel="captions with a probe term (%)",
    )
    ax.legend([(label, colour) for _, label, colour in series])


def _section_rebalancing(rebalance: Mapping[str, Any] | None, weights: Histogram | None) -> str:
    """``weights``: the kept samples' weights (``ManifestStats.weight_histogram``)."""
    if not rebalance:
        return (
            '<section id="rebalancing"><h2>Rebalancing</h2>'
            '<p class="note">Rebalancing: not enabled (rebalance.enabled is false).</p></section>'
        )
    w = rebalance.get("weights", {}) or {}
    parts = ['<section id="rebalancing"><h2>Rebalancing</h2>']
    kv = [
        ("mode", rebalance.get("mode")),
        ("kept samples weighted", f"{w.get('n', 0):,}"),
        (
            "mean / min / max weight",
            f"{_f(w.get('mean'), '.4f')} / {_f(w.get('min'), '.4f')} / {_f(w.get('max'), '.4f')}",
        ),
        (
            "effective sample size",
            f"{_f(w.get('effective_sample_size'), ',.1f')} ({_pct(w.get('ess_fraction'))} of kept)",
        ),
        (
            "clipped at w_min / w_max",
            f"{w.get('clipped_at_min', 0)} / {w.get('clipped_at_max', 0)}",
        ),
        ("normalising scale", _fmt_num(float(rebalance.get("scale") or float("nan")))),
        ("filters rebalanced", ", ".join(rebalance.get("filtered_by") or [])),
        ("embedding filter", rebalance.get("embedding_filter") or "none"),
        ("masked filter terms", rebalance.get("masked_terms", 0)),
    ]
    for k, v in (rebalance.get("fit") or {}).items():
        if k == "C_selection" and isinstance(v, Mapping):
            kv.append(("fit: C chosen by held-out log loss", _c_selection_text(v)))
            continue
        kv.append((f"fit: {k}", _fmt_num(v) if isinstance(v, float) else v))
    kv.extend(_calibration_rows(rebalance))
    parts.append(_table(None, [[_td(k), _td(v)] for k, v in kv], cls="kv"))
    if w.get("quantiles") or weights is not None:
        parts.append(
            _plot(
                _weights_plot,
                w.get("quantiles") or {},
                weights,
                alt="weight distribution: histogram and quantiles",
            )
        )
    probes = rebalance.get("probes") or {}
    if probes:
        parts.append("<h3>Bias report: probe-term frequency</h3>")
        parts.append(_plot(_probe_plot, probes, alt="probe-term frequency, grouped bar chart"))

        def change(v: float | None) -> str:
            return "" if v is None else f" ({v:+.1%})"

        rows = [
            [
                _td(f"{g} (calibrated)" if r.get("calibrated") else g),
                _td(f"{_pct(r.get('unfiltered'))} (n={r.get('count_unfiltered', '?')})", True),
                _td(
                    f"{_pct(r.get('filtered'))}{change(r.get('change_filtered'))}"
                    f" (n={r.get('count_filtered', '?')})",
                    True,
                ),
                _td(f"{_pct(r.get('reweighted'))}{change(r.get('change_reweighted'))}", True),
            ]
            for g, r in sorted(probes.items(), key=lambda kv: not kv[1].get("calibrated"))
        ]
        parts.append(
            _table(["probe", "unfiltered", "kept (change)", "kept, reweighted (change)"], rows)
        )
    parts.append("</section>")
    return "".join(parts)


def _c_selection_text(sel: Mapping[str, Any]) -> str:
    losses = sel.get("held_out_log_loss") or {}
    tried = ", ".join(f"{c}: {float(v):.4f}" for c, v in losses.items())
    skipped = sel.get("not_tried") or []
    rises = sel.get("stopped_after_rises")
    stop = (
        f"; not fitted: {', '.join(map(str, skipped))}, the loss having risen "
        f"{rises} step{'' if rises == 1 else 's'} in a row"
        if skipped
        else ""
    )
    return f"C={sel.get('C')} ({sel.get('folds')}-fold held-out log loss: {tried}{stop})"


def _calibration_rows(rebalance: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Calibrated groups apart from held-out probes, and the weight warnings."""
    rows: list[tuple[str, Any]] = []
    cal = rebalance.get("calibration")
    if cal:
        rows.append(("calibrated groups", ", ".join(cal.get("groups") or [])))
        rows.append(("held-out probes", ", ".join(cal.get("held_out_probes") or []) or "none"))
        if cal.get("error"):
            rows.append(("calibration", f"not applied: {cal['error']}"))
        elif cal.get("max_abs_share_error") is not None:
            rows.append(("calibration: max share error", f"{cal['max_abs_share_error']:.1e}"))
    for text in rebalance.get("warnings") or []:
        rows.append(("warning", text))
    return rows
