"""The run report: one self-contained HTML page about a finished run.

``build_report(out_dir)`` reads a run's ``summary.json``, ``config.yaml`` and the few
manifest columns it needs, and returns one HTML page with six sections, each under a
stable id:

- ``funnel``: input -> errors -> filtered (per filter and reason) -> duplicates -> kept,
  with counts and shares exactly as in ``summary.json``, plus wall time and throughput;
- ``filters``: per filter, a score histogram (log-scale counts) with the threshold
  drawn, the number dropped, and thumbnail strips of the highest-scored kept and the
  lowest-scored dropped samples (pixel-blurred for ``sexual``-category filters unless
  ``blur_sexual=False``);
- ``dedup``: near-duplicate clusters, example pairs per Hamming distance and the
  measured pair recall, when ``summary.json`` has a ``dedup`` object ("not run" if not);
- ``rebalancing``: weight distribution, effective sample size and the probe-term bias
  table as a grouped bar chart ("not enabled" if the run did not rebalance);
- ``errors``: counts per reason, example keys with their detail text, source issues;
- ``config``: the effective config and model provenance.

Everything is inline (thumbnails as JPEG ``data:`` URIs made by
:func:`mitigate.review.thumbnail`, plots as SVG ``data:`` URIs), and a Content Security
Policy forbids the page any other source, so it opens offline and cannot leak a
request. The page's size is bounded by ``max_thumbs`` and fixed per-section limits, not
by the number of manifest rows. Nothing here imports Beam: image bytes are read through
an ``opener`` (path -> binary file), by default the local filesystem; pass
``mitigate.pipeline.fs.open_read`` for ``gs://`` and friends.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from mitigate.review import Opener, load_manifest, read_image_bytes, thumbnail

log = logging.getLogger(__name__)

#: The page's sections, in order; each is a ``<section id=...>``.
SECTION_IDS: tuple[str, ...] = ("funnel", "filters", "dedup", "rebalancing", "errors", "config")

#: Thumbnail size (longer side, px) in every strip.
THUMB_SIZE = 112
#: Example rows per error reason in the errors table.
ERROR_EXAMPLES_PER_REASON = 5
#: Largest near-duplicate clusters shown, and example pairs shown per Hamming distance.
DEDUP_CLUSTERS_SHOWN = 6
DEDUP_PAIRS_PER_DISTANCE = 4
#: Pairs refused by verification shown (evidence of what was kept apart).
DEDUP_REFUSED_SHOWN = 8
#: Bins of a score histogram on a continuous score.
HISTOGRAM_BINS = 40

# Config fields that hold the threshold on a filter's *score* (first one present wins):
# ONNX/NudeNet filters drop when score >= threshold, image_quality when the aspect
# ratio (its score) > max_aspect_ratio, caption_terms when the match count >= min_matches.
_THRESHOLD_FIELDS = ("threshold", "max_aspect_ratio", "min_matches")

_STEPS = (
    ("errors", "error"),
    ("filtered", "filtered"),
    ("duplicates", "duplicate"),
)

_PALETTE = {
    "kept": "#2e7d32",
    "error": "#c62828",
    "filtered": "#ef6c00",
    "duplicate": "#6a1b9a",
    "input": "#455a64",
    "unfiltered": "#546e7a",
    "reweighted": "#1565c0",
}

_CSS = """
:root{--fg:#1f2328;--muted:#57606a;--line:#d0d7de;--bg2:#f6f8fa}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:var(--fg);
  font-size:14px;line-height:1.45}
header{padding:1rem 1.5rem;border-bottom:1px solid var(--line);background:var(--bg2)}
header h1{margin:0 0 .3rem;font-size:1.4rem}
nav a{margin-right:1rem;color:#0969da;text-decoration:none}
main{padding:0 1.5rem 2rem;max-width:1200px}
section{border-bottom:1px solid var(--line);padding:1rem 0}
h2{font-size:1.2rem;margin:.4rem 0}h3{font-size:1.02rem;margin:1rem 0 .3rem}
.muted{color:var(--muted)}.note{color:var(--muted);font-style:italic}
table{border-collapse:collapse;margin:.4rem 0}
th,td{border:1px solid var(--line);padding:2px 8px;text-align:left;vertical-align:top}
th{background:var(--bg2)}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.sub td:first-child{padding-left:1.6rem}
.plot{width:min(100%,900px);height:auto;display:block;margin:.4rem 0}
.strip{display:flex;flex-wrap:wrap;gap:6px;margin:.3rem 0 .6rem}
figure{margin:0;width:120px;font-size:11px;border:1px solid var(--line);border-radius:4px;
  padding:3px;background:#fff}
figure img{width:112px;height:112px;object-fit:contain;background:#eee;display:block}
figure .miss{width:112px;height:112px;background:#eee;display:flex;align-items:center;
  justify-content:center;color:var(--muted);text-align:center}
figcaption{overflow-wrap:anywhere}figcaption .cap{color:var(--muted);max-height:2.8em;
  overflow:hidden}
.pair{display:inline-flex;gap:4px;padding:4px;margin:0 8px 8px 0;border:1px dashed var(--line)}
.cluster{margin-bottom:.5rem}
pre{background:var(--bg2);padding:.6rem;overflow:auto;max-height:32rem;font-size:12px}
.kv td:first-child{color:var(--muted)}
.bad{color:#c62828;font-weight:600}.ok{color:#2e7d32;font-weight:600}
"""

# Only inline styles and data: images; no script, no network. Makes "self-contained"
# enforceable: any external reference is blocked (and logged by the browser).
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


# --------------------------------------------------------------------------- inputs


def local_open(path: str) -> IO[bytes]:
    """The default opener: a local file, opened for binary reading."""
    return open(path, "rb")


def load_summary(out_dir: str | Path) -> dict[str, Any]:
    """A run's ``summary.json``."""
    return json.loads(Path(out_dir, "summary.json").read_text(encoding="utf-8"))


def load_run_config(out_dir: str | Path) -> dict[str, Any]:
    """A run's effective ``config.yaml`` (empty dict if the run has none)."""
    path = Path(out_dir, "config.yaml")
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
            )
        )
    return specs


def manifest_columns(available: Sequence[str], specs: Sequence[FilterSpec]) -> list[str]:
    """The manifest columns the report reads (of those the run has)."""
    wanted = [
        "key",
        "source",
        "index",
        "state",
        "reason",
        "detail",
        "filter",
        "caption",
        "image_ext",
        "image_path",
        "members",
        "weight",
        *(s.column for s in specs),
    ]
    have = set(available)
    return [c for c in wanted if c in have]


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
    if table.num_rows == 0:
        return {}
    grouped = table.group_by(list(columns)).aggregate([([], "count_all")])
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
    if lo >= 0.0 and hi <= 1.0 and not np.all(finite == np.round(finite)):
        edges = np.linspace(0.0, 1.0, bins + 1)
    elif np.all(finite == np.round(finite)) and hi - lo <= 200:
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
    top_kept: list[int]  # manifest row indices, highest score first
    bottom_dropped: list[int]  # manifest row indices, lowest score first


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
        at_or_above = int(np.count_nonzero(scores[finite] >= spec.threshold))
    kept = np.flatnonzero(_mask(table, "state", "kept") & finite)
    dropped = np.flatnonzero(mine & finite)
    return FilterData(
        spec=spec,
        histogram=hist,
        dropped=int(mine.sum()),
        dropped_by_reason={r[0]: n for r, n in sorted(reasons.items(), key=lambda x: -x[1])},
        at_or_above=at_or_above,
        top_kept=_top(kept, scores, max_thumbs, descending=True),
        bottom_dropped=_top(dropped, scores, max_thumbs, descending=False),
    )


@dataclass(frozen=True)
class ErrorExample:
    key: str
    source: str
    detail: str


def error_examples(
    table: pa.Table, per_reason: int = ERROR_EXAMPLES_PER_REASON
) -> dict[str, list[ErrorExample]]:
    """Up to ``per_reason`` example rows (input order) per error reason."""
    errors = table.filter(pa.array(_mask(table, "state", "error")))
    out: dict[str, list[ErrorExample]] = {}
    if errors.num_rows == 0:
        return out
    reasons = errors.column("reason")
    for reason in sorted({r for r in pc.unique(reasons).to_pylist() if r is not None}):
        rows = errors.filter(pc.fill_null(pc.equal(reasons, reason), False)).slice(0, per_reason)
        keys = rows.column("key").to_pylist()
        sources = rows.column("source").to_pylist() if "source" in rows.column_names else []
        details = rows.column("detail").to_pylist() if "detail" in rows.column_names else []
        out[reason] = [
            ErrorExample(
                str(k),
                str(sources[i] or "") if sources else "",
                str(details[i] or "") if details else "",
            )
            for i, k in enumerate(keys)
        ]
    return out


# ------------------------------------------------------------------------ rendering


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _svg_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def _plot(fig_fn: Any, *args: Any, alt: str) -> str:
    """Render a plot to an inline ``<img>`` (SVG with text kept as text, no fonts)."""
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "mitigate", "font.size": 9}):
        # Fixed margins rather than a layout engine: constrained layout doubles the cost.
        fig = Figure(figsize=(9.0, 2.8))
        fig.subplots_adjust(left=0.1, right=0.98, bottom=0.17, top=0.93, wspace=0.25)
        fig_fn(fig, *args)
        uri = _svg_uri(fig)
    return f'<img class="plot" alt="{_esc(alt)}" src="{uri}">'


def _log_counts(ax: Any, top: int, label: str) -> None:
    """Log-scale count axis with plain tick labels (no mathtext: faster, smaller SVG)."""
    ax.set_yscale("log", nonpositive="clip")
    ax.set_ylim(0.7, max(top, 1) * 2.0)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else ""))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(label)


def _fmt_num(x: float) -> str:
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.3g}"
    return f"{x:.4g}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _f(x: float | None, spec: str) -> str:
    """``x`` formatted with ``spec``; "-" where a run has no value (nothing kept)."""
    return "-" if x is None else format(x, spec)


def _table(head: Sequence[str] | None, rows: Sequence[Sequence[str]], cls: str = "") -> str:
    """An HTML table; cells are already-escaped HTML (``<td class=n>`` for numbers)."""
    thead = ""
    if head:
        thead = "<thead><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead>"
    body = "".join(f"<tr>{''.join(r)}</tr>" for r in rows)
    cls_attr = f' class="{cls}"' if cls else ""
    return f"<table{cls_attr}>{thead}<tbody>{body}</tbody></table>"


def _td(value: Any, num: bool = False) -> str:
    return f'<td class="n">{_esc(value)}</td>' if num else f"<td>{_esc(value)}</td>"


class _Thumbs:
    """Thumbnails of manifest rows, read through ``opener`` and cached per row."""

    def __init__(self, table: pa.Table, opener: Opener) -> None:
        self.table = table
        self.opener = opener
        self._cache: dict[tuple[int, bool], str] = {}

    def row(self, index: int) -> dict[str, Any]:
        return self.table.slice(index, 1).to_pylist()[0]

    def uri(self, index: int, blur: bool) -> str:
        if (index, blur) not in self._cache:
            row = self.row(index)
            try:
                data = read_image_bytes(row, self.opener)
                self._cache[(index, blur)] = thumbnail(data, THUMB_SIZE, blur=blur)
            except (OSError, EOFError, KeyError, ValueError) as exc:
                log.warning("%s: image unreadable for the report: %s", row.get("key"), exc)
                self._cache[(index, blur)] = ""
        return self._cache[(index, blur)]

    def index_of(self, keys: Sequence[str]) -> dict[str, int]:
        """Row index of each key found; of several rows with one key, the first row
        that is not an error (a repeated key is an error row)."""
        wanted = pa.array(sorted(set(keys)), type=pa.string())
        if len(wanted) == 0:
            return {}
        hits = np.flatnonzero(
            pc.is_in(self.table.column("key"), value_set=wanted).to_numpy(zero_copy_only=False)
        )
        states = self.table.column("state").take(pa.array(hits)).to_pylist()
        found = self.table.column("key").take(pa.array(hits)).to_pylist()
        out: dict[str, int] = {}
        out_state: dict[str, str] = {}
        for i, key, state in zip(hits, found, states, strict=True):
            if key not in out or (state != "error" and out_state[key] == "error"):
                out[key] = int(i)
                out_state[key] = state
        return out

    def figure(self, index: int | None, key: str, blur: bool, lines: Sequence[str]) -> str:
        if index is None:
            body = '<div class="miss">not in manifest</div>'
        else:
            uri = self.uri(index, blur)
            body = (
                f'<img src="{uri}" alt="{_esc(key)}" loading="eager">'
                if uri
                else '<div class="miss">image unreadable</div>'
            )
        text = "".join(f"<div>{_esc(line)}</div>" for line in lines if line)
        return f"<figure>{body}<figcaption><b>{_esc(key)}</b>{text}</figcaption></figure>"


def _short_caption(caption: Any, n: int = 60) -> str:
    text = str(caption or "")
    return text if len(text) <= n else text[: n - 1] + "…"


# ----------------------------------------------------------------------- sections


def _funnel_plot(fig: Figure, funnel: Funnel) -> None:
    ax = fig.add_subplot()
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
    y = np.arange(len(labels))[::-1]
    ax.barh(y, widths, left=lefts, color=colours)
    for yi, left, width in zip(y, lefts, widths, strict=True):
        share = _share(int(width), funnel.input_count)
        ax.text(
            left + width, yi, f" {int(width):,} ({share:.1%})", va="center", ha="left", fontsize=8
        )
    ax.set_yticks(y, labels)
    ax.set_xlim(0, max(funnel.input_count, 1) * 1.25)
    ax.set_xlabel("samples")
    ax.spines[["top", "right"]].set_visible(False)


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
        '<span class="ok">counts add up</span>'
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


def _hist_plot(fig: Figure, data: FilterData) -> None:
    ax = fig.add_subplot()
    hist = data.histogram
    centres = (hist.edges[:-1] + hist.edges[1:]) / 2
    thr = data.spec.threshold
    colours = [
        _PALETTE["filtered"] if thr is not None and c >= thr else _PALETTE["unfiltered"]
        for c in centres
    ]
    ax.bar(
        hist.edges[:-1],
        hist.counts,
        width=np.diff(hist.edges),
        align="edge",
        color=colours,
        edgecolor="white",
        linewidth=0.3,
    )
    _log_counts(ax, int(hist.counts.max()) if hist.counts.size else 1, "samples (log)")
    if thr is not None:
        ax.axvline(thr, color="#c62828", linestyle="--", linewidth=1.2)
        ax.annotate(
            f"threshold {thr:g}",
            xy=(thr, 1),
            xycoords=("data", "axes fraction"),
            xytext=(3, -10),
            textcoords="offset points",
            color="#c62828",
            fontsize=8,
        )
    ax.set_xlabel(f"{data.spec.column}")
    ax.spines[["top", "right"]].set_visible(False)


def _strip(
    thumbs: _Thumbs, table: pa.Table, indices: Sequence[int], spec: FilterSpec, blur: bool
) -> str:
    if not indices:
        return '<p class="note">none</p>'
    sub = table.take(pa.array(indices, type=pa.int64()))
    keys = sub.column("key").to_pylist()
    states = sub.column("state").to_pylist()
    reasons = (
        sub.column("reason").to_pylist() if "reason" in sub.column_names else [None] * len(keys)
    )
    captions = (
        sub.column("caption").to_pylist() if "caption" in sub.column_names else [None] * len(keys)
    )
    scores = _column_f64(sub, spec.column)
    figs = []
    for i, idx in enumerate(indices):
        lines = [
            f"score {_fmt_num(float(scores[i]))}",
            reasons[i] or states[i],
            _short_caption(captions[i]),
        ]
        figs.append(thumbs.figure(idx, keys[i], blur, lines))
    return f'<div class="strip">{"".join(figs)}</div>'


def _section_filters(
    table: pa.Table, data: Sequence[FilterData], thumbs: _Thumbs, blur_sexual: bool
) -> str:
    parts = ['<section id="filters"><h2>Filters</h2>']
    if not data:
        parts.append('<p class="note">No filters configured.</p>')
    for d in data:
        s = d.spec
        blur = blur_sexual and s.category == "sexual"
        hist = d.histogram
        reasons = ", ".join(f"{_esc(r)} {n:,}" for r, n in d.dropped_by_reason.items())
        thr = "no score threshold" if s.threshold is None else f"threshold {s.threshold:g}"
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
            parts.append(_plot(_hist_plot, d, alt=f"histogram of {s.column}"))
        else:
            parts.append('<p class="note">No sample has a score.</p>')
        blur_note = " (blurred: sexual-content filter)" if blur else ""
        parts.append(f"<p>Highest-scored <b>kept</b> samples{blur_note}:</p>")
        parts.append(_strip(thumbs, table, d.top_kept, s, blur))
        parts.append(f"<p>Lowest-scored <b>dropped</b> samples{blur_note}:</p>")
        parts.append(_strip(thumbs, table, d.bottom_dropped, s, blur))
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _blur_rows(table: pa.Table, specs: Sequence[FilterSpec], blur_sexual: bool) -> np.ndarray:
    """Rows to blur outside the filter strips: a sexual-category score at or above its
    threshold (whatever the row's state)."""
    out = np.zeros(table.num_rows, dtype=bool)
    if not blur_sexual:
        return out
    for s in specs:
        if s.category == "sexual" and s.threshold is not None:
            scores = _column_f64(table, s.column)
            with np.errstate(invalid="ignore"):
                out |= scores >= s.threshold
    return out


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


def _cluster_plot(fig: Figure, bars: Sequence[tuple[str, int]]) -> None:
    ax = fig.add_subplot()
    ax.bar([b[0] for b in bars], [b[1] for b in bars], color=_PALETTE["duplicate"])
    _log_counts(ax, max(b[1] for b in bars), "clusters (log)")
    ax.set_xlabel("cluster size (samples)")
    ax.spines[["top", "right"]].set_visible(False)


def _score_note(pair: Sequence[Any]) -> str:
    """Caption of an example pair: its verification score, when it was verified."""
    if len(pair) > 2 and pair[2] is not None:
        return f'<div class="muted">verification score {float(pair[2]):.3f}</div>'
    return ""


def _section_dedup(
    dedup: Mapping[str, Any] | None, thumbs: _Thumbs, blur: np.ndarray, max_thumbs: int
) -> str:
    if not dedup:
        return (
            '<section id="dedup"><h2>Near-duplicate dedup</h2>'
            '<p class="note">Near-duplicate dedup: not run (summary.json has no "dedup" '
            "object). Exact duplicates are counted in the funnel.</p></section>"
        )
    parts = ['<section id="dedup"><h2>Near-duplicate dedup</h2>']
    recall = dedup.get("pair_recall") or {}
    estimate = recall.get("estimate")
    ci = list(recall.get("ci") or [])
    if estimate is None:
        rec = "pair recall not measured"
    elif len(ci) == 2 and None not in ci:
        rec = f"measured pair recall <b>{estimate:.3f}</b> (95% CI {ci[0]:.3f}–{ci[1]:.3f})"
    else:
        rec = f"measured pair recall <b>{estimate:.3f}</b>"
    parts.append(
        f"<p>Hamming radius k = <b>{_esc(dedup.get('k', '?'))}</b>, mode "
        f"<b>{_esc(dedup.get('mode', '?'))}</b>; {rec}.</p>"
    )
    if dedup.get("partitions"):
        parts.append(
            f"<p>Search partitions: <b>{_esc(dedup.get('partition', '?'))}</b>, "
            f"{int(dedup['partitions']):,} partitions ({_esc(dedup.get('clusterings', '?'))} "
            f"clusterings), the largest holding {int(dedup.get('largest_partition') or 0):,} "
            "hashes.</p>"
        )
    sizes = {int(k): int(v) for k, v in (dedup.get("cluster_sizes") or {}).items()}
    if sizes:
        n_clusters = sum(sizes.values())
        n_samples = sum(k * v for k, v in sizes.items())
        parts.append(
            f"<p>{n_clusters:,} clusters holding {n_samples:,} samples (largest: {max(sizes)}).</p>"
        )
        bars = cluster_size_bars(sizes)
        parts.append(_plot(_cluster_plot, bars, alt="near-duplicate cluster sizes"))
    else:
        parts.append('<p class="note">No near-duplicate clusters.</p>')

    clusters = [list(c) for c in (dedup.get("largest_clusters") or [])][:DEDUP_CLUSTERS_SHOWN]
    # example pairs: [keeper, duplicate] or [keeper, duplicate, verification score]
    by_distance = {
        int(d): [list(p) for p in pairs][:DEDUP_PAIRS_PER_DISTANCE]
        for d, pairs in (dedup.get("examples_by_distance") or {}).items()
    }
    check = dedup.get("verify") or {}
    refused = [list(r) for r in (check.get("examples_refused") or [])][:DEDUP_REFUSED_SHOWN]
    keys = [k for c in clusters for k in c[:max_thumbs]]
    keys += [k for pairs in by_distance.values() for p in pairs for k in p[:2]]
    keys += [k for r in refused for k in r[:2]]
    where = thumbs.index_of(keys)
    table = thumbs.table

    def fig(key: str) -> str:
        idx = where.get(key)
        lines: list[str] = []
        if idx is not None:
            row = table.slice(idx, 1)
            state = row.column("state")[0].as_py()
            reason = row.column("reason")[0].as_py() if "reason" in row.column_names else None
            lines = [reason or state]
        return thumbs.figure(idx, key, bool(idx is not None and blur[idx]), lines)

    if clusters:
        parts.append(f"<h3>Largest clusters (up to {max_thumbs} members each)</h3>")
        for c in clusters:
            more = len(c) - max_thumbs
            extra = f'<p class="muted">… and {more:,} more</p>' if more > 0 else ""
            parts.append(
                f'<div class="cluster"><div class="muted">{len(c):,} samples</div>'
                f'<div class="strip">{"".join(fig(k) for k in c[:max_thumbs])}</div>{extra}</div>'
            )
    if by_distance:
        parts.append("<h3>Example pairs by Hamming distance</h3>")
        for d in sorted(by_distance):
            pairs = "".join(
                f'<div class="pair">{"".join(fig(k) for k in p[:2])}{_score_note(p)}</div>'
                for p in by_distance[d]
            )
            parts.append(f"<p>distance <b>{d}</b></p><div>{pairs or '<i>none</i>'}</div>")
    if check:
        parts.append(
            f"<h3>Verification</h3><p>Candidate pairs within k were checked with the "
            f"verification signature (threshold <b>{_esc(check.get('threshold'))}</b>): "
            f"<b>{int(check.get('merged_pairs') or 0):,}</b> merged, "
            f"<b>{int(check.get('refused_pairs') or 0):,}</b> refused as different images. "
            f"Keep rule: <b>{_esc(dedup.get('keep', '?'))}</b>.</p>"
        )
        if refused:
            parts.append("<p>Refused pairs (kept apart), closest pHash first:</p>")
            parts.append(
                "<div>"
                + "".join(
                    f'<div class="pair">{"".join(fig(k) for k in r[:2])}'
                    f'<div class="muted">pHash distance {_esc(r[2])}, '
                    f"verification score {float(r[3]):.3f}</div></div>"
                    for r in refused
                )
                + "</div>"
            )
    parts.append("</section>")
    return "".join(parts)


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
    for j, (col, colour) in enumerate(
        (
            ("unfiltered", _PALETTE["unfiltered"]),
            ("filtered", _PALETTE["filtered"]),
            ("reweighted", _PALETTE["reweighted"]),
        )
    ):
        vals = [100.0 * float(probes[g].get(col) or 0.0) for g in groups]
        ax.bar(x + (j - 1) * width, vals, width, label=col, color=colour)
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
            _table(["probe", "unfiltered", "filtered (change)", "reweighted (change)"], rows)
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


def _section_errors(
    summary: Mapping[str, Any], examples: Mapping[str, Sequence[ErrorExample]]
) -> str:
    total = int(summary.get("input_count", 0))
    errors = summary.get("counts", {}).get("error", {"total": 0, "reasons": {}})
    parts = ['<section id="errors"><h2>Errors</h2>']
    if not errors.get("total"):
        parts.append('<p class="note">No errors.</p>')
    else:
        reasons = sorted(errors["reasons"].items(), key=lambda x: (-x[1], x[0]))
        parts.append(
            _table(
                ["reason", "samples", "share of input"],
                [
                    [_td(r), _td(f"{n:,}", True), _td(_pct(_share(n, total)), True)]
                    for r, n in reasons
                ],
            )
        )
        rows = [
            [_td(reason), _td(e.key), _td(e.source), _td(e.detail)]
            for reason, _ in reasons
            for e in examples.get(reason, [])
        ]
        parts.append(f"<h3>Examples (up to {ERROR_EXAMPLES_PER_REASON} per reason)</h3>")
        parts.append(_table(["reason", "key", "source", "detail"], rows))
    issues = summary.get("source_issues") or []
    if issues:
        parts.append("<h3>Source issues</h3>")
        parts.append(
            _table(
                ["source", "reason", "detail"],
                [
                    [_td(i.get("source")), _td(i.get("reason")), _td(i.get("detail"))]
                    for i in issues
                ],
            )
        )
    parts.append("</section>")
    return "".join(parts)


def _section_config(summary: Mapping[str, Any], out_dir: Path) -> str:
    parts = ['<section id="config"><h2>Config and provenance</h2>']
    models = summary.get("models") or []
    if models:
        parts.append("<h3>Models</h3>")
        parts.append(
            _table(
                ["filter", "name", "category", "file", "sha256"],
                [
                    [
                        _td(m.get("filter")),
                        _td(m.get("name")),
                        _td(m.get("category", "")),
                        _td(m.get("model_file", "")),
                        f"<td><code>{_esc(m.get('model_sha256', ''))}</code></td>",
                    ]
                    for m in models
                ],
            )
        )
    versions = summary.get("versions") or {}
    if versions:
        parts.append("<h3>Versions</h3>")
        parts.append(
            _table(["package", "version"], [[_td(k), _td(v)] for k, v in sorted(versions.items())])
        )
    config_path = out_dir / "config.yaml"
    text = config_path.read_text(encoding="utf-8") if config_path.is_file() else "(no config.yaml)"
    parts.append(
        f"<h3>Effective config</h3><p>config sha256 <code>"
        f"{_esc(summary.get('config_sha256', '?'))}</code></p><pre>{_esc(text)}</pre></section>"
    )
    return "".join(parts)


# ---------------------------------------------------------------------------- API


def build_report(
    out_dir: str | Path,
    *,
    opener: Opener | None = None,
    blur_sexual: bool = True,
    max_thumbs: int = 12,
) -> str:
    """The report of the finished run in ``out_dir`` as one self-contained HTML page.

    ``opener`` reads the samples' source files for thumbnails (default: local files;
    pass ``mitigate.pipeline.fs.open_read`` for remote paths). Thumbnails of
    ``sexual``-category filters, and elsewhere of samples scoring at or above a sexual
    filter's threshold, are blurred in the pixels unless ``blur_sexual`` is False.
    ``max_thumbs`` bounds every thumbnail strip.
    """
    out_dir = Path(out_dir)
    summary = load_summary(out_dir)
    config = load_run_config(out_dir)
    specs = filter_specs(config, summary)
    columns = manifest_columns(_manifest_schema_names(out_dir), specs)
    table = load_manifest(out_dir, columns)
    log.info("report: %d manifest rows, %d filters", table.num_rows, len(specs))
    thumbs = _Thumbs(table, opener or local_open)
    funnel = funnel_data(summary, table)
    data = [filter_data(table, s, max_thumbs) for s in specs]
    blur = _blur_rows(table, specs, blur_sexual)
    sections = [
        _section_funnel(summary, funnel),
        _section_filters(table, data, thumbs, blur_sexual),
        _section_dedup(summary.get("dedup"), thumbs, blur, max_thumbs),
        _section_rebalancing(summary.get("rebalance"), table),
        _section_errors(summary, error_examples(table)),
        _section_config(summary, out_dir),
    ]
    nav = "".join(f'<a href="#{s}">{s}</a>' for s in SECTION_IDS)
    title = f"mitigate report: {out_dir}"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>mitigate run report</h1><div class='muted'>{_esc(out_dir)} · "
        f"mitigate {_esc(summary.get('versions', {}).get('mitigate', '?'))}</div>"
        f"<nav>{nav}</nav></header><main>{''.join(sections)}</main></body></html>"
    )


def write_report(
    out_dir: str | Path,
    *,
    opener: Opener | None = None,
    blur_sexual: bool = True,
    max_thumbs: int = 12,
) -> Path:
    """Build the report and write it to ``OUT/report.html`` atomically (a hidden
    temporary file in the same folder, then a rename). Returns the path."""
    page = build_report(out_dir, opener=opener, blur_sexual=blur_sexual, max_thumbs=max_thumbs)
    target = Path(out_dir, "report.html")
    fd, tmp = tempfile.mkstemp(prefix=".report.html.tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(target, 0o644)
    log.info("report written to %s (%.1f kB)", target, len(page.encode()) / 1024)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mitigate.report OUT``: write ``OUT/report.html`` (local paths)."""
    parser = argparse.ArgumentParser(prog="python -m mitigate.report", description=main.__doc__)
    parser.add_argument("out_dir", help="a finished run's output folder")
    parser.add_argument(
        "--no-blur", action="store_true", help="do not blur sexual-content thumbnails"
    )
    parser.add_argument("--max-thumbs", type=int, default=12, help="thumbnails per strip")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = write_report(args.out_dir, blur_sexual=not args.no_blur, max_thumbs=args.max_thumbs)
    log.info("%s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
