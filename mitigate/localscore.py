"""The local part of the verification score: each plane's normalisation, the
resampling that aligns and pools the planes, and the most changed window of aligned
pairs.

:mod:`mitigate.verify` normalises the luma planes (:func:`normalise`), aligns each image
of a candidate pair to the other and asks here for the largest window mean of their
difference map (its module docstring says what is forgiven and why). :func:`local_at`
takes the pairs as indices into per-image tables, so no pair's planes are copied. Both
run compiled kernels (:mod:`mitigate._scorekernel`) where :func:`compiled_for` says they
pay; :func:`local` and :func:`normalise_numpy` are the numpy references, the same
float32 operations in the same order, so both paths give the same bits (tests compare
them).

A window's mean is summed cell by cell, first row (then first column) to last, each
cell scaled by ``1 / side`` (a power of two at every level, so exact). Before issue 14's
kernel these sums were products with a band matrix, whose order was the BLAS library's
choice; on the OpenBLAS numpy ships here that order is the same one (the scores of the
labelled set and of 6,400 benchmark samples are identical bit for bit, BENCHMARKS.md),
and now it no longer depends on the library.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from types import ModuleType

import numpy as np
from numpy.typing import NDArray

from mitigate import kernels

Window = tuple[int, int, int]
"""(ring, side, edge rows) of a level: cells left out at each border, the window's
side, the window rows at the top or bottom that may be forgiven."""


def most_changed(d: NDArray[np.float32], window: Window) -> NDArray[np.float32]:
    """Largest window mean of difference maps ``d`` (p, n, n) inside the outer ring,
    and without the edge rows at the top or at the bottom if that lowers it (a band
    across one edge is forgiven, not one at each)."""
    ring, side, edge = window
    m = d.shape[-1] - 2 * ring - side + 1
    coef = np.float32(1.0 / side)
    rows = coef * d[:, ring : ring + m, :]
    for k in range(1, side):
        rows = rows + coef * d[:, ring + k : ring + k + m, :]
    win = coef * rows[:, :, ring : ring + m]
    for k in range(1, side):
        win = win + coef * rows[:, :, ring + k : ring + k + m]
    row_max = win.max(axis=2)
    full = row_max.max(axis=1)
    no_top = row_max[:, edge:].max(axis=1)
    no_bottom = row_max[:, :-edge].max(axis=1)
    return np.minimum(full, np.minimum(no_top, no_bottom))


def local(
    ya: NDArray[np.float32],
    ca: NDArray[np.float32],
    yb: NDArray[np.float32],
    cb: NDArray[np.float32],
    window: Window,
    chroma_unit: float,
) -> NDArray[np.float32]:
    """Most changed window of aligned pairs: normalised luma ``ya``/``yb`` (p, n, n),
    chroma ``ca``/``cb`` (p, 2, g, g); each chroma cell adds to its (n/g)^2 luma cells."""
    d = np.abs(ya - yb)
    dc = np.abs(ca - cb).sum(axis=1) / np.float32(chroma_unit)
    g = ca.shape[-1]
    rep = d.shape[-1] // g
    d.reshape(-1, g, rep, g, rep)[...] += dc[:, :, None, :, None]  # in place, no copy
    return most_changed(d, window)


def normalise_numpy(y: NDArray[np.float32], floor: float) -> NDArray[np.float32]:
    """Each plane of ``y`` (p, n, n) to zero mean and unit contrast (std at least
    ``floor``): the numpy reference of :func:`normalise`."""
    mean = y.mean(axis=(-2, -1), keepdims=True)
    std = np.maximum(y.std(axis=(-2, -1), keepdims=True), floor)
    return (y - mean) / std  # type: ignore[no-any-return]


def normalise(y: NDArray[np.float32], floor: float, compiled: bool = True) -> NDArray[np.float32]:
    """:func:`normalise_numpy`, compiled where numba imports: numpy's mean and std are
    float32 pairwise sums (blocks of 128 in eight running sums), which the kernel
    repeats in the same order, so the bits are the same (tests compare them; a numpy
    that changed its order would show there)."""
    kernel = _kernels() if compiled else None
    if kernel is None:
        return normalise_numpy(y, floor)
    y = np.ascontiguousarray(y, dtype=np.float32)
    return kernel.normalise(y, np.float32(floor), np.empty_like(y))  # type: ignore[no-any-return]


Taps = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32], NDArray[np.float32]]
"""Two taps a cell along one axis: (first source cell, second, first weight, second
weight) of each output cell."""


def zoom_taps(n: int, zoom: float, mirrored: bool = False) -> Taps:
    """Linear-interpolation taps along one axis of ``n`` cells: output cell ``t`` is
    ``x[lo[t]] * (1 - w[t]) + x[hi[t]] * w[t]`` for ``x`` zoomed about its centre by
    ``zoom`` (> 1 magnifies: the middle 1/zoom of ``x`` fills the output), read from
    the far end if ``mirrored`` (``x`` mirrored first)."""
    centres = (np.arange(n) + 0.5 - n / 2) / zoom + n / 2 - 0.5
    pos = np.clip(centres, 0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo).astype(np.float32)
    if mirrored:
        lo, hi = n - 1 - lo, n - 1 - hi
    return lo, hi, np.float32(1) - w, w


def half_taps(n: int) -> Taps:
    """Taps that average pairs of cells: ``n`` (even) cells to ``n // 2``."""
    half = np.full(n // 2, 0.5, dtype=np.float32)
    return np.arange(0, n, 2), np.arange(1, n, 2), half, half


def resample_numpy(y: NDArray[np.float32], rows: Taps, cols: Taps) -> NDArray[np.float32]:
    """Each plane of ``y`` (p, n, n) resampled with two taps a cell, rows first, then
    columns; each output ``first * weight + second * weight`` in float32: the numpy
    reference of :func:`resample`."""
    r0, r1, v0, v1 = rows
    c0, c1, w0, w1 = cols
    t = y[:, r0, :] * v0[:, None] + y[:, r1, :] * v1[:, None]
    # in C order: an index along the last axis leaves another layout, and numpy's sums
    # (normalise_numpy's mean and std) follow the memory's order
    return np.ascontiguousarray(t[:, :, c0] * w0 + t[:, :, c1] * w1)


def resample(
    y: NDArray[np.float32], rows: Taps, cols: Taps, compiled: bool = True
) -> NDArray[np.float32]:
    """:func:`resample_numpy`, compiled where numba imports (the same bits: the tests
    compare them). The alignments' zoom and mirror and the pooling to coarser levels
    (:mod:`mitigate.verify`) are such resamplings; as matrix products their sums were
    in the BLAS library's order, which differs between machines."""
    kernel = _kernels() if compiled else None
    if kernel is None:
        return resample_numpy(y, rows, cols)
    y = np.ascontiguousarray(y, dtype=np.float32)
    out = np.empty((y.shape[0], rows[0].shape[0], cols[0].shape[0]), dtype=np.float32)
    return kernel.resample(y, *rows, *cols, out)  # type: ignore[no-any-return]


#: Pairs a call scores from which the kernels are used in a process that has not
#: imported numba yet: importing it and its first call cost ~0.8 s of CPU and ~130 MB
#: (once a process), and the kernels save ~0.1 ms a pair (BENCHMARKS.md). Where numba
#: is in already (the signature kernel of an in-process decode), always. The scores are
#: the same bits either way.
MIN_COMPILED_PAIRS = 8192


def compiled_for(pairs: int) -> bool:
    """Whether scoring ``pairs`` pairs here is worth the compiled kernels."""
    return pairs >= MIN_COMPILED_PAIRS or "numba" in sys.modules


def load_kernels(pairs: int) -> None:
    """Load the compiled kernels now where scoring ``pairs`` pairs would use them, so a
    caller that scores them in smaller calls (:class:`mitigate.workers.PairScorer`'s
    chunks) keeps the kernels for all of them."""
    if compiled_for(pairs):
        _kernels()


def _kernels() -> ModuleType | None:
    """The compiled kernels' module, or None (numpy) where it cannot load or is not
    wanted (:func:`mitigate.kernels.set_compiled`)."""
    return _loaded() if kernels.compiled() else None


@lru_cache(maxsize=1)
def _loaded() -> ModuleType | None:
    return kernels.load("mitigate._scorekernel", "pair scores")


def local_at(
    ya: NDArray[np.float32],
    ca: NDArray[np.float32],
    ia: NDArray[np.int64],
    yb: NDArray[np.float32],
    cb: NDArray[np.float32],
    ib: NDArray[np.int64],
    window: Window,
    chroma_unit: float,
    compiled: bool = True,
) -> NDArray[np.float32]:
    """:func:`local` of the pairs (``ya[ia[t]]``, ``ca[ia[t]]``) x (``yb[ib[t]]``,
    ``cb[ib[t]]``), without gathering their planes (compiled; ``compiled=False``, or no
    numba: gathered, in numpy)."""
    ring, side, edge = window
    rows = ya.shape[-1] - 2 * ring - side + 1  # window rows
    if not (edge >= 1 and rows > 2 * edge):
        raise ValueError(f"window {window} leaves {rows} window rows: fewer than 2 x edge + 1")
    kernels = _kernels() if compiled else None
    if kernels is None:
        return local(ya[ia], ca[ia], yb[ib], cb[ib], window, chroma_unit)
    # the kernel reads without bounds checks: every index is checked here
    for idx, table in ((ia, ya), (ib, yb)):
        if idx.size and (idx.min() < 0 or idx.max() >= table.shape[0]):
            raise IndexError(f"pair index out of range 0..{table.shape[0] - 1}")
    f32 = np.float32
    ya, ca, yb, cb = (np.ascontiguousarray(x, dtype=f32) for x in (ya, ca, yb, cb))
    ia, ib = (np.ascontiguousarray(x, dtype=np.int64) for x in (ia, ib))
    out = np.empty(ia.shape[0], dtype=np.float32)
    args = (ring, side, edge, f32(1.0 / side), f32(chroma_unit), out)
    return kernels.local_scores(ya, ca, ia, yb, cb, ib, *args)  # type: ignore[no-any-return]
