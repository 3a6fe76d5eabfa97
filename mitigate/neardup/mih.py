"""Multi-index hashing (Norouzi et al. 2012): bucket tables and the exact self/cross join."""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from mitigate.neardup.bits import _ONE, HASH_BITS, popcount64
from mitigate.neardup.cost import DENSE_TABLE_MAX_BITS, MAX_TABLE_ENTRIES, _slot_width
from mitigate.neardup.groups import _ragged_arange
from mitigate.neardup.plan import MIHPlan


def _substring(hashes: NDArray[np.uint64], start: int, length: int) -> NDArray[np.uint64]:
    shifted = hashes >> np.uint64(start) if start else hashes
    if length >= HASH_BITS:
        return shifted.copy()
    return shifted & np.uint64((1 << length) - 1)


@lru_cache(maxsize=64)
def _ball_masks(length: int, radius: int) -> NDArray[np.uint64]:
    """All ``length``-bit XOR masks of popcount ``<= radius`` (read-only, cached)."""
    masks: list[int] = [0]
    for t in range(1, min(radius, length) + 1):
        for bits in itertools.combinations(range(length), t):
            v = 0
            for b in bits:
                v |= 1 << b
            masks.append(v)
    arr = np.array(masks, dtype=np.uint64)
    arr.setflags(write=False)
    return arr


# ======================================================================================
# Bucket index (shared by MIH and LSH)
# ======================================================================================


class _SortedIndex:
    """Bucket index for long keys (> ``DENSE_TABLE_MAX_BITS`` bits): sorted keys plus
    binary search; candidates are expanded bucket by bucket and verified."""

    def __init__(self, keys: NDArray[np.uint64], full: NDArray[np.uint64]) -> None:
        order = np.argsort(keys, kind="stable")
        self.ids: NDArray[np.int64] = order.astype(np.int64)
        self.full: NDArray[np.uint64] = full[order]
        self.sorted_keys: NDArray[np.uint64] = keys[order]

    def matches(
        self,
        probe: NDArray[np.uint64],
        probe_row: NDArray[np.int64],
        query_full: NDArray[np.uint64],
        k: int,
        max_candidates: int = 1 << 22,
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """``(row, index_id)`` with ``H(query_full[row], full[index_id]) <= k`` for every
        probe key ``probe[t]`` issued by query row ``probe_row[t]``."""
        lo = np.searchsorted(self.sorted_keys, probe, side="left").astype(np.int64)
        hi = np.searchsorted(self.sorted_keys, probe, side="right").astype(np.int64)
        return _expand_verify(
            lo, hi - lo, probe_row, self.full, self.ids, query_full, k, max_candidates
        )


def _expand_verify(
    lo: NDArray[np.int64],
    cnt: NDArray[np.int64],
    probe_row: NDArray[np.int64],
    full: NDArray[np.uint64],
    ids: NDArray[np.integer],
    query_full: NDArray[np.uint64],
    k: int,
    max_candidates: int,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Expand buckets ``full[lo[t]:lo[t]+cnt[t]]`` against ``query_full[probe_row[t]]``
    and keep entries within ``k`` bits; at most ~``max_candidates`` are materialised at
    once (a single larger bucket is expanded on its own)."""
    nz = np.flatnonzero(cnt)
    if nz.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    lo, cnt, rows = lo[nz], cnt[nz], probe_row[nz]
    csum = np.cumsum(cnt)
    total = int(csum[-1])
    if total <= max_candidates:
        cuts = [0, cnt.shape[0]]
    else:
        inner = np.searchsorted(csum, np.arange(max_candidates, total, max_candidates))
        cuts = sorted({0, cnt.shape[0], *(int(c) + 1 for c in inner)})
    out_r: list[NDArray[np.int64]] = []
    out_i: list[NDArray[np.int64]] = []
    for a, b in itertools.pairwise(cuts):
        if a >= b:
            continue
        c = cnt[a:b]
        pos = np.repeat(lo[a:b], c) + _ragged_arange(c)
        row = np.repeat(rows[a:b], c)
        ok = np.flatnonzero(popcount64(full[pos] ^ query_full[row]) <= k)
        out_r.append(row[ok])
        out_i.append(ids[pos[ok]].astype(np.int64))
    return np.concatenate(out_r), np.concatenate(out_i)


def _sentinels(key_bits: int, positions: NDArray[np.int64]) -> NDArray[np.uint64]:
    """For every key value ``v`` (``2**key_bits`` of them): a 64-bit word whose key bits
    (hash bits ``positions``) are ``~v`` and all other bits 0.

    A query probing bucket ``v`` with a key within ``r`` bits of ``v`` is at least
    ``key_bits - r`` bits away from the sentinel, so sentinels fill empty table slots
    without ever matching when ``key_bits - r > k``.
    """
    nb = 1 << key_bits
    inv = ~np.arange(nb, dtype=np.uint64) & np.uint64(nb - 1)
    pos = positions.tolist()
    if pos == list(range(pos[0], pos[0] + key_bits)):
        return inv << np.uint64(pos[0])
    out = np.zeros(nb, np.uint64)
    values = np.arange(256, dtype=np.uint64)
    for chunk in range(0, key_bits, 8):
        lut = np.zeros(256, np.uint64)
        for t in range(chunk, min(chunk + 8, key_bits)):
            lut |= ((values >> np.uint64(t - chunk)) & _ONE) << np.uint64(pos[t])
        out |= lut[((inv >> np.uint64(chunk)) & np.uint64(255)).astype(np.intp)]
    return out


class _SlotIndex:
    """Dense bucket table for keys of at most ``DENSE_TABLE_MAX_BITS`` bits.

    ``table[v, s]`` holds the full hash of the ``s``-th entry with key ``v``; the width
    ``B`` minimises :func:`_width_cost_ns` for the actual bucket sizes and the expected
    number of probes, entries beyond ``B`` go to a CSR overflow.  A probe is one
    contiguous ``np.take`` of ``B`` words plus XOR/popcount, with no per-candidate
    bookkeeping.  Empty slots hold a sentinel that
    cannot match (see :func:`_sentinels`) or, when that is impossible, are masked by
    the bucket count.
    """

    def __init__(
        self,
        keys: NDArray[np.intp],
        full: NDArray[np.uint64],
        key_bits: int,
        positions: NDArray[np.int64],
        radius: int,
        k: int,
        probes: float,
    ) -> None:
        n = keys.shape[0]
        nb = 1 << key_bits
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        counts = np.bincount(sk, minlength=nb)
        offsets = np.zeros(nb + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        width = _slot_width(counts, probes, max(1, MAX_TABLE_ENTRIES // nb))
        slot = np.arange(n, dtype=np.int64) - offsets[sk]
        inside = slot < width
        id_dtype = np.int32 if n < 2**31 else np.int64
        self.width = width
        self.use_sentinel = key_bits - radius > k
        if self.use_sentinel:
            self.table = np.repeat(_sentinels(key_bits, positions)[:, None], width, axis=1)
            self.valid_count: NDArray[np.int32] | None = None
        else:
            self.table = np.zeros((nb, width), np.uint64)
            self.valid_count = np.minimum(counts, width).astype(np.int32)
        si, ss, so = sk[inside], slot[inside], order[inside]
        self.table[si, ss] = full[so]
        self.ids = np.full((nb, width), -1, id_dtype)
        self.ids[si, ss] = so
        self.slots = np.arange(width, dtype=np.int32)
        outside = ~inside
        self.has_overflow = bool(outside.any())
        if self.has_overflow:
            ok_keys = sk[outside]
            self.ovf_ids = order[outside].astype(np.int64)
            self.ovf_full = full[self.ovf_ids]
            ovf_counts = np.bincount(ok_keys, minlength=nb)
            self.ovf_offsets = np.zeros(nb + 1, np.int64)
            np.cumsum(ovf_counts, out=self.ovf_offsets[1:])
            self.ovf_count = ovf_counts.astype(np.int32)

    def matches(
        self,
        qkeys: NDArray[np.intp],
        qfull: NDArray[np.uint64],
        row0: int,
        masks: NDArray[np.intp],
        k: int,
    ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """``(row0 + q, index_id)`` for every query ``q`` of this chunk and every entry in
        a bucket ``qkeys[q] ^ masks[t]`` whose full hash is within ``k`` bits of
        ``qfull[q]``."""
        nmask = masks.shape[0]
        width = self.width
        probe = qkeys[:, None] ^ masks[None, :]  # (c, V)
        x = np.take(self.table, probe, axis=0)  # (c, V, B)
        x ^= qfull[:, None, None]
        ok = popcount64(x) <= k
        if self.valid_count is not None:
            ok &= np.take(self.valid_count, probe)[..., None] > self.slots
        w = np.flatnonzero(ok)
        flat_probe = w // width
        rows = flat_probe // nmask + row0
        ids = self.ids[probe.ravel()[flat_probe], w % width].astype(np.int64)
        if not self.has_overflow:
            return rows, ids
        pflat = probe.ravel()
        ocnt = np.take(self.ovf_count, pflat)
        nz = np.flatnonzero(ocnt)
        if nz.size == 0:
            return rows, ids
        lo = self.ovf_offsets[pflat[nz]]
        prow = nz // nmask
        r2, i2 = _expand_verify(
            lo, ocnt[nz].astype(np.int64), prow, self.ovf_full, self.ovf_ids, qfull, k, 1 << 22
        )
        return np.concatenate([rows, r2 + row0]), np.concatenate([ids, i2])


def _join_on_keys(
    index_keys: NDArray[np.uint64],
    index_full: NDArray[np.uint64],
    query_keys: NDArray[np.uint64],
    query_full: NDArray[np.uint64],
    key_bits: int,
    positions: NDArray[np.int64],
    radius: int,
    k: int,
    *,
    n_self: int = 0,
    chunk_elems: int = 1 << 18,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """All ``(q, u)`` such that ``H(query_keys[q], index_keys[u]) <= radius`` and
    ``H(query_full[q], index_full[u]) <= k``.  Keys are ``key_bits``-bit values made of
    hash bits ``positions`` (used only for sentinels).

    ``n_self > 0`` declares that query ``q < n_self`` *is* index entry ``q``.  Such an
    unordered pair ``{a, b}`` only needs to be found from one side, so those queries
    probe only the masks whose highest set bit is 0 in their own key (the probe lands
    on a larger key; the partner with the smaller key finds the pair), plus mask 0
    (found from both sides).  This halves their work; the result then holds each such
    pair in at least one orientation.
    """
    nq = query_keys.shape[0]
    if nq == 0 or index_keys.shape[0] == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    out_q: list[NDArray[np.int64]] = [np.empty(0, np.int64)]
    out_u: list[NDArray[np.int64]] = [np.empty(0, np.int64)]
    if key_bits > DENSE_TABLE_MAX_BITS:
        masks64 = _ball_masks(key_bits, radius)
        sorted_index = _SortedIndex(index_keys, index_full)
        chunk = max(1, chunk_elems // masks64.shape[0])
        for c0 in range(0, nq, chunk):
            c1 = min(nq, c0 + chunk)
            probe = (query_keys[c0:c1, None] ^ masks64[None, :]).ravel()
            row = np.repeat(np.arange(c0, c1, dtype=np.int64), masks64.shape[0])
            q, u = sorted_index.matches(probe, row, query_full, k)
            out_q.append(q)
            out_u.append(u)
        return np.concatenate(out_q), np.concatenate(out_u)

    masks = _ball_masks(key_bits, radius).astype(np.intp)
    qk = query_keys.astype(np.intp)
    n_self = min(max(n_self, 0), nq)
    # Work items (bit, masks): bit None = all non-self queries with all masks; bit -1 =
    # self queries with mask 0; bit b = self queries whose key has bit b clear, with the
    # masks whose highest set bit is b.  Rows are materialised one item at a time.
    top = np.full(masks.shape[0], -1, np.int64)
    for bit in range(key_bits):
        top[(masks >> bit) & 1 == 1] = bit
    self_keys = qk[:n_self]
    work: list[tuple[int | None, NDArray[np.intp]]] = []
    probes = 0.0
    if n_self < nq:
        work.append((None, masks))
        probes += float(nq - n_self) * masks.shape[0]
    if n_self:
        for bit in range(-1, key_bits):
            sub = masks[top == bit]
            if sub.size == 0:
                continue
            work.append((bit, sub))
            n_rows = n_self if bit < 0 else int(np.count_nonzero((self_keys >> bit) & 1 == 0))
            probes += float(n_rows) * sub.shape[0]
    index = _SlotIndex(
        index_keys.astype(np.intp), index_full, key_bits, positions, radius, k, probes
    )
    for bit, sub in work:
        if bit is None:
            rows = np.arange(n_self, nq, dtype=np.int64)
        elif bit < 0:
            rows = np.arange(n_self, dtype=np.int64)
        else:
            rows = np.flatnonzero((self_keys >> bit) & 1 == 0).astype(np.int64)
        chunk = max(1, chunk_elems // (sub.shape[0] * index.width))
        for c0 in range(0, rows.shape[0], chunk):
            r = rows[c0 : c0 + chunk]
            q, u = index.matches(qk[r], query_full[r], 0, sub, k)
            out_q.append(r[q])
            out_u.append(u)
    return np.concatenate(out_q), np.concatenate(out_u)


def _mih_join(
    index_vals: NDArray[np.uint64],
    query_vals: NDArray[np.uint64],
    k: int,
    plan: MIHPlan,
    *,
    n_self: int = 0,
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """All ``(q, u)`` with ``H(query_vals[q], index_vals[u]) <= k`` (exact for an exact
    plan); may contain duplicates (a pair can be found through several substrings).
    ``n_self``: see :func:`_join_on_keys` (self pairs then appear in >= 1 orientation)."""
    out_q: list[NDArray[np.int64]] = [np.empty(0, np.int64)]
    out_u: list[NDArray[np.int64]] = [np.empty(0, np.int64)]
    for s, ln, r in zip(plan.starts, plan.lengths, plan.radii, strict=True):
        if r < 0:
            continue
        q, u = _join_on_keys(
            _substring(index_vals, s, ln),
            index_vals,
            _substring(query_vals, s, ln),
            query_vals,
            ln,
            np.arange(s, s + ln, dtype=np.int64),
            r,
            k,
            n_self=n_self,
        )
        out_q.append(q)
        out_u.append(u)
    return np.concatenate(out_q), np.concatenate(out_u)
