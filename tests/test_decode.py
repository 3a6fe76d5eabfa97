"""Decoding once: hashes, sizes, orientation, modes, and every bad-image kind."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from mitigate import hashing
from mitigate.decode import DecodedImage, DecodeFailure, decode_image

LIMIT = 50_000_000


def _decode(data: bytes, **kw) -> DecodedImage:
    result = decode_image(data, max_pixels=kw.pop("max_pixels", LIMIT), **kw)
    assert isinstance(result, DecodedImage), result
    return result


def _jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_exact_mode_is_bit_identical_to_imagehash_on_real_photos(photos):
    for key, data in photos.items():
        decoded = _decode(data, hash_mode="exact")
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
        assert hashing.to_hex(decoded.phash) == str(imagehash.phash(image)), key
        mirrored = str(imagehash.phash(ImageOps.mirror(image)))
        assert hashing.to_hex(decoded.phash_mirror) == mirrored, key


@pytest.mark.parametrize("working_size", [256, 128])  # with nsfw / without a model filter
def test_fast_mode_stays_within_stated_distance_of_exact(photos, working_size):
    """The documented bound for fast mode: at most 6 bits from exact on photos, and
    under 1 bit on average. Large versions exercise JPEG draft decoding at 1/2..1/8."""
    distances = []
    for data in photos.values():
        for scale in (1, 3):
            image = Image.open(io.BytesIO(data)).convert("RGB")
            big = image.resize(
                (image.width * scale, image.height * scale), Image.Resampling.LANCZOS
            )
            payload = data if scale == 1 else _jpeg(big)
            fast = _decode(payload, working_size=working_size)
            exact = _decode(payload, hash_mode="exact")
            distances.append(hashing.hamming(fast.phash, exact.phash))
    assert max(distances) <= 6, distances
    assert np.mean(distances) < 1.0, distances


def test_reduced_decode_keeps_working_size_and_full_size_signals(photos):
    data = next(d for d in photos.values() if Image.open(io.BytesIO(d)).format == "JPEG")
    big = Image.open(io.BytesIO(data)).convert("RGB").resize((2048, 1536))
    decoded = _decode(_jpeg(big), working_size=256)
    assert (decoded.width, decoded.height) == (2048, 1536)
    assert decoded.working.mode == "RGB"
    assert 256 <= min(decoded.working.size) < 1536  # draft decoded at reduced size


def test_exif_orientation_is_applied_to_size_and_hash(photos):
    data = next(d for d in photos.values() if Image.open(io.BytesIO(d)).format == "JPEG")
    upright = Image.open(io.BytesIO(data)).convert("RGB").resize((400, 300))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # pixels stored rotated
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 270 ccw == back to upright
    rotated = _decode(_jpeg(stored, exif=exif.tobytes()), hash_mode="exact")
    plain = _decode(_jpeg(upright), hash_mode="exact")
    assert (rotated.width, rotated.height) == (400, 300)
    assert rotated.working.size == (400, 300)
    assert hashing.hamming(rotated.phash, plain.phash) <= 4


def _exif_block(entries: list[tuple[int, int, int, bytes]]) -> bytes:
    """A big-endian TIFF block of one IFD: (tag, type, count, 4-byte value) entries."""
    ifd = struct.pack(">H", len(entries))
    ifd += b"".join(struct.pack(">HHI", t, ty, c) + v for t, ty, c, v in entries)
    return b"MM\0\x2a" + struct.pack(">I", 8) + ifd + bytes(4)


@pytest.mark.parametrize(
    "entries",
    [  # an orientation beside a tag of the wrong type: Pillow's exif_transpose rewrote
        # the block and raised struct.error / AttributeError, and the run ended (helper-38)
        [(0x0112, 3, 1, b"\0\x06\0\0"), (0x014A, 2, 3, b"ab\0\0")],  # SubIFDs as text
        [(0x010F, 11, 1, struct.pack(">f", 1.5)), (0x0112, 3, 1, b"\0\x08\0\0")],  # Make a float
    ],
)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_a_damaged_exif_block_beside_an_orientation_is_one_samples_matter(entries, fmt):
    rng = np.random.default_rng(0)
    stored = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((64, 48))
    buf = io.BytesIO()
    block = _exif_block(entries)
    extra = {"lossless": True} if fmt == "WEBP" else {}
    stored.save(buf, fmt, exif=b"Exif\0\0" + block if fmt == "JPEG" else block, **extra)
    got = decode_image(buf.getvalue(), max_pixels=10**7)
    assert isinstance(got, DecodedImage), got
    orientation = struct.unpack(">H", next(e for e in entries if e[0] == 0x0112)[3][:2])[0]
    assert (got.width, got.height) == (48, 64)  # 6 and 8 both turn it a quarter
    turn = Image.Transpose.ROTATE_270 if orientation == 6 else Image.Transpose.ROTATE_90
    upright = decode_image(_png(stored.transpose(turn)), max_pixels=10**7)
    assert isinstance(upright, DecodedImage)
    assert hashing.hamming(got.phash, upright.phash) <= (6 if fmt == "JPEG" else 0)


def test_an_unexpected_error_inside_the_decoder_is_the_samples_decode_error(monkeypatch):
    """Whatever a decoder raises is the sample's decode_error, never the run's end."""
    import struct as struct_module

    from PIL import ImageFile

    def broken(self, *args, **kwargs):  # Pillow's own code raising an unlisted kind
        raise struct_module.error("required argument is not an integer")

    data = _png(Image.new("RGB", (8, 8)))
    monkeypatch.setattr(ImageFile.ImageFile, "load", broken)
    got = decode_image(data, max_pixels=10**7)
    assert isinstance(got, DecodeFailure) and got.reason == "decode_error"
    assert "required argument is not an integer" in got.detail


@pytest.mark.parametrize("mode", ["CMYK", "P", "PA_TRANSPARENT", "LA", "L", "I;16", "1"])
def test_modes_normalise_to_rgb(mode):
    rgb = Image.linear_gradient("L").resize((128, 96)).convert("RGB")
    if mode == "CMYK":
        data = _jpeg(rgb.convert("CMYK"))
    elif mode == "P":
        data = _png(rgb.convert("P"))
    elif mode == "PA_TRANSPARENT":
        pal = rgb.convert("P")
        buf = io.BytesIO()
        pal.save(buf, "PNG", transparency=0)
        data = buf.getvalue()
    elif mode == "I;16":
        arr = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype("<u2")
        data = _png(Image.frombytes("I;16", rgb.size, arr.tobytes()))
    else:
        data = _png(rgb.convert(mode))
    decoded = _decode(data)
    assert decoded.working.mode == "RGB"
    assert decoded.working.size == (128, 96)
    if mode == "I;16":
        # 16-bit values are scaled to 8 bits, not clipped at 255 (which would be white).
        assert 100 < np.asarray(decoded.working).mean() < 155


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))  # fully transparent red
    decoded = _decode(_png(rgba))
    assert decoded.working.getpixel((10, 10)) == (255, 255, 255)


def test_animated_image_uses_first_frame():
    frames = [Image.new("RGB", (64, 64), c) for c in ((0, 0, 0), (255, 255, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    decoded = _decode(buf.getvalue())
    assert decoded.working.getpixel((5, 5)) == (0, 0, 0)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature, IHDR and the start of an IDAT chunk: no usable pixel data."""
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    return head + struct.pack(">I", 1_000_000) + b"IDAT" + b"\x78\x9c"


def test_decompression_bomb_is_rejected_from_the_header_alone():
    # No pixel data exists: a decoder that tried to decode would fail with decode_error,
    # so too_many_pixels proves the check happens before any decoding.
    result = decode_image(_png_header_only(10_000, 8_000), max_pixels=LIMIT)
    assert isinstance(result, DecodeFailure)
    assert result.reason == "too_many_pixels"
    assert "10000x8000" in result.detail
    # Far beyond Pillow's own limit: still our reason code, not an exception.
    huge = decode_image(_png_header_only(60_000, 60_000), max_pixels=LIMIT)
    assert huge.reason == "too_many_pixels"


def test_pixel_limit_is_configurable(monkeypatch):
    data = _png(Image.new("RGB", (100, 100)))
    assert decode_image(data, max_pixels=9_999).reason == "too_many_pixels"
    assert isinstance(decode_image(data, max_pixels=10_000), DecodedImage)
    # above twice Pillow's own limit too (178,956,970 pixels): Pillow refused at open,
    # "declares 200,000,000 pixels > max_pixels 300,000,000" (helper-38); here the
    # header is read and the missing pixel data is the error
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    big = _png_header_only(20_000, 10_000)
    result = decode_image(big, max_pixels=300_000_000)
    assert isinstance(result, DecodeFailure) and result.reason == "decode_error", result
    assert decode_image(big, max_pixels=199_999_999).reason == "too_many_pixels"


@pytest.mark.parametrize(
    "make",
    [
        lambda jpg: jpg[: len(jpg) * 6 // 10],  # truncated JPEG
        lambda jpg: b"this is not an image at all",
        lambda jpg: b"",
        lambda jpg: jpg[:2] + bytes(200),  # JPEG magic then zeros
    ],
    ids=["truncated", "text", "empty", "corrupt_header"],
)
def test_bad_images_become_decode_errors(photos, make):
    jpg = next(d for d in photos.values() if Image.open(io.BytesIO(d)).format == "JPEG")
    result = decode_image(make(jpg), max_pixels=LIMIT)
    assert isinstance(result, DecodeFailure)
    assert result.reason == "decode_error"
    assert "0x" not in result.detail  # no object addresses: details are deterministic


def test_a_file_that_starts_as_an_accepted_format_but_breaks_says_why(photos):
    """Pillow reports a PNG with a damaged chunk, or a JPEG cut inside its header, as
    an unidentified file; the detail names the format and the plugin's reason."""
    png = bytearray(_png(Image.new("RGB", (80, 60), (10, 200, 30))))
    png[40] ^= 0xFF  # inside the chunk after IHDR: its type no longer reads
    result = decode_image(bytes(png), max_pixels=LIMIT)
    assert result.reason == "decode_error"
    assert result.detail.startswith("PNG data Pillow cannot read: SyntaxError: broken PNG")
    jpg = next(d for d in photos.values() if Image.open(io.BytesIO(d)).format == "JPEG")
    result = decode_image(jpg[:5], max_pixels=LIMIT)  # the JPEG signature, then nothing
    assert result.reason == "decode_error"
    assert result.detail.startswith("JPEG data Pillow cannot read: ")
    assert "0x" not in result.detail
    # bytes no accepted format claims keep the first bytes as their detail
    assert decode_image(b"GIF7" + bytes(50), max_pixels=LIMIT).detail.startswith(
        "unrecognised image format (first bytes: 47 49 46 37"
    )
    # bytes that are text say what they read as: a crawler's saved error page, a path
    page = b"<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>gone</body>"
    assert decode_image(page, max_pixels=LIMIT).detail == (
        "unrecognised image format (first bytes: 3c 21 44 4f 43 54 59 50, text: "
        "'<!DOCTYPE html><html><head><title>404 Not Found</title></hea...')"
    )
    assert decode_image(b"00000001.jpg", max_pixels=LIMIT).detail.endswith(
        ", text: '00000001.jpg')"
    )


def test_pillows_warnings_about_damage_it_reads_past_are_not_printed(photos):
    """A JPEG whose EXIF block is corrupt decodes (orientation 1), and Pillow's
    "Corrupt EXIF data" warning does not reach the terminal."""
    jpg = next(d for d in photos.values() if Image.open(io.BytesIO(d)).format == "JPEG")
    exif = Image.Exif()
    exif[0x0112] = 7
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpg)).convert("RGB").save(buf, "JPEG", exif=exif.tobytes())
    data = bytearray(buf.getvalue())
    at = data.find(b"Exif")
    data[at + 10 : at + 30] = b"\xff" * 20  # the IFD's entry count and first entries
    with warnings.catch_warnings(record=True) as caught:  # filters as the process has them
        result = decode_image(bytes(data), max_pixels=LIMIT)
    assert isinstance(result, DecodedImage)
    assert not [w for w in caught if "EXIF" in str(w.message)], [str(w.message) for w in caught]
    with warnings.catch_warnings(record=True) as caught:  # Pillow does warn about it
        warnings.simplefilter("always")
        Image.open(io.BytesIO(bytes(data))).getexif()
    assert any("Corrupt EXIF data" in str(w.message) for w in caught)


def test_decoding_is_deterministic(photos):
    data = next(iter(photos.values()))
    a, b = _decode(data), _decode(data)
    assert (a.phash, a.phash_mirror, a.width, a.height) == (
        b.phash,
        b.phash_mirror,
        b.width,
        b.height,
    )
    assert a.working.tobytes() == b.working.tobytes()


def test_large_16_bit_png_is_reduced_and_scaled():
    """A 16-bit PNG whose shorter side is >= 2x working_size goes through reduce(),
    which Pillow has no 16-bit kernel for."""
    ramp = np.linspace(0, 65535, 1024, dtype=np.uint16)
    arr = np.tile(ramp, (600, 1)).astype("<u2")
    decoded = _decode(_png(Image.frombytes("I;16", (1024, 600), arr.tobytes())))
    assert isinstance(decoded, DecodedImage), decoded
    assert (decoded.width, decoded.height) == (1024, 600)
    assert decoded.working.mode == "RGB" and min(decoded.working.size) >= 256
    row = np.asarray(decoded.working)[0, :, 0]
    assert row[0] < 5 and row[-1] > 250  # scaled across the whole 8-bit range


def test_gif_is_accepted():
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "GIF")
    decoded = _decode(buf.getvalue())
    assert isinstance(decoded, DecodedImage) and decoded.format == "GIF"


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("TIFF", "TIFF"), ("EPS", "PostScript/EPS"), ("PDF", "PDF"), ("ICO", "ICO")],
)
def test_refused_formats_are_unsupported_not_decoded(fmt, name):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 0, 0)).save(buf, fmt)
    result = decode_image(buf.getvalue(), max_pixels=10**8)
    assert isinstance(result, DecodeFailure)
    assert result.reason == "unsupported_format" and name in result.detail


def test_a_type_error_outside_pillow_is_recorded_as_a_bug_not_as_bad_input(
    photos, monkeypatch, caplog
):
    """A TypeError or IndexError raised by Pillow means corrupt data; raised in this
    package it is a bug: the sample is still recorded (the run goes on), but its detail
    says so and where, and the first one is logged as an error with its traceback."""
    from mitigate import decode as decode_module
    from mitigate import verify

    data = next(iter(photos.values()))

    def broken_signature(image, **_):  # a programming error in our own code
        return image.size + 1

    monkeypatch.setattr(verify, "signature", broken_signature)
    monkeypatch.setattr(verify, "grey_and_signature", broken_signature)  # its fused path
    monkeypatch.setattr(decode_module, "_reported", set())
    with caplog.at_level("ERROR", logger="mitigate.decode"):
        first = decode_image(data, max_pixels=LIMIT)
        second = decode_image(data, max_pixels=LIMIT)
    assert isinstance(first, DecodeFailure) and first.reason == "decode_error"
    assert "unexpected TypeError at tests/test_decode.py:" in first.detail
    assert "a bug" in first.detail and first.detail == second.detail
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and errors[0].exc_info is not None  # once per place

    # the same exception type raised inside Pillow (as its plugins do on corrupt data)
    def pillow_raises(image, **_):
        return image.getpixel("ab")

    monkeypatch.setattr(verify, "signature", pillow_raises)
    monkeypatch.setattr(verify, "grey_and_signature", pillow_raises)
    pillow = decode_image(data, max_pixels=LIMIT)
    assert isinstance(pillow, DecodeFailure) and pillow.reason == "decode_error"
    assert "unexpected" not in pillow.detail and "a bug" not in pillow.detail


@pytest.mark.parametrize(
    ("head", "name"),
    [
        # avifenc's animated AVIF: major brand avis (was "unrecognised image format")
        (b"\x00\x00\x00\x2cftypavis\x00\x00\x00\x00avifavismsf1iso8mif1miafMA1B", "HEIF/AVIF"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miafMA1B", "HEIF/AVIF"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIF/AVIF"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "HEIF/AVIF"),  # brand mif1
        (b"\x00\x00\x00\x1cftyphevc\x00\x00\x00\x00msf1hevcmif1", "HEIF/AVIF"),  # a sequence
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41", "MP4/QuickTime video"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  ", "MP4/QuickTime video"),
    ],
)
def test_iso_media_files_are_named_by_their_brands(head, name):
    result = decode_image(head + b"\x00" * 200, max_pixels=10**8)
    assert isinstance(result, DecodeFailure)
    assert result.reason == "unsupported_format" and name in result.detail


def test_an_unknown_iso_media_brand_is_not_named():
    result = decode_image(
        b"\x00\x00\x00\x14ftypabcd\x00\x00\x00\x00abcd" + bytes(200), max_pixels=10**8
    )
    assert isinstance(result, DecodeFailure) and result.reason == "decode_error"


def _photo(size: int = 320) -> Image.Image:
    """A smooth colour picture with some structure (pHash has bits to set)."""
    y, x = np.mgrid[0:size, 0:size]
    rgb = np.stack([x * 255 // size, y * 255 // size, (x * y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _lossless_jpeg_head() -> bytes:
    """The segments of a lossless JPEG up to its scan, as libjpeg-turbo 3's
    ``cjpeg -lossless 1`` writes them (SOF3, one Huffman table), then entropy bytes."""
    sof3 = b"\xff\xc3" + struct.pack(">HBHHB", 11, 8, 16, 16, 1) + b"\x01\x11\x00"
    dht = b"\xff\xc4" + struct.pack(">H", 21) + b"\x00" + bytes([0, 1] + [0] * 14) + b"\x00"
    sos = b"\xff\xda" + struct.pack(">HB", 8, 1) + b"\x01\x00" + b"\x01\x00\x00"
    jfif = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + jfif + sof3 + dht + sos + bytes(64) + b"\xff\xd9"


def test_a_lossless_jpeg_is_refused_before_pillow_reads_it(monkeypatch):
    """Regression (helper-31): Pillow's scaled decode of a lossless JPEG (SOF3, as
    libjpeg-turbo 3 writes) corrupted memory and aborted the process: the run in the
    Beam worker, or the driver writing the report's thumbnail. Every reader refuses it
    before Pillow sees it (here Pillow's open fails the test if it is called)."""
    from mitigate import review
    from mitigate.decode import RefusedImage, open_image

    data = _lossless_jpeg_head()
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("Pillow reached"))
    result = decode_image(data, max_pixels=10**8)
    assert isinstance(result, DecodeFailure) and result.reason == "unsupported_format"
    assert "lossless JPEG (SOF3)" in result.detail
    with pytest.raises(RefusedImage):
        open_image(data)
    assert review.thumbnail(data, 64) == ""  # the report's and select's path: no image
    # behind 5 MB of metadata (an ICC profile in APP2 segments) the frame is still found
    app2 = b"\xff\xe2" + (65535).to_bytes(2, "big") + bytes(65533)
    padded = data[:2] + app2 * 80 + data[2:]
    result = decode_image(padded, max_pixels=10**8)
    assert isinstance(result, DecodeFailure) and result.reason == "unsupported_format"
    # and behind junk bytes between segments, which libjpeg skips (helper-38)
    result = decode_image(data[:2] + b"\x00junk" + data[2:], max_pixels=10**8)
    assert isinstance(result, DecodeFailure) and result.reason == "unsupported_format"


def test_a_progressive_jpeg_of_too_many_scans_is_refused_and_an_ordinary_one_decodes():
    """Regression (helper-31): a progressive JPEG that repeats a scan 100,000 times
    (2.9 MB) took 150 s to decode, in small runs with no time limit, and as long again
    for its thumbnail in the report."""
    from mitigate.decode import MAX_JPEG_SCANS

    data = _jpeg(_photo(), progressive=True)
    scans = data.count(b"\xff\xda")
    assert 2 < scans < MAX_JPEG_SCANS
    assert isinstance(decode_image(data, max_pixels=10**8), DecodedImage)
    last = data.rindex(b"\xff\xda")
    repeated = data[:last] + data[last:-2] * (MAX_JPEG_SCANS + 1) + data[-2:]
    result = decode_image(repeated, max_pixels=10**8)
    assert isinstance(result, DecodeFailure) and result.reason == "decode_error"
    assert f"progressive JPEG of {scans + MAX_JPEG_SCANS:,} scans" in result.detail
    # one junk byte between two segments (libjpeg skips it) stopped the walk to the
    # frame, so the scans went uncounted: decoded for minutes, then kept (helper-38)
    junk = repeated[:20] + b"\x00" + repeated[20:]
    assert repeated[20] == 0xFF  # the byte after JFIF's APP0: a marker starts there
    result = decode_image(junk, max_pixels=10**8)
    assert isinstance(result, DecodeFailure) and result.reason == "decode_error"
    assert f"progressive JPEG of {scans + MAX_JPEG_SCANS:,} scans" in result.detail
    assert isinstance(decode_image(data[:20] + b"\x00" + data[20:], max_pixels=10**8), DecodedImage)
    # a baseline JPEG has a scan a component: 4 at most, and decodes
    assert isinstance(decode_image(_jpeg(_photo()), max_pixels=10**8), DecodedImage)
    # scans are counted up to the image's end: a phone's motion photo appends an MP4
    # (~20 MB, FF DA about every 64 KiB) after it, and was refused (helper-39)
    motion = _jpeg(_photo()) + b"\x00\x00\x00\x18ftypmp42" + b"\xff\xda\x12" * 400
    assert isinstance(decode_image(motion, max_pixels=10**8), DecodedImage)


@pytest.mark.parametrize("mode", ["P", "1"])
def test_a_large_palette_or_1_bit_image_is_reduced_like_any_other(mode):
    """Regression (helper-31): palette and 1-bit images went on at full size (reduce()
    has no kernel for them): a 7000 x 7000 one of 32 KB became a 147 MB working image.
    Now converted, then reduced: the working image is small, and the hashes are those
    of the same pixels given as RGB (or greyscale)."""
    photo = _photo(1200)
    image = photo.quantize(64) if mode == "P" else photo.convert("1")
    plain = image.convert("RGB" if mode == "P" else "L")
    datas = []
    for im in (image, plain):
        buf = io.BytesIO()
        im.save(buf, "PNG")
        datas.append(buf.getvalue())
    small, same = (_decode(d, working_size=256) for d in datas)
    assert small.working.size == same.working.size == (300, 300)
    assert (small.phash, small.phash_mirror) == (same.phash, same.phash_mirror)
    assert small.signature == same.signature


@pytest.mark.parametrize("hash_mode", ["fast", "exact"])
def test_16_bit_greyscale_images_are_hashed_scaled_not_clipped(hash_mode):
    """Regression (helper-31): pHash read a 16-bit greyscale image through Pillow's
    conversion to 8 bits, which clips at 255: every such image was white, with the
    blank image's hash (8000000000000000), one identical-hash group of all of them, and
    never near its 8-bit copy."""
    grey = np.asarray(_photo(300).convert("L"), dtype=np.uint16)
    hashes = []
    for arr in (grey * 257, (255 - grey) * 257, grey):
        buf = io.BytesIO()
        Image.fromarray(arr.astype(np.uint16 if arr is not grey else np.uint8)).save(buf, "PNG")
        hashes.append(_decode(buf.getvalue(), hash_mode=hash_mode).phash)
    deep, inverted, eight = hashes
    blank = _decode(_png_of(np.full((300, 300), 65535, np.uint16)), hash_mode=hash_mode).phash
    assert len({deep, inverted, blank}) == 3
    assert hashing.hamming(deep, eight) <= 2  # its 8-bit copy


def _png_of(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "name"),
    [  # were "unrecognised image format" when named .jpg or .png (helper-31)
        (b"II+\x00\x08\x00\x00\x00" + bytes(64), "BigTIFF"),
        (b"P6\n2 2\n255\n" + bytes(12), "Netpbm"),
        (b"P5 2 2 255\n" + bytes(4), "Netpbm"),
        (b"\x0a\x05\x01\x08" + bytes(124), "PCX"),
        # mtime=0: gzip stamps the time, and test ids differing between xdist workers
        # that collect in different seconds stop the run ("different tests collected")
        (
            __import__("gzip").compress(b"<svg xmlns='http://www.w3.org/2000/svg'/>", mtime=0),
            "gzip",
        ),
        (b"<!-- drawn by hand -->\n<svg xmlns='http://www.w3.org/2000/svg'/>", "SVG"),
        (b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN">\n<svg/>', "SVG"),
        (bytes(40) + b"TRUEVISION-XFILE.\x00", "TGA"),
    ],
)
def test_more_recognised_formats_are_named(data, name):
    result = decode_image(data, max_pixels=10**8)
    assert isinstance(result, DecodeFailure)
    assert result.reason == "unsupported_format" and name in result.detail


@pytest.mark.parametrize("size", [(2, 600_000), (600_000, 3)])
def test_an_extremely_long_image_decodes_alike_in_both_kernel_paths(size):
    """Regression (helper-31): a 1 x 49,000,000 PNG (under max_pixels) ran out of memory
    in Pillow's resize for pHash (numpy references: error/too_many_pixels) but took 10 s
    and 2.7 GB in the compiled kernels (kept, then filtered): one sample, two outcomes.
    The long side is now reduced too, to under 32 times the short one (or the working
    size), and both paths give the same bits."""
    from mitigate import kernels

    long_side = max(size)
    ramp = (np.arange(long_side) * 255 // long_side).astype(np.uint8)
    arr = np.tile(ramp, (min(size), 1))
    image = Image.fromarray(arr if size[0] > size[1] else arr.T.copy(), "L")
    assert image.size == size
    buf = io.BytesIO()
    image.save(buf, "PNG")
    results = []
    for compiled in (False, True):
        kernels.set_compiled(compiled)
        try:
            results.append(_decode(buf.getvalue(), working_size=256))
        finally:
            kernels.set_compiled(True)
    slow, fast = results
    assert (slow.width, slow.height) == (fast.width, fast.height) == size
    assert (slow.phash, slow.phash_mirror, slow.signature) == (
        fast.phash,
        fast.phash_mirror,
        fast.signature,
    )
    assert max(slow.working.size) <= 2 * 16 * 256 and slow.phash != 0x8000000000000000


def test_an_image_pillow_refuses_for_its_size_is_named_against_max_pixels():
    """Pillow refuses at open an image of over twice its own limit (178,956,970 pixels),
    and the detail named that limit, not the run's max_pixels (helper-31)."""
    png = io.BytesIO()
    Image.new("1", (1, 1)).save(png, "PNG")
    data = bytearray(png.getvalue())
    data[16:24] = struct.pack(">II", 30000, 30000)  # IHDR: 900,000,000 pixels
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    result = decode_image(bytes(data), max_pixels=50_000_000)
    assert isinstance(result, DecodeFailure) and result.reason == "too_many_pixels"
    assert result.detail == "declares 900,000,000 pixels > max_pixels 50,000,000"


def test_a_jpeg_with_a_multi_picture_index_is_a_jpeg():
    """Pillow names it MPO (phones' portrait shots, 3D cameras): held in a table it was
    written to its shard as KEY.mpo, which WebDataset loaders do not read as an image,
    and it missed the reduced-scale decode (helper-38)."""
    from mitigate.records import SampleRecord
    from mitigate.stages import _signals

    first = Image.new("RGB", (640, 480), (200, 10, 10))
    buf = io.BytesIO()
    first.save(buf, "MPO", save_all=True, append_images=[Image.new("RGB", (640, 480))], quality=90)
    got = decode_image(buf.getvalue(), max_pixels=10**7, working_size=64)
    assert isinstance(got, DecodedImage) and got.format == "MPO" and got.quality == 90
    assert max(got.working.size) < 640  # decoded at a reduced scale, as a JPEG is
    record = SampleRecord(key="k", source="t.parquet", index=0, image_column="jpg")
    assert _signals(record, got).record.image_ext == "jpg"
