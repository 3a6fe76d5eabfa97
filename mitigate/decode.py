"""Decode an image once, safely, into what every consumer needs.

One call of :func:`decode_image` yields the sample's size signals, its perceptual
hashes and a reduced-size RGB image for pixel filters; :func:`decode_images` the same
for a chunk of samples, their hashes computed together (the same bits, fewer calls).
Failures never raise: they come back as :class:`DecodeFailure` with a fixed reason
code, so a bad sample becomes an ``error`` row and the run goes on.

Safety and fidelity, in order:
1. the header is parsed first and ``width x height`` checked against ``max_pixels``
   *before* any pixel data is decoded (decompression bombs cost nothing);
2. JPEGs are decoded at reduced size where consumers only need small inputs
   (Pillow's ``draft``: the IDCT itself is scaled by 1/2, 1/4 or 1/8);
3. EXIF orientation is applied, so width/height and hashes describe the image as
   displayed;
4. modes are normalised to RGB: CMYK, palette and alpha (composited on white), 16-bit
   (scaled, not clipped), animated images (first frame).
"""

from __future__ import annotations

import io
import logging
import re
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mitigate import hashing, verify
from mitigate.records import Reason
from mitigate.sources import IMAGE_FORMATS, JPEG_FORMATS

LOG = logging.getLogger(__name__)
_PILLOW_DIR = Path(Image.__file__).resolve().parent
_ORIENTATION_TAG = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that rotate by 90 or 270 degrees
#: the transposition that shows an image of each EXIF orientation upright (Pillow's
#: ImageOps.exif_transpose table)
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    """The image's EXIF orientation (1-8), 1 where it has none, an unknown value or
    an EXIF block Pillow cannot parse (its parser raises struct.error, KeyError, ...
    on damaged blocks: the image is shown as stored, as viewers do)."""
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # any damage of the block reads as "no orientation"
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _quiet_pillow() -> None:
    """Ignore Pillow's UserWarnings about damage it reads past (a corrupt EXIF block,
    truncated metadata): a sample is judged on the pixels it decodes to, and one that
    fails is recorded with its reason; printed, they only flood a long run's terminal
    (each new message once per process, across the progress line). Checked at each
    decode, since a ``warnings.catch_warnings`` block around the first one (a test
    runner's, a caller's) would drop a filter set once at import."""
    if _PILLOW_WARNINGS not in warnings.filters:
        warnings.filterwarnings("ignore", category=UserWarning, module=_PILLOW_MODULES)


_PILLOW_MODULES = r"PIL(\.|$)"
_PILLOW_WARNINGS = ("ignore", None, UserWarning, re.compile(_PILLOW_MODULES), 0)


@dataclass(frozen=True)
class DecodedImage:
    width: int  # as displayed (after EXIF orientation), full resolution
    height: int
    format: str
    phash: int
    phash_mirror: int
    working: Image.Image  # RGB, shorter side >= working_size unless the image is smaller
    signature: bytes = b""  # mitigate.verify.signature of the working image
    # (centre hash, its mirror): hashing.centre_pair_from_thumbnail of pHash's thumbnail
    centre: tuple[int, int] | None = None
    quality: int | None = None  # a JPEG's quality (jpeg_quality); None for other formats


@dataclass(frozen=True)
class _Unhashed:
    """A decoded image before its hashes: pHash's 32 x 32 thumbnail, to be hashed with
    the other thumbnails of its chunk (:func:`mitigate.hashing.views_of_thumbnails`)."""

    width: int
    height: int
    format: str
    working: Image.Image
    signature: bytes
    thumbnail: np.ndarray
    quality: int | None = None

    def hashed(self, views: tuple[int, int, int, int]) -> DecodedImage:
        phash, mirror, centre, centre_mirror = views
        return DecodedImage(
            self.width,
            self.height,
            self.format,
            phash,
            mirror,
            self.working,
            self.signature,
            (centre, centre_mirror),
            self.quality,
        )


@dataclass(frozen=True)
class DecodeFailure:
    reason: str
    detail: str


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    working_size: int = 256,
    hash_mode: str = "fast",
    signature: bool = True,
) -> DecodedImage | DecodeFailure:
    """Decode ``data`` once and compute size, hashes, the verification signature and the
    working image. ``signature=False`` leaves the signature out (``b""``: a pair with
    such a sample is decided on pHash alone), for a caller that never verifies and to
    measure what the signature costs (``benchmarks/eval_near_verify.py --cost-shards``).

    ``hash_mode="exact"`` decodes at full resolution and hashes that, which is
    bit-identical to ``imagehash.phash(ImageOps.exif_transpose(Image.open(f)))``;
    ``"fast"`` hashes the reduced decode (a few bits from exact on photos, see the
    tests for the measured bound).
    """
    return decode_images(
        [data],
        max_pixels=max_pixels,
        working_size=working_size,
        hash_mode=hash_mode,
        signature=signature,
    )[0]


def decode_images(
    datas: Sequence[bytes],
    *,
    max_pixels: int,
    working_size: int = 256,
    hash_mode: str = "fast",
    signature: bool = True,
) -> list[DecodedImage | DecodeFailure]:
    """:func:`decode_image` of each of ``datas``, in order: each decoded on its own, and
    the hashes of all in one :func:`mitigate.hashing.views_of_thumbnails` call (the same
    bits as one image at a time; in the decode path 0.03-0.13 ms a sample less, in whole
    runs nothing measurable: BENCHMARKS.md, "A chunk's hashes in one call")."""
    decoded = [_decode_one(data, max_pixels, working_size, hash_mode, signature) for data in datas]
    thumbs = [r.thumbnail for r in decoded if isinstance(r, _Unhashed)]
    views = iter(hashing.views_of_thumbnails(np.stack(thumbs)) if thumbs else [])
    return [r.hashed(next(views)) if isinstance(r, _Unhashed) else r for r in decoded]


def _decode_one(
    data: bytes, max_pixels: int, working_size: int, hash_mode: str, signature: bool
) -> _Unhashed | DecodeFailure:
    """One image decoded up to pHash's thumbnail, or why it cannot be."""
    _quiet_pillow()
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and 2 * limit < max_pixels:  # Pillow refuses above twice its
        # limit at open, whatever max_pixels says (178,956,970): ours is checked there
        Image.MAX_IMAGE_PIXELS = max_pixels // 2 + 1
    try:
        image = open_image(data)
    except RefusedImage as exc:
        return DecodeFailure(exc.reason, exc.detail)
    except Image.DecompressionBombError as exc:
        return DecodeFailure(Reason.TOO_MANY_PIXELS, _bomb_detail(exc, max_pixels))
    except UnidentifiedImageError:
        refused = refused_format(data)
        if refused:
            accepted = ", ".join(IMAGE_FORMATS)
            return DecodeFailure(
                Reason.UNSUPPORTED_FORMAT,
                f"{refused} data is not an accepted image format (accepted: {accepted})",
            )
        broken = broken_format(data)
        if broken:
            return DecodeFailure(Reason.DECODE_ERROR, broken)
        head = data[:8].hex(" ") + _as_text(data)
        return DecodeFailure(
            Reason.DECODE_ERROR, f"unrecognised image format (first bytes: {head})"
        )
    except (OSError, ValueError, SyntaxError) as exc:
        return DecodeFailure(Reason.DECODE_ERROR, f"not a readable image: {exc}")
    try:
        return _decode_opened(image, max_pixels, working_size, hash_mode, signature)
    except Image.DecompressionBombError as exc:
        return DecodeFailure(Reason.TOO_MANY_PIXELS, str(exc))
    except MemoryError:
        return DecodeFailure(Reason.TOO_MANY_PIXELS, "out of memory while decoding")
    except Exception as exc:  # one image must not end the run
        # Pillow signals truncated or corrupt data with OSError, ValueError, SyntaxError,
        # EOFError, and, from its parsers, IndexError, TypeError, struct.error,
        # AttributeError...: a damaged EXIF block raised struct.error and ended the run
        # (helper-38). Raised outside Pillow, it is logged as the bug it likely is.
        return DecodeFailure(Reason.DECODE_ERROR, _failure_detail(image.format, exc))


def _bomb_detail(exc: Exception, max_pixels: int) -> str:
    """The detail of an image Pillow refused to open for its size (twice its own limit),
    in the terms of ``max_pixels`` (it named Pillow's limit, 178,956,970 pixels)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    if found is None:
        return str(exc)
    return f"declares {int(found.group(1)):,} pixels > max_pixels {max_pixels:,}"


_reported: set[tuple[str, str]] = set()  # (exception type, place) logged in this process


def _failure_detail(fmt: str | None, exc: Exception) -> str:
    """The manifest detail of a decode that raised ``exc``.

    Pillow raises ``TypeError``, ``IndexError``, ``struct.error``, ``AttributeError``
    and others on some corrupt files too, so they count as bad input, but only when
    Pillow raised them: raised anywhere else (this package, numpy) they are most likely
    a bug, which must not pass for a bad image. The sample is still recorded (the run
    goes on), its detail says where the error came from, and the first occurrence of
    each place is logged as an error with its traceback. Pillow's own kinds of bad data
    (``OSError``, ``ValueError``, ``SyntaxError``, ``EOFError``) are bad input wherever
    they were raised."""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    if isinstance(exc, OSError | ValueError | SyntaxError | EOFError) or where is None:
        return f"{fmt or 'image'}: {exc}"
    path = Path(where.filename).resolve()
    if path.is_relative_to(_PILLOW_DIR):
        return f"{fmt or 'image'}: {exc}"
    place = f"{path.parent.name}/{path.name}:{where.lineno}"
    key = (type(exc).__name__, place)
    if key not in _reported:
        _reported.add(key)
        LOG.error(
            "unexpected %s at %s while decoding a %s image (a bug, not bad input: please "
            "report it); the sample is recorded as decode_error",
            type(exc).__name__,
            place,
            fmt or "unknown",
            exc_info=exc,
        )
    return (
        f"{fmt or 'image'}: unexpected {type(exc).__name__} at {place}, not raised by the "
        f"image decoder (a bug: please report it): {exc}"
    )


# Magic numbers of formats that are refused (see sources.IMAGE_FORMATS), for a clear
# reason; the bytes are never handed to their decoders.
_REFUSED_MAGIC = (
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS (DOS binary)"),
    (b"%PDF", "PDF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"8BPS", "Photoshop PSD"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"\x1f\x8b", "gzip-compressed (an .svgz?)"),
    (b"BPG\xfb", "BPG"),
    (b"\x76\x2f\x31\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
)
#: Netpbm: P1-P7 and whitespace (PPM, PGM, PBM, PAM).
_NETPBM = re.compile(rb"P[1-7][ \t\r\n]")


def _as_text(data: bytes) -> str:
    """``, text: '<!DOCTYPE html>...'`` where an "image" starts as text (a crawler's
    saved error page, a path in a binary table column), else nothing."""
    try:
        text = data[:60].decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if not text.strip() or not all(c.isprintable() or c in "\t\r\n" for c in text):
        return ""
    shown = text if len(data) <= 60 else text + "..."
    return f", text: {shown!r}"


def refused_format(data: bytes) -> str | None:
    """Name of a recognised but refused format (EPS, TIFF, SVG, HEIC, ...), or None."""
    for magic, name in _REFUSED_MAGIC:
        if data.startswith(magic):
            return name
    head = data[:256].lstrip().lower()
    markup = (b"<svg", b"<?xml", b"<!--", b"<!doctype svg")
    if head.startswith(markup) and b"<svg" in data[:4096].lower():
        return "SVG"
    if _NETPBM.match(data[:3]):
        return "Netpbm (PPM/PGM/PBM)"
    if len(data) > 4 and data[0] == 0x0A and data[1] in b"\x00\x02\x03\x04\x05":
        if data[2] in b"\x00\x01" and data[3] in b"\x01\x02\x04\x08":
            return "PCX"
    if data[-18:] == b"TRUEVISION-XFILE.\x00":
        return "TGA"
    if data[4:8] == b"ftyp":  # an ISO media file: its major and compatible brands say which
        end = min(int.from_bytes(data[:4], "big"), 256)
        brands = {data[8:12]} | {data[i : i + 4] for i in range(16, end - 3, 4)}
        if brands & _HEIF_BRANDS:  # animated AVIF (avis) and HEIF sequences too
            return "HEIF/AVIF"
        if brands & _VIDEO_BRANDS:
            return "MP4/QuickTime video"
    return None


#: ISO media brands of still and animated HEIF/HEIC/AVIF images, and of videos.
_HEIF_BRANDS = frozenset(
    b.encode() for b in ("heic heix heim heis hevc hevx hevm hevs mif1 msf1 avif avis avio").split()
)
_VIDEO_BRANDS = frozenset(
    {b"isom", b"iso2", b"mp41", b"mp42", b"avc1", b"qt  ", b"M4V ", b"3gp4", b"3gp5", b"dash"}
)


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def broken_format(data: bytes) -> str | None:
    """Why Pillow could not open ``data`` that starts as an accepted format does (a PNG
    with a bad chunk, a JPEG cut in its header, ...), or None. ``Image.open`` reports
    any such file as unidentified, dropping its plugin's reason; the plugin whose
    signature test accepts the first bytes is asked again for it."""
    for fmt in IMAGE_FORMATS:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if factory is None or (accept is not None and not accept(data[:16])):
            continue
        try:
            factory(io.BytesIO(data), None).close()
        except Exception as exc:
            why = _ADDRESS.sub("", f"{type(exc).__name__}: {exc}")  # deterministic details
            return f"{fmt} data Pillow cannot read: {why}"[:500]
        return None  # it opens alone: the reason is elsewhere
    return None


class RefusedImage(ValueError):
    """Bytes no reader is to decode, with the reason and detail of their error row."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


#: Scans a progressive JPEG may have. Encoders write ~10 (mozjpeg's searched scripts a
#: few dozen); each scan is a pass over the whole image, so a file that repeats a tiny
#: scan 100,000 times (2.9 MB) took 150 s to decode, and its thumbnail in the report as
#: long again (libjpeg-turbo's own tools offer such a limit: ``djpeg -maxscans``).
MAX_JPEG_SCANS = 256
_LOSSLESS_SOF = {0xC3: "SOF3", 0xC7: "SOF7", 0xCB: "SOF11", 0xCF: "SOF15"}
_PROGRESSIVE_SOF = {0xC2, 0xC6, 0xCA, 0xCE}
_NO_LENGTH = {0x01, *range(0xD0, 0xDA)}  # TEM, RSTn, SOI, EOI


def _jpeg_frame(data: bytes) -> tuple[int | None, int | None]:
    """The start-of-frame marker of a JPEG (0xC0-0xCF but DHT, JPG and DAC) and where its
    first scan starts (its SOS marker), read from its segment lengths; None for either
    that the segments do not reach (they end, or a scan starts before a frame)."""
    frame = None
    pos, end = 2, len(data)  # a hop a segment: metadata of any size is skipped, not read
    while pos + 4 <= end:
        if data[pos] != 0xFF:  # bytes between segments: libjpeg skips them to the next
            pos = data.find(b"\xff", pos)  # FF ("extraneous bytes"), and so does this:
            if pos < 0:  # one junk byte had hidden a 60,000-scan JPEG (helper-38)
                return frame, None
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _NO_LENGTH:
            pos += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and frame is None:
            frame = marker
        if marker == 0xDA:
            return frame, pos
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return frame, None


def jpeg_refusal(data: bytes) -> RefusedImage | None:
    """Why a JPEG is not decoded: lossless (libjpeg-turbo 3 decodes it, and decoding one
    at a reduced scale, as every reader here does, corrupted memory and ended the
    process: the run, or the report in the driver), or of more than
    :data:`MAX_JPEG_SCANS` scans; None for other data."""
    if not data.startswith(b"\xff\xd8"):
        return None
    frame, first_scan = _jpeg_frame(data)
    if frame in _LOSSLESS_SOF:
        return RefusedImage(
            Reason.UNSUPPORTED_FORMAT,
            f"lossless JPEG ({_LOSSLESS_SOF[frame]}) is not an accepted kind of JPEG: "
            "decoding one at a reduced scale crashed the process",
        )
    # counted in every JPEG, whatever its frame says or where the walk stopped: a
    # sequential one has a scan a component (4 at most), a progressive one ~10
    # up to the image's end (FF D9: entropy-coded bytes hold neither marker), not into
    # data after it: a phone's motion photo appends an MP4 of ~20 MB, where FF DA comes
    # about every 64 KiB (helper-39)
    end = data.find(b"\xff\xd9", first_scan) if first_scan is not None else -1
    scans = data.count(b"\xff\xda", 0, end if end >= 0 else len(data))
    if scans > MAX_JPEG_SCANS:
        kind = "progressive JPEG" if frame in _PROGRESSIVE_SOF else "JPEG"
        return RefusedImage(
            Reason.DECODE_ERROR,
            f"{kind} of {scans:,} scans > {MAX_JPEG_SCANS} (encoders write about 10; "
            "each is a pass over the whole image: decoding would take minutes)",
        )
    return None


def open_image(data: bytes) -> Image.Image:
    """``Image.open`` restricted to the accepted formats: Pillow tries no other plugin,
    so no input can make it start an external program (its EPS plugin runs
    Ghostscript) or reach a rarely used decoder. Every reader of input images uses
    this; it raises :class:`RefusedImage` for a JPEG no reader is to decode
    (:func:`jpeg_refusal`)."""
    refused = jpeg_refusal(data)
    if refused is not None:
        raise refused
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)


#: libjpeg's (IJG) luma quantization table at quality 50 sums to this; its quality
#: setting scales that table (jcparam.c), so a JPEG's luma table's sum against it gives
#: the quality the table was made at.
_IJG_LUMA_SUM = 3688


def jpeg_quality(image: Image.Image) -> int | None:
    """The IJG quality (1-100) a JPEG's luma table was scaled from, as libjpeg scales
    it (``scale = 5000 / q`` under 50, ``200 - 2q`` from 50), read from the tables Pillow
    parsed at open (no pixel decoded); None for other formats and a JPEG without one.
    Encoders that write their own tables (cameras, mozjpeg) get the IJG quality nearest
    to theirs in size: what the keep rule compares copies by (:mod:`mitigate.keep`)."""
    tables = getattr(image, "quantization", None)
    if image.format not in JPEG_FORMATS or not tables or 0 not in tables:
        return None
    total = sum(tables[0])
    if total <= 0:
        return None
    if total <= 64:  # every entry 1: quality 100 (the formula would say 99)
        return 100
    scale = 100.0 * total / _IJG_LUMA_SUM
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / scale
    return int(min(max(round(quality), 1), 100))


def _decode_opened(
    image: Image.Image, max_pixels: int, working_size: int, hash_mode: str, signature: bool
) -> _Unhashed | DecodeFailure:
    fmt = image.format or "UNKNOWN"
    raw_w, raw_h = image.size
    if raw_w <= 0 or raw_h <= 0:
        return DecodeFailure(Reason.DECODE_ERROR, f"{fmt}: empty image {raw_w}x{raw_h}")
    if raw_w * raw_h > max_pixels:
        return DecodeFailure(
            Reason.TOO_MANY_PIXELS,
            f"{fmt} declares {raw_w}x{raw_h} = {raw_w * raw_h} pixels > max_pixels {max_pixels}",
        )
    orientation = _orientation(image)
    width, height = (raw_h, raw_w) if orientation in _SWAPS_AXES else (raw_w, raw_h)

    if hash_mode == "fast" and fmt in JPEG_FORMATS:
        # Scaled IDCT: decode straight to the smallest size with both sides >= working_size.
        image.draft("RGB", (working_size, working_size))
    image.seek(0)  # animated images: first frame
    image.load()
    # the transposition ImageOps.exif_transpose makes, without the EXIF block it then
    # rewrites (a damaged tag beside the orientation raised there: helper-38)
    oriented = image.transpose(_TRANSPOSE[orientation]) if orientation != 1 else image

    reduced = _reduce(oriented, working_size)
    # Both modes hash with imagehash's greyscale conversion of the image's own mode (alpha
    # ignored, as imagehash does); they differ only in the resolution that is hashed.
    exact = hash_mode == "exact"
    hashed = oriented if exact else reduced
    if hashed.mode in _DEEP_MODES:  # its greyscale scaled: Pillow's clips every value > 255
        hashed = _grey8(hashed)
    working = _to_rgb(reduced)
    # An RGB image hashed as it is also verified (the common case): its greyscale image
    # and signature in one compiled pass, the same bytes as Pillow's two paths.
    fused = (
        verify.grey_and_signature(working, with_signature=signature) if hashed is working else None
    )
    thumb = hashing.gray_thumbnail(hashed if fused is None else fused[0], exact=exact)
    if fused is not None:
        sig = fused[1]
    else:
        sig = verify.signature(working) if signature else b""
    return _Unhashed(width, height, fmt, working, sig, thumb, jpeg_quality(image))


#: A reduced image's long side is under twice this many times its short side (or the
#: working size, if larger).
MAX_REDUCED_ASPECT = 16


def _reduce(image: Image.Image, working_size: int) -> Image.Image:
    """Shrink by an integer factor while the shorter side stays >= working_size, and
    along the long side of an image more than :data:`MAX_REDUCED_ASPECT` times as long
    as wide by more (a 1 x 49,000,000 PNG ran out of memory in Pillow's resize for
    pHash, and took 10 s and 2.7 GB in the compiled kernels: one sample two outcomes). A
    palette or 1-bit image is converted first (reduce() has no kernel for them): it
    went on at full size, and a 7000 x 7000 one of 32 KB became a 147 MB RGB working
    image (24 of them peaked at 5.4 GB)."""
    w, h = image.size
    factor = max(min(w, h) // working_size, 1)
    side = max(min(w, h) // factor, working_size) * MAX_REDUCED_ASPECT
    extra = max(max(w, h) // factor // side, 1)
    fx, fy = (factor * extra, factor) if w >= h else (factor, factor * extra)
    if fx < 2 and fy < 2:
        return image
    if image.mode == "P":  # its colours; RGBA where a colour is transparent (_to_rgb)
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode == "1":
        image = image.convert("L")
    if image.mode.startswith("I;16"):
        # reduce() has no 16-bit kernel: reduce in 32-bit, then back to the same mode
        # (values fit), so hashing and RGB conversion see what they saw before.
        return image.convert("I").reduce((fx, fy)).convert("I;16")
    return image.reduce((fx, fy))


#: Greyscale modes of more than 8 bits a pixel.
_DEEP_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def _grey8(image: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit or float greyscale image as 8-bit greyscale, scaled (16-bit data,
    and 32-bit data past 255, to 0..255) where Pillow's ``convert("L")`` clips: every
    16-bit greyscale PNG was white to pHash, and all of them shared one hash."""
    if image.mode == "F":
        arr = np.nan_to_num(np.asarray(image, dtype=np.float64))
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    arr = np.asarray(image, dtype=np.int64)
    peak = 65535 if image.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255
    return Image.fromarray(np.clip(arr * 255 // peak, 0, 255).astype(np.uint8), "L")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Normalise any Pillow mode to 8-bit RGB."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _DEEP_MODES:
        return _grey8(image).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def viewable_rgb(image: Image.Image, size: int) -> Image.Image:
    """An opened image as the run judged it, for a person to look at: its first frame,
    turned by its EXIF orientation, alpha composited on white and 16-bit greyscale
    scaled to 8 bits (:func:`_to_rgb`), reduced by an integer factor while its shorter
    side stays >= ``size`` (a thumbnail is made from it). A thumbnail that converted the
    stored pixels straight to RGB showed another picture: a dark stamp on a transparent
    background as a black square (its hidden pixels, which no filter saw), every 16-bit
    greyscale PNG white, and a phone photo on its side (helper-48)."""
    _quiet_pillow()
    if image.format in JPEG_FORMATS:
        image.draft("RGB", (size, size))
    image.seek(0)  # animated images: first frame
    image.load()
    orientation = _orientation(image)
    oriented = image.transpose(_TRANSPOSE[orientation]) if orientation != 1 else image
    return _to_rgb(_reduce(oriented, size))
