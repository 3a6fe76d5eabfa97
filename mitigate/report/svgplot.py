"""The report's charts as SVG, written directly: bars, lines, ticks and text.

The report has five small charts (bars on a log or linear count axis, a funnel of
horizontal bars, a line of quantiles, grouped bars). Drawing them with matplotlib cost
~0.5 s of import and ~0.1 s a chart in every run (BENCHMARKS.md, "The report's charts
without matplotlib"); here they are a few hundred SVG elements each, in milliseconds,
with text kept as text (readable, searchable, no embedded fonts) and the same bytes for
the same data.

A :class:`Chart` is a fixed-size drawing (900 x 280 units, scaled by the page's CSS)
of one or two :class:`Panel` s side by side. A panel maps data to its box: x linear,
or one slot a category; y linear or log (``set_y(..., log=True)``); the axes are drawn
left and below only.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Sequence

#: Size of a chart in SVG user units (the page scales it to its width).
WIDTH, HEIGHT = 900.0, 280.0
FONT = 12.0  # px
CHAR_WIDTH = 0.6 * FONT  # a character's width, about, for margins and the legend
_TEXT = 'font-family="system-ui,-apple-system,Segoe UI,sans-serif"'
_AXIS = "#1f2328"
_STROKE = f'stroke="{_AXIS}" stroke-width="0.8"'


def _num(v: float) -> str:
    """A coordinate with two decimals at most, no trailing zeros ("12", "3.5")."""
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def nice_ticks(lo: float, hi: float, most: int = 8) -> list[float]:
    """Tick values on 1, 2, 2.5 or 5 times a power of ten inside [lo, hi], at most
    ``most`` + 1 of them and at least one."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / most
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    digits = max(0, -math.floor(math.log10(step))) + 3  # 0.6, not 0.6000000000000001
    return [round(k * step, digits) for k in range(first, last + 1)]


def tick_label(v: float, ticks: Sequence[float]) -> str:
    """``v`` with as many decimals as the ticks' step needs ("0.25", "1,000")."""
    step = min((b - a for a, b in itertools.pairwise(ticks)), default=abs(v) or 1.0)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    if step > 0 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1  # a step of 2.5 or 0.25
    return f"{v:,.{decimals}f}"


def log_ticks(lo: float, hi: float) -> list[float]:
    """The powers of ten in [lo, hi] (1, 10, 100, ...)."""
    if hi <= 0:
        return []
    first = math.ceil(math.log10(max(lo, 1e-300)) - 1e-9)
    last = math.floor(math.log10(hi) + 1e-9)
    return [10.0**k for k in range(first, last + 1)]


class Panel:
    """One plotting box of a :class:`Chart`: data ranges, and what is drawn in it."""

    def __init__(self, chart: Chart, left: float, top: float, right: float, bottom: float):
        self.chart = chart
        self.left, self.top, self.right, self.bottom = left, top, right, bottom
        self.x0, self.x1 = 0.0, 1.0
        self.y0, self.y1 = 0.0, 1.0
        self.ylog = False

    def set_x(self, lo: float, hi: float) -> None:
        self.x0, self.x1 = (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)

    def set_y(self, lo: float, hi: float, *, log: bool = False) -> None:
        self.ylog = log
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        self.y0, self.y1 = (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)

    def x(self, v: float) -> float:
        return self.left + (v - self.x0) / (self.x1 - self.x0) * (self.right - self.left)

    def y(self, v: float) -> float:
        if self.ylog:
            v = math.log10(v) if v > 0 else self.y0
        v = min(max(v, self.y0), self.y1)  # clipped to the box, as a log axis clips 0
        return self.bottom - (v - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)

    # ------------------------------------------------------------------ drawing

    def rect(self, x0: float, x1: float, y0: float, y1: float, colour: str, edge: bool) -> None:
        """A bar from (x0, y0) to (x1, y1) in data units; nothing if it has no area."""
        px0, px1 = sorted((self.x(x0), self.x(x1)))
        py0, py1 = sorted((self.y(y0), self.y(y1)))
        if px1 - px0 <= 0 or py1 - py0 <= 0:
            return
        stroke = ' stroke="#fff" stroke-width="0.4"' if edge else ""
        self.chart.add(
            f'<rect x="{_num(px0)}" y="{_num(py0)}" width="{_num(px1 - px0)}" '
            f'height="{_num(py1 - py0)}" fill="{colour}"{stroke}/>'
        )

    def bars(
        self,
        lefts: Sequence[float],
        widths: Sequence[float],
        heights: Sequence[float],
        colours: Sequence[str] | str,
        *,
        edge: bool = False,
    ) -> None:
        """Vertical bars from the axis' bottom (0, or a log axis' lower end)."""
        base = 10.0**self.y0 if self.ylog else 0.0
        for i, (left, width, height) in enumerate(zip(lefts, widths, heights, strict=True)):
            colour = colours if isinstance(colours, str) else colours[i]
            if height > 0:
                self.rect(left, left + width, base, height, colour, edge)

    def hbars(
        self,
        ys: Sequence[float],
        lefts: Sequence[float],
        widths: Sequence[float],
        colours: Sequence[str],
        height: float = 0.8,
    ) -> None:
        """Horizontal bars centred on ``ys``."""
        for y, left, width, colour in zip(ys, lefts, widths, colours, strict=True):
            if width > 0:
                self.rect(left, left + width, y - height / 2, y + height / 2, colour, False)

    def polyline(self, xs: Sequence[float], ys: Sequence[float], colour: str, marker: bool):
        points = " ".join(
            f"{_num(self.x(a))},{_num(self.y(b))}" for a, b in zip(xs, ys, strict=True)
        )
        self.chart.add(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
        )
        if marker:
            for a, b in zip(xs, ys, strict=True):
                self.chart.add(
                    f'<circle cx="{_num(self.x(a))}" cy="{_num(self.y(b))}" r="3" fill="{colour}"/>'
                )

    def vline(self, v: float, colour: str, dash: str = "5,3", width: float = 1.2) -> None:
        x = self.x(v)
        self.chart.line(x, self.top, x, self.bottom, colour, width, dash)

    def hline(self, v: float, colour: str, dash: str = "1,2", width: float = 0.8) -> None:
        y = self.y(v)
        self.chart.line(self.left, y, self.right, y, colour, width, dash)

    def text(
        self,
        x: float,
        y: float,
        label: str,
        *,
        anchor: str = "start",
        dx: float = 0.0,
        dy: float = 0.0,
        colour: str = _AXIS,
        size: float = FONT,
    ) -> None:
        """``label`` at data point (x, y), moved by (dx, dy) units."""
        self.chart.text(self.x(x) + dx, self.y(y) + dy, label, anchor, colour, size)

    def top_note(self, x: float, label: str, colour: str) -> None:
        """``label`` just right of data x, inside the top of the box (a threshold's)."""
        self.chart.text(self.x(x) + 4, self.top + 11, label, "start", colour, FONT - 1)

    # -------------------------------------------------------------------- axes

    def axes(
        self,
        *,
        xticks: Sequence[float] = (),
        xlabels: Sequence[str] | None = None,
        yticks: Sequence[float] = (),
        ylabels: Sequence[str] | None = None,
        xlabel: str = "",
        ylabel: str = "",
    ) -> None:
        """The left and bottom axes, their ticks and labels (ticks outside the range are
        left out)."""
        c = self.chart
        c.add(
            f'<path d="M{_num(self.left)},{_num(self.top)}V{_num(self.bottom)}'
            f'H{_num(self.right)}" fill="none" stroke="{_AXIS}" stroke-width="0.8"/>',
            True,
        )
        xlabels = list(xlabels) if xlabels is not None else [tick_label(v, xticks) for v in xticks]
        for v, label in zip(xticks, xlabels, strict=True):
            if not self.x0 - 1e-9 <= v <= self.x1 + 1e-9:
                continue
            x = self.x(v)
            c.add(
                f'<path d="M{_num(x)},{_num(self.bottom)}v3.5" {_STROKE}/>',
                True,
            )
            c.text(x, self.bottom + 5 + FONT, label, "middle", over=True)
        if ylabels is None:
            ylabels = (
                [f"{v:,.0f}" for v in yticks]
                if self.ylog
                else [tick_label(v, yticks) for v in yticks]
            )
        for v, label in zip(yticks, ylabels, strict=True):
            if self.ylog and v <= 0:
                continue
            lv = math.log10(v) if self.ylog else v
            if not self.y0 - 1e-9 <= lv <= self.y1 + 1e-9:
                continue
            y = self.y(v)
            c.add(
                f'<path d="M{_num(self.left)},{_num(y)}h-3.5" {_STROKE}/>',
                True,
            )
            c.text(self.left - 6, y + FONT * 0.35, label, "end", over=True)
        if xlabel:
            c.text(
                (self.left + self.right) / 2,
                self.bottom + 10 + 2 * FONT,
                xlabel,
                "middle",
                over=True,
            )
        if ylabel:
            widest = max((len(s) for s in ylabels), default=1)
            x, y = self.left - 12 - widest * CHAR_WIDTH, (self.top + self.bottom) / 2
            c.add(
                f'<text transform="translate({_num(x)},{_num(y)}) rotate(-90)" '
                f'text-anchor="middle" font-size="{_num(FONT)}" fill="{_AXIS}" {_TEXT}>'
                f"{_esc(ylabel)}</text>",
                True,
            )

    def legend(self, entries: Sequence[tuple[str, str]]) -> None:
        """Coloured squares and labels in one row at the panel's top right."""
        widths = [14 + len(label) * CHAR_WIDTH + 16 for label, _ in entries]
        x = self.right - sum(widths)
        for (label, colour), w in zip(entries, widths, strict=True):
            self.chart.add(
                f'<rect x="{_num(x)}" y="{_num(self.top + 2)}" width="10" height="10" '
                f'fill="{colour}"/>',
                True,
            )
            self.chart.text(x + 14, self.top + 11, label, "start", over=True)
            x += w


class Chart:
    """An SVG drawing of one or two panels side by side (:meth:`panels`)."""

    def __init__(self, width: float = WIDTH, height: float = HEIGHT):
        self.width, self.height = width, height
        self._parts: list[str] = []
        self._over: list[str] = []  # axes and legends, drawn over the data

    def add(self, element: str, over: bool = False) -> None:
        (self._over if over else self._parts).append(element)

    def line(
        self, x1: float, y1: float, x2: float, y2: float, colour: str, width: float, dash: str
    ) -> None:
        """A dashed line between two points (units)."""
        self.add(
            f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" '
            f'stroke="{colour}" stroke-width="{_num(width)}" stroke-dasharray="{dash}"/>'
        )

    def text(
        self,
        x: float,
        y: float,
        label: str,
        anchor: str = "start",
        colour: str = _AXIS,
        size: float = FONT,
        over: bool = False,
    ) -> None:
        self.add(
            f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{_num(size)}" '
            f'fill="{colour}" {_TEXT}>{_esc(label)}</text>',
            over,
        )

    def panels(self, n: int = 1, *, left: float = 90.0, gap: float = 110.0) -> list[Panel]:
        """``n`` panels side by side, ``left`` units for the first one's y labels."""
        top, bottom, right = 20.0, self.height - 48.0, self.width - 18.0
        width = (right - left - gap * (n - 1)) / n
        return [
            Panel(self, left + k * (width + gap), top, left + k * (width + gap) + width, bottom)
            for k in range(n)
        ]

    def svg(self) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_num(self.width)} '
            f'{_num(self.height)}" width="{_num(self.width)}" height="{_num(self.height)}">'
            '<rect width="100%" height="100%" fill="#fff"/>'
            + "".join(self._parts + self._over)
            + "</svg>"
        )


def log_count_axis(panel: Panel, top: int, label: str, xlabel: str, **x: object) -> None:
    """A log count axis from 0.7 to twice ``top``, labelled at the powers of ten, and
    the panel's axes (``x``: :meth:`Panel.axes`' x arguments)."""
    hi = max(top, 1) * 2.0
    panel.set_y(0.7, hi, log=True)
    panel.axes(yticks=log_ticks(1.0, hi), ylabel=label, xlabel=xlabel, **x)  # type: ignore[arg-type]


def histogram(
    panel: Panel,
    edges: Sequence[float],
    counts: Sequence[float],
    colours: Sequence[str] | str,
    *,
    ylabel: str,
    xlabel: str,
    also_x: float | None = None,
) -> None:
    """Bars between ``edges`` on a log count axis. Bins one unit wide get integer ticks
    and the bins' span exactly; others a margin of 3 % each side. ``also_x`` (a
    threshold) is kept inside the x range."""
    lo, hi = float(edges[0]), float(edges[-1])
    widths = [float(b) - float(a) for a, b in itertools.pairwise(edges)]
    unit = bool(widths) and all(w == 1.0 for w in widths)
    if also_x is not None and math.isfinite(also_x):
        lo, hi = min(lo, also_x), max(hi, also_x)
    if not unit:
        pad = 0.03 * (hi - lo)
        lo, hi = lo - pad, hi + pad
    panel.set_x(lo, hi)
    ticks = nice_ticks(panel.x0, panel.x1)
    if unit:
        ticks = [t for t in ticks if t == int(t)]
    top = max((int(c) for c in counts), default=1)
    log_count_axis(panel, top, ylabel, xlabel, xticks=ticks)
    panel.bars(
        [float(e) for e in edges[:-1]], widths, [float(c) for c in counts], colours, edge=True
    )
