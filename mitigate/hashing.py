"""Perceptual hashing: imagehash's pHash, computed so that one decode feeds everything.

:func:`phash_pair` returns the 64-bit pHash of an image and of its mirror image. It
follows ``imagehash.phash`` step for step (greyscale, 32x32 Lanczos resize, 2-D DCT,
top-left 8x8 block compared with its median) and is bit-identical to it on the same
input image. The mirror hash reuses the 32x32 thumbnail: mirroring commutes with
Pillow's (symmetric) Lanczos resize, which the tests check against
``imagehash.phash(ImageOps.mirror(image))`` on real photos.

Hashes are 64-bit unsigned integers in code and 16 hex digits in files, the same
string ``str(imagehash.phash(...))`` gives, so hash lists made with imagehash compare
directly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HASH_SIZE = 8  # bits per side: 8x8 = 64-bit hash
_THUMB = HASH_SIZE * 4  # imagehash's highfreq_factor=4


def gray_thumbnail(image: Image.Image, *, exact: bool = True) -> np.ndarray:
    """The 32x32 uint8 greyscale array pHash is computed from.

    ``exact`` follows imagehash's steps exactly. Otherwise, for images with a shorter
    side of at least 256 px, Pillow first shrinks by an integer factor with a box filter
    (``reducing_gap=2``) and only then applies Lanczos: about twice as fast, within the
    fast-mode bound the tests state. Smaller images gain little and their hashes are
    more fragile, so they always take the exact path.
    """
    gap = 2.0 if not exact and min(image.size) >= 8 * _THUMB else None
    # convert() of an L image to L is a copy; resize() leaves its input alone
    gray = image if image.mode == "L" else image.convert("L")
    return np.asarray(gray.resize((_THUMB, _THUMB), Image.Resampling.LANCZOS, reducing_gap=gap))


def _bits_to_int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits.reshape(-1)).tobytes(), "big")


def phash_from_thumbnail(thumb: np.ndarray) -> int:
    """pHash of a 32x32 greyscale array, as an unsigned 64-bit integer."""
    return _phashes(np.asarray(thumb)[np.newaxis])[0]


def phash_pair(image: Image.Image, *, exact: bool = True) -> tuple[int, int]:
    """(pHash, pHash of the horizontally mirrored image) of a decoded image."""
    thumb = gray_thumbnail(image, exact=exact)
    first, mirrored = _phashes(np.stack((thumb, thumb[:, ::-1])))
    return first, mirrored


def _phashes(thumbs: np.ndarray) -> list[int]:
    """pHashes of a stack of thumbnails, ``(n, 32, 32)``, bit-identical to imagehash's
    ``dct(dct(thumb, axis=0), axis=1)`` and ``low > np.median(low)`` per thumbnail, with
    one ``dctn``, one sort and one ``packbits`` for the whole stack (issue 14: half the
    time of the per-thumbnail calls for an image and its mirror; BENCHMARKS.md):

    * ``scipy.fftpack.dctn`` over the last two axes runs the same pocketfft DCT-II
      plan as two ``dct`` calls, axis by axis in the given order, each 1-D transform
      on its own (a batch changes only the loop around them), so every coefficient
      has the same bits;
    * ``np.median`` of 64 values partitions them and returns the mean of the 32nd and
      33rd, ``(a + b) / 2`` in float64: the same two values of a sort, added and
      halved the same way (a NaN, which ``np.median`` propagates, is kept).
    """
    import scipy.fftpack  # here: importing it costs ~0.3 s, and most commands never hash

    n = thumbs.shape[0]
    dct = scipy.fftpack.dctn(thumbs, type=2, axes=(1, 2))
    low = dct[:, :HASH_SIZE, :HASH_SIZE].reshape(n, HASH_SIZE * HASH_SIZE)
    ordered = np.sort(low, axis=1)
    mid = HASH_SIZE * HASH_SIZE // 2
    median = (ordered[:, mid - 1] + ordered[:, mid]) / 2
    median[np.isnan(ordered[:, -1])] = np.nan
    packed = np.packbits(low > median[:, np.newaxis], axis=1)
    return [int(v) for v in packed.view(">u8").reshape(n)]


def to_hex(value: int) -> str:
    """16 hex digits, as ``str(imagehash.ImageHash)`` writes a 64-bit hash."""
    return f"{value:016x}"


def from_hex(text: str) -> int:
    """Parse a 16-hex-digit hash; ValueError names the bad input."""
    text = text.strip().lower()
    if len(text) != 16:
        raise ValueError(f"expected 16 hex digits for a 64-bit hash, got {text!r}")
    return int(text, 16)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return (a ^ b).bit_count()
