"""Hash arrays, popcount, the pair distance and the canonical pair set.

See the package docstring (:mod:`mitigate.neardup`) for the distance rule and bit order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

HASH_BITS: int = 64
"""Number of bits in a perceptual hash."""

_ONE = np.uint64(1)
_POP8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)
_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")


# ======================================================================================
# Input handling and popcount
# ======================================================================================


def as_hashes(values: ArrayLike, name: str = "hashes") -> NDArray[np.uint64]:
    """Return ``values`` as a 1-D ``np.uint64`` array of 64-bit hashes.

    Signed 64-bit input (e.g. from Parquet/Arrow, which has no unsigned 64-bit type in
    some writers) is reinterpreted bit-for-bit; Python ints are masked to 64 bits.
    """
    arr = np.asarray(values)
    if not isinstance(values, np.ndarray) and arr.dtype.kind not in "iu":
        arr = np.asarray(values, dtype=object)  # e.g. Python ints above 2**63
    if arr.dtype == np.uint64:
        out = arr
    elif arr.dtype.kind == "i" and arr.dtype.itemsize == 8:
        out = arr.view(np.uint64)
    elif arr.dtype.kind in "iu":
        if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
            raise ValueError(f"{name}: negative values in a narrow signed dtype")
        out = arr.astype(np.uint64)
    elif arr.dtype == object:
        if not all(isinstance(v, (int, np.integer)) for v in arr.ravel()):
            raise TypeError(f"{name}: expected integer hashes")
        out = np.array([int(v) & 0xFFFF_FFFF_FFFF_FFFF for v in arr.ravel()], dtype=np.uint64)
        out = out.reshape(arr.shape)
    else:
        raise TypeError(f"{name}: expected integer hashes, got dtype {arr.dtype}")
    if out.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {out.shape}")
    return np.ascontiguousarray(out)


def _as_pair(
    phash: ArrayLike, mirror: ArrayLike | None
) -> tuple[NDArray[np.uint64], NDArray[np.uint64] | None]:
    p = as_hashes(phash, "phash")
    if mirror is None:
        return p, None
    m = as_hashes(mirror, "mirror")
    if m.shape != p.shape:
        raise ValueError(f"mirror shape {m.shape} != phash shape {p.shape}")
    return p, m


def _check_k(k: int) -> int:
    if not 0 <= int(k) <= HASH_BITS:
        raise ValueError(f"k must be in [0, {HASH_BITS}], got {k}")
    return int(k)


def hex_to_uint64(hex_hashes: Sequence[str]) -> NDArray[np.uint64]:
    """Parse 16-hex-digit hash strings (imagehash ``str(h)``, imagededup encodings)."""
    return np.array([int(h, 16) for h in hex_hashes], dtype=np.uint64)


def uint64_to_hex(hashes: ArrayLike) -> list[str]:
    """Format hashes as 16-hex-digit strings (inverse of :func:`hex_to_uint64`)."""
    return [f"{int(h):016x}" for h in as_hashes(hashes)]


def popcount64(x: ArrayLike) -> NDArray[np.uint8]:
    """Number of set bits of each uint64 (0..64), vectorised.

    Uses ``np.bitwise_count`` (numpy >= 2.0, hardware popcount) and otherwise a
    256-entry byte lookup table.
    """
    arr = np.asarray(x, dtype=np.uint64)
    if _HAS_BITWISE_COUNT:
        return np.bitwise_count(arr)
    return _popcount_lut(arr)


def _popcount_lut(arr: NDArray[np.uint64]) -> NDArray[np.uint8]:
    """Byte-lookup-table popcount (fallback for numpy < 2; also used in tests)."""
    flat = np.ascontiguousarray(arr, dtype=np.uint64).reshape(-1)
    counts = _POP8[flat.view(np.uint8).reshape(-1, 8)].sum(axis=1, dtype=np.uint8)
    return counts.reshape(np.shape(arr))


def hamming(a: ArrayLike, b: ArrayLike) -> NDArray[np.uint8]:
    """Hamming distance in bits between uint64 hashes (numpy broadcasting applies)."""
    return popcount64(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


def pair_distance(
    p_a: ArrayLike, m_a: ArrayLike | None, p_b: ArrayLike, m_b: ArrayLike | None
) -> NDArray[np.uint8]:
    """Pair distance ``min(H(p_a,p_b), H(p_a,m_b), H(m_a,p_b))`` in bits (broadcasts).

    A mirror term is skipped when the corresponding mirror is ``None``.
    """
    d = hamming(p_a, p_b)
    if m_b is not None:
        d = np.minimum(d, hamming(p_a, m_b))
    if m_a is not None:
        d = np.minimum(d, hamming(m_a, p_b))
    return d


# ======================================================================================
# Pair sets
# ======================================================================================


@dataclass(frozen=True, eq=False)
class PairSet:
    """Unordered near-duplicate pairs: ``i[t] < j[t]``, sorted by ``(i, j)``, unique.

    ``dist[t]`` is the pair distance ``d(i, j)`` in bits.
    """

    i: NDArray[np.int64]
    j: NDArray[np.int64]
    dist: NDArray[np.uint8]

    def __len__(self) -> int:
        return int(self.i.shape[0])

    def to_set(self) -> set[tuple[int, int, int]]:
        """The pairs as a Python set of ``(i, j, dist)`` tuples (for tests / small data)."""
        return set(zip(self.i.tolist(), self.j.tolist(), self.dist.tolist(), strict=True))

    def same_as(self, other: PairSet) -> bool:
        """True when both sets hold exactly the same pairs with the same distances."""
        return (
            np.array_equal(self.i, other.i)
            and np.array_equal(self.j, other.j)
            and np.array_equal(self.dist, other.dist)
        )

    @staticmethod
    def empty() -> PairSet:
        """An empty pair set."""
        return PairSet(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8))


def canonical_pairs(
    a: NDArray[np.integer], b: NDArray[np.integer], dist: NDArray[np.integer] | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.uint8] | None]:
    """Order each pair as ``i < j``, drop self pairs and duplicates, sort by ``(i, j)``."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    i = np.minimum(a, b)
    j = np.maximum(a, b)
    keep = i != j
    i, j = i[keep], j[keep]
    d = None if dist is None else np.asarray(dist)[keep]
    order = np.lexsort((j, i))
    i, j = i[order], j[order]
    if d is not None:
        d = d[order]
    if i.size:
        first = np.ones(i.size, dtype=bool)
        first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
        i, j = i[first], j[first]
        if d is not None:
            d = d[first]
    return i, j, (None if d is None else d.astype(np.uint8))
