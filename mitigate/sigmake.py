"""The verification signature of an image (issue 12): its 64 x 64 luma and 16 x 16
chroma cells, quantised, with the image's size and the definition's version
(:mod:`mitigate.sigdef` holds the constants and the byte layout;
:mod:`mitigate.verify` scores pairs of signatures and re-exports :func:`signature` and
:func:`grey_and_signature`).

Two ways to the same bytes: :func:`signature` from any Pillow image (Pillow's resize,
then one compiled pass, :mod:`mitigate._sigkernel`, or its numpy reference
:func:`_cells_numpy`), and :func:`grey_and_signature`, pHash's greyscale image and the
signature from one compiled pass over an RGB image's own memory
(:mod:`mitigate.sigsample`), the decode path's.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from mitigate import hashing, kernels, sigdef, sigsample
from mitigate.sigdef import CHROMA_GRID, GRID, SIG_VERSION, SIZE_AT

logger = logging.getLogger(__name__)


def _level_table() -> NDArray[np.uint8]:
    """The 4-bit level of a cell ``d`` above its plane's minimum, for a plane spanning
    ``span`` (>= 1): ``(d * 15 + span // 2) // span``, at ``[span * 256 + d]``."""
    d, span = np.arange(256), np.maximum(np.arange(256), 1)[:, None]
    return ((d * 15 + span // 2) // span).astype(np.uint8).ravel()


_LEVEL = _level_table()


def _pack(q: NDArray[np.uint8]) -> bytes:
    return ((q[0::2] << 4) | q[1::2]).tobytes()


def _quantised(v: NDArray[np.int64]) -> tuple[bytes, int, int]:
    lo, hi = int(v.min()), int(v.max())
    return _pack(_LEVEL[max(hi - lo, 1) * 256 - lo + v]), lo, hi


def _cells_numpy(rgbx: bytes) -> bytes:
    """The packed cells and range bytes of a signature from the bytes of its point
    samples (:func:`signature`; 4 bytes a sample, RGBX), in numpy: the reference the
    compiled kernel (:mod:`mitigate._sigkernel`) equals byte for byte, and the fallback
    where numba does not import."""
    sx, sy = sigdef.SAMPLES_X, sigdef.SAMPLES_Y
    s = np.frombuffer(rgbx, np.uint8).reshape(GRID, sy, GRID, sx, 4)[..., :3]
    sums = s.astype(np.int64).sum(axis=(1, 3))  # (64, 64, 3) RGB sums a luma cell
    y = (sums @ np.asarray(sigdef.LUMA) + (1 << (sigdef.LUMA_SHIFT - 1))) >> sigdef.LUMA_SHIFT
    f = GRID // CHROMA_GRID
    c = sums.reshape(CHROMA_GRID, f, CHROMA_GRID, f, 3).sum(axis=(1, 3))
    half = 1 << (sigdef.CHROMA_SHIFT - 1)
    cb = np.clip(((c @ np.asarray(sigdef.CB) + half) >> sigdef.CHROMA_SHIFT) + 128, 0, 255)
    cr = np.clip(((c @ np.asarray(sigdef.CR) + half) >> sigdef.CHROMA_SHIFT) + 128, 0, 255)
    qy, ylo, yhi = _quantised(y.ravel())
    qb, blo, bhi = _quantised(cb.ravel())
    qr, rlo, rhi = _quantised(cr.ravel())
    return qy + qb + qr + bytes((ylo, yhi, blo, bhi, rlo, rhi))


def _kernel() -> Callable[..., NDArray[np.uint8]] | None:
    """The compiled cells kernel, or None (numpy) where it cannot load or is not wanted
    (:mod:`mitigate.kernels`)."""
    return _loaded_kernel() if kernels.compiled() else None


@lru_cache(maxsize=1)
def _loaded_kernel() -> Callable[..., NDArray[np.uint8]] | None:
    if sys.byteorder != "little":  # pragma: no cover - the kernels read RGBX as words
        logger.warning("a big-endian machine: signatures are computed in numpy")
        return None
    module = kernels.load("mitigate._sigkernel", "signatures")
    return None if module is None else module.cells  # type: ignore[no-any-return]


def signature(image: Image.Image) -> bytes:
    """The :data:`SIG_BYTES`-byte signature of an image (any size and mode).

    An image with a shorter side of at least 128 px is point-sampled at 2 x 2 pixels a
    cell on a regular grid (Pillow's NEAREST resize to 128 x 128); one under 128 px both
    ways is area-averaged to the 64 x 64 cells (BOX), each cell's 4 samples its average;
    one with a side of 128 px or more and the other under it is point-sampled along the
    long side and averaged along the short one (:func:`box_samples`, SIG_VERSION 3). Luma,
    64 x 64 cells: the ITU-R 601-2 luma (Pillow's L weights) of the mean of a cell's 4
    samples; chroma, 16 x 16 cells a
    plane: the BT.601 Cb and Cr (as JPEG uses) of the mean of the 64 samples of 4 x 4
    luma cells; each rounded half up (:mod:`mitigate.sigdef`), each plane quantised to 4
    bits between its own minimum and maximum (stored); then the image's width and
    height (the resolution a pair can be compared at, and its aspect ratio) and
    :data:`SIG_VERSION`.

    The fourth round's samples and cells, computed in one Pillow resize (or, under 128
    px, the kernel's own exact copy of Pillow's BOX arithmetic,
    :func:`mitigate._sigkernel.box_cells`, eighth round), one copy of its bytes and one
    pass of a compiled kernel (:mod:`mitigate._sigkernel`, bit-identical to the numpy
    reference :func:`_cells_numpy`) instead of seven Pillow and numpy calls; the colour
    arithmetic is the kernel's own, so the bytes are not the fourth round's: a new
    :data:`SIG_VERSION`. Measured (BENCHMARKS.md, "Fifth round", "Eighth round"): the
    same precision and recall, ~0.6x the CPU time in the decode path.
    """
    if image.mode != "RGB":
        image = image.convert("RGB")
    tail = _tail(*image.size)
    kernel = _kernel()
    if min(image.size) < 2 * GRID:  # each cell's area average, repeated on its samples
        if kernel is not None:
            from mitigate import _sigkernel  # imported by _kernel() already

            words = np.frombuffer(image.tobytes("raw", "RGBX"), np.uint32)
            cells = _sigkernel.box_cells(words, *image.size, _LEVEL, SIZE_AT)
            return cells.tobytes() + tail  # Pillow's BOX resize, computed in the kernel
        return _cells_numpy(box_samples(image)) + tail
    samples = (GRID * sigdef.SAMPLES_X, GRID * sigdef.SAMPLES_Y)
    rgbx = image.resize(samples, Image.Resampling.NEAREST).tobytes("raw", "RGBX")  # a copy
    if kernel is None:
        return _cells_numpy(rgbx) + tail
    return kernel(np.frombuffer(rgbx, np.uint32), _LEVEL, SIZE_AT).tobytes() + tail


def box_samples(image: Image.Image) -> bytes:
    """The point samples (RGBX bytes, as :func:`_cells_numpy` takes them) of an RGB image
    with a side under 128 px, from Pillow's resampling: under 128 px both ways, its BOX
    resize to the 64 x 64 cells, each cell's value on its 2 x 2 samples (NEAREST up by
    whole factors); with the other side 128 px or more (SIG_VERSION 3), NEAREST along
    that side to 128 samples and BOX along the short side to 64 cells, each value on 2
    samples across the short side (the kernel's
    :func:`mitigate._sigkernel._long_side_cells`)."""
    w, h = image.size
    n = 2 * GRID  # samples a side: SAMPLES_X == SAMPLES_Y == 2
    shape = (GRID, sigdef.SAMPLES_Y, GRID, sigdef.SAMPLES_X, 4)
    if w >= n:  # wide
        part = image.resize((n, h), Image.Resampling.NEAREST)
        box = part.resize((n, GRID), Image.Resampling.BOX).tobytes("raw", "RGBX")
        cells = np.frombuffer(box, np.uint8).reshape(GRID, 1, GRID, sigdef.SAMPLES_X, 4)
    elif h >= n:  # tall
        part = image.resize((w, n), Image.Resampling.NEAREST)
        box = part.resize((GRID, n), Image.Resampling.BOX).tobytes("raw", "RGBX")
        cells = np.frombuffer(box, np.uint8).reshape(GRID, sigdef.SAMPLES_Y, GRID, 1, 4)
    else:
        box = image.resize((GRID, GRID), Image.Resampling.BOX).tobytes("raw", "RGBX")
        cells = np.frombuffer(box, np.uint8).reshape(GRID, 1, GRID, 1, 4)
    return np.broadcast_to(cells, shape).tobytes()


def grey_and_signature(
    image: Image.Image, *, with_signature: bool = True
) -> tuple[hashing.Grey, bytes] | None:
    """Pillow's ``image.convert("L")`` (pHash's greyscale image, its bytes as a
    :class:`mitigate.hashing.Grey`) and the image's :func:`signature`, both from one
    compiled pass over the image's own memory (:mod:`mitigate.sigsample`,
    :func:`mitigate._sigkernel.grey_and_cells`): the same bytes as the two Pillow paths,
    for the cost of the greyscale conversion alone (BENCHMARKS.md, "Seventh round").
    ``with_signature=False`` gives the greyscale image only (the signature ``b""``), from
    the same pass without the samples.

    An image under 128 px a side is averaged (Pillow's BOX resize, exactly, in the same
    call: :func:`mitigate._sigkernel.grey_and_box`). None where the pass does not apply,
    and the caller takes Pillow's paths: an image that is not RGB, no zero-copy view of
    its memory (:func:`mitigate.sigsample.pixels`), or no numba. (The greyscale image
    alone of an image under 128 px was left to Pillow's conversion while the result was a
    Pillow image; as an array it costs ~12 us less than Pillow's in the decode path.)"""
    small = min(image.size) < 2 * GRID
    if image.mode != "RGB" or not sigsample.EXACT_GRID:
        return None
    kernel = _kernel()
    pixels = sigsample.pixels(image) if kernel is not None else None
    if pixels is None:
        return None
    from mitigate import _sigkernel  # imported by _kernel() already

    w, h = image.size
    words = pixels.view(np.uint32)
    if with_signature:
        fused = _sigkernel.grey_and_box if small else _sigkernel.grey_and_cells
        grey, cells = fused(words, w, h, _LEVEL, SIZE_AT)
        sig = cells.tobytes() + _tail(w, h)
    else:
        grey, sig = _sigkernel.grey(words, w * h), b""
    return hashing.Grey(grey, w, h), sig


@lru_cache(maxsize=4096)
def _tail(w: int, h: int) -> bytes:
    """The signature's last bytes: width and height (uint16 big-endian) and the version
    (kept for the sizes seen: ~0.13 against ~0.59 us a call, session 29)."""
    w, h = min(w, 65535), min(h, 65535)
    return bytes((w >> 8, w & 255, h >> 8, h & 255, SIG_VERSION))
