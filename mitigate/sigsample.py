"""An RGB image's own memory, read without a copy, for the one compiled pass that gives
both pHash's greyscale image and the verification signature (issue 12, seventh round:
:func:`mitigate.verify.grey_and_signature`, kernel :func:`mitigate._sigkernel.grey_and_cells`).

The signature's samples are Pillow's NEAREST resize to ``64 * SAMPLES_X`` x ``64 *
SAMPLES_Y`` (:mod:`mitigate.sigdef`); :func:`sample_index` is that resize's mapping and
:func:`samples_numpy` the samples' numpy reference (tests compare both with Pillow).
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
    :func:`mitigate.verify._cells_numpy` takes them) taken from an image's memory
    (:func:`pixels`): with it, the numpy reference of the compiled
    :func:`mitigate._sigkernel.sampled_cells`."""
    grid = pixels.reshape(height, width, 4)
    rows, cols = sample_index(height, SAMPLES[1]), sample_index(width, SAMPLES[0])
    return grid[np.ix_(rows, cols)].tobytes()


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
