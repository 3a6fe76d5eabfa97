"""The ``rebalancing`` section: weight distribution, effective sample size, bias table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
from matplotlib.figure import Figure

from mitigate.report.common import _PALETTE, _f, _fmt_num, _log_counts, _pct, _plot, _table, _td
from mitigate.report.data import HISTOGRAM_BINS, _column_f64, _mask


def _weights_plot(fig: Figure, quantiles: Mapping[str, float], weights: np.ndarray) -> None:
    qs = sorted((float(p), float(v)) for p, v in quantiles.items())
    if weights.size:
        ax1, ax2 = fig.subplots(1, 2)
        lo, hi = float(weights.min()), float(weights.max())
        if hi <= lo:
            lo, hi = lo - 0.05, hi + 0.05
        counts, edges = np.histogram(weights, bins=HISTOGRAM_BINS, range=(lo, hi))
        ax1.bar(
            edges[:-1],
            counts,
            width=np.diff(edges),
            align="edge",
            color=_PALETTE["reweighted"],
            edgecolor="white",
            linewidth=0.3,
        )
        _log_counts(ax1, int(counts.max()), "kept samples (log)")
        ax1.set_xlabel("weight")
        ax1.spines[["top", "right"]].set_visible(False)
    else:
        ax2 = fig.add_subplot()
    if qs:
        ax2.plot([p for p, _ in qs], [v for _, v in qs], marker="o", color=_PALETTE["reweighted"])
        for p, v in qs:
            if p in (0.01, 0.5, 0.99):
                ax2.annotate(
                    f"{v:.3g}",
                    (p, v),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=7,
                )
    ax2.axhline(1.0, color="#888", linewidth=0.8, linestyle=":")
    ax2.set_xlabel("quantile")
    ax2.set_ylabel("weight")
    ax2.set_xlim(-0.03, 1.03)
    ax2.spines[["top", "right"]].set_visible(False)


def _probe_plot(fig: Figure, probes: Mapping[str, Mapping[str, Any]]) -> None:
    ax = fig.add_subplot()
    groups = list(probes)
    x = np.arange(len(groups))
    width = 0.27
    # summary.json's "filtered" is the set after filtering: the kept samples, unweighted.
    for j, (col, label, colour) in enumerate(
        (
            ("unfiltered", "unfiltered", _PALETTE["unfiltered"]),
            ("filtered", "kept", _PALETTE["filtered"]),
            ("reweighted", "kept, reweighted", _PALETTE["reweighted"]),
        )
    ):
        vals = [100.0 * float(probes[g].get(col) or 0.0) for g in groups]
        ax.bar(x + (j - 1) * width, vals, width, label=label, color=colour)
    ax.set_xticks(x, groups)
    ax.set_ylabel("captions with a probe term (%)")
    ax.legend(frameon=False, ncols=3, loc="upper right")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)
    ax.spines[["top", "right"]].set_visible(False)


def _section_rebalancing(rebalance: Mapping[str, Any] | None, table: pa.Table) -> str:
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
    weights = _column_f64(table, "weight")
    weights = weights[np.isfinite(weights) & _mask(table, "state", "kept")]
    if w.get("quantiles") or weights.size:
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
    return f"C={sel.get('C')} ({sel.get('folds')}-fold held-out log loss: {tried})"


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
