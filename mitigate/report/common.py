"""Shared page pieces: style, Content Security Policy, escaping, SVG charts as ``data:``
URIs, tables and the thumbnail cache.
"""

from __future__ import annotations

import base64
import html
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mitigate.report.data import FilterSpec
from mitigate.report.svgplot import Chart
from mitigate.review import Opener, read_image_bytes, thumbnail
from mitigate.text import CONTROL_ESCAPES

log = logging.getLogger(__name__)

#: Thumbnail size (longer side, px) in every strip.
THUMB_SIZE = 112

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


# ------------------------------------------------------------------------ rendering


# C0 and C1 controls but tab and newline: a terminal's escapes in a caption (ESC, BEL)
# shown as their code, not passed into the page
_CONTROLS = CONTROL_ESCAPES


def _esc(value: Any) -> str:
    return html.escape(str(value).translate(_CONTROLS), quote=True)


def _plot(fig_fn: Any, *args: Any, alt: str) -> str:
    """Render a chart (``fig_fn(chart, *args)``, :mod:`mitigate.report.svgplot`) to an
    inline ``<img>``: SVG with text kept as text, as a ``data:`` URI."""
    chart = Chart()
    fig_fn(chart, *args)
    uri = "data:image/svg+xml;base64," + base64.b64encode(chart.svg().encode()).decode()
    return f'<img class="plot" alt="{_esc(alt)}" src="{uri}">'


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

    def __init__(
        self,
        table: pa.Table | None,
        opener: Opener,
        fetch: Callable[[Sequence[int]], list[dict[str, Any]]] | None = None,
        find: Callable[[Sequence[str]], list[tuple[int, str, str]]] | None = None,
    ) -> None:
        """``fetch``: rows by index with every shown column, where ``table`` holds the
        columns every row needs only (:meth:`mitigate.runtable.RunTable.rows`);
        ``find``: (row, key, state) of the rows with some keys, where ``table`` has no
        key column (:meth:`mitigate.runtable.RunTable.key_rows`)."""
        self.table = table
        self.opener = opener
        self._fetch = fetch
        self._find = find
        self._rows: dict[int, dict[str, Any]] = {}
        self._cache: dict[tuple[int, bool], str] = {}

    def prefetch(self, indices: Sequence[int]) -> None:
        """Read the rows ``indices`` at once (a part at a time), for :meth:`row`."""
        missing = sorted({int(i) for i in indices} - self._rows.keys())
        if self._fetch is not None and missing:
            self._rows.update(zip(missing, self._fetch(missing), strict=True))

    def row(self, index: int) -> dict[str, Any]:
        if self._fetch is None:
            assert self.table is not None  # a table of every column, or a fetch
            return self.table.slice(index, 1).to_pylist()[0]
        self.prefetch([index])
        return self._rows[int(index)]

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
        matches = self._find(keys) if self._find is not None else self._scan(keys)
        out: dict[str, int] = {}
        out_state: dict[str, str] = {}
        for i, key, state in matches:
            if key not in out or (state != "error" and out_state[key] == "error"):
                out[key] = int(i)
                out_state[key] = state
        return out

    def _scan(self, keys: Sequence[str]) -> list[tuple[int, str, str]]:
        """(row, key, state) of the rows of ``table`` (with its key column) with ``keys``."""
        assert self.table is not None  # a table with keys, or a find
        wanted = pa.array(sorted(set(keys)), type=pa.string())
        if len(wanted) == 0:
            return []
        mask = pc.is_in(self.table.column("key"), value_set=wanted)
        hits = np.flatnonzero(mask.to_numpy(zero_copy_only=False)).tolist()
        states = self.table.column("state").take(pa.array(hits, type=pa.int64())).to_pylist()
        found = self.table.column("key").take(pa.array(hits, type=pa.int64())).to_pylist()
        return list(zip(hits, found, states, strict=True))

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


def blur_of(
    thumbs: _Thumbs, specs: Sequence[FilterSpec], blur_sexual: bool
) -> Callable[[int], bool]:
    """Whether a row's thumbnail outside the filter strips is blurred: a sexual-category
    score at or above its threshold (whatever the row's state), read from the row."""
    sexual = [
        (s.column, s.threshold)
        for s in specs
        if blur_sexual and s.category == "sexual" and s.threshold is not None
    ]

    def blur(index: int) -> bool:
        if not sexual:
            return False
        row = thumbs.row(index)
        return any(_number(row.get(column)) >= threshold for column, threshold in sexual)

    return blur


def _number(value: Any) -> float:
    """A manifest cell as float (NaN where it is empty)."""
    return math.nan if value is None else float(value)
