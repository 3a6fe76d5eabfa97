"""Verification of near-duplicate candidates: a finer look than a 64-bit pHash.

pHash finds candidate pairs fast, but 64 bits of a greyscale 32x32 thumbnail cannot tell
apart images that differ by a small local change (the same toy with another letter on
it, coins that differ only in their value digits) or only in colour (the same flag in
red and in green). Every such merge deletes a distinct image. This module keeps pHash for
the search and checks each candidate pair with a per-sample *signature*, computed from
the working image the decoder produced anyway (no second decode):

* ``SIG_BYTES`` = 1536 bytes a sample: the image averaged to 32x32 cells in YCbCr
  (ITU-R BT.601, as JPEG uses), luma kept at 32x32 and each chroma plane at 16x16, one
  byte a cell. (The first version, 16x16 for all three planes, merged most planted
  glyph variants: a letter in a box a quarter of the shorter side is 4x4 cells there.)

The *verification score* of a pair (:func:`pair_scores`) measures *the most changed
place* of the two images after forgiving the global edits a copy goes through:

* luma is normalised to zero mean and unit contrast per image, so JPEG quality,
  resizing and a brightness change of +-15% cancel;
* one image is aligned to the other: as is or mirrored, and zoomed by 1, 1.064 or
  1/1.064 (a 3% border crop each side), the best alignment counting;
* the difference map is ``|luma difference| + (|Cb difference| + |Cr difference|) / 40``
  per luma cell (chroma cells cover 2x2 luma cells), so a recoloured copy (red flag,
  green flag) differs everywhere;
* the outer ring of two cells is left out (a crop leaves it unmatched) and, if that
  lowers the score, four window rows at the top or at the bottom (a watermark band over
  up to ~12% of the height at one edge);
* the score is the largest mean over a 3x3-cell window (~1/10 of the image a side): a
  letter or digit that differs is a small place that changed a lot, so it scores high
  although the rest matches;
* the normalisation above also hides differences that are global: a blank image and a
  black bar, a faint and a strong version of one outline. So the score is at least the
  *global* change ``g ** 4``, ``g = max(|log mean ratio| / MEAN_LIMIT, |log contrast
  ratio| / STD_LIMIT)`` of the raw luma planes: 1.0 (the default threshold) at the limits
  measured on planted copies (brightness +-15%, watermark, crop: at most 0.35 and 0.53),
  and the fourth power keeps it far below the window score inside them (it then does
  not change the score, nor the medoid of :mod:`mitigate.keep`).

Measured limits (BENCHMARKS.md, "Near-duplicate verification"): a change below the
resolution of the cells is not seen -- two glyphs in the same box over a quarter of the
shorter side are still scored alike in about a third of the pairs pHash proposes, and
images that are mirror images in all but a detail (b and d; Tux Paint's ``_mirror``
stamps, whose text stays readable) pass as flipped copies.

A pair is *verified* (the images are near duplicates) when its score is at most the
threshold (``dedup.verify_threshold``, default :data:`DEFAULT_THRESHOLD`). The score is
symmetric and deterministic (numpy, fixed operation order). Everything here is
a plain function over arrays: a search that found candidate pairs in one worker or in
many partitions calls :func:`pair_scores` the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image

GRID = 32  # luma cells per side
CHROMA_GRID = 16  # chroma (Cb, Cr) cells per side
SIG_BYTES = GRID * GRID + 2 * CHROMA_GRID * CHROMA_GRID  # 1536: Y, then Cb, then Cr
#: Default ``dedup.verify_threshold`` (measured, BENCHMARKS.md).
DEFAULT_THRESHOLD = 1.0
#: Chroma difference (0..255 units, Cb + Cr) that weighs as much as one unit of
#: normalised luma difference.
CHROMA_UNIT = 40.0
#: Outer ring of luma cells left out (a border crop or a zoom leaves it unmatched).
RING = 2
#: Side of the window, in luma cells, whose mean difference is the local score.
WINDOW = 3
#: Window rows at the top or bottom edge that may differ without counting (a
#: watermark band over up to ~12% of the height).
EDGE_ROWS = 4
#: Zoom factors tried when aligning (1 = as is; 1.064 = a 3% border crop each side).
ZOOMS = (1.0, 1.064, 1 / 1.064)
#: |log| of the ratio of mean luma (each + 16) that scores 1.0: planted copies reach 0.35.
MEAN_LIMIT = 0.4
#: |log| of the ratio of luma std (each + 8) that scores 1.0: planted copies reach 0.53.
STD_LIMIT = 0.7
_CONTRAST_FLOOR = 4.0  # luma std (0..255) below which an image counts as flat
#: Point samples per cell side the signature averages (16 a cell).
SAMPLES = 4
_CHUNK = 512  # pairs scored at a time (bounded memory)
_Y = GRID * GRID
_C = CHROMA_GRID * CHROMA_GRID


def signature(image: Image.Image) -> bytes:
    """The :data:`SIG_BYTES`-byte signature of an image (any size and mode).

    An image with a shorter side of at least ``2 * GRID * SAMPLES`` px is point-sampled
    at ``SAMPLES`` x ``SAMPLES`` pixels a cell on a regular grid (Pillow's NEAREST
    resize to ``GRID * SAMPLES`` square), each cell the mean of its samples
    (``reduce``); a smaller one is area-averaged to the cells (BOX). The cells are
    converted to YCbCr (Pillow's conversion, BT.601 as JPEG uses); luma is stored at
    32x32 cells, each chroma plane averaged to 16x16, one byte a cell. Reading 16
    pixels a cell instead of every pixel cuts the signature's cost to less than half
    (BENCHMARKS.md, "Near-duplicate verification"). Point sampling was measured at
    16x16 on the whole evaluation set (same precision and recall as area averages); at
    32x32 only 1,381 of its 8,517 images are large enough to take that path.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    side = GRID * SAMPLES
    if min(image.size) >= 2 * side:
        small = image.resize((side, side), Image.Resampling.NEAREST).reduce(SAMPLES)
    else:
        # a small image: exact area averages (cheap here; point samples would skip
        # pixels unevenly when fewer than two pixels a sample are there)
        small = image.resize((GRID, GRID), Image.Resampling.BOX)
    y, cb, cr = small.convert("YCbCr").split()
    f = GRID // CHROMA_GRID
    return y.tobytes() + cb.reduce(f).tobytes() + cr.reduce(f).tobytes()


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


def is_signature(sig: bytes | None) -> bool:
    """Whether ``sig`` is a signature of this version (a stored one of another length,
    e.g. from a run before the signature changed, is not: its pairs fall back to pHash)."""
    return sig is not None and len(sig) == SIG_BYTES


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
_CHROMA_TAPS: list[_Taps] = [_zoom_taps(CHROMA_GRID, z) for z in ZOOMS]


def _zoom(x: NDArray[np.float32], taps: _Taps) -> NDArray[np.float32]:
    """Zoom the last two axes of ``x`` (bilinear, separable)."""
    lo, hi, w = taps
    cols = x[..., lo] * (1 - w) + x[..., hi] * w
    return cols[..., lo, :] * (1 - w)[:, None] + cols[..., hi, :] * w[:, None]


def _normalise(y: NDArray[np.float32]) -> NDArray[np.float32]:
    mean = y.mean(axis=(-2, -1), keepdims=True)
    std = np.maximum(y.std(axis=(-2, -1), keepdims=True), _CONTRAST_FLOOR)
    return (y - mean) / std


def _most_changed(d: NDArray[np.float32]) -> NDArray[np.float32]:
    """Largest WINDOW x WINDOW mean of a difference map (p, GRID, GRID), without the
    outer ring, and without EDGE_ROWS window rows at the top or at the bottom if that
    lowers it (a band across one edge is forgiven, not one at each)."""
    r, w = RING, WINDOW
    d = d[:, r : GRID - r, r : GRID - r]
    m = d.shape[1] - w + 1
    rows = d[:, :m]
    for t in range(1, w):
        rows = rows + d[:, t : t + m]
    win = rows[:, :, :m]
    for t in range(1, w):
        win = win + rows[:, :, t : t + m]
    win = win / (w * w)
    row_max = win.max(axis=2)
    e = EDGE_ROWS
    full = row_max.max(axis=1)
    no_top = row_max[:, e:].max(axis=1)
    no_bottom = row_max[:, :-e].max(axis=1)
    return np.minimum(full, np.minimum(no_top, no_bottom)).astype(np.float32)


def _planes(sig: NDArray[np.uint8]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(n, GRID, GRID) luma and (n, 2, CHROMA_GRID, CHROMA_GRID) chroma, as float32."""
    y = sig[:, :_Y].astype(np.float32).reshape(-1, GRID, GRID)
    c = sig[:, _Y:].astype(np.float32).reshape(-1, 2, CHROMA_GRID, CHROMA_GRID)
    return y, c


def _alignments(
    sig: NDArray[np.uint8],
) -> list[tuple[NDArray[np.float32], NDArray[np.float32]]]:
    """Every alignment tried (as is or mirrored, times each zoom): (normalised luma,
    chroma) each, luma normalised after the zoom."""
    y, c = _planes(sig)
    out = []
    for mirrored in (False, True):
        yo = y[:, :, ::-1] if mirrored else y
        co = c[:, :, :, ::-1] if mirrored else c
        for zoom, taps, ctaps in zip(ZOOMS, _TAPS, _CHROMA_TAPS, strict=True):
            yz = yo if zoom == 1.0 else _zoom(yo, taps)
            cz = co if zoom == 1.0 else _zoom(co, ctaps)
            out.append((_normalise(yz), cz))
    return out


def pair_scores(
    i: ArrayLike, j: ArrayLike, signatures: NDArray[np.uint8] | Sequence[bytes | None]
) -> NDArray[np.float64]:
    """Verification score of each candidate pair ``(i[t], j[t])`` (indices into
    ``signatures``); smaller = more alike; <= threshold = near duplicates. The score is
    the larger of the most changed window and the global change (module docstring).

    Symmetric: the pair is always scored with the smaller index first, so
    ``pair_scores([a], [b], s) == pair_scores([b], [a], s)``. Each image of the larger
    index is aligned once per block of pairs (pairs are taken in order of that index),
    so the cost per pair is a few array operations on the signature's values.
    """
    sigs = as_signatures(signatures)
    ii = np.asarray(i, dtype=np.int64).reshape(-1)
    jj = np.asarray(j, dtype=np.int64).reshape(-1)
    if ii.shape != jj.shape:
        raise ValueError(f"i and j differ in length: {ii.shape[0]} vs {jj.shape[0]}")
    lo, hi = np.minimum(ii, jj), np.maximum(ii, jj)
    luma = sigs[:, :_Y].astype(np.float64)
    log_mean = np.log(luma.mean(axis=1) + 16.0)
    log_std = np.log(luma.std(axis=1) + 8.0)
    order = np.argsort(hi, kind="stable")
    out = np.empty(ii.shape[0], dtype=np.float64)
    rep = GRID // CHROMA_GRID
    for start in range(0, ii.shape[0], _CHUNK):
        sel = order[start : start + _CHUNK]
        uniq, inv = np.unique(hi[sel], return_inverse=True)
        variants = _alignments(sigs[uniq])
        ya, ca = _planes(sigs[lo[sel]])
        ya = _normalise(ya)
        best = np.full(sel.shape[0], np.inf, dtype=np.float32)
        for yb, cb in variants:
            d = np.abs(ya - yb[inv])
            dc = np.abs(ca - cb[inv]).sum(axis=1) / CHROMA_UNIT
            # each chroma cell adds to its rep x rep luma cells (in place, no copy)
            d.reshape(-1, CHROMA_GRID, rep, CHROMA_GRID, rep)[...] += dc[:, :, None, :, None]
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
