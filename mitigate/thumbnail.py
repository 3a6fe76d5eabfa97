"""pHash's 32 x 32 greyscale thumbnail, Pillow's Lanczos resize computed bit for bit.

``imagehash.phash`` resizes the greyscale image to 32 x 32 with Pillow's Lanczos filter;
on the decode path's working image (a shorter side of 128 to 255 px with
``decode.working_size: auto`` and no model filter, and every image under 256 px) that
resize was the largest step after the JPEG decode (~0.25 ms at 256 x 198). Here it is
one compiled call (:func:`mitigate._sigkernel.lanczos`) with Pillow's arithmetic:

* the filter taps of each output pixel along a side, in doubles as Pillow computes them
  (its support of 3 input pixels times the scale, the window rounded the same way,
  ``sin(pi x) / (pi x)`` products, normalised by their sum), then as 22-bit fixed point
  rounded half away from zero (:func:`taps`, cached per side length);
* a horizontal pass over the rows the vertical pass reads, then the vertical pass, each
  sum starting at one half and kept as Pillow's ``(sum >> 22)`` clipped to 0..255;
* a side that already has 32 pixels is not resampled (Pillow skips that pass), and an
  image over 100 times taller than wide is resampled vertically first (Pillow
  12 ``Image.resize`` does that in two calls; the tests compare
  with the installed Pillow, so a change of that rule shows there).

The same bytes as Pillow's resize on every image (tests compare them on hypothesis
images of every size and on real photos), so the hashes do not change. Where the
kernel cannot load (:mod:`mitigate.kernels`), Pillow resizes.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from mitigate import kernels
from mitigate.sigsample import BOX_BITS  # Pillow's fixed point for 8-bit resampling

SIDE = 32  # imagehash: hash_size 8 x highfreq_factor 4
_SUPPORT = 3.0  # Lanczos-3


def _sinc(x: float) -> float:
    if x == 0.0:
        return 1.0
    x = x * math.pi
    return math.sin(x) / x


def _lanczos(x: float) -> float:
    if -_SUPPORT <= x < _SUPPORT:
        return _sinc(x) * _sinc(x / 3)
    return 0.0


def taps_python(n_in: int, n_out: int = SIDE) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Pillow's Lanczos taps from ``n_in`` to ``n_out`` pixels along one side, in plain
    Python (floats are C doubles, ``math.sin`` the C library's): each output pixel's
    first input pixel and count, shape (n_out, 2), and its fixed-point taps, shape
    (n_out, most taps). The reference of the kernel's :func:`taps`."""
    scale = float(n_in) / n_out
    filterscale = max(scale, 1.0)
    support = _SUPPORT * filterscale
    ksize = math.ceil(support) * 2 + 1
    bounds = np.zeros((n_out, 2), np.int64)
    weights = np.zeros((n_out, ksize), np.int32)  # Pillow's int sums (no overflow)
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in) - xmin
        w = [_lanczos((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = 0.0
        for v in w:
            total += v
        if total != 0.0:
            w = [v / total for v in w]
        for x, v in enumerate(w):
            fixed = v * (1 << BOX_BITS)
            weights[xx, x] = int(-0.5 + fixed) if v < 0 else int(0.5 + fixed)
        bounds[xx] = (xmin, xmax)
    return bounds, weights


@lru_cache(maxsize=256)  # ~24 bytes a pixel of side each; a miss costs ~30 us at 200 px
def taps(n_in: int) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """:func:`taps_python` to 32 pixels, computed by the kernel module (the same bits:
    tests), cached per side length."""
    module = _module()
    if module is None:
        return taps_python(n_in)
    return module.lanczos_taps(n_in, SIDE)  # type: ignore[no-any-return]


def _module():  # type: ignore[no-untyped-def]
    return _loaded() if kernels.compiled() else None


@lru_cache(maxsize=1)
def _loaded():  # type: ignore[no-untyped-def]
    return kernels.load("mitigate._sigkernel", "thumbnails")


def _kernel():  # type: ignore[no-untyped-def]
    module = _module()
    return None if module is None else module.lanczos


def thumbnail(gray: Image.Image) -> NDArray[np.uint8]:
    """``np.asarray(gray.resize((32, 32), Image.Resampling.LANCZOS))`` of an ``L``
    image, computed by the compiled kernel where it loads."""
    if _kernel() is None or gray.mode != "L":
        return np.asarray(gray.resize((SIDE, SIDE), Image.Resampling.LANCZOS))
    return of_pixels(np.frombuffer(gray.tobytes(), np.uint8), *gray.size)


def of_pixels(pixels: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """:func:`thumbnail` of the ``L`` image whose bytes are ``pixels`` (``height`` rows
    of ``width``, no padding): the decode path's fused pass gives pHash's greyscale
    image as such an array (:class:`mitigate.hashing.Grey`), and no Pillow image is
    made of it."""
    kernel = _kernel()
    if kernel is None:
        gray = Image.frombuffer("L", (width, height), pixels, "raw", "L", 0, 1)
        return np.asarray(gray.resize((SIDE, SIDE), Image.Resampling.LANCZOS))
    hb, hk = taps(width)
    vb, vk = taps(height)
    if height > width * 100 and height > SIDE:
        # Pillow's resize() takes a very tall image's vertical pass first (two calls,
        # each a single pass); an unchanged side's taps are never read
        keep_w, keep_h = _unchanged(width), _unchanged(SIDE)
        tall = kernel(pixels, width, height, *keep_w, vb, vk)
        return kernel(tall.reshape(-1), width, SIDE, hb, hk, *keep_h)  # type: ignore[no-any-return]
    return kernel(pixels, width, height, hb, hk, vb, vk)  # type: ignore[no-any-return]


@lru_cache(maxsize=64)
def _unchanged(n: int) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Taps of a side that keeps its ``n`` pixels (the kernel then skips that pass)."""
    return np.zeros((n, 2), np.int64), np.zeros((n, 1), np.int32)
