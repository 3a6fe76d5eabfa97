"""The verification score's local part as it was before the compiled kernel (issue 14,
session 11): band-matrix products over gathered planes, numpy's mean and std. A
verbatim copy of ``mitigate/verify.py`` at 0739579 (``_band`` to ``_level_scores``;
``_aligned`` calls the copied ``_normalise``), kept so that benchmarks can run the old
path beside the new one in the same session. The alignments' zoom and the pooling are
that commit's matrix products (``_align_matrices``, ``_pool``: verbatim too), which
``verify`` replaced with two-tap resampling in session 14.

``install()`` puts it in place in this process, and makes the near-dup decision's
worker processes (``mitigate.workers``) score through it too: they import this module
by name (the caller's ``sys.path`` travels to them), which installs it there.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from mitigate import localscore, verify, workers
from mitigate.verify import (
    _ALIGNMENTS,
    _CONTRAST_FLOOR,
    CHROMA_GRID,
    CHROMA_UNIT,
    EDGE_ROWS,
    FINE_ALIGNMENTS,
    GRID,
    LEVELS,
    RING,
    WINDOW,
    ZOOMS,
)


def _align_matrices(n: int, mirrored: bool, z: int) -> tuple[NDArray[np.float32], ...]:
    """(left, right) with ``left @ x @ right`` = ``x`` (n x n cells) mirrored left to
    right if ``mirrored``, then zoomed by ``ZOOMS[z]`` (bilinear, separable)."""
    lo, hi, _, w = localscore.zoom_taps(n, ZOOMS[z])
    zoom = np.zeros((n, n), dtype=np.float32)
    np.add.at(zoom, (np.arange(n), lo), 1 - w)
    np.add.at(zoom, (np.arange(n), hi), w)
    right = zoom.T.copy()
    if mirrored:
        right = right[::-1].copy()  # x @ flip @ zoom.T: columns reversed first
    return zoom, right


_MATRICES = {(n, al): _align_matrices(n, *al) for n in (*LEVELS, CHROMA_GRID) for al in _ALIGNMENTS}


def _pool(level: int) -> NDArray[np.float32]:
    """(level x GRID) matrix: ``pool @ y @ pool.T`` averages y to ``level`` cells a side."""
    f = GRID // level
    return np.repeat(np.eye(level, dtype=np.float32), f, axis=1) / f


_POOLS = {n: _pool(n) for n in LEVELS}


def _down(y: NDArray[np.float32], level: int) -> NDArray[np.float32]:
    """Luma planes averaged to ``level`` cells a side."""
    if level == GRID:
        return y
    pool = _POOLS[level]
    return pool @ y @ pool.T


def _band(level: int) -> tuple[NDArray[np.float32], int]:
    """(band, edge rows): ``band @ d @ band.T`` sums every window of a (level x level)
    difference map inside the outer ring; ring, window and edge rows scale with the
    level (RING, WINDOW, EDGE_ROWS are given at GRID cells)."""
    f = GRID // level
    r, w, e = max(1, RING // f), max(2, WINDOW // f), max(1, EDGE_ROWS // f)
    m = level - 2 * r - w + 1
    band = np.zeros((m, level), dtype=np.float32)
    for t in range(m):
        band[t, r + t : r + t + w] = 1.0 / w
    return band, e


_BANDS = {n: _band(n) for n in LEVELS}


def _normalise(y: NDArray[np.float32]) -> NDArray[np.float32]:
    mean = y.mean(axis=(-2, -1), keepdims=True)
    std = np.maximum(y.std(axis=(-2, -1), keepdims=True), _CONTRAST_FLOOR)
    return (y - mean) / std


def _most_changed(d: NDArray[np.float32], level: int) -> NDArray[np.float32]:
    """Largest window mean of a difference map (p, level, level), without the outer
    ring, and without the edge rows at the top or at the bottom if that lowers it (a
    band across one edge is forgiven, not one at each)."""
    band, e = _BANDS[level]
    win = band @ d @ band.T
    row_max = win.max(axis=2)
    full = row_max.max(axis=1)
    no_top = row_max[:, e:].max(axis=1)
    no_bottom = row_max[:, :-e].max(axis=1)
    return np.minimum(full, np.minimum(no_top, no_bottom))


def _aligned(
    y: NDArray[np.float32], c: NDArray[np.float32], level: int, alignment: tuple[bool, int]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(normalised luma, chroma) of images ``y`` (at ``level``), ``c`` under one
    alignment; luma normalised after the zoom."""
    if alignment != _ALIGNMENTS[0]:
        left, right = _MATRICES[level, alignment]
        y = left @ y @ right
        left, right = _MATRICES[CHROMA_GRID, alignment]
        c = left @ c @ right
    return _normalise(y), c


def _local(
    ya: NDArray[np.float32],
    ca: NDArray[np.float32],
    yb: NDArray[np.float32],
    cb: NDArray[np.float32],
    level: int,
) -> NDArray[np.float32]:
    """Most changed window of normalised luma ``ya``/``yb`` (p, level, level) and chroma
    (p, 2, CHROMA_GRID, CHROMA_GRID) of aligned pairs."""
    d = np.abs(ya - yb)
    dc = np.abs(ca - cb).sum(axis=1) / CHROMA_UNIT
    rep = level // CHROMA_GRID
    # each chroma cell adds to its rep x rep luma cells (in place, no copy)
    d.reshape(-1, CHROMA_GRID, rep, CHROMA_GRID, rep)[...] += dc[:, :, None, :, None]
    return _most_changed(d, level)


def _level_scores(
    a: NDArray[np.int64],
    b: NDArray[np.int64],
    y: NDArray[np.float32],
    c: NDArray[np.float32],
    level: int,
    stop_above: float,
) -> NDArray[np.float32]:
    """Local score of pairs (a[t], b[t]) (rows of ``y``/``c``, 64x64 luma) at ``level``:
    the best of all alignments at 16 cells, and at least the best of the
    FINE_ALIGNMENTS best of them again at ``level`` (not computed where the first is
    above ``stop_above`` already). Each image ``b`` is aligned once per alignment, not
    once per pair."""
    coarse_level = LEVELS[-1]
    ca = c[a]
    coarse = np.empty((a.shape[0], len(_ALIGNMENTS)), dtype=np.float32)
    yc = _down(y, coarse_level)
    ya = _normalise(yc)[a]
    ub, ib = np.unique(b, return_inverse=True)
    for t, al in enumerate(_ALIGNMENTS):
        yb, cb = _aligned(yc[ub], c[ub], coarse_level, al)
        coarse[:, t] = _local(ya, ca, yb[ib], cb[ib], coarse_level)
    coarse_best = coarse.min(axis=1)
    fine = np.flatnonzero(coarse_best <= stop_above)
    if level == coarse_level or fine.size == 0:
        return coarse_best
    a, b, ca, coarse = a[fine], b[fine], ca[fine], coarse[fine]
    # stable: ties keep the order of _ALIGNMENTS (as is first)
    chosen = np.argsort(coarse, axis=1, kind="stable")[:, :FINE_ALIGNMENTS]
    yl = _down(y, level)
    ya = _normalise(yl)[a]
    best = np.full(a.shape[0], np.inf, dtype=np.float32)
    for t, al in enumerate(_ALIGNMENTS):
        sel = np.flatnonzero((chosen == t).any(axis=1))
        if sel.size == 0:
            continue
        ub, ib = np.unique(b[sel], return_inverse=True)
        yb, cb = _aligned(yl[ub], c[ub], level, al)
        s = _local(ya[sel], ca[sel], yb[ib], cb[ib], level)
        best[sel] = np.minimum(best[sel], s)
    coarse_best[fine] = np.maximum(coarse_best[fine], best)
    return coarse_best


def score_part(
    i: np.ndarray, j: np.ndarray, table: np.ndarray, stop_above: float | None
) -> np.ndarray:
    """``mitigate.workers._score_part`` through the old code (run in worker processes)."""
    install()
    return verify.pair_scores(i, j, table, stop_above=stop_above)


_NOW = (verify._level_scores, workers._score_part)


def _old_level_scores(
    a: np.ndarray,
    b: np.ndarray,
    planes: verify._Planes,
    level: int,
    stop_above: float,
    as_is: np.ndarray | None = None,  # unmarked signatures only: the old code mirrors all
) -> np.ndarray:
    assert as_is is None or not as_is.any()
    return _level_scores(a, b, planes.y, planes.c, level, stop_above)


def install() -> None:
    """Score pairs with the old local part here, and in the pair-scoring workers."""
    verify._level_scores = _old_level_scores  # type: ignore[assignment]
    workers._score_part = score_part  # type: ignore[assignment]


def uninstall() -> None:
    """Back to the code of the tree."""
    verify._level_scores, workers._score_part = _NOW  # type: ignore[assignment]
