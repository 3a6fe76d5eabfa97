"""The O(N^2) reference search: chunked numpy, memory bounded by ``block_elems``."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mitigate.neardup.bits import (
    _HAS_BITWISE_COUNT,
    PairSet,
    _as_pair,
    _check_k,
    _popcount_lut,
    pair_distance,
)

# ======================================================================================
# Brute force (reference)
# ======================================================================================


def brute_force_pairs(
    phash: ArrayLike,
    mirror: ArrayLike | None,
    k: int,
    *,
    block_elems: int = 1 << 22,
) -> PairSet:
    """All pairs with ``d <= k`` by exhaustive comparison (reference implementation).

    O(N^2 / 2) pair evaluations in row blocks against the upper triangle; peak extra
    memory is about ``11 * block_elems`` bytes (uint64 XOR buffer, two uint8 distance
    buffers, the boolean mask) plus the output.
    """
    k = _check_k(k)
    p, m = _as_pair(phash, mirror)
    n = p.shape[0]
    block_elems = max(block_elems, n)  # at least one full row
    xbuf = np.empty(block_elems, np.uint64)
    dbuf = np.empty(block_elems, np.uint8)
    tbuf = np.empty(block_elems, np.uint8)
    out_i: list[NDArray[np.int64]] = []
    out_j: list[NDArray[np.int64]] = []
    out_d: list[NDArray[np.uint8]] = []
    s = 0
    while s < n - 1:
        width = n - s  # columns s..n-1
        rows = max(1, min(n - 1 - s, block_elems // width))
        e = s + rows
        shape = (rows, width)
        x = xbuf[: rows * width].reshape(shape)
        d = dbuf[: rows * width].reshape(shape)
        t = tbuf[: rows * width].reshape(shape)
        np.bitwise_xor(p[s:e, None], p[None, s:], out=x)
        _popcount_into(x, d)
        if m is not None:
            np.bitwise_xor(p[s:e, None], m[None, s:], out=x)
            _popcount_into(x, t)
            np.minimum(d, t, out=d)
            np.bitwise_xor(m[s:e, None], p[None, s:], out=x)
            _popcount_into(x, t)
            np.minimum(d, t, out=d)
        r, c = np.nonzero(d <= k)
        upper = c > r  # column index c is item s + c, row r is item s + r
        r, c = r[upper], c[upper]
        out_d.append(d[r, c].copy())
        out_i.append(r.astype(np.int64) + s)
        out_j.append(c.astype(np.int64) + s)
        s = e
    if not out_i:
        return PairSet.empty()
    return PairSet(np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d))


def _popcount_into(x: NDArray[np.uint64], out: NDArray[np.uint8]) -> None:
    if _HAS_BITWISE_COUNT:
        np.bitwise_count(x, out=out)
    else:
        out[...] = _popcount_lut(x)


def brute_force_join(
    query_phash: ArrayLike,
    query_mirror: ArrayLike | None,
    index_phash: ArrayLike,
    index_mirror: ArrayLike | None,
    k: int,
    *,
    block_elems: int = 1 << 22,
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint8]]:
    """All (query, index) pairs with pair distance ``<= k`` by exhaustive comparison.

    Returns ``(query_idx, index_idx, dist)`` sorted by ``(query_idx, index_idx)``.  The
    two sets are unrelated (a query is not excluded from matching "itself").
    """
    k = _check_k(k)
    qp, qm = _as_pair(query_phash, query_mirror)
    ip, im = _as_pair(index_phash, index_mirror)
    nq, ni = qp.shape[0], ip.shape[0]
    out_q: list[NDArray[np.int64]] = []
    out_x: list[NDArray[np.int64]] = []
    out_d: list[NDArray[np.uint8]] = []
    rows = max(1, block_elems // max(ni, 1))
    for s in range(0, nq, rows):
        e = min(nq, s + rows)
        d = pair_distance(
            qp[s:e, None],
            None if qm is None else qm[s:e, None],
            ip[None, :],
            None if im is None else im[None, :],
        )
        r, c = np.nonzero(d <= k)
        out_q.append(r.astype(np.int64) + s)
        out_x.append(c.astype(np.int64))
        out_d.append(d[r, c])
    if not out_q:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8)
    return np.concatenate(out_q), np.concatenate(out_x), np.concatenate(out_d)
