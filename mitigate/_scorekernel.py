"""Compiled (numba) kernels of the verification score's local part (issue 14: the
largest per-sample step after the decode was this score, as numpy and matrix products):
the most changed window of aligned pairs, each plane's mean and contrast, and the
two-tap resampling that aligns and pools the planes.

Loaded by :mod:`mitigate.localscore` through :mod:`mitigate.kernels` (numba's import
and first call cost ~0.8 s once per process; the machine code is cached with
``cache=True``, as :mod:`mitigate._sigkernel`'s). Every number they compute is a float32
operation in the order of the numpy references (:func:`mitigate.localscore.local`: a
window's cells summed first row to last, then first column to last, each scaled by the
window's ``1 / side``, a power of two, so the scaling can come last exactly;
:func:`mitigate.localscore.normalise_numpy`: numpy's pairwise sums), so both give the
same bits; the tests compare them. The geometry comes in as arguments: the kernels hold
no constant of the score's definition.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def local_scores(ya, ca, ia, yb, cb, ib, ring, side, edge, coef, chroma_unit, out):  # type: ignore[no-untyped-def]
    """``out[t]``: the most changed window of the pair (``ya[ia[t]]``, ``yb[ib[t]]``)
    (normalised luma, n x n) with its chroma (``ca[ia[t]]``, ``cb[ib[t]]``, 2 x g x g):
    the difference map ``|luma| + (|Cb| + |Cr|) / chroma_unit``, the mean of every
    ``side`` x ``side`` window inside the outer ``ring``, the largest of them, without
    the ``edge`` window rows at the top or at the bottom if that lowers it."""
    n = ya.shape[1]
    g = ca.shape[2]
    rep = n // g
    m = n - 2 * ring - side + 1
    mn, top, w = m * n, ring * n, m * n - side
    d = np.empty(n * n, np.float32)
    dc = np.empty(g, np.float32)
    dcol = np.empty(n, np.float32)
    rows = np.empty(mn, np.float32)
    wins = np.empty(mn, np.float32)
    vmax = np.empty((3, m), np.float32)  # largest window by column: top, middle, bottom rows
    # (every loop below runs over a slice, indexed by its own counter: such loops vectorise)
    for t in range(ia.shape[0]):
        a, b = ya[ia[t]], yb[ib[t]]
        pa, pb = ca[ia[t]], cb[ib[t]]
        for i in range(n):
            if i % rep == 0:  # the chroma row of luma rows i .. i + rep - 1, per column
                u = i // rep
                for v in range(g):
                    cb_ = abs(pa[0, u, v] - pb[0, u, v])
                    cr_ = abs(pa[1, u, v] - pb[1, u, v])
                    dc[v] = (cb_ + cr_) / chroma_unit
                for j in range(n):
                    dcol[j] = dc[j // rep]
            ai, bi, di = a[i], b[i], d[i * n : i * n + n]
            for j in range(n):
                di[j] = abs(ai[j] - bi[j]) + dcol[j]
        # every window's cells summed first row to last, then first column to last,
        # unscaled (scaling each cell by ``coef``, a power of two, is exact: the scaled
        # sums are coef * coef times these, bit for bit; applied at the end), over whole
        # rows at once: a sum that runs past its row's end is computed and never read
        src = d[top : top + mn]
        for x in range(mn):
            rows[x] = src[x]
        for k in range(1, side):
            src = d[top + k * n : top + k * n + mn]
            for x in range(mn):
                rows[x] = rows[x] + src[x]
        src = rows[ring : ring + w]
        for x in range(w):
            wins[x] = src[x]
        for k in range(1, side):
            src = rows[ring + k : ring + k + w]
            for x in range(w):
                wins[x] = wins[x] + src[x]
        for part in range(3):
            first = 0 if part == 0 else (edge if part == 1 else m - edge)
            last = edge if part == 0 else (m - edge if part == 1 else m)
            vm = vmax[part]
            vm[:] = wins[first * n : first * n + m]
            for s in range(first + 1, last):
                row = wins[s * n : s * n + m]
                for q in range(m):
                    if row[q] > vm[q]:
                        vm[q] = row[q]
        top_rows, middle, bottom_rows = vmax[0].max(), vmax[1].max(), vmax[2].max()
        full = max(top_rows, max(middle, bottom_rows))
        no_top = max(middle, bottom_rows)
        no_bottom = max(top_rows, middle)
        out[t] = coef * (coef * min(full, min(no_top, no_bottom)))
    return out


@njit(cache=True, nogil=True)
def _block_sum(a, lo, n):  # type: ignore[no-untyped-def]
    """numpy's sum of a block of at most 128 float32 values: eight running sums."""
    if n < 8:
        res = np.float32(-0.0)
        for i in range(lo, lo + n):
            res = res + a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i, end = 8, n - n % 8
    while i < end:
        at = lo + i
        r0, r1, r2, r3 = r0 + a[at], r1 + a[at + 1], r2 + a[at + 2], r3 + a[at + 3]
        r4, r5, r6, r7 = r4 + a[at + 4], r5 + a[at + 5], r6 + a[at + 6], r7 + a[at + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res = res + a[lo + i]
        i += 1
    return res


@njit(cache=True, nogil=True)
def _pairwise_sum(a, n, stack, sums):  # type: ignore[no-untyped-def]
    """Sum of ``a[:n]`` (float32) in numpy's order for a contiguous reduction: its
    pairwise summation (blocks of up to 128, :func:`_block_sum`; above that the two
    halves, split at a multiple of 8, summed apart and added). Without recursion (numba
    cannot cache recursive functions): ``stack`` (k, 3) int64 and ``sums`` (k,) float32
    are scratch, k > the depth, log2(n / 128) + 2."""
    stack[0, 0], stack[0, 1], stack[0, 2] = 0, n, 0  # (start, length, halves pushed)
    depth, done = 1, 0
    while depth:
        lo, m, stage = stack[depth - 1, 0], stack[depth - 1, 1], stack[depth - 1, 2]
        half = m // 2 - (m // 2) % 8
        if m <= 128:
            sums[done] = _block_sum(a, lo, m)
            done += 1
            depth -= 1
        elif stage < 2:  # push the first half, then the second
            stack[depth - 1, 2] = stage + 1
            start, length = (lo, half) if stage == 0 else (lo + half, m - half)
            stack[depth, 0], stack[depth, 1], stack[depth, 2] = start, length, 0
            depth += 1
        else:  # both halves summed: add them
            sums[done - 2] = sums[done - 2] + sums[done - 1]
            done -= 1
            depth -= 1
    return sums[0]


@njit(cache=True, nogil=True)
def normalise(y, floor, out):  # type: ignore[no-untyped-def]
    """``out[t] = (y[t] - mean) / max(std, floor)`` of each plane of ``y`` (p, n, n),
    float32, with numpy's mean and std: the same sums in the same order, so the same
    bits as :func:`mitigate.localscore.normalise_numpy`."""
    cells = y.shape[1] * y.shape[2]
    count = np.float32(cells)
    sq = np.empty(cells, np.float32)
    stack = np.empty((64, 3), np.int64)
    sums = np.empty(64, np.float32)
    for t in range(y.shape[0]):
        plane = y[t].reshape(cells)
        mean = _pairwise_sum(plane, cells, stack, sums) / count
        for i in range(cells):
            v = plane[i] - mean
            sq[i] = v * v
        std = np.sqrt(_pairwise_sum(sq, cells, stack, sums) / count)
        if std < floor:
            std = floor
        o = out[t].reshape(cells)
        for i in range(cells):
            o[i] = (plane[i] - mean) / std
    return out


@njit(cache=True, nogil=True)
def resample(y, r0, r1, v0, v1, c0, c1, w0, w1, out):  # type: ignore[no-untyped-def]
    """Each plane of ``y`` (p, n, n) resampled with two taps a cell, rows first:
    ``t[r, k] = y[r0[r], k] * v0[r] + y[r1[r], k] * v1[r]``, then
    ``out[r, s] = t[r, c0[s]] * w0[s] + t[r, c1[s]] * w1[s]``; float32 products and
    sums in that order (no fused multiply-add), so the same bits as
    :func:`mitigate.localscore.resample_numpy`."""
    n = y.shape[2]
    rows, cols = r0.shape[0], c0.shape[0]
    t = np.empty((rows, n), np.float32)
    for q in range(y.shape[0]):
        plane, o = y[q], out[q]
        for r in range(rows):
            a, b, x0, x1, tr = plane[r0[r]], plane[r1[r]], v0[r], v1[r], t[r]
            for k in range(n):
                tr[k] = a[k] * x0 + b[k] * x1
        for r in range(rows):
            tr, orow = t[r], o[r]
            for s in range(cols):
                orow[s] = tr[c0[s]] * w0[s] + tr[c1[s]] * w1[s]
    return out
