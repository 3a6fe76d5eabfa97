"""The centre view: a second candidate hash for the verified near-duplicate search.

pHash within ``k`` bits misses copies whose edits sit at the image's edges: on the
labelled evaluation set (BENCHMARKS.md) it proposes 88% of the copies with a watermark
band over 10% of the height and 85% of the 3% border crops at ``k = 10``. The *centre
hash* (:func:`mitigate.hashing.centre_pair_from_thumbnail`: pHash's recipe on the
central 24x28 pixels of the same 32x32 thumbnail) hardly moves under such edits. With
verification on, the candidate pairs are

* every pair within ``k`` on the pHash view (pHash and mirror pHash, as without the
  centre view), and
* every pair within ``k`` on the centre view (centre hash and its mirror, the same
  distance rule, :func:`mitigate.neardup.pair_distance`) whose two images *have the
  same frame*: both carry a verification signature and their aspect ratios differ by
  at most :data:`ASPECT_GATE` (``|log(w_a/h_a) - log(w_b/h_b)|``, from the working
  size stored in the signature). The centre view is blind to the edges by design; an
  edge edit keeps the frame (a band is painted over the image, a border crop takes
  the same fraction off each side), while two different images that only share a
  centre often do not (a tall and a short bar: the letters l and I).

and :func:`mitigate.verify.pair_scores` decides every candidate as before. A pair's
*distance* is the smaller of its two views' distances (so it is at most ``k`` for every
candidate); ``view`` says which views proposed it (:data:`PHASH`, :data:`CENTRE`, or
both). Samples without a centre hash (manifests written before it existed) take part
through pHash only. Without verification the centre view is not used: it would add
unverified merges (measured, BENCHMARKS.md).

Beam-free; both search modes (one worker: :mod:`mitigate.near`; partitioned:
:mod:`mitigate.partition_batch`) call these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from mitigate import neardup, verify

#: View flags of a candidate pair (bits; a pair found by both views has both).
PHASH = 1
CENTRE = 2

#: Largest ``|log aspect ratio difference|`` of a pair proposed by the centre view only.
#: Planted border crops and watermark bands keep it below 0.02 on the evaluation set;
#: measured 0.02-0.06 as the choice (BENCHMARKS.md, fourth round).
ASPECT_GATE = 0.04

I64 = NDArray[np.int64]


def centre_arrays(values: Sequence[str | None]) -> tuple[NDArray[np.uint64], ...]:
    """``(centre, centre mirror, present)`` arrays of ``phash_centre`` strings (32 hex
    digits each, see :func:`mitigate.hashing.to_hex_pair`; None = no centre hash)."""
    present = np.asarray([v is not None for v in values], dtype=bool)
    c = np.zeros(len(values), np.uint64)
    cm = np.zeros(len(values), np.uint64)
    idx = np.flatnonzero(present)
    if idx.size:
        text = [values[t] for t in idx.tolist()]
        c[idx] = neardup.hex_to_uint64([v[:16] for v in text])  # type: ignore[index]
        cm[idx] = neardup.hex_to_uint64([v[16:] for v in text])  # type: ignore[index]
    return c, cm, present


def merge_views(
    a: I64, b: I64, dist: NDArray[np.integer], view: NDArray[np.integer]
) -> tuple[I64, I64, NDArray[np.uint8], NDArray[np.uint8]]:
    """Pairs reported by one or both views (in any order, repeated) once each, as
    ``i < j`` sorted by ``(i, j)``: distance the smallest reported, views OR-ed."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    i, j = np.minimum(a, b), np.maximum(a, b)
    live = i != j
    i, j = i[live], j[live]
    d = np.asarray(dist, np.int64)[live]
    v = np.asarray(view, np.uint8)[live]
    order = np.lexsort((d, j, i))
    i, j, d, v = i[order], j[order], d[order], v[order]
    if i.size == 0:
        return i, j, d.astype(np.uint8), v
    first = np.r_[True, (i[1:] != i[:-1]) | (j[1:] != j[:-1])]
    starts = np.flatnonzero(first)
    views = np.bitwise_or.reduceat(v, starts).astype(np.uint8)
    return i[first], j[first], d[first].astype(np.uint8), views


def log_aspect(signatures: Sequence[bytes | None]) -> NDArray[np.float64]:
    """``log(width / height)`` of each signature's working image; NaN without one."""
    out = np.full(len(signatures), np.nan)
    present = [(t, s) for t, s in enumerate(signatures) if s is not None and verify.is_signature(s)]
    if present:
        size = verify.working_sizes([s for _, s in present])  # 4 bytes each, no table
        out[[t for t, _ in present]] = np.log(np.maximum(size[:, 0], 1) / np.maximum(size[:, 1], 1))
    return out


def frames_agree(aspect_a: NDArray[np.float64], aspect_b: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Whether a centre-view pair may be a candidate: both aspects known (both carry a
    signature) and within :data:`ASPECT_GATE` of each other."""
    with np.errstate(invalid="ignore"):
        return np.abs(np.asarray(aspect_a) - np.asarray(aspect_b)) <= ASPECT_GATE


def gate(
    view: NDArray[np.integer], aspect_a: NDArray[np.float64], aspect_b: NDArray[np.float64]
) -> NDArray[np.bool_]:
    """Which candidates stay: every pHash-view pair, and centre-only pairs whose frames
    agree (:func:`frames_agree`)."""
    view = np.asarray(view)
    return ((view & PHASH) != 0) | frames_agree(aspect_a, aspect_b)


def candidate_pairs(
    phash: NDArray[np.uint64],
    mirror: NDArray[np.uint64],
    centre: Sequence[str | None] | None,
    signatures: Sequence[bytes | None],
    k: int,
    mode: str = "exact",
) -> tuple[neardup.PairSet, NDArray[np.uint8]]:
    """All candidate pairs of the two views (see the module) among items ``0..n-1``,
    with their views. ``centre=None`` (or no item with a centre hash): the pHash view
    alone, exactly :func:`mitigate.neardup.find_near_duplicates`."""
    pairs = neardup.find_near_duplicates(phash, mirror, k, mode=mode)  # type: ignore[arg-type]
    ones = np.full(len(pairs), PHASH, np.uint8)
    if centre is None:
        return pairs, ones
    c, cm, present = centre_arrays(centre)
    idx = np.flatnonzero(present)
    if idx.size < 2:
        return pairs, ones
    found = neardup.find_near_duplicates(c[idx], cm[idx], k, mode=mode)  # type: ignore[arg-type]
    ca, cb = idx[found.i], idx[found.j]
    aspect = log_aspect(signatures)
    # pairs already proposed by pHash always stay; the gate only filters the others
    i, j, d, view = merge_views(
        np.r_[pairs.i, ca],
        np.r_[pairs.j, cb],
        np.r_[pairs.dist, found.dist],
        np.r_[ones, np.full(ca.size, CENTRE, np.uint8)],
    )
    keep = gate(view, aspect[i], aspect[j])
    return neardup.PairSet(i[keep], j[keep], d[keep]), view[keep]
