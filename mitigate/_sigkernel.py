"""Compiled (numba) kernels of the decode path: the verification signature's cells
(issue 12, fifth round) and pHash's 32 x 32 Lanczos thumbnail (:func:`lanczos`,
:func:`lanczos_taps`, used by :mod:`mitigate.thumbnail`; session 12).

Imported lazily by :func:`mitigate.sigmake.signature` and :mod:`mitigate.thumbnail`
(importing numba costs ~0.5-0.9 s once per process; the machine code is cached with
``cache=True``, next to this file when the package folder is writable, else in numba's
per-user cache folder, or in ``NUMBA_CACHE_DIR``). The cells use integer arithmetic
only, so their bytes are those of the numpy reference
:func:`mitigate.sigmake._cells_numpy` on every machine; the thumbnail's taps are Pillow's
doubles and its passes Pillow's integer sums, so its bytes are Pillow's resize (tests
compare both).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mitigate import sigdef

# The constants of mitigate.sigdef, written out here: numba's cache is keyed on this
# file, not on the modules it imports, so a change of the definition must change this
# file (or a stale kernel would be loaded); the check below fails loudly if they drift.
GRID, CHROMA_GRID, SAMPLES_X, SAMPLES_Y = 64, 16, 2, 2
BOX_BITS = 22  # mitigate.sigsample.BOX_BITS: Pillow's resampling fixed point
LEVEL_SHIFT = 21  # _pack_plane's reciprocal: exact for every span (see there)
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
# box_cells computes a cell's luma from its average, not its 4 samples' sum: the same
# value only while there are 4 samples a cell and the luma shift is 18 (16 + log2 4)
if SAMPLES_X * SAMPLES_Y != 4 or LUMA_SHIFT != 18:  # pragma: no cover - development error
    raise RuntimeError("mitigate._sigkernel.box_cells assumes 4 samples a cell, shift 18")


@njit(cache=True, nogil=True, inline="always")
def _pack_plane(values, n, lo, hi, out, at):  # type: ignore[no-untyped-def]
    """4-bit levels of ``values[:n]`` between ``lo`` and ``hi``, two a byte, first in the
    high nibble, written from ``out[at]``: the numpy reference's level table
    (:func:`mitigate.sigmake._level_table`, ``(d * 15 + span // 2) // span`` for ``d``
    above ``lo``) computed by a multiply and a shift, ``m = ceil(2**21 / span)``: exact
    while ``(d * 15 + span // 2) * (m * span - 2**21) < 2**21``, which holds for every
    span and ``d`` up to 255 (3,952 * 254 < 2**21; ``tests/test_sigfused.py`` checks all
    of them). No table lookup a cell: 0.4x the table's time (BENCHMARKS.md, "Tenth
    round")."""
    span = max(hi - lo, 1)
    half, m = span // 2, ((1 << LEVEL_SHIFT) + span - 1) // span
    for p in range(0, n, 2):
        a = (((values[p] - lo) * 15 + half) * m) >> LEVEL_SHIFT
        b = (((values[p + 1] - lo) * 15 + half) * m) >> LEVEL_SHIFT
        out[at + (p >> 1)] = (a << 4) | b
    return at + (n >> 1)


@njit(cache=True, nogil=True)
def _finish(y, csum, level, size):  # type: ignore[no-untyped-def]
    """The packed cells and the six range bytes (``size`` bytes) from the luma cells ``y``
    (int32: its min, max and packing took ~0.6x the time of int64's, 2.6 vs 4.5 us a
    call in a compiled loop; session 29) and each chroma cell's RGB sums. (``level``,
    the numpy reference's level table, is not read: :func:`_pack_plane` computes its
    values. The kernels keep it in their call signature, which
    ``benchmarks/eval_near_verify.py --previous-kernel`` relies on to swap earlier
    kernels in.)"""
    out = np.empty(size, np.uint8)
    n = CHROMA_GRID * CHROMA_GRID
    cb, cr = np.empty(n, np.int64), np.empty(n, np.int64)
    half = 1 << (CHROMA_SHIFT - 1)
    for c in range(n):
        sr, sg, sb = csum[3 * c], csum[3 * c + 1], csum[3 * c + 2]
        vb = ((CB[0] * sr + CB[1] * sg + CB[2] * sb + half) >> CHROMA_SHIFT) + 128
        vr = ((CR[0] * sr + CR[1] * sg + CR[2] * sb + half) >> CHROMA_SHIFT) + 128
        cb[c] = min(255, max(0, vb))
        cr[c] = min(255, max(0, vr))
    y_lo, y_hi = y.min(), y.max()
    b_lo, b_hi, r_lo, r_hi = cb.min(), cb.max(), cr.min(), cr.max()
    at = _pack_plane(y, GRID * GRID, y_lo, y_hi, out, 0)
    at = _pack_plane(cb, n, b_lo, b_hi, out, at)
    at = _pack_plane(cr, n, r_lo, r_hi, out, at)
    out[at] = y_lo
    out[at + 1] = y_hi
    out[at + 2] = b_lo
    out[at + 3] = b_hi
    out[at + 4] = r_lo
    out[at + 5] = r_hi
    return out


@njit(cache=True, nogil=True)
def _sampled(px, rows, cols, level, size):  # type: ignore[no-untyped-def]
    """The packed cells and the six range bytes (``size`` bytes) of the point samples
    ``px[rows[r] + cols[c]]`` (RGB words, R in the low byte), ``64 * SAMPLES_Y`` rows
    by ``64 * SAMPLES_X`` columns, ``SAMPLES_Y`` x ``SAMPLES_X`` a luma cell: each
    cell's R and B summed in one word (4 samples: 10-bit sums, they do not meet), its
    luma and its chroma cell's sums taken there, so that no plane of sums is kept (the
    same bytes as three int64 planes of sums; no measurable change in the decode path:
    BENCHMARKS.md, "Ninth round")."""
    y = np.empty(GRID * GRID, np.int32)
    csum = np.zeros(3 * CHROMA_GRID * CHROMA_GRID, np.int64)
    half = 1 << (LUMA_SHIFT - 1)
    for i in range(GRID):
        r0, r1 = rows[i * SAMPLES_Y], rows[i * SAMPLES_Y + 1]
        k0 = (i // _POOL) * CHROMA_GRID
        for cj in range(CHROMA_GRID):
            crb, cg = 0, 0  # the chroma cell's sums over this row of luma cells
            for t in range(_POOL):
                j = cj * _POOL + t
                c0, c1 = cols[j * SAMPLES_X], cols[j * SAMPLES_X + 1]
                v0, v1 = np.int64(px[r0 + c0]), np.int64(px[r0 + c1])
                v2, v3 = np.int64(px[r1 + c0]), np.int64(px[r1 + c1])
                rb = (v0 & 0xFF00FF) + (v1 & 0xFF00FF) + (v2 & 0xFF00FF) + (v3 & 0xFF00FF)
                g = (v0 & 0xFF00) + (v1 & 0xFF00) + (v2 & 0xFF00) + (v3 & 0xFF00)
                y[i * GRID + j] = (
                    LUMA[0] * (rb & 0xFFFF) + LUMA[1] * (g >> 8) + LUMA[2] * (rb >> 16) + half
                ) >> LUMA_SHIFT
                crb += rb  # 16 samples: R under 2**12, it does not meet B
                cg += g
            k = 3 * (k0 + cj)
            csum[k] += crb & 0xFFFF
            csum[k + 1] += cg >> 8
            csum[k + 2] += crb >> 16
    return _finish(y, csum, level, size)


@njit(cache=True, nogil=True)
def cells(words, level, size):  # type: ignore[no-untyped-def]
    """The packed cells and the six range bytes of a signature (``size`` bytes, uint8)
    from the point samples ``words`` (64 * SAMPLES_Y rows of 64 * SAMPLES_X samples:
    Pillow's RGBX bytes read as little-endian 32-bit words)."""
    nx, ny = GRID * SAMPLES_X, GRID * SAMPLES_Y
    return _sampled(words, np.arange(ny) * nx, np.arange(nx), level, size)


@njit(cache=True, nogil=True)
def _box_bins(size):  # type: ignore[no-untyped-def]
    """:func:`mitigate.sigsample.box_bins`: each cell's first and end pixel along a side
    and its fixed-point weight (Pillow's, computed in doubles as Pillow does)."""
    first, end = np.empty(GRID, np.int64), np.empty(GRID, np.int64)
    weight = np.empty(GRID, np.int64)
    for i in range(GRID):
        if size < GRID:
            first[i] = (2 * i + 1) * size // (2 * GRID)
            end[i] = first[i] + 1
        else:
            first[i] = (2 * i * size - GRID) // (2 * GRID) + 1
            end[i] = (2 * (i + 1) * size - GRID) // (2 * GRID) + 1
        weight[i] = int(0.5 + 1.0 / (end[i] - first[i]) * (1 << BOX_BITS))
    return first, end, weight


@njit(cache=True, nogil=True, inline="always")
def _mean2(u, v):  # type: ignore[no-untyped-def]
    """Pillow's BOX average of two pixels (RGB words, R in the low byte), each channel
    ``(a + b + 1) >> 1`` (its arithmetic when two pixels weigh 2**21 each, one pixel
    twice when a cell has one), R and B in one sum (their 9-bit sums do not meet)."""
    rb = (((u & 0xFF00FF) + (v & 0xFF00FF) + 0x10001) >> 1) & 0xFF00FF
    return rb | ((((u & 0xFF00) + (v & 0xFF00) + 0x100) >> 1) & 0xFF00)


@njit(cache=True, nogil=True, inline="always")
def _weighed(sr, sg, sb, w):  # type: ignore[no-untyped-def]
    """One cell of a pass of Pillow's BOX resize, its channel sums times the cells'
    weight, rounded half up and clipped to 255, as an RGB word."""
    half = 1 << (BOX_BITS - 1)
    r = min((sr * w + half) >> BOX_BITS, 255)
    g = min((sg * w + half) >> BOX_BITS, 255)
    return r | (g << 8) | (min((sb * w + half) >> BOX_BITS, 255) << 16)


@njit(cache=True, nogil=True)
def _box_across(px, width, height):  # type: ignore[no-untyped-def]
    """Pillow's BOX pass across the rows, to GRID cells: ``height`` x GRID RGB words."""
    out = np.empty((height, GRID), np.uint32)
    if width == GRID:  # Pillow does not resample a side that has the size asked
        for r in range(height):
            for j in range(GRID):
                out[r, j] = px[r * GRID + j] & 0xFFFFFF
        return out
    first, end, weight = _box_bins(width)
    if width < 2 * GRID:  # 1 or 2 pixels a cell: read 2 (one pixel twice)
        # unsigned indices: numba then adds no wraparound of negative ones (0.7x the time)
        lo, hi = first.astype(np.uint64), (end - 1).astype(np.uint64)
        for r in range(height):
            base = np.uint64(r * width)
            for j in range(GRID):
                out[r, j] = _mean2(np.uint32(px[base + lo[j]]), np.uint32(px[base + hi[j]]))
        return out
    for r in range(height):
        base = r * width
        for j in range(GRID):
            sr, sg, sb = 0, 0, 0
            for x in range(base + first[j], base + end[j]):
                v = px[x]
                sr += v & 255
                sg += (v >> 8) & 255
                sb += (v >> 16) & 255
            out[r, j] = _weighed(sr, sg, sb, weight[j])
    return out


@njit(cache=True, nogil=True)
def _box_down(rows, n, height):  # type: ignore[no-untyped-def]
    """Pillow's BOX pass down the columns, to GRID cells: ``rows``, ``height`` x ``n``
    RGB words, -> GRID x ``n`` 24-bit RGB words (the padding byte cleared)."""
    out = np.empty((GRID, n), np.uint32)
    if height == GRID:  # not resampled
        for i in range(GRID):
            for j in range(n):
                out[i, j] = rows[i, j] & 0xFFFFFF
        return out
    first, end, weight = _box_bins(height)
    if height < 2 * GRID:  # 1 or 2 rows a cell: read 2 (one row twice)
        for i in range(GRID):
            a, b = rows[first[i]], rows[end[i] - 1]
            for j in range(n):
                out[i, j] = _mean2(np.int64(a[j]), np.int64(b[j]))
        return out
    sums = np.empty((3, n), np.int64)
    for i in range(GRID):
        sums[:] = 0
        for r in range(first[i], end[i]):
            row = rows[r]
            for j in range(n):
                v = np.int64(row[j])
                sums[0, j] += v & 255
                sums[1, j] += (v >> 8) & 255
                sums[2, j] += (v >> 16) & 255
        for j in range(n):
            out[i, j] = _weighed(sums[0, j], sums[1, j], sums[2, j], weight[i])
    return out


@njit(cache=True, nogil=True)
def box_words(px, width, height):  # type: ignore[no-untyped-def]
    """Pillow's ``resize((64, 64), BOX)`` of an RGB image (its arithmetic, exact:
    :func:`mitigate.sigsample.box_numpy`) from its pixels ``px`` (``height`` rows of
    ``width`` RGB words): GRID x GRID RGB words, the rows across, then down.

    Under 64 px across, Pillow's pass across only repeats pixels (a cell of one pixel:
    no arithmetic, no rounding), so it commutes with the pass down: this pass runs
    first, over the ``width`` columns instead of 64, and the columns are repeated
    after it (same bytes; a tall narrow image's pass across read every row, 64 cells
    each)."""
    if width < GRID:
        down = _box_down(px.reshape((height, width)), width, height)
        first = _box_bins(width)[0]
        out = np.empty((GRID, GRID), np.uint32)
        for i in range(GRID):
            for j in range(GRID):
                out[i, j] = down[i, first[j]]
        return out
    across = _box_across(px, width, height)
    if height == GRID:
        return across
    return _box_down(across, GRID, height)


@njit(cache=True, nogil=True)
def _long_side_cells(px, width, height, level, size):  # type: ignore[no-untyped-def]
    """:func:`cells` of an image with one side of 128 px or more and the other under
    128 px (``px``: ``height`` rows of ``width`` RGB words), SIG_VERSION 3: along the
    long side Pillow's NEAREST samples (``64 * SAMPLES`` of them, as the point-sampled
    path takes), along the short side Pillow's BOX resize to 64 cells (1 or 2 pixels a
    cell); each of a cell's 2 values stands for 2 of its 4 samples. As Pillow:
    ``resize((128, h), NEAREST).resize((128, 64), BOX)`` (wide; a tall image the other
    way round), each value repeated on the short side, through the numpy cells. The
    BOX pass along the long side read every pixel (~16 % of the decode path there;
    BENCHMARKS.md, "Eleventh round")."""
    n = GRID * SAMPLES_X  # samples along the long side (SAMPLES_X == SAMPLES_Y)
    wide = width >= 2 * GRID
    long_side, short_side = (width, height) if wide else (height, width)
    first, end, _ = _box_bins(short_side)
    # a cell's 2 values, each the mean of 2 pixels (one pixel twice), at px[p + q] for
    # p in (a0, a1) / (b0, b1) and q in (a2, a3) / (b2, b3): wide, the rows of its short
    # side's cell and its 2 sampled columns; tall, its 2 sampled rows and the columns
    w = np.uint64(width)
    pick = np.empty(n, np.uint64)  # the long side's NEAREST samples
    for s in range(n):
        pick[s] = (2 * s + 1) * long_side // (2 * n)
    rows = np.empty((GRID, 4), np.uint64)  # per row of cells
    cols = np.empty((GRID, 4), np.uint64)  # per column of cells
    for i in range(GRID):
        lo, hi = np.uint64(first[i]), np.uint64(end[i] - 1)
        if wide:
            rows[i, 0], rows[i, 1], rows[i, 2], rows[i, 3] = lo * w, hi * w, lo * w, hi * w
            cols[i, 0], cols[i, 1] = pick[2 * i], pick[2 * i]
            cols[i, 2], cols[i, 3] = pick[2 * i + 1], pick[2 * i + 1]
        else:
            r0, r1 = pick[2 * i] * w, pick[2 * i + 1] * w
            rows[i, 0], rows[i, 1], rows[i, 2], rows[i, 3] = r0, r0, r1, r1
            cols[i, 0], cols[i, 1], cols[i, 2], cols[i, 3] = lo, hi, lo, hi
    y = np.empty(GRID * GRID, np.int32)
    csum = np.zeros(3 * CHROMA_GRID * CHROMA_GRID, np.int64)
    half = 1 << (LUMA_SHIFT - 1)
    for i in range(GRID):
        p0, p1, p2, p3 = rows[i, 0], rows[i, 1], rows[i, 2], rows[i, 3]
        k0 = (i // _POOL) * CHROMA_GRID
        for cj in range(CHROMA_GRID):
            crb, cg = 0, 0  # the chroma cell's sums over this row of luma cells
            for t in range(_POOL):
                j = cj * _POOL + t
                u0 = _mean2(np.uint32(px[p0 + cols[j, 0]]), np.uint32(px[p1 + cols[j, 1]]))
                u1 = _mean2(np.uint32(px[p2 + cols[j, 2]]), np.uint32(px[p3 + cols[j, 3]]))
                rb = 2 * ((u0 & 0xFF00FF) + (u1 & 0xFF00FF))  # each value 2 samples
                g = 2 * ((u0 & 0xFF00) + (u1 & 0xFF00))
                y[i * GRID + j] = (
                    LUMA[0] * (rb & 0xFFFF) + LUMA[1] * (g >> 8) + LUMA[2] * (rb >> 16) + half
                ) >> LUMA_SHIFT
                crb += rb  # 16 samples: R under 2**12, it does not meet B
                cg += g
            k = 3 * (k0 + cj)
            csum[k] += crb & 0xFFFF
            csum[k + 1] += cg >> 8
            csum[k + 2] += crb >> 16
    return _finish(y, csum, level, size)


@njit(cache=True, nogil=True)
def box_cells(px, width, height, level, size):  # type: ignore[no-untyped-def]
    """:func:`cells` of an image under 128 px a side from its pixels ``px`` (``height``
    rows of ``width`` RGB words): Pillow's BOX resize to 64 x 64 (:func:`box_words`),
    each cell's average standing for its SAMPLES_X * SAMPLES_Y samples (what the NEAREST
    resize up by whole factors gives). A cell's luma, ``(LUMA . (n r, n g, n b) + 2**17)
    >> 18`` with n = 4 samples, is ``(LUMA . (r, g, b) + 2**15) >> 16`` exactly; the
    chroma sums are n times the cells'. (:func:`box_words` gives 24-bit words, so
    ``v >> 16`` is B.) An image with one side of 128 px or more:
    :func:`_long_side_cells`."""
    if max(width, height) >= 2 * GRID:
        return _long_side_cells(px, width, height, level, size)
    words = box_words(px, width, height)
    n = SAMPLES_X * SAMPLES_Y  # 4: the luma identity above (checked at import)
    y = np.empty(GRID * GRID, np.int32)
    csum = np.zeros(3 * CHROMA_GRID * CHROMA_GRID, np.int64)
    for i in range(GRID):
        row = words[i]
        k0 = (i // _POOL) * CHROMA_GRID
        for cj in range(CHROMA_GRID):
            rb, g = 0, 0  # the chroma cell's sums over this row of luma cells
            for t in range(_POOL):
                j = cj * _POOL + t
                v = np.int64(row[j])
                y[i * GRID + j] = (
                    (v & 255) * LUMA[0] + ((v >> 8) & 255) * LUMA[1] + (v >> 16) * LUMA[2] + 0x8000
                ) >> 16
                rb += v & 0xFF00FF
                g += v & 0xFF00
            k = 3 * (k0 + cj)
            csum[k] += n * (rb & 0xFFFF)
            csum[k + 1] += n * (g >> 8)
            csum[k + 2] += n * (rb >> 16)
    return _finish(y, csum, level, size)


@njit(cache=True, nogil=True)
def grey_and_box(px, width, height, level, size):  # type: ignore[no-untyped-def]
    """:func:`grey` and :func:`box_cells` of an image under 128 px a side, in one call."""
    return grey(px, width * height), box_cells(px, width, height, level, size)


@njit(cache=True, nogil=True)
def grey(px, n):  # type: ignore[no-untyped-def]
    """Pillow's ``convert("L")`` of ``n`` RGB pixels ``px`` (uint32 words, R in the low
    byte: Pillow's memory on a little-endian machine): ``(R * 19595 + G * 38470 + B *
    7471 + 0x8000) >> 16`` (its ``L24``), as uint8."""
    out = np.empty(n, np.uint8)
    for p in range(n):
        v = px[p]
        out[p] = (
            (v & 255) * LUMA[0] + ((v >> 8) & 255) * LUMA[1] + ((v >> 16) & 255) * LUMA[2] + 0x8000
        ) >> 16
    return out


@njit(cache=True, nogil=True)
def grey_and_cells(px, width, height, level, size):  # type: ignore[no-untyped-def]
    """:func:`grey` of an RGB image's pixels ``px`` (``height`` rows of ``width``) and
    the signature cells of its point samples in the same call, read from ``px`` at
    Pillow's NEAREST positions for 64 * SAMPLES samples a side (``(2j + 1) * side //
    (2 * samples)``; both sides >= 64 * SAMPLES): the bytes :func:`cells` gives on
    Pillow's resize. The samples' rows were just read by the grey pass (warm), so the
    signature costs little beyond it (BENCHMARKS.md, "Seventh round")."""
    g = grey(px, width * height)
    nx, ny = GRID * SAMPLES_X, GRID * SAMPLES_Y
    # unsigned: numba adds no wraparound of negative indices to the samples' reads
    cols = np.empty(nx, np.uint64)
    for j in range(nx):
        cols[j] = (2 * j + 1) * width // (2 * nx)
    rows = np.empty(ny, np.uint64)
    for j in range(ny):
        rows[j] = (2 * j + 1) * height // (2 * ny) * width
    return g, _sampled(px, rows, cols, level, size)


@njit(cache=True, nogil=True)
def _lanczos3(x):  # type: ignore[no-untyped-def]
    """Pillow's Lanczos filter (support 3): ``sinc(x) * sinc(x / 3)``, 0 outside."""
    if not (-3.0 <= x < 3.0):
        return 0.0
    a = 1.0
    if x != 0.0:
        y = x * np.pi
        a = np.sin(y) / y
    b = 1.0
    z = x / 3
    if z != 0.0:
        z = z * np.pi
        b = np.sin(z) / z
    return a * b


@njit(cache=True, nogil=True)
def lanczos_taps(n_in, n_out):  # type: ignore[no-untyped-def]
    """Pillow's Lanczos taps from ``n_in`` to ``n_out`` pixels along a side, as its
    resampling computes them in doubles (support 3 input pixels times the scale, the
    window rounded the same way, normalised by the taps' sum), then in 22-bit fixed
    point rounded half away from zero: each output pixel's first input pixel and count
    (``(n_out, 2)``) and its taps (``(n_out, most taps)``, int32)."""
    scale = np.float64(n_in) / n_out
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    bounds = np.zeros((n_out, 2), np.int64)
    weights = np.zeros((n_out, ksize), np.int32)
    w = np.empty(ksize, np.float64)
    one = np.float64(1 << BOX_BITS)
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in) - xmin
        total = 0.0
        for x in range(xmax):
            w[x] = _lanczos3((x + xmin - center + 0.5) * ss)
            total += w[x]
        for x in range(xmax):
            v = w[x] / total if total != 0.0 else w[x]
            weights[xx, x] = int(-0.5 + v * one) if v < 0 else int(0.5 + v * one)
        bounds[xx, 0], bounds[xx, 1] = xmin, xmax
    return bounds, weights


@njit(cache=True, nogil=True)
def _clip8(total):  # type: ignore[no-untyped-def]
    v = total >> BOX_BITS  # the 22-bit fixed point of Pillow's 8-bit resampling
    return 0 if v < 0 else (255 if v > 255 else v)


@njit(cache=True, nogil=True)
def lanczos(px, width, height, hb, hk, vb, vk):  # type: ignore[no-untyped-def]
    """Pillow's resize of the ``L`` image ``px`` (``height`` rows of ``width`` bytes) to
    ``len(hb)`` x ``len(vb)`` with the fixed-point taps of :func:`mitigate.thumbnail.taps`
    (``hb``/``vb``: each output pixel's first input pixel and tap count; ``hk``/``vk``:
    the taps): a horizontal pass over the rows the vertical pass reads, then the vertical
    pass, a side already of the asked size left as it is. Each sum in Pillow's order
    (taps first to last, from one half); the loops run over whole columns or rows of
    outputs at a time so that they vectorise."""
    out_w, out_h = hb.shape[0], vb.shape[0]
    first = vb[0, 0] if height != out_h else 0
    last = vb[out_h - 1, 0] + vb[out_h - 1, 1] if height != out_h else height
    half = np.int32(1 << (BOX_BITS - 1))
    rows = last - first
    image = px.reshape(height, width)
    if width != out_w:
        # the rows used, transposed, as bytes: a quarter of the writes of int32 (the
        # int32 copy took ~56 of ~84 us on 219 x 256 images; this one, ~39 of ~67)
        cols = np.empty((width, rows), np.uint8)
        for r in range(rows):
            src = image[r + first]
            for x in range(width):
                cols[x, r] = src[x]
        tmp = np.empty((rows, out_w), np.uint8)
        acc = np.empty(rows, np.int32)
        for xx in range(out_w):
            lo, n = hb[xx, 0], hb[xx, 1]
            acc[:] = half
            for x in range(n):
                w = hk[xx, x]
                col = cols[lo + x]
                for r in range(rows):
                    acc[r] += np.int32(col[r]) * w
            for r in range(rows):
                tmp[r, xx] = _clip8(acc[r])
    else:
        tmp = image[first:last].copy()
    if height == out_h:
        return tmp
    side = tmp.shape[1]
    out = np.empty((out_h, side), np.uint8)
    line = np.empty(side, np.int32)
    for yy in range(out_h):
        lo, n = vb[yy, 0] - first, vb[yy, 1]
        line[:] = half
        for y in range(n):
            w = vk[yy, y]
            row = tmp[lo + y]
            for xx in range(side):
                line[xx] += np.int32(row[xx]) * w
        for xx in range(side):
            out[yy, xx] = _clip8(line[xx])
    return out
