"""Compiled (numba) kernel of the local score of aligned pairs (issue 14: the largest
per-sample step after the decode was this score, as matrix products).

Imported lazily by :mod:`mitigate.localscore` (numba's import costs ~0.5-0.9 s once per
process; the machine code is cached with ``cache=True``, as :mod:`mitigate._sigkernel`'s).
Every number it computes is a float32 operation in the order of the numpy reference
:func:`mitigate.localscore.local` (a window's cells summed first row to last, each
scaled by the window's ``1 / side``, a power of two, so exact), so both give the same
bits on every machine; the tests compare them. The geometry comes in as arguments: the
kernel holds no constant of the score's definition.
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
