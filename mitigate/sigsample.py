"""An RGB image's own memory, read without a copy, for the one compiled pass that gives
both pHash's greyscale image and the verification signature (issue 12, seventh round:
:func:`mitigate.sigmake.grey_and_signature`, kernel :func:`mitigate._sigkernel.grey_and_cells`).

The signature's samples are Pillow's NEAREST resize to ``64 * SAMPLES_X`` x ``64 *
SAMPLES_Y`` (:mod:`mitigate.sigdef`); :func:`sample_index` is that resize's mapping and
:func:`samples_numpy` the samples' numpy reference (tests compare both with Pillow). An
image under 128 px a side is averaged instead, by Pillow's BOX resize to 64 x 64 cells:
:func:`box_bins` and :func:`box_numpy` are that resize's arithmetic in exact integers
(the numpy reference of :func:`mitigate._sigkernel.grey_and_box`; tests compare all
three with Pillow at every size).
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from mitigate import sigdef

GRID = sigdef.GRID

SAMPLES = (GRID * sigdef.SAMPLES_X, GRID * sigdef.SAMPLES_Y)  # Pillow's NEAREST grid
# Pillow's NEAREST resize of a side of ``size`` pixels to ``n`` samples (ImagingScaleAffine)
# reads pixel ``int(x)`` at ``x = size / n / 2``, then ``x += size / n`` a sample, in
# doubles. With ``n`` a power of two every such ``x`` is ``(2 * j + 1) * size / (2 * n)``
# exactly, so :func:`sample_index` is that mapping; another ``n`` would need Pillow's
# own rounding, and the zero-copy path below is then not taken.
# (The compiled kernel reads a pixel as one little-endian 32-bit word: another byte
# order takes Pillow's path too.)
EXACT_GRID = all(n & (n - 1) == 0 for n in SAMPLES) and sys.byteorder == "little"


def sample_index(size: int, n: int) -> NDArray[np.int64]:
    """The pixels (along a side of ``size``) of Pillow's NEAREST resize to ``n`` samples."""
    j = np.arange(n, dtype=np.int64)
    return (2 * j + 1) * size // (2 * n)


def samples_numpy(pixels: NDArray[np.uint8], width: int, height: int) -> bytes:
    """The bytes of Pillow's NEAREST resize to :data:`SAMPLES` (RGBX, as
    :func:`mitigate.sigmake._cells_numpy` takes them) taken from an image's memory
    (:func:`pixels`): with it, the numpy reference of the compiled
    :func:`mitigate._sigkernel.sampled_cells`."""
    grid = pixels.reshape(height, width, 4)
    rows, cols = sample_index(height, SAMPLES[1]), sample_index(width, SAMPLES[0])
    return grid[np.ix_(rows, cols)].tobytes()


BOX_BITS = 22  # Pillow's fixed point for 8-bit resampling (PRECISION_BITS)


def box_bins(size: int) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """The pixels Pillow's BOX resize of a side of ``size`` pixels to 64 cells averages,
    as each cell's first and end pixel (exclusive), and its fixed-point weight.

    Pillow weighs pixel ``p`` 1 in cell ``i`` when ``-1/2 < (p + 1/2 - c) / s <= 1/2``,
    ``c = (i + 1/2) * size / 64`` the cell's centre, ``s = max(size / 64, 1)``: on a side
    of 64 px or more, the pixels whose centres lie in ``(i, i + 1] * size / 64`` (here in
    exact integers: ``2 i size < 128 p + 64 <= 2 (i + 1) size``); on a shorter side, the
    one pixel ``floor(c)``. Each of a cell's ``n`` pixels weighs ``int(0.5 + 2**22 / n)``
    (Pillow's ``normalize_coeffs_8bpc``, in doubles, as here)."""
    i = np.arange(GRID, dtype=np.int64)
    if size < GRID:
        first = (2 * i + 1) * size // (2 * GRID)
        end = first + 1
    else:
        first = (2 * i * size - GRID) // (2 * GRID) + 1
        end = (2 * (i + 1) * size - GRID) // (2 * GRID) + 1
    weight = [int(0.5 + 1.0 / n * (1 << BOX_BITS)) for n in (end - first).tolist()]
    return first, end, np.asarray(weight, np.int64)


def _box_pass(sums: NDArray[np.int64], weight: NDArray[np.int64]) -> NDArray[np.int64]:
    """One pass of Pillow's resampling: the weighted sum rounded (half up) and clipped."""
    return np.minimum((sums * weight + (1 << (BOX_BITS - 1))) >> BOX_BITS, 255)


def box_numpy(pixels: NDArray[np.uint8], width: int, height: int) -> NDArray[np.int64]:
    """Pillow's ``resize((64, 64), BOX)`` of an RGB image (64 x 64 x 3, R, G, B) from its
    RGBX bytes, in numpy: the rows across (each cell's pixel sums times its weight,
    rounded), then down; a side already 64 px is not resampled (as Pillow skips it)."""
    grid = pixels.reshape(height, width, 4)[..., :3].astype(np.int64)
    for axis, size in ((1, width), (0, height)):
        if size == GRID:
            continue
        first, end, weight = box_bins(size)
        cum = np.concatenate([np.zeros_like(grid.take([0], axis)), grid.cumsum(axis)], axis)
        sums = cum.take(end, axis) - cum.take(first, axis)
        shape = [1, 1, 1]
        shape[axis] = GRID
        grid = _box_pass(sums, weight.reshape(shape))
    return grid


class _ArrowArray(ctypes.Structure):
    """The Arrow C data interface's ``struct ArrowArray`` (a stable ABI)."""


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64),
    ("null_count", ctypes.c_int64),
    ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64),
    ("n_children", ctypes.c_int64),
    ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))),
    ("dictionary", ctypes.c_void_p),
    ("release", ctypes.c_void_p),
    ("private_data", ctypes.c_void_p),
]
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def pixels(image: Image.Image) -> NDArray[np.uint8] | None:
    """A flat read-only uint8 view of an RGB image's own memory, no copy (4 bytes a
    pixel: R, G, B and a padding byte; rows one after the other), exported through the
    Arrow C data interface (Pillow >= 11.2: the export holds a reference to the image's
    memory until its capsule is released; the view holds the capsule), read with ctypes
    (pyarrow's import of the array costs more than the whole sampling).
    None where there is no such view: an older Pillow, another mode, rows not packed
    one after the other (``PILLOW_ALIGNMENT`` above 1), or an image whose memory is not
    one block (Pillow allocates a large image in blocks of 16 MB and then refuses to
    export it)."""
    if image.mode != "RGB":
        return None
    image.load()  # an opened file's pixels (a no-op once loaded)
    core = image.im
    if not hasattr(core, "__arrow_c_array__"):
        return None
    if Image.core.get_alignment() != 1:
        return None
    try:
        capsule = core.__arrow_c_array__()
    except ValueError:  # "Image is in multiple array blocks"
        return None
    array = _ArrowArray.from_address(_capsule_pointer(capsule, b"arrow_array"))
    n = image.size[0] * image.size[1]
    if array.length != n or array.offset or array.n_children != 1:
        return None  # pragma: no cover - not what Pillow exports for RGB
    child = array.children[0].contents
    if child.length != 4 * n or child.offset or child.n_buffers != 2 or not child.buffers[1]:
        return None  # pragma: no cover - likewise
    return np.asarray(_Exported(child.buffers[1], 4 * n, capsule))


class _Exported:
    """Exported image memory as numpy sees it (``__array_interface__``, read-only): the
    base of the view, holding the Arrow capsule, so the memory lives as long as the view.
    (A ctypes array type a size would cost ~0.1 ms to create for each new image size.)"""

    def __init__(self, address: int, size: int, capsule: object) -> None:
        self.__array_interface__ = {
            "data": (address, True),
            "shape": (size,),
            "typestr": "|u1",
            "version": 3,
        }
        self.capsule = capsule
