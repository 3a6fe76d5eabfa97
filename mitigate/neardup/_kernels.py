"""Compiled (numba) kernels of the exact multi-index-hashing self-join.

Imported lazily by :mod:`mitigate.neardup.compiled` (importing numba costs ~0.5 s and a
first compile a few seconds; both are paid only by searches large enough to use the
kernel).  Functions are compiled with ``cache=True``: numba writes the machine code
next to this file when the package folder is writable and otherwise to its per-user
cache folder (``NUMBA_CACHE_DIR`` overrides both).

One call of :func:`join_substring` does everything for one substring ``z`` of the
plan: bucket the index (the nodes' pHashes) by their substring value with a counting
sort (CSR layout: entries sorted by value plus ``2**L + 1`` offsets, no padding), then
visit queries in bucket order (neighbouring queries probe neighbouring buckets, so
the probes of one mask walk the table almost sequentially), enumerate each query's
Hamming ball of substring values, scan the probed buckets and verify every entry with
the full 64-bit distance (hardware popcount).  A verified match is emitted only if it
is the pair's *canonical discovery* (:func:`_is_canonical`), so every pair is emitted
exactly once over all substrings and query kinds.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _popcount(typingctx, x):  # type: ignore[no-untyped-def]
    """``llvm.ctpop.i64``: one POPCNT instruction on x86-64."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


@njit(cache=True, nogil=True)
def popcount_array(x):  # type: ignore[no-untyped-def]
    """Popcount of every uint64 of ``x`` (int64 array; for tests of the intrinsic)."""
    out = np.empty(x.shape[0], np.int64)
    for t in range(x.shape[0]):
        out[t] = np.int64(_popcount(x[t]))
    return out


@njit(cache=True, nogil=True)
def _bucket_sort(hashes, shift, lmask, n_buckets):  # type: ignore[no-untyped-def]
    """Counting sort of ``hashes`` by their substring value ``(h >> shift) & lmask``:
    ``(order, offsets)`` with the entries of value ``v`` at ``order[offsets[v]:
    offsets[v + 1]]`` in increasing index order (stable)."""
    n = hashes.shape[0]
    offsets = np.zeros(n_buckets + 1, np.int64)
    for t in range(n):
        offsets[np.int64((hashes[t] >> shift) & lmask) + 1] += 1
    for v in range(n_buckets):
        offsets[v + 1] += offsets[v]
    fill = offsets[:-1].copy()
    order = np.empty(n, np.int64)
    for t in range(n):
        v = np.int64((hashes[t] >> shift) & lmask)
        order[fill[v]] = t
        fill[v] += 1
    return order, offsets


@njit(cache=True, nogil=True, inline="always")
def _is_canonical(a, b, mirror_query, zero_mask, z, node_p, node_m, shifts, lmasks, radii, k):  # type: ignore[no-untyped-def]
    """Whether this discovery of the verified match (query node ``a``, index node ``b``,
    substring ``z``) is the one that emits the pair ``{a, b}``.

    With ``i < j`` the pair has three terms, in priority order: A = ``H(p_i, p_j)``,
    B = ``H(m_i, p_j)`` (found by ``i``'s mirror query), C = ``H(p_i, m_j)`` (found by
    ``j``'s mirror query).  The canonical discovery is the first term within ``k``,
    through the first substring whose part of that term's XOR is within its radius
    (some substring is, by the pigeonhole rule, and it probes that value); a term-A
    match through an identical substring value is found from both sides and kept from
    the smaller node.
    """
    i = min(a, b)
    j = max(a, b)
    x = node_p[i] ^ node_p[j]
    if not mirror_query:
        if zero_mask and a > b:
            return False
    else:
        if np.int64(_popcount(x)) <= k:
            return False  # term A finds the pair
        x = node_m[i] ^ node_p[j]
        if a == j:  # this is term C; term B has priority
            if np.int64(_popcount(x)) <= k:
                return False
            x = node_p[i] ^ node_m[j]
    for z2 in range(z):
        if radii[z2] >= 0 and np.int64(_popcount((x >> shifts[z2]) & lmasks[z2])) <= radii[z2]:
            return False
    return True


@njit(cache=True, nogil=True)
def _grow(a):  # type: ignore[no-untyped-def]
    out = np.empty(a.shape[0] * 2, a.dtype)
    out[: a.shape[0]] = a
    return out


@njit(cache=True, nogil=True)
def _block_join(  # type: ignore[no-untyped-def]
    qfull,
    qids,
    qoff,
    full,
    ids,
    off,
    mirror_query,
    z,
    node_p,
    node_m,
    shifts,
    lmasks,
    radii,
    k,
    masks,
    group_off,
    out_i,
    out_j,
    n_out,
):
    """Join the queries bucketed by value (``qfull[qoff[x]:qoff[x + 1]]``, node ids
    ``qids``) with the index (``full``/``ids``/``off``) through one substring.

    Work is done bucket against bucket: the queries of bucket ``x`` share their ball
    of probed values, so each probed bucket ``w`` is read once for all of them and
    every one of its entries is compared with the (few, cache-resident) queries of
    ``x``.  pHash queries (``mirror_query`` false) probe only the mask groups whose
    bit is clear in ``x``; mirror queries probe the whole ball.
    """
    n_buckets = qoff.shape[0] - 1
    n_groups = group_off.shape[0] - 2
    for x in range(n_buckets):
        q0 = qoff[x]
        q1 = qoff[x + 1]
        if q0 == q1:
            continue
        for g in range(-1, n_groups):
            if not mirror_query and g >= 0 and (x >> g) & 1:
                continue
            for s in range(group_off[g + 1], group_off[g + 2]):
                w = x ^ masks[s]
                u0 = off[w]
                u1 = off[w + 1]
                for u in range(u0, u1):
                    f = full[u]
                    # Branch-free scan first (vectorisable; matches are rare), then
                    # the few hits again with their bookkeeping.
                    hit = 0
                    for t in range(q0, q1):
                        hit |= np.int64(_popcount(qfull[t] ^ f)) <= k
                    if not hit:
                        continue
                    for t in range(q0, q1):
                        if np.int64(_popcount(qfull[t] ^ f)) > k:
                            continue
                        a = qids[t]
                        b = ids[u]
                        if a == b:
                            continue
                        if not _is_canonical(
                            a, b, mirror_query, g < 0, z, node_p, node_m, shifts, lmasks, radii, k
                        ):
                            continue
                        if n_out == out_i.shape[0]:
                            out_i = _grow(out_i)
                            out_j = _grow(out_j)
                        out_i[n_out] = min(a, b)
                        out_j[n_out] = max(a, b)
                        n_out += 1
    return out_i, out_j, n_out


@njit(cache=True, nogil=True)
def join_substring(  # type: ignore[no-untyped-def]
    node_p,
    node_m,
    mirrored,
    z,
    shifts,
    lmasks,
    radii,
    k,
    masks,
    group_off,
    out_i,
    out_j,
    n_out,
):
    """Emit every pair canonically discovered through substring ``z``.

    ``node_p``/``node_m``: the nodes' pHashes and mirrors (uint64; ``node_m`` unused
    unless ``mirrored``).  ``shifts``/``lmasks``/``radii``: the plan's substrings
    (uint64 shift, uint64 value mask, int64 radius; ``-1`` = not probed).  ``masks``:
    the substring's Hamming ball, grouped by highest set bit: ``masks[group_off[0]:
    group_off[1]]`` is ``[0]`` and ``masks[group_off[g + 1]:group_off[g + 2]]`` the
    masks whose highest set bit is ``g``.  pHash queries probe only the groups of bits
    that are clear in their own value (the partner with the smaller value finds the
    pair); mirror queries probe the whole ball.  Pairs ``(i < j)`` are appended to
    ``out_i``/``out_j`` from position ``n_out`` (grown by doubling); returns
    ``(out_i, out_j, n_out)``.
    """
    shift = shifts[z]
    lmask = lmasks[z]
    n_buckets = np.int64(lmask) + 1
    order, offsets = _bucket_sort(node_p, shift, lmask, n_buckets)
    full = np.empty(order.shape[0], np.uint64)
    for t in range(order.shape[0]):
        full[t] = node_p[order[t]]
    # pHash queries: the index itself, half of the ball each.
    out_i, out_j, n_out = _block_join(
        full, order, offsets, full, order, offsets, False, z, node_p, node_m,
        shifts, lmasks, radii, k, masks, group_off, out_i, out_j, n_out,
    )  # fmt: skip
    if not mirrored:
        return out_i, out_j, n_out
    # Mirror queries against the pHash index.
    qorder, qoffsets = _bucket_sort(node_m, shift, lmask, n_buckets)
    qfull = np.empty(qorder.shape[0], np.uint64)
    for t in range(qorder.shape[0]):
        qfull[t] = node_m[qorder[t]]
    return _block_join(
        qfull, qorder, qoffsets, full, order, offsets, True, z, node_p, node_m,
        shifts, lmasks, radii, k, masks, group_off, out_i, out_j, n_out,
    )  # fmt: skip
