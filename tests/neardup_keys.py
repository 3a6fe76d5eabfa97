"""Grouping keys for a distributed MIH/LSH search (moved to tests: no library caller)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mitigate.neardup.bits import (
    HASH_BITS,
    PairSet,
    _as_pair,
    _check_k,
    as_hashes,
    canonical_pairs,
    pair_distance,
)
from mitigate.neardup.lsh import LSHParams, _bytes_le, _lsh_luts, _lsh_table_key
from mitigate.neardup.mih import _ball_masks, _substring
from mitigate.neardup.plan import MIHPlan, make_plan
from mitigate.neardup.search import find_near_duplicates


def verify_candidates(
    phash: ArrayLike,
    mirror: ArrayLike | None,
    i: ArrayLike,
    j: ArrayLike,
    k: int,
) -> PairSet:
    """Exact verification of candidate pairs ``(i[t], j[t])`` (item indices).

    Computes the pair distance, keeps pairs with ``d <= k``, drops self pairs and
    duplicates and returns them canonically (``i < j``, sorted).  Order and
    multiplicity of the candidates do not matter, so candidates from several
    buckets / tables / workers can simply be concatenated.
    """
    k = _check_k(k)
    p, m = _as_pair(phash, mirror)
    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)
    if i.shape != j.shape:
        raise ValueError("i and j must have the same shape")
    if i.size == 0:
        return PairSet.empty()
    d = pair_distance(p[i], None if m is None else m[i], p[j], None if m is None else m[j])
    ok = d <= k
    ci, cj, cd = canonical_pairs(i[ok], j[ok], d[ok])
    assert cd is not None
    return PairSet(ci, cj, cd)


def plan_bands(k: int) -> MIHPlan:
    """The band formulation: ``k + 1`` substrings, exact match (radius 0) on each.

    Pigeonhole: ``k`` differing bits touch at most ``k`` of the ``k + 1`` bands, so a
    near-duplicate pair shares at least one band value.  Bands are only ~``64/(k+1)``
    bits long (6 bits for k=10), so each band value is shared by ``N / 2**bits`` random
    items: cheap to distribute, but O(N^2 / 2**bits) candidates.
    """
    k = _check_k(k)
    if k + 1 > HASH_BITS:
        raise ValueError("band plan needs k < 64")
    return make_plan(k, k + 1, [0] * (k + 1))


def substring_keys(hashes: ArrayLike, plan: MIHPlan) -> NDArray[np.uint64]:
    """Index-side keys: ``out[i, z]`` = value of substring ``z`` of ``hashes[i]``.

    The grouping key of a distributed join is ``(z, out[i, z])``; substrings with
    radius ``-1`` are included (harmless) so that column ``z`` is always substring ``z``.
    """
    h = as_hashes(hashes)
    out = np.empty((h.shape[0], plan.m), np.uint64)
    for z, (s, ln) in enumerate(zip(plan.starts, plan.lengths, strict=True)):
        out[:, z] = _substring(h, s, ln)
    return out


def band_keys(hashes: ArrayLike, k: int) -> NDArray[np.uint64]:
    """Band values ``(N, k+1)`` of :func:`plan_bands`; group by ``(band, value)``."""
    return substring_keys(hashes, plan_bands(k))


def probe_keys(
    hashes: ArrayLike, plan: MIHPlan
) -> tuple[NDArray[np.int64], NDArray[np.int16], NDArray[np.uint64]]:
    """Query-side keys: every ``(z, value)`` within radius ``radii[z]`` of each hash.

    Returns flat arrays ``(row, z, value)``: hash ``row`` must meet every index entry
    whose substring ``z`` equals ``value``.  Query with both pHash and mirror hashes
    against a pHash index to cover the mirror rule.  With :func:`plan_bands` this is
    exactly :func:`band_keys` flattened.
    """
    h = as_hashes(hashes)
    rows: list[NDArray[np.int64]] = []
    zs: list[NDArray[np.int16]] = []
    vals: list[NDArray[np.uint64]] = []
    for z, (s, ln, r) in enumerate(zip(plan.starts, plan.lengths, plan.radii, strict=True)):
        if r < 0:
            continue
        masks = _ball_masks(ln, r)
        sub = _substring(h, s, ln)
        vals.append((sub[:, None] ^ masks[None, :]).ravel())
        rows.append(np.repeat(np.arange(h.shape[0], dtype=np.int64), masks.shape[0]))
        zs.append(np.full(h.shape[0] * masks.shape[0], z, np.int16))
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int16), np.empty(0, np.uint64)
    return np.concatenate(rows), np.concatenate(zs), np.concatenate(vals)


def lsh_keys(hashes: ArrayLike, params: LSHParams) -> NDArray[np.uint64]:
    """Table keys ``(N, n_tables)``: bit ``t`` of ``out[i, T]`` is hash bit
    ``positions[T, t]``.  Distributed grouping key: ``(T, out[i, T])``."""
    h = as_hashes(hashes)
    view = _bytes_le(h)
    pos = params.positions()
    out = np.empty((h.shape[0], params.n_tables), np.uint64)
    for t in range(params.n_tables):
        out[:, t] = _lsh_table_key(view, _lsh_luts(pos[t]))
    return out


def band_pairs(phash: ArrayLike, mirror: ArrayLike | None, k: int) -> PairSet:
    """Exact pairs via the ``k + 1`` band formulation (:func:`plan_bands`)."""
    return find_near_duplicates(phash, mirror, k, mode="exact", plan=plan_bands(k))
