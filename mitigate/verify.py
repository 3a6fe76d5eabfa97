"""Verification of near-duplicate candidates: a finer look than a 64-bit pHash.

pHash finds candidate pairs fast, but 64 bits of a greyscale 32x32 thumbnail cannot tell
apart images that differ by a small local change (the same toy with another letter on
it, coins that differ only in their value digits) or only in colour (the same flag in
red and in green). Every such merge deletes a distinct image. This module keeps pHash for
the search and checks each candidate pair with a per-sample *signature*, computed from
the working image the decoder produced anyway (no second decode):

* ``SIG_BYTES`` = 768 bytes a sample: the image area-averaged to 16x16 cells, in YCbCr
  (ITU-R BT.601, as JPEG uses), one byte per cell and plane.

The *verification score* of a pair (:func:`pair_scores`) measures *the most changed
place* of the two images after forgiving the global edits a copy goes through:

* luma is normalised to zero mean and unit contrast per image, so JPEG quality,
  resizing and a brightness change of +-15% cancel;
* one image is aligned to the other: as is or mirrored, and zoomed by 1, 1.064 or
  1/1.064 (a 3% border crop each side), the best alignment counting;
* the difference map is ``|luma difference| + (|Cb difference| + |Cr difference|) / 40``
  per cell, so a recoloured copy (red flag, green flag) differs everywhere;
* the outer ring of cells is left out (a crop leaves it unmatched) and, if that lowers
  the score, two window rows at the top or at the bottom (a watermark band over up to
  ~12% of the height at one edge);
* the score is the largest mean over a 2x2-cell window (1/8 of the image a side): a
  letter or digit that differs is a small place that changed a lot, so it scores high
  although the rest matches;
* the normalisation above also hides differences that are global: a blank image and a
  black bar, a faint and a strong version of one outline. So the score is at least the
  *global* change ``g ** 4``, ``g = max(|log mean ratio| / MEAN_LIMIT, |log contrast
  ratio| / STD_LIMIT)`` of the raw luma planes: 1.0 (the default threshold) at the limits
  measured on planted copies (brightness +-15%, watermark, crop: at most 0.35 and 0.53),
  and the fourth power keeps it far below the window score inside them (it then does
  not change the score, nor the medoid of :mod:`mitigate.keep`).

Measured limits (BENCHMARKS.md, "Near-duplicate verification"): below the resolution of
16x16 cells a change is not seen -- two glyphs in the same box over a quarter of the
shorter side are often scored alike.

A pair is *verified* (the images are near duplicates) when its score is at most the
threshold (``dedup.verify_threshold``, default :data:`DEFAULT_THRESHOLD`). The score is
symmetric and deterministic (float64 numpy, fixed operation order). Everything here is
a plain function over arrays: a search that found candidate pairs in one worker or in
many partitions calls :func:`pair_scores` the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

GRID = 16  # cells per side of each plane
SIG_BYTES = 3 * GRID * GRID  # 768: Y, Cb, Cr
#: Default ``dedup.verify_threshold`` (measured, BENCHMARKS.md).
DEFAULT_THRESHOLD = 1.0
#: Chroma difference (0..255 units, Cb + Cr) that weighs as much as one unit of
#: normalised luma difference.
CHROMA_UNIT = 40.0
#: Outer ring of cells left out (a border crop or a zoom leaves it unmatched).
RING = 1
#: Rows at the top or bottom edge that may differ without counting (watermark bands).
EDGE_ROWS = 2
#: Zoom factors tried when aligning (1 = as is; 1.064 = a 3% border crop each side).
ZOOMS = (1.0, 1.064, 1 / 1.064)
#: |log| of the ratio of mean luma (each + 16) that scores 1.0: planted copies reach 0.35.
MEAN_LIMIT = 0.4
#: |log| of the ratio of luma std (each + 8) that scores 1.0: planted copies reach 0.53.
STD_LIMIT = 0.7
_CONTRAST_FLOOR = 4.0  # luma std (0..255) below which an image counts as flat
_CHUNK = 1024  # pairs scored at a time (bounded memory)


def signature(image: Image.Image) -> bytes:
    """The :data:`SIG_BYTES`-byte signature of an image (any size and mode).

    The image is averaged to 16x16 and converted to YCbCr (Pillow's conversion,
    BT.601 as JPEG uses); the three planes are stored one after the other, one byte a
    cell. An image with a shorter side of ``8 * GRID`` px or more is point-sampled first
    (every ``factor``-th pixel a side, so each cell still averages at least 16 samples):
    reading 1/factor^2 of the pixels instead of all of them takes the signature's cost
    from ~10% to ~3% of the decode path, with the same precision and recall on the
    evaluation set (BENCHMARKS.md, "Near-duplicate verification").
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    factor = min(image.size) // (4 * GRID)
    if factor >= 2:
        size = (image.width // factor, image.height // factor)
        image = image.resize(size, Image.Resampling.NEAREST)
    small = image.resize((GRID, GRID), Image.Resampling.BOX).convert("YCbCr")
    return np.ascontiguousarray(np.asarray(small).transpose(2, 0, 1)).tobytes()


def as_signatures(signatures: Sequence[bytes | None] | NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Stack signatures into an ``(n, SIG_BYTES)`` uint8 array; ValueError names a bad one."""
    if isinstance(signatures, np.ndarray):
        if signatures.ndim != 2 or signatures.shape[1] != SIG_BYTES:
            raise ValueError(f"signatures must be (n, {SIG_BYTES}) uint8, got {signatures.shape}")
        return signatures.astype(np.uint8, copy=False)
    out = np.zeros((len(signatures), SIG_BYTES), dtype=np.uint8)
    for i, sig in enumerate(signatures):
        if sig is None or len(sig) != SIG_BYTES:
            got = "None" if sig is None else f"{len(sig)} bytes"
            raise ValueError(f"signature {i}: expected {SIG_BYTES} bytes, got {got}")
        out[i] = np.frombuffer(sig, dtype=np.uint8)
    return out


_Taps = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]


def _zoom_taps(
    n: int, zoom: float
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float32]]:
    """Linear-interpolation taps along one axis of ``n`` cells: output cell ``t`` is
    ``x[lo[t]] * (1 - w[t]) + x[hi[t]] * w[t]`` for ``x`` zoomed about its centre by
    ``zoom`` (> 1 magnifies: the middle 1/zoom of ``x`` fills the output)."""
    centres = (np.arange(n) + 0.5 - n / 2) / zoom + n / 2 - 0.5
    pos = np.clip(centres, 0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    return lo, hi, (pos - lo).astype(np.float32)


_TAPS: list[_Taps] = [_zoom_taps(GRID, z) for z in ZOOMS]


def _zoom(x: NDArray[np.float32], taps: _Taps) -> NDArray[np.float32]:
    """Zoom the last two axes of ``x`` (bilinear, separable)."""
    lo, hi, w = taps
    cols = x[..., lo] * (1 - w) + x[..., hi] * w
    return cols[..., lo, :] * (1 - w)[:, None] + cols[..., hi, :] * w[:, None]


def _normalise(y: NDArray[np.float32]) -> NDArray[np.float32]:
    mean = y.mean(axis=(1, 2), keepdims=True)
    std = np.maximum(y.std(axis=(1, 2), keepdims=True), _CONTRAST_FLOOR)
    return (y - mean) / std


def _most_changed(d: NDArray[np.float32]) -> NDArray[np.float32]:
    """Largest 2x2-window mean of a difference map (p, GRID, GRID), without the outer
    ring, and without EDGE_ROWS window rows at the top or at the bottom if that lowers
    it (a band across one edge is forgiven, not one at each)."""
    r = RING
    if r:
        d = d[:, r:-r, r:-r]
    w = (d[:, :-1, :-1] + d[:, 1:, :-1] + d[:, :-1, 1:] + d[:, 1:, 1:]) / 4
    row_max = w.max(axis=2)
    e = EDGE_ROWS
    full = row_max.max(axis=1)
    no_top = row_max[:, e:].max(axis=1)
    no_bottom = row_max[:, :-e].max(axis=1)
    return np.minimum(full, np.minimum(no_top, no_bottom))


def _prepare(sig: NDArray[np.uint8]) -> NDArray[np.float32]:
    """(n, 3, GRID, GRID) planes with luma normalised."""
    planes = sig.astype(np.float32).reshape(-1, 3, GRID, GRID)
    planes[:, 0] = _normalise(planes[:, 0])
    return planes


def _alignments(sig: NDArray[np.uint8]) -> NDArray[np.float32]:
    """(n, 2 * len(ZOOMS), 3, GRID, GRID): every alignment tried (as is or mirrored,
    times each zoom), luma normalised after the zoom."""
    planes = sig.astype(np.float32).reshape(-1, 3, GRID, GRID)
    out = []
    for mirrored in (False, True):
        oriented = planes[:, :, :, ::-1] if mirrored else planes
        for zoom, taps in zip(ZOOMS, _TAPS, strict=True):
            z = oriented.copy() if zoom == 1.0 else _zoom(oriented, taps)
            z[:, 0] = _normalise(z[:, 0])
            out.append(z)
    return np.stack(out, axis=1)


def pair_scores(
    i: ArrayLike, j: ArrayLike, signatures: NDArray[np.uint8] | Sequence[bytes | None]
) -> NDArray[np.float64]:
    """Verification score of each candidate pair ``(i[t], j[t])`` (indices into
    ``signatures``); smaller = more alike; <= threshold = near duplicates. The score is
    the larger of the most changed window and the global change (module docstring).

    Symmetric: the pair is always scored with the smaller index first, so
    ``pair_scores([a], [b], s) == pair_scores([b], [a], s)``. Each image of the larger
    index is aligned once per block of pairs (pairs are taken in order of that index),
    so the cost per pair is a few array operations on 768 values.
    """
    sigs = as_signatures(signatures)
    ii = np.asarray(i, dtype=np.int64).reshape(-1)
    jj = np.asarray(j, dtype=np.int64).reshape(-1)
    if ii.shape != jj.shape:
        raise ValueError(f"i and j differ in length: {ii.shape[0]} vs {jj.shape[0]}")
    lo, hi = np.minimum(ii, jj), np.maximum(ii, jj)
    luma = sigs[:, : GRID * GRID].astype(np.float64)
    log_mean = np.log(luma.mean(axis=1) + 16.0)
    log_std = np.log(luma.std(axis=1) + 8.0)
    order = np.argsort(hi, kind="stable")
    out = np.empty(ii.shape[0], dtype=np.float64)
    for start in range(0, ii.shape[0], _CHUNK):
        sel = order[start : start + _CHUNK]
        uniq, inv = np.unique(hi[sel], return_inverse=True)
        variants = _alignments(sigs[uniq])
        a = _prepare(sigs[lo[sel]])
        best = np.full(sel.shape[0], np.inf, dtype=np.float32)
        for v in range(variants.shape[1]):
            b = variants[inv, v]
            d = np.abs(a[:, 0] - b[:, 0])
            d += (np.abs(a[:, 1] - b[:, 1]) + np.abs(a[:, 2] - b[:, 2])) / CHROMA_UNIT
            np.minimum(best, _most_changed(d), out=best)
        out[sel] = best
    global_change = np.maximum(
        np.abs(log_mean[lo] - log_mean[hi]) / MEAN_LIMIT,
        np.abs(log_std[lo] - log_std[hi]) / STD_LIMIT,
    )
    return np.maximum(out, global_change**4)


def verified(scores: ArrayLike, threshold: float = DEFAULT_THRESHOLD) -> NDArray[np.bool_]:
    """Which pairs pass verification (score <= threshold)."""
    return np.asarray(scores, dtype=np.float64) <= threshold


def score(a: bytes, b: bytes) -> float:
    """Verification score of two signatures."""
    return float(pair_scores([0], [1], [a, b])[0])


def to_hex(sig: bytes) -> str:
    return sig.hex()


def from_hex(text: str) -> bytes:
    """Parse a hex signature; ValueError names the bad length."""
    sig = bytes.fromhex(text)
    if len(sig) != SIG_BYTES:
        raise ValueError(f"expected {2 * SIG_BYTES} hex digits for a signature, got {len(text)}")
    return sig
