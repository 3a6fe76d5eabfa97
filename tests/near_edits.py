"""Planted edits and look-alike variants for near-duplicate evaluation.

Shared by the tests (on the bundled images in ``data/near_eval/``) and by
``benchmarks/eval_near_verify.py`` (on the full Tux Paint stamp set and the
scikit-image / scikit-learn photos). Every function is deterministic.

* :data:`EDITS` -- copies of one image that a training set should hold once
  (redundant copies): JPEG quality 40, resize to half, brightness +-15%, a watermark
  band with text over the bottom 10% of the height, a 3% border crop, a horizontal flip.
* :data:`VARIANTS` -- different images that look alike: a letter or a digit printed on
  the image (two variants differ only in that character), and a recoloured copy (hue
  turned by a third of the circle, like the same flag in red and in green).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

Edit = Callable[[Image.Image], Image.Image]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def watermark(image: Image.Image, fraction: float = 0.10) -> Image.Image:
    """A half-opaque white band with dark text over the bottom ``fraction`` of the height."""
    out = image.convert("RGB").copy()
    h = max(1, round(out.height * fraction))
    band = Image.new("RGB", (out.width, h), (255, 255, 255))
    region = out.crop((0, out.height - h, out.width, out.height))
    out.paste(Image.blend(region, band, 0.6), (0, out.height - h))
    draw = ImageDraw.Draw(out)
    draw.text(
        (h // 3, out.height - h),
        "(c) stockphoto.example",
        fill=(40, 40, 40),
        font=_font(max(6, int(h * 0.8))),
    )
    return out


def crop_border(image: Image.Image, fraction: float = 0.03) -> Image.Image:
    dx, dy = round(image.width * fraction), round(image.height * fraction)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def brightness(factor: float) -> Edit:
    return lambda im: ImageEnhance.Brightness(im.convert("RGB")).enhance(factor)


#: name -> (edit, JPEG quality the copy is saved with)
EDITS: dict[str, tuple[Edit, int]] = {
    "jpeg_q40": (lambda im: im, 40),
    "resize_0.5": (lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2))), 90),
    "bright+15": (brightness(1.15), 90),
    "bright-15": (brightness(0.85), 90),
    "watermark_10": (watermark, 90),
    "crop_3": (crop_border, 90),
    "flip": (ImageOps.mirror, 90),
}


def print_char(image: Image.Image, char: str) -> Image.Image:
    """``char`` printed in a coloured box near the centre, about 25% of the shorter side."""
    out = image.convert("RGB").copy()
    s = max(8, min(out.size) * 25 // 100)
    x, y = out.width // 2 - s // 2 + out.width // 10, out.height // 2 - s // 2
    draw = ImageDraw.Draw(out)
    draw.rectangle((x, y, x + s, y + s), fill=(250, 220, 40))
    draw.text((x + s // 2, y + s // 2), char, fill=(20, 20, 120), font=_font(s), anchor="mm")
    return out


def recolour(image: Image.Image, turn: float = 1 / 3) -> Image.Image:
    """Hue turned by ``turn`` of the circle (saturation and value unchanged)."""
    hsv = np.asarray(image.convert("RGB").convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int64) + round(256 * turn)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


#: name -> edit; each result is a *different* image from the source and from each other
VARIANTS: dict[str, Edit] = {
    "letter_A": lambda im: print_char(im, "A"),
    "letter_B": lambda im: print_char(im, "B"),
    "digit_2": lambda im: print_char(im, "2"),
    "digit_5": lambda im: print_char(im, "5"),
    "recolour": recolour,
}
