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

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from mitigate import thumbnail

HASH_SIZE = 8  # bits per side: 8x8 = 64-bit hash
_THUMB = thumbnail.SIDE  # HASH_SIZE * 4: imagehash's highfreq_factor=4


class Grey(NamedTuple):
    """pHash's greyscale image as the decode path's fused pass gives it
    (:func:`mitigate.sigmake.grey_and_signature`): ``height`` rows of ``width`` bytes,
    the bytes of Pillow's ``convert("L")``. Hashed without making a Pillow image of it
    where the thumbnail kernel resizes it (:func:`gray_thumbnail`)."""

    pixels: NDArray[np.uint8]
    width: int
    height: int

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    def image(self) -> Image.Image:
        """The Pillow ``L`` image over the same memory (``frombuffer`` keeps a
        reference to the array)."""
        return Image.frombuffer("L", self.size, self.pixels, "raw", "L", 0, 1)


def gray_thumbnail(image: Image.Image | Grey, *, exact: bool = True) -> np.ndarray:
    """The 32x32 uint8 greyscale array pHash is computed from.

    ``exact`` follows imagehash's steps exactly. Otherwise, for images with a shorter
    side of at least 256 px, Pillow first shrinks by an integer factor with a box filter
    (``reducing_gap=2``) and only then applies Lanczos: about twice as fast, within the
    fast-mode bound the tests state. Smaller images gain little and their hashes are
    more fragile, so they always take the exact path.
    """
    gap = 2.0 if not exact and min(image.size) >= 8 * _THUMB else None
    if isinstance(image, Grey):
        if gap is None:  # Pillow's Lanczos resize, the same bytes, compiled
            return thumbnail.of_pixels(image.pixels, image.width, image.height)
        image = image.image()
    # convert() of an L image to L is a copy; resize() leaves its input alone
    gray = image if image.mode == "L" else image.convert("L")
    if gap is None:  # Pillow's Lanczos resize, the same bytes, compiled (~3.7x faster)
        return thumbnail.thumbnail(gray)
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


# --------------------------------------------------------------------------- centre view
# A second candidate hash for the near-duplicate search: pHash's recipe applied to the
# central part of the same 32x32 thumbnail, so that an edit confined to the image's
# edges (a watermark band over the top or bottom ~10% of the height, a border crop of a
# few percent) leaves it nearly unchanged where it moves the whole-image pHash by more
# than k bits. Rows are trimmed more than columns: watermark bands run across the
# width. Measured on the labelled evaluation set (BENCHMARKS.md, "Fourth round").

#: Thumbnail rows ``[top, bottom)`` and columns ``[left, right)`` the centre hash reads:
#: 1/8 of the height off the top and the bottom (as verification's edge band), 1/16 of
#: the width off each side. The column window is symmetric, so mirroring the thumbnail
#: mirrors the window.
CENTRE_ROWS = (4, 28)
CENTRE_COLS = (2, 30)


def _dct_rows(n: int) -> np.ndarray:
    """The first HASH_SIZE rows of the n-point DCT-II matrix, unnormalised as
    ``scipy.fftpack.dct`` (``2 cos(pi k (2i + 1) / 2n)``)."""
    k = np.arange(HASH_SIZE)[:, None]
    i = np.arange(n)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))


_CENTRE_DCT_ROWS = _dct_rows(CENTRE_ROWS[1] - CENTRE_ROWS[0])
_CENTRE_DCT_COLS = _dct_rows(CENTRE_COLS[1] - CENTRE_COLS[0]).T.copy()
_ODD_COLUMNS = np.where(np.arange(HASH_SIZE) % 2 == 1, -1.0, 1.0)


def centre_pair_from_thumbnail(thumb: np.ndarray) -> tuple[int, int]:
    """(centre hash, centre hash of the mirror image) of a 32x32 greyscale thumbnail.

    One thumbnail at a time, kept as the reference the decoder's stacked
    :func:`views_of_thumbnails` is tested against (the decoder itself calls that).

    The centre hash is pHash's step on the window :data:`CENTRE_ROWS` x
    :data:`CENTRE_COLS` (24 x 28 pixels): the low 8x8 block of its 2-D DCT-II (as two
    small matrix products, only the 64 coefficients used), each compared with the
    block's median. The mirror hash is the same of the horizontally mirrored window; it
    comes from the same coefficients (mirroring a row negates its odd horizontal
    frequencies), the same bits as the DCT of the mirrored window (the tests check
    this on real images).
    """
    window = np.asarray(thumb)[
        CENTRE_ROWS[0] : CENTRE_ROWS[1], CENTRE_COLS[0] : CENTRE_COLS[1]
    ].astype(np.float64)
    # rounded to 1e-6 (coefficients reach ~1e5): what is zero in exact arithmetic (the
    # odd frequencies of a symmetric image) is zero, not a rounding residue that
    # depends on the BLAS a machine runs
    return _block_and_mirror_bits(np.round(_CENTRE_DCT_ROWS @ window @ _CENTRE_DCT_COLS, 6))


def _block_and_mirror_bits(low: np.ndarray) -> tuple[int, int]:
    """The hash of an 8x8 DCT block and of its mirror (odd horizontal frequencies
    negated), each block against its own median."""
    flipped = low * _ODD_COLUMNS
    return _bits_to_int(low > _median64(low)), _bits_to_int(flipped > _median64(flipped))


def _median64(block: np.ndarray) -> float:
    """``np.median`` of an 8x8 block (the mean of the middle two of a sort), ~10x faster
    on 64 values (measured: two such sorts beat one sort of both blocks stacked)."""
    s = np.sort(block, axis=None)
    return float((s[31] + s[32]) / 2)


def phash_views(image: Image.Image | Grey, *, exact: bool = True) -> tuple[int, int, int, int]:
    """(pHash, mirror pHash, centre hash, mirror centre hash) from one thumbnail.

    The first two equal :func:`phash_pair` (same thumbnail, same function); the last
    two are :func:`centre_pair_from_thumbnail` of that thumbnail."""
    return views_of_thumbnails(gray_thumbnail(image, exact=exact)[np.newaxis])[0]


def views_of_thumbnails(thumbs: np.ndarray) -> list[tuple[int, int, int, int]]:
    """:func:`phash_views` of each thumbnail of a stack ``(n, 32, 32)``, in a few numpy
    calls for the whole stack (the decoder hashes a chunk's thumbnails together:
    0.03-0.055 ms a sample less than one call a sample, BENCHMARKS.md). The same bits as one
    thumbnail at a time: pHash is :func:`_phashes` of the stack of thumbnails and their
    mirrors; each centre block is the same two matrix products (``matmul`` over a stack
    runs one product a thumbnail), rounded the same way, and each block's median the
    mean of the middle two of a sort, as :func:`_median64` (tests compare both)."""
    thumbs = np.asarray(thumbs)
    n = thumbs.shape[0]
    if n == 0:
        return []
    pairs = _phashes(np.stack((thumbs, thumbs[:, :, ::-1]), axis=1).reshape(2 * n, _THUMB, _THUMB))
    window = thumbs[:, CENTRE_ROWS[0] : CENTRE_ROWS[1], CENTRE_COLS[0] : CENTRE_COLS[1]]
    low = np.round(_CENTRE_DCT_ROWS @ window.astype(np.float64) @ _CENTRE_DCT_COLS, 6)
    blocks = np.stack((low, low * _ODD_COLUMNS), axis=1).reshape(2 * n, HASH_SIZE * HASH_SIZE)
    ordered = np.sort(blocks, axis=1)
    mid = HASH_SIZE * HASH_SIZE // 2
    median = (ordered[:, mid - 1] + ordered[:, mid]) / 2
    bits = np.packbits(blocks > median[:, np.newaxis], axis=1).view(">u8").reshape(n, 2)
    return [(pairs[2 * t], pairs[2 * t + 1], int(bits[t, 0]), int(bits[t, 1])) for t in range(n)]


def to_hex_pair(first: int, second: int) -> str:
    """32 hex digits: two 64-bit hashes (a hash and its mirror), as ``phash_centre``
    stores the centre view."""
    return to_hex(first) + to_hex(second)


def from_hex_pair(text: str) -> tuple[int, int]:
    """Parse :func:`to_hex_pair`'s 32 hex digits; ValueError names the bad input."""
    text = text.strip().lower()
    if len(text) != 32:
        raise ValueError(f"expected 32 hex digits for two 64-bit hashes, got {text!r}")
    return int(text[:16], 16), int(text[16:], 16)
