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
    gray = image.convert("L")
    return np.asarray(gray.resize((_THUMB, _THUMB), Image.Resampling.LANCZOS, reducing_gap=gap))


def _bits_to_int(bits: np.ndarray) -> int:
    return int.from_bytes(np.packbits(bits.reshape(-1)).tobytes(), "big")


def phash_from_thumbnail(thumb: np.ndarray) -> int:
    """pHash of a 32x32 greyscale array, as an unsigned 64-bit integer."""
    import scipy.fftpack  # here: importing it costs ~0.3 s, and most commands never hash

    dct = scipy.fftpack.dct(scipy.fftpack.dct(thumb, axis=0), axis=1)
    low = dct[:HASH_SIZE, :HASH_SIZE]
    return _bits_to_int(low > np.median(low))


def phash_pair(image: Image.Image, *, exact: bool = True) -> tuple[int, int]:
    """(pHash, pHash of the horizontally mirrored image) of a decoded image."""
    thumb = gray_thumbnail(image, exact=exact)
    return phash_from_thumbnail(thumb), phash_from_thumbnail(np.fliplr(thumb))


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
