"""Synthetic hash sets with planted near duplicates (benchmarks and tests)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from mitigate.neardup.bits import _ONE, HASH_BITS, _check_k

# ======================================================================================
# Synthetic data (tests and benchmarks)
# ======================================================================================


def _flip_masks(rng: np.random.Generator, counts: NDArray[np.int64]) -> NDArray[np.uint64]:
    """One random 64-bit mask per entry with exactly ``counts[t]`` bits set."""
    counts = np.asarray(counts, np.int64)
    perm = np.argsort(rng.random((counts.shape[0], HASH_BITS)), axis=1)
    chosen = np.arange(HASH_BITS)[None, :] < counts[:, None]
    bits = np.where(chosen, np.left_shift(_ONE, perm.astype(np.uint64)), np.uint64(0))
    return np.bitwise_or.reduce(bits, axis=1).astype(np.uint64)


def synthetic_hashes(
    n_random: int,
    *,
    k: int = 10,
    n_planted: int = 0,
    n_mirror_planted: int = 0,
    n_chains: int = 0,
    chain_length: int = 8,
    hot_sizes: Sequence[int] = (),
    seed: int = 0,
) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """Random ``(phash, mirror)`` with planted near duplicates, for tests and benchmarks.

    * ``n_random`` independent uniform hashes (mirror independent of phash);
    * ``n_planted`` copies of random base items with ``d = t % (k + 1)`` bits flipped in
      the pHash (every distance 0..k is planted) and ``d`` other bits in the mirror;
    * ``n_mirror_planted`` items whose pHash is a base item's mirror with ``d`` flips
      (and mirror = base pHash with ``d`` flips): near duplicates via the mirror rule;
    * ``n_chains`` chains of ``chain_length`` items, consecutive ones ``k`` bits apart
      (items two steps apart are usually more than ``k`` apart);
    * for each ``g`` in ``hot_sizes``: ``g - 1`` exact copies of one base item plus one
      item with the same pHash but a different mirror.

    The result is shuffled deterministically (``np.random.default_rng(seed)``).
    """
    k = _check_k(k)
    rng = np.random.default_rng(seed)
    hi = np.iinfo(np.uint64).max
    p = [rng.integers(0, hi, size=n_random, dtype=np.uint64, endpoint=True)]
    m = [rng.integers(0, hi, size=n_random, dtype=np.uint64, endpoint=True)]
    if n_random == 0 and (n_planted or n_mirror_planted or hot_sizes):
        raise ValueError("planting needs n_random > 0")
    if n_planted:
        base = rng.integers(0, n_random, size=n_planted)
        d = np.arange(n_planted) % (k + 1)
        p.append(p[0][base] ^ _flip_masks(rng, d))
        m.append(m[0][base] ^ _flip_masks(rng, d))
    if n_mirror_planted:
        base = rng.integers(0, n_random, size=n_mirror_planted)
        d = np.arange(n_mirror_planted) % (k + 1)
        p.append(m[0][base] ^ _flip_masks(rng, d))
        m.append(p[0][base] ^ _flip_masks(rng, d))
    for _ in range(n_chains):
        start_p = rng.integers(0, hi, size=1, dtype=np.uint64, endpoint=True)
        steps_p = _flip_masks(rng, np.full(chain_length - 1, k))
        chain_p = np.bitwise_xor.accumulate(np.concatenate([start_p, steps_p]))
        p.append(chain_p)
        m.append(rng.integers(0, hi, size=chain_length, dtype=np.uint64, endpoint=True))
    for g in hot_sizes:
        b = int(rng.integers(0, n_random))
        p.append(np.full(g, p[0][b], np.uint64))
        mm = np.full(g, m[0][b], np.uint64)
        mm[-1] = rng.integers(0, hi, dtype=np.uint64, endpoint=True)
        m.append(mm)
    allp = np.concatenate(p)
    allm = np.concatenate(m)
    perm = rng.permutation(allp.shape[0])
    return allp[perm], allm[perm]


def clustered_hashes(
    base: Sequence[int], derived: Sequence[tuple[int, Sequence[int], bool, bool]]
) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
    """Clustered ``(phash, mirror)`` for property tests: the ``base`` pHashes (mirrors
    drawn at random, seeded by ``len(derived)``), then one item per ``(b, flips,
    use_mirror, dup)`` of ``derived``: an exact copy of base ``b`` (``dup``: a hot
    value), its mirror with the ``flips`` bits flipped (``use_mirror``: a mirror-rule
    neighbour), or its pHash with those bits flipped."""
    rng = np.random.default_rng(len(derived))
    hi = np.iinfo(np.uint64).max
    pb = [int(v) for v in base]
    mb = [int(v) for v in rng.integers(0, hi, size=len(pb), dtype=np.uint64, endpoint=True)]
    p, m = list(pb), list(mb)
    for b, flips, use_mirror, dup in derived:
        b %= len(pb)
        mask = sum(1 << f for f in set(flips))
        if dup:
            p.append(pb[b])
            m.append(mb[b])
        elif use_mirror:
            p.append(mb[b] ^ mask)
            m.append(pb[b] ^ mask)
        else:
            p.append(pb[b] ^ mask)
            m.append(mb[b] ^ (mask >> 1))
    return np.array(p, np.uint64), np.array(m, np.uint64)
