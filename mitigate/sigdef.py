"""Constants of the verification signature's cells (issue 12, fifth round), shared by
:mod:`mitigate.verify` (numpy reference) and :mod:`mitigate._sigkernel` (compiled).

The cells come from ``64 * SAMPLES_X`` x ``64 * SAMPLES_Y`` point samples of the image
(Pillow's NEAREST resize). A luma cell is the ITU-R 601-2 luma (Pillow's L weights) of
the mean of its ``SAMPLES_X * SAMPLES_Y`` samples; a chroma cell the BT.601 Cb and Cr (as
JPEG uses) of the mean of its 4 x 4 luma cells' samples; each rounded half up. Fixed
point: the weights times ``2**SHIFT / samples``, each chroma row summing to 0, so grey is
exactly 128 and the arithmetic is exact in 64-bit integers.
"""

from __future__ import annotations

GRID = 64  # luma cells a side
CHROMA_GRID = 16  # chroma cells a side
SAMPLES_X = 2  # point samples a luma cell, across
SAMPLES_Y = 2  # point samples a luma cell, down
_N = SAMPLES_X * SAMPLES_Y  # samples a luma cell (a power of 2)
_LOG_N = _N.bit_length() - 1
_POOL = (GRID // CHROMA_GRID) ** 2  # luma cells a chroma cell
LUMA_SHIFT = 16 + _LOG_N
LUMA = (19595, 38470, 7471)  # ITU-R 601-2 x 2**16 (Pillow's L), sum 2**16
CHROMA_SHIFT = 16 + _LOG_N + (_POOL.bit_length() - 1)


def _chroma(weights: tuple[float, float, float]) -> tuple[int, int, int]:
    """``weights`` x 2**16, rounded, the largest adjusted so the three sum to 0."""
    w = [round(x * 65536) for x in weights]
    w[max(range(3), key=lambda t: abs(weights[t]))] -= sum(w)
    return w[0], w[1], w[2]


CB = _chroma((-0.168736, -0.331264, 0.5))
CR = _chroma((0.5, -0.418688, -0.081312))

# The signature's bytes (:func:`mitigate.sigmake.signature`)
Y_BYTES = GRID * GRID // 2  # packed luma: 4 bits a cell
C_BYTES = 2 * CHROMA_GRID * CHROMA_GRID // 2  # packed Cb and Cr: 4 bits a cell
RANGE_AT = Y_BYTES + C_BYTES  # (min, max) of Y, Cb, Cr: 6 bytes
SIZE_AT = RANGE_AT + 6  # working width, height: uint16 big-endian each
VERSION_AT = SIZE_AT + 4
#: The definition of the cells (the last byte of every signature): 2 = the fifth round's
#: (:func:`mitigate.sigmake.signature`); 3 (session 29) samples the long side of an
#: image with one side of 128 px or more and the other under it, as the point-sampled
#: path does, where 2 averaged it (:func:`mitigate.sigmake.box_samples`). The fourth
#: round's signatures had no version byte (2,314 bytes): see
#: :func:`mitigate.verify.is_signature`.
SIG_VERSION = 3
#: Set in the version byte of a signature to be compared without mirroring (the cells
#: the same; ``dedup.mirror: false``, :func:`mitigate.verify.unmirrored`): a near-dup
#: search marks its own copies, never a stored signature.
UNMIRRORED = 0x80
#: Bytes a signature: packed Y, packed Cb + Cr, the three (min, max), width and height,
#: the version.
SIG_BYTES = VERSION_AT + 1  # 2315
