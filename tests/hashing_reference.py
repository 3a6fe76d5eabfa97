"""The per-sample hashing steps as they were before issue 14's byte-identical speed-up
(commit e832c1e): the reference the tests compare the current code with, and the
"old" side of ``benchmarks/bench_hashing.py``. Kept verbatim; do not optimise.

``phash_pair`` here is imagehash's pHash step for step (per-image ``scipy.fftpack.dct``
twice and ``np.median``); ``signature`` is ``mitigate.verify.signature`` with its
Pillow ``split`` / ``reduce`` / ``getextrema`` / ``tobytes`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.fftpack
from PIL import Image

HASH_SIZE = 8
_THUMB = HASH_SIZE * 4
GRID = 64
CHROMA_GRID = 16
SAMPLES = 2
_PLANE = np.repeat([0, 1, 2], [GRID * GRID, CHROMA_GRID**2, CHROMA_GRID**2])


def gray_thumbnail(image: Image.Image, *, exact: bool = True) -> np.ndarray:
    gap = 2.0 if not exact and min(image.size) >= 8 * _THUMB else None
    gray = image.convert("L")
    return np.asarray(gray.resize((_THUMB, _THUMB), Image.Resampling.LANCZOS, reducing_gap=gap))


def _bits_to_int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits.reshape(-1)).tobytes(), "big")


def phash_from_thumbnail(thumb: np.ndarray) -> int:
    dct = scipy.fftpack.dct(scipy.fftpack.dct(thumb, axis=0), axis=1)
    low = dct[:HASH_SIZE, :HASH_SIZE]
    return _bits_to_int(low > np.median(low))


def phash_pair(image: Image.Image, *, exact: bool = True) -> tuple[int, int]:
    thumb = gray_thumbnail(image, exact=exact)
    return phash_from_thumbnail(thumb), phash_from_thumbnail(np.fliplr(thumb))


def _quantise(planes: Sequence[Image.Image]) -> tuple[bytes, bytes]:
    extrema = [p.getextrema() for p in planes]
    lo = np.asarray([e[0] for e in extrema], dtype=np.int32)
    span = np.maximum(np.asarray([e[1] for e in extrema], dtype=np.int32) - lo, 1)
    v = np.frombuffer(b"".join(p.tobytes() for p in planes), dtype=np.uint8)
    lo_, span_ = lo[_PLANE], span[_PLANE]
    q = ((v - lo_) * 15 + span_ // 2) // span_
    return ((q[0::2] << 4) | q[1::2]).astype(np.uint8).tobytes(), bytes(
        b for e in extrema for b in e
    )


def signature(image: Image.Image) -> bytes:
    if image.mode != "RGB":
        image = image.convert("RGB")
    side = GRID * SAMPLES
    if min(image.size) >= side:
        small = image.resize((side, side), Image.Resampling.NEAREST).reduce(SAMPLES)
    else:
        small = image.resize((GRID, GRID), Image.Resampling.BOX)
    luma, cb, cr = small.convert("YCbCr").split()
    f = GRID // CHROMA_GRID
    cells, ranges = _quantise((luma, cb.reduce(f), cr.reduce(f)))
    w, h = (min(v, 65535) for v in image.size)
    return cells + ranges + w.to_bytes(2, "big") + h.to_bytes(2, "big")
