"""Thumbnails (report, select's and train's contact sheets) show the image the run judged.

The run composites alpha on white, scales 16-bit greyscale to 8 bits and turns a photo
by its EXIF orientation (mitigate/decode.py) before any filter sees it; the thumbnails a
person labels from converted the stored pixels straight to RGB: the bundled Cherry
stamp (an RGBA PNG whose transparent pixels are stored black) was a dark shape on black,
a 16-bit greyscale PNG was white, and a phone photo lay on its side (helper-48)."""

from __future__ import annotations

import base64
import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from mitigate import review
from mitigate.decode import decode_image

REPO = Path(__file__).resolve().parents[1]


def _thumb(data: bytes, size: int = 160) -> Image.Image:
    uri = review.thumbnail(data, size)
    assert uri.startswith("data:image/jpeg;base64,")
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).convert("RGB")


def _member(shard: str, name: str) -> bytes:
    with tarfile.open(REPO / "data" / "sample" / shard) as tf:
        return tf.extractfile(name).read()


def test_a_transparent_background_is_white_as_the_run_saw_it():
    data = _member("shard-00000.tar", "000000017.png")  # RGBA, transparent pixels (0,0,0,0)
    stored = Image.open(io.BytesIO(data))
    assert stored.mode == "RGBA" and stored.getpixel((0, 0)) == (0, 0, 0, 0)
    thumb = np.asarray(_thumb(data), dtype=np.int64)
    corners = thumb[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners >= 245).all(), corners  # white, not the stored black
    # the working image the filters scored has the same background
    working = np.asarray(
        decode_image(data, max_pixels=50_000_000, working_size=128).working, dtype=np.int64
    )
    assert (working[0, 0] >= 245).all()


def test_a_16_bit_greyscale_png_is_shown_scaled_not_white():
    grey = Image.open(io.BytesIO(_member("shard-00001.tar", "000010003.png")))
    assert grey.mode == "L"
    deep = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)  # the same photo, 16 bit
    buf = io.BytesIO()
    deep.save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I;16")
    shown = np.asarray(_thumb(buf.getvalue()).convert("L"), dtype=np.int64)
    buf8 = io.BytesIO()
    grey.save(buf8, "PNG")
    expected = np.asarray(_thumb(buf8.getvalue()).convert("L"), dtype=np.int64)
    assert shown.shape == expected.shape
    assert shown.std() > 20  # a photo, not a white page
    assert np.abs(shown - expected).mean() < 3


def test_a_photo_is_turned_by_its_exif_orientation():
    photo = Image.open(REPO / "data" / "near_eval" / "animals-donkey.jpg")
    w, h = photo.size
    assert w > h
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: portrait
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=95, exif=exif)
    decoded = decode_image(buf.getvalue(), max_pixels=50_000_000, working_size=128)
    assert (decoded.width, decoded.height) == (h, w)  # the run's size, as displayed
    tw, th = _thumb(buf.getvalue()).size
    assert th > tw


def test_a_decoder_error_of_any_type_leaves_the_card_without_a_picture(monkeypatch):
    """Pillow's plugins raise more than OSError (struct.error, SyntaxError on damaged
    blocks); a thumbnail that raised ended the report, select or train."""
    import struct

    def damaged(image, size):
        raise struct.error("unpack requires a buffer of 4 bytes")

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buf, "PNG")
    assert review.thumbnail(buf.getvalue()).startswith("data:image/jpeg;base64,")
    monkeypatch.setattr(review, "viewable_rgb", damaged)
    assert review.thumbnail(buf.getvalue()) == ""
