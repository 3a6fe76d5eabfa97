"""Stable key hashing and the bounded, deterministic bottom-k fit sample.

Keyed BLAKE2b with separate person strings, so that fit-sample selection and resampling
draw independent streams from the same key and seed; never Python's salted ``hash()``.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

P = TypeVar("P")

# BLAKE2b "person" strings (domain separation): the same key and seed give independent
# streams for fit-sample selection and for resampling.
_PERSON_SAMPLE = b"mitigate.sample"
_PERSON_RESAMPLE = b"mitigate.resamp"

_UINT64_MAX = 2**64 - 1


# --------------------------------------------------------------------------------------
# Stable hashing
# --------------------------------------------------------------------------------------


def _key_bytes(key: str | bytes) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    raise TypeError(f"sample key must be str or bytes, got {type(key).__name__}")


def _seed_bytes(seed: int) -> bytes:
    if not 0 <= seed <= _UINT64_MAX:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed.to_bytes(8, "little")


def _blake64(key: str | bytes, seed: int, person: bytes) -> int:
    digest = hashlib.blake2b(
        _key_bytes(key), digest_size=8, key=_seed_bytes(seed), person=person
    ).digest()
    return int.from_bytes(digest, "little")


def key_hash64(key: str | bytes, seed: int) -> int:
    """Stable 64-bit hash of a sample key, used to rank samples for bottom-k sampling.

    Keyed BLAKE2b (8-byte digest, ``seed`` as the 8-byte key); identical on every
    process, platform and Python version. ``str`` keys are hashed as UTF-8.

    Returns:
        An integer in ``[0, 2**64)``.
    """
    return _blake64(key, seed, _PERSON_SAMPLE)


def key_uniform(key: str | bytes, seed: int) -> float:
    """Stable pseudo-uniform number in ``[0, 1)`` for a sample key (used for resampling).

    The top 53 bits of a keyed BLAKE2b hash, domain-separated from :func:`key_hash64`,
    so using one seed for sampling and for resampling does not correlate the two.
    """
    return (_blake64(key, seed, _PERSON_RESAMPLE) >> 11) * 2.0**-53


# --------------------------------------------------------------------------------------
# Bottom-k sampling (bounded, deterministic, mergeable)
# --------------------------------------------------------------------------------------

#: One bottom-k entry: ``(key_hash64(key, seed), key, payload)``.
SampleEntry = tuple[int, str, Any]


def _rank(entry: SampleEntry) -> tuple[int, str]:
    return entry[0], entry[1]


def bottom_k_merge(a: Sequence[SampleEntry], b: Sequence[SampleEntry], n: int) -> list[SampleEntry]:
    """Merge two bottom-k samples into the bottom-``n`` sample of their union.

    Both inputs must be sorted by ``(hash, key)`` with unique keys, as returned by
    :func:`bottom_k` or by this function; the output has the same form. The operation
    is commutative and associative on keys (if the same key occurs in both inputs,
    the entry from ``a`` is kept), which is what a Beam ``CombineFn`` needs for
    ``merge_accumulators``. Pure: the inputs are not modified.

    Args:
        a, b: bottom-k samples (lists of ``(hash, key, payload)``).
        n: maximum number of entries to keep (the sample size).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out: list[SampleEntry] = []
    last_key: str | None = None
    last_hash = -1
    for entry in heapq.merge(a, b, key=_rank):
        if len(out) >= n:
            break
        if entry[0] == last_hash and entry[1] == last_key:
            continue  # same key in both inputs
        out.append(entry)
        last_hash, last_key = entry[0], entry[1]
    return out


def bottom_k(
    items: Iterable[tuple[str, P]], n: int, seed: int, *, chunk_size: int = 65536
) -> list[tuple[int, str, P]]:
    """Deterministic uniform sample of ``n`` items from a stream of unknown length.

    Keeps the ``n`` items whose :func:`key_hash64` ``(key, seed)`` is smallest (ties,
    astronomically rare, are broken by key). Memory is ``O(n + chunk_size)``; the
    result depends only on the *set* of keys, not on their order or on how the stream
    is split, so partial results combine with :func:`bottom_k_merge`. Because the hash
    behaves like a uniform random variable per key, the result is a simple random
    sample without replacement (of size ``min(n, number of distinct keys)``).

    For fitting :func:`fit_density_ratio`, prefer one sample over all decodable
    samples with the kept flag in the payload (its kept members are the filtered
    sample) to two independent samples; see :func:`fit_density_ratio_from_sample`.

    Args:
        items: ``(key, payload)`` pairs with ``str`` keys, assumed distinct (a repeated
            key is kept once, with the payload of its first occurrence).
        n: sample size.
        seed: hash seed in ``[0, 2**64)``.
        chunk_size: number of items hashed before each merge (tuning only).

    Returns:
        ``(hash, key, payload)`` entries sorted by ``(hash, key)``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    acc: list[SampleEntry] = []
    buf: list[SampleEntry] = []
    for key, payload in items:
        h = key_hash64(key, seed)
        if len(acc) >= n and (n == 0 or (h, key) >= _rank(acc[-1])):
            continue  # cannot enter the sample
        buf.append((h, key, payload))
        if len(buf) >= chunk_size:
            acc = bottom_k_merge(acc, _sorted_unique(buf, n), n)
            buf = []
    if buf:
        acc = bottom_k_merge(acc, _sorted_unique(buf, n), n)
    return acc


def _sorted_unique(entries: list[SampleEntry], n: int) -> list[SampleEntry]:
    entries = sorted(entries, key=_rank)  # stable: first occurrence wins among equals
    return bottom_k_merge(entries, [], n)
