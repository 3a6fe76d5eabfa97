"""Compiled (numba) kernel of the verification signature's cells (issue 12, fifth round).

Imported lazily by :func:`mitigate.verify.signature` (importing numba costs ~0.5-0.9 s
once per process; the machine code is cached with ``cache=True``, next to this file when
the package folder is writable, else in numba's per-user cache folder, or in
``NUMBA_CACHE_DIR``). Integer arithmetic only, so the bytes are those of the numpy
reference :func:`mitigate.verify._cells_numpy` on every machine (tests compare both).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mitigate import sigdef

# The constants of mitigate.sigdef, written out here: numba's cache is keyed on this
# file, not on the modules it imports, so a change of the definition must change this
# file (or a stale kernel would be loaded); the check below fails loudly if they drift.
GRID, CHROMA_GRID, SAMPLES_X, SAMPLES_Y = 64, 16, 2, 2
LUMA, LUMA_SHIFT = (19595, 38470, 7471), 18
CB, CR, CHROMA_SHIFT = (-11058, -21710, 32768), (32768, -27439, -5329), 22
if (GRID, CHROMA_GRID, SAMPLES_X, SAMPLES_Y, LUMA, LUMA_SHIFT, CB, CR, CHROMA_SHIFT) != (
    sigdef.GRID,
    sigdef.CHROMA_GRID,
    sigdef.SAMPLES_X,
    sigdef.SAMPLES_Y,
    sigdef.LUMA,
    sigdef.LUMA_SHIFT,
    sigdef.CB,
    sigdef.CR,
    sigdef.CHROMA_SHIFT,
):  # pragma: no cover - a development error
    raise RuntimeError("mitigate._sigkernel's constants differ from mitigate.sigdef's")

_POOL = GRID // CHROMA_GRID  # luma cells a chroma cell side
_ROW = GRID * SAMPLES_X * 4  # bytes a row of samples (RGBX)


@njit(cache=True, nogil=True)
def _pack_plane(values, n, lo, hi, level, out, at):  # type: ignore[no-untyped-def]
    """4-bit levels of ``values[:n]`` between ``lo`` and ``hi`` (``level`` table of
    mitigate.verify), two a byte, first in the high nibble, written from ``out[at]``."""
    row = max(hi - lo, 1) * 256 - lo
    for p in range(0, n, 2):
        out[at] = (level[row + values[p]] << 4) | level[row + values[p + 1]]
        at += 1
    return at


@njit(cache=True, nogil=True)
def cells(rgbx, level, size):  # type: ignore[no-untyped-def]
    """The packed cells and the six range bytes of a signature (``size`` bytes, uint8)
    from the point samples ``rgbx`` (64 * SAMPLES_Y rows of 64 * SAMPLES_X samples, 4
    bytes a sample: Pillow's RGBX)."""
    out = np.empty(size, np.uint8)
    n = GRID * GRID
    # RGB sums of each luma cell's samples (int32: at most 4 * 255 a sum)
    rs, gs, bs = np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.int32)
    y = np.empty(n, np.int32)
    y_half = np.int32(1 << (LUMA_SHIFT - 1))
    for i in range(GRID):
        for j in range(GRID):
            sr, sg, sb = np.int32(0), np.int32(0), np.int32(0)
            for a in range(SAMPLES_Y):
                p = (i * SAMPLES_Y + a) * _ROW + j * SAMPLES_X * 4
                for t in range(SAMPLES_X):
                    sr += rgbx[p + 4 * t]
                    sg += rgbx[p + 4 * t + 1]
                    sb += rgbx[p + 4 * t + 2]
            c = i * GRID + j
            rs[c], gs[c], bs[c] = sr, sg, sb
            y[c] = (LUMA[0] * sr + LUMA[1] * sg + LUMA[2] * sb + y_half) >> LUMA_SHIFT
    cb = np.empty(CHROMA_GRID * CHROMA_GRID, np.int32)
    cr = np.empty(CHROMA_GRID * CHROMA_GRID, np.int32)
    half = np.int32(1 << (CHROMA_SHIFT - 1))
    for i in range(CHROMA_GRID):
        for j in range(CHROMA_GRID):
            sr, sg, sb = np.int32(0), np.int32(0), np.int32(0)
            for a in range(_POOL):
                c = (i * _POOL + a) * GRID + j * _POOL
                for t in range(_POOL):
                    sr += rs[c + t]
                    sg += gs[c + t]
                    sb += bs[c + t]
            vb = ((CB[0] * sr + CB[1] * sg + CB[2] * sb + half) >> CHROMA_SHIFT) + 128
            vr = ((CR[0] * sr + CR[1] * sg + CR[2] * sb + half) >> CHROMA_SHIFT) + 128
            cb[i * CHROMA_GRID + j] = min(255, max(0, vb))
            cr[i * CHROMA_GRID + j] = min(255, max(0, vr))
    y_lo, y_hi = y.min(), y.max()
    b_lo, b_hi, r_lo, r_hi = cb.min(), cb.max(), cr.min(), cr.max()
    at = _pack_plane(y, GRID * GRID, y_lo, y_hi, level, out, 0)
    at = _pack_plane(cb, CHROMA_GRID * CHROMA_GRID, b_lo, b_hi, level, out, at)
    at = _pack_plane(cr, CHROMA_GRID * CHROMA_GRID, r_lo, r_hi, level, out, at)
    out[at] = y_lo
    out[at + 1] = y_hi
    out[at + 2] = b_lo
    out[at + 3] = b_hi
    out[at + 4] = r_lo
    out[at + 5] = r_hi
    return out
