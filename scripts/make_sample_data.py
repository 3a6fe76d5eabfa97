#!/usr/bin/env python3
"""Build the bundled sample dataset in ``data/sample/``.

The dataset is a handful of real, openly licensed photos written as WebDataset tar
shards the way img2dataset writes them (``KEY.jpg`` / ``KEY.txt`` / ``KEY.json``,
members of one sample consecutive), with planted problem cases whose expected outcome
is listed in ``expected.csv``. It is small enough to live in the repository and is the
input of the end-to-end tests and the quick-start.

Image sources (all installed locally, nothing is downloaded):

* photos shipped in the scikit-image wheel (``skimage/data/``), CC0 / public domain;
* ``china.jpg`` and ``flower.jpg`` from the scikit-learn wheel, CC BY 2.0;
* photo cut-outs of Debian's ``tuxpaint-stamps-default`` package, GPL-2.0-or-later,
  looked up in ``/usr/share/tuxpaint/stamps`` or ``/tmp/tux/usr/share/tuxpaint/stamps``
  (or ``--stamps``).

The output is deterministic: same bytes on every run in the same environment (fixed tar
metadata, fixed encoder settings, fixed order). Encoders of other Pillow / libjpeg /
libwebp builds may produce different bytes.

Run ``python scripts/make_sample_data.py`` from the repository root.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import io
import json
import logging
import re
import tarfile
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

LOG = logging.getLogger("make_sample_data")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "data" / "sample"
DEFAULT_TERMS = REPO / "configs" / "terms" / "violence.txt"

STAMP_DIRS = (
    Path("/usr/share/tuxpaint/stamps"),
    Path("/tmp/tux/usr/share/tuxpaint/stamps"),
)
STAMPS_HELP = (
    "Tux Paint stamps not found (looked in {where}). Install them with "
    "`sudo apt-get install tuxpaint-stamps-default`, or without root: "
    "`cd /tmp && apt-get download tuxpaint-stamps-default && "
    "dpkg-deb -x tuxpaint-stamps-default_*.deb /tmp/tux`, or pass --stamps DIR."
)

# Tar metadata: the same for every member, so the shards are byte-for-byte reproducible.
# User, group and mode are those webdataset's TarWriter writes.
TAR_MTIME = 1_700_000_000  # 2023-11-14T22:13:20Z
TAR_USER = "bigdata"
TAR_MODE = 0o444

MAX_SIDE = 640
JPEG_QUALITY = 90
SHARD_NAME = "shard-{:05d}.tar"
SIZE_BUDGET = 4 * 1024 * 1024
# The GPL-2 text must travel with the GPL-licensed stamps; copied from Debian's copy
# when the output folder does not have it yet.
GPL_SOURCES = (Path("/usr/share/common-licenses/GPL-2"),)
GPL_TARGET = Path("LICENSES") / "GPL-2.0.txt"

# Thresholds the planted cases are built against (the pipeline's defaults).
MIN_SIDE = 64  # image_quality.min_side
MAX_ASPECT = 4.0  # image_quality.max_aspect_ratio
BOMB_PIXELS = 100_000_000  # above every sensible decode.max_pixels (default 50 MP)

KEPT, FILTERED, DUPLICATE, ERROR = "kept", "filtered", "duplicate", "error"

# Caption normalisation, the same as mitigate.text.normalize_text / words.
_INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e"),
    None,
)
_WORD = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*")


# --------------------------------------------------------------------------------------
# sources


@dataclass(frozen=True)
class Source:
    """One source image and what its provider states about it."""

    package: str  # distribution the file comes from, with version
    path: str  # path of the file inside that distribution
    file: Path  # where it is on this machine
    licence: str
    author: str  # copyright holder / attribution, as stated by the source
    origin: str = ""  # upstream origin, as stated by the source


# name -> (licence, author as stated, origin as stated). Wording from the docstrings of
# skimage/data/_fetchers.py (the scikit-image data functions).
SKIMAGE_PHOTOS: dict[str, tuple[str, str, str]] = {
    "astronaut.png": (
        "Public domain",
        'NASA; photograph of astronaut Eileen Collins. "No known copyright restrictions, '
        'released into the public domain."',
        "NASA Great Images database, https://flic.kr/p/r9qvLn",
    ),
    "camera.png": (
        "CC0-1.0",
        'Lav Varshney. "No copyright restrictions. CC0 by the photographer."',
        "https://github.com/scikit-image/scikit-image/issues/3927",
    ),
    "coffee.png": (
        "CC0-1.0",
        'Rachel Michetti, courtesy of Pikolo Espresso Bar. "No copyright restrictions. '
        'CC0 by the photographer."',
        "",
    ),
    "chelsea.png": (
        "CC0-1.0",
        'Stefan van der Walt. "No copyright restrictions. CC0 by the photographer."',
        "",
    ),
    "rocket.jpg": (
        "Public domain",
        'SpaceX, launch of DSCOVR on Falcon 9; "released in the public domain".',
        "https://www.flickr.com/photos/spacexphotos/16511594820/",
    ),
    "hubble_deep_field.jpg": (
        "Public domain",
        'NASA (Hubble eXtreme Deep Field); "may be freely used in the public domain".',
        "http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/",
    ),
    "retina.jpg": (
        "CC0-1.0",
        'Mikael Häggström; "Creative Commons CC0 1.0 Universal Public Domain Dedication".',
        "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg",
    ),
    "clock_motion.png": (
        "Public domain",
        'Stefan van der Walt. "Released into the public domain by the photographer."',
        "",
    ),
    "brick.png": (
        "CC0-1.0",
        "CC0Textures (Bricks25), perspective-transformed and cropped by scikit-image.",
        "https://cc0textures.com/view.php?tex=Bricks25",
    ),
    "gravel.png": (
        "CC0-1.0",
        "CC0Textures (Gravel04), rescaled and cropped by scikit-image.",
        "https://cc0textures.com/view.php?tex=Gravel04",
    ),
}

# Wording from sklearn/datasets/images/README.txt.
SKLEARN_PHOTOS: dict[str, tuple[str, str, str]] = {
    "china.jpg": (
        "CC-BY-2.0 (https://creativecommons.org/licenses/by/2.0/)",
        '"Some rights reserved by danielbuechele"; retrieved 21 August 2011 by Robert Layton.',
        "https://www.flickr.com/photos/danielbuechele/6061409035/",
    ),
    "flower.jpg": (
        "CC-BY-2.0 (https://creativecommons.org/licenses/by/2.0/)",
        'README states "Some rights reserved by danielbuechele", but its links point to '
        "Flickr user vultilion (https://www.flickr.com/photos/vultilion/); retrieved "
        "21 August 2011 by Robert Layton.",
        "https://www.flickr.com/photos/vultilion/6056698931/",
    ),
}

TUX_LICENCE = "GPL-2.0-or-later"
TUX_AUTHOR = "Copyright: 2002-2022 by Bill Kendrick <bill@newbreedsoftware.com>"
TUX_ORIGIN = "Tux Paint stamps, http://sourceforge.net/projects/tuxpaint"


def _package_dir(module: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"Python package {module!r} is not installed (pip install it).")
    return Path(next(iter(spec.submodule_search_locations)))


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def find_stamps(explicit: Path | None) -> Path:
    """The Tux Paint stamps folder, or exit with a message saying how to get it."""
    candidates = (explicit,) if explicit is not None else STAMP_DIRS
    for cand in candidates:
        if cand is not None and (cand / "animals").is_dir():
            return cand
    raise SystemExit(STAMPS_HELP.format(where=", ".join(str(c) for c in candidates)))


def _tux_version(stamps: Path) -> str:
    """Debian version of tuxpaint-stamps-default, read from its changelog if present."""
    changelog = stamps.parent.parent / "doc" / "tuxpaint-stamps-default" / "changelog.Debian.gz"
    try:
        with gzip.open(changelog, "rt", encoding="utf-8") as fh:
            first = fh.readline()
    except OSError:
        return "unknown version"
    match = re.search(r"\(([^)]+)\)", first)
    return match.group(1) if match else "unknown version"


class Sources:
    """Resolves source images by short name and remembers their provenance."""

    def __init__(self, stamps: Path) -> None:
        self.stamps = stamps
        self.skimage = _package_dir("skimage") / "data"
        self.sklearn = _package_dir("sklearn") / "datasets" / "images"
        self.skimage_pkg = f"scikit-image {_dist_version('scikit-image')} (PyPI wheel)"
        self.sklearn_pkg = f"scikit-learn {_dist_version('scikit-learn')} (PyPI wheel)"
        self.tux_pkg = f"Debian tuxpaint-stamps-default {_tux_version(stamps)}"

    def skimage_photo(self, name: str) -> Source:
        licence, author, origin = SKIMAGE_PHOTOS[name]
        return Source(
            self.skimage_pkg, f"skimage/data/{name}", self.skimage / name, licence, author, origin
        )

    def sklearn_photo(self, name: str) -> Source:
        if not (self.sklearn / name).is_file():
            raise SystemExit(f"{self.sklearn / name} missing: pip install scikit-learn")
        licence, author, origin = SKLEARN_PHOTOS[name]
        return Source(
            self.sklearn_pkg,
            f"sklearn/datasets/images/{name}",
            self.sklearn / name,
            licence,
            author,
            origin,
        )

    def stamp(self, rel: str) -> Source:
        """A stamp by path relative to the stamps folder, without extension."""
        file = self.stamps / f"{rel}.png"
        if not file.is_file():
            raise SystemExit(f"stamp {file} missing; is tuxpaint-stamps-default complete?")
        return Source(
            self.tux_pkg,
            f"usr/share/tuxpaint/stamps/{rel}.png",
            file,
            TUX_LICENCE,
            TUX_AUTHOR,
            TUX_ORIGIN,
        )


def stamp_caption(src: Source) -> str:
    """First line of the stamp's ``.txt`` file: its English description."""
    txt = src.file.with_suffix(".txt")
    lines = txt.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()
    if not lines or not lines[0].strip():
        raise SystemExit(f"{txt} has no English caption on its first line")
    return lines[0].strip()


# --------------------------------------------------------------------------------------
# images


def flatten(im: Image.Image, keep_alpha: bool = False) -> Image.Image:
    """RGB (or L) version of ``im``; transparency is composited onto white unless kept."""
    has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        if keep_alpha:
            return rgba
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode in ("L", "RGB"):
        return im
    return im.convert("RGB")


def load(src: Source, keep_alpha: bool = False, max_side: int = MAX_SIDE) -> Image.Image:
    """Open a source image, flatten it and shrink it so its longer side <= ``max_side``."""
    with Image.open(src.file) as raw:
        im = flatten(raw, keep_alpha)
        im.load()
    return shrink(im, max_side)


def shrink(im: Image.Image, max_side: int) -> Image.Image:
    w, h = im.size
    scale = max_side / max(w, h)
    if scale >= 1:
        return im
    return im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


def encode(im: Image.Image, fmt: str, quality: int = JPEG_QUALITY, exif: bytes = b"") -> bytes:
    """Encode with fixed settings (no timestamps, no optimisation passes)."""
    buf = io.BytesIO()
    if fmt == "jpg":
        kwargs: dict[str, object] = {"quality": quality}
        if exif:
            kwargs["exif"] = exif
        im.save(buf, "JPEG", **kwargs)
    elif fmt == "png":
        im.save(buf, "PNG", compress_level=9)
    elif fmt == "webp":
        im.save(buf, "WEBP", quality=quality, method=6)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    """Fully decode image bytes (raises on broken data), EXIF orientation applied."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = Image.open(io.BytesIO(data))
        im.load()
    return ImageOps.exif_transpose(im)


# --------------------------------------------------------------------------------------
# samples


@dataclass
class Sample:
    """One sample occurrence: its tar members and what the pipeline should make of it."""

    shard: int
    key: str
    members: dict[str, bytes]  # extension -> bytes; written in sorted order, like TarWriter
    state: str
    reason: str = ""
    note: str = ""
    related_key: str = ""
    sources: tuple[Source, ...] = ()
    caption: str | None = None  # the caption as text (None when absent or not UTF-8)
    image_ext: str | None = None
    cut: bool = False  # the shard is cut off inside this sample's image member


def meta(
    key: str,
    caption: str | None,
    size: tuple[int, int] | None,
    source: str,
    licence: str,
    original: tuple[int, int] | None = None,
) -> bytes:
    """The ``KEY.json`` sidecar, shaped like img2dataset's (indent 4)."""
    original = original or size
    doc = {
        "key": key,
        "status": "success",
        "caption": caption,
        "width": size[0] if size else None,
        "height": size[1] if size else None,
        "original_width": original[0] if original else None,
        "original_height": original[1] if original else None,
        "source": source,
        "license": licence,
    }
    return json.dumps(doc, indent=4, ensure_ascii=False).encode("utf-8")


def _source_label(src: Source) -> str:
    return f"{src.package.split(' (')[0]}: {src.path}"


@dataclass
class Builder:
    """Accumulates samples shard by shard; keys follow img2dataset (5 shard + 4 index digits)."""

    srcs: Sources
    samples: list[Sample] = field(default_factory=list)
    _counter: dict[int, int] = field(default_factory=dict)
    _images: dict[str, tuple[bytes, str, Source, str]] = field(default_factory=dict)

    def _next_key(self, shard: int) -> str:
        idx = self._counter.get(shard, 0)
        self._counter[shard] = idx + 1
        return f"{shard:05d}{idx:04d}"

    def _add(
        self,
        shard: int,
        image: bytes | None,
        ext: str,
        caption: str | bytes | None,
        size: tuple[int, int] | None,
        src: Source | None,
        state: str,
        reason: str = "",
        note: str = "",
        related_key: str = "",
        key: str | None = None,
        json_bytes: bytes | None = None,
        original: tuple[int, int] | None = None,
    ) -> Sample:
        own_key = self._next_key(shard)
        key = key or own_key
        text = caption if isinstance(caption, str) else None
        members: dict[str, bytes] = {}
        if image is not None:
            members[ext] = image
        if caption is not None:
            members["txt"] = caption.encode("utf-8") if isinstance(caption, str) else caption
        label = _source_label(src) if src else "synthetic (generated by make_sample_data.py)"
        licence = src.licence if src else "synthetic (repository licence)"
        members["json"] = json_bytes or meta(key, text, size, label, licence, original)
        sample = Sample(
            shard=shard,
            key=key,
            members=members,
            state=state,
            reason=reason,
            note=note,
            related_key=related_key,
            sources=(src,) if src else (),
            caption=text,
            image_ext=ext if image is not None else None,
        )
        self.samples.append(sample)
        if image is not None and src is not None and state == KEPT and not related_key:
            self._images[key] = (image, ext, src, text or "")
        return sample

    # --- good samples ----------------------------------------------------------------

    def good(
        self,
        shard: int,
        src: Source,
        caption: str | None = None,
        ext: str = "jpg",
        keep_alpha: bool = False,
        note: str = "",
    ) -> str:
        """A clean photo; ``caption`` defaults to the stamp's own description."""
        im = load(src, keep_alpha=keep_alpha)
        caption = caption if caption is not None else stamp_caption(src)
        data = encode(im, ext)
        return self._add(shard, data, ext, caption, im.size, src, KEPT, note=note).key

    def exif_rotated(self, shard: int, src: Source, caption: str) -> str:
        """JPEG whose pixels are stored rotated, with EXIF Orientation 6 to undo it."""
        upright = load(src)
        stored = upright.transpose(Image.Transpose.ROTATE_90)  # 90 degrees anticlockwise
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
        data = encode(stored, "jpg", exif=exif.tobytes())
        note = (
            f"EXIF Orientation 6: stored {stored.width}x{stored.height}, "
            f"displayed {upright.width}x{upright.height}"
        )
        return self._add(shard, data, "jpg", caption, upright.size, src, KEPT, note=note).key

    # --- duplicates --------------------------------------------------------------------

    def exact_duplicate(self, shard: int, of_key: str, caption: str) -> str:
        data, ext, src, _ = self._images[of_key]
        size = decode(data).size
        return self._add(
            shard,
            data,
            ext,
            caption,
            size,
            src,
            DUPLICATE,
            "exact_duplicate",
            f"same image bytes as {of_key}; the smaller key is kept",
            of_key,
        ).key

    def near_duplicate(self, shard: int, of_key: str, kind: str, caption: str) -> str:
        """A transformed copy of an earlier sample (kept: only a later dedup stage drops it)."""
        data, _ext, src, _ = self._images[of_key]
        im = decode(data)
        if kind == "jpeg_q60":
            out, how = encode(im, "jpg", quality=60), "re-encoded as JPEG quality 60"
        elif kind == "resized":
            small = im.resize(
                (round(im.width * 0.7), round(im.height * 0.7)), Image.Resampling.LANCZOS
            )
            out, how = encode(small, "jpg"), "resized to 0.7x"
            im = small
        elif kind == "mirrored":
            im = ImageOps.mirror(im)
            out, how = encode(im, "jpg"), "mirrored horizontally"
        else:
            raise ValueError(kind)
        note = f"near duplicate of {of_key} ({how})"
        return self._add(
            shard,
            out,
            "jpg",
            caption,
            im.size,
            src,
            DUPLICATE,
            "near_duplicate",
            note=note,
            related_key=of_key,
        ).key

    # --- errors ------------------------------------------------------------------------

    def truncated_jpeg(self, shard: int, src: Source) -> str:
        im = load(src)
        full = encode(im, "jpg")
        cut = full[: len(full) * 6 // 10]
        note = f"JPEG cut to the first 60% of its bytes ({len(cut)} of {len(full)})"
        return self._add(
            shard, cut, "jpg", stamp_caption(src), im.size, src, ERROR, "decode_error", note
        ).key

    def not_an_image(self, shard: int, caption: str) -> str:
        html = (
            b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
            b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p>"
            b"</body></html>\n"
        )
        return self._add(
            shard,
            html,
            "jpg",
            caption,
            None,
            None,
            ERROR,
            "decode_error",
            "HTML error page saved with a .jpg extension",
        ).key

    def bomb(self, shard: int, caption: str) -> str:
        side = 12_000
        im = Image.new("1", (side, side), 0)
        data = encode(im, "png")
        note = f"decompression bomb: {len(data)}-byte PNG declaring {side}x{side} px (144 MP)"
        return self._add(
            shard, data, "png", caption, (side, side), None, ERROR, "too_many_pixels", note
        ).key

    def missing_caption(self, shard: int, src: Source) -> str:
        im = load(src)
        return self._add(
            shard,
            encode(im, "jpg"),
            "jpg",
            None,
            im.size,
            src,
            ERROR,
            "missing_caption",
            "no .txt member",
        ).key

    def invalid_caption(self, shard: int, src: Source, caption: str) -> str:
        im = load(src)
        raw = caption.encode("cp1252")
        note = "caption .txt is cp1252, not UTF-8"
        return self._add(
            shard,
            encode(im, "jpg"),
            "jpg",
            raw,
            im.size,
            src,
            ERROR,
            "invalid_caption_encoding",
            note,
        ).key

    def invalid_json(self, shard: int, src: Source) -> str:
        im = load(src)
        caption = stamp_caption(src)
        key = f"{shard:05d}{self._counter.get(shard, 0):04d}"
        good = meta(key, caption, im.size, _source_label(src), src.licence).decode()
        broken = good[: good.index('"width"')].rstrip().encode()  # cut after a comma
        return self._add(
            shard,
            encode(im, "jpg"),
            "jpg",
            caption,
            im.size,
            src,
            ERROR,
            "invalid_json",
            "json sidecar cut off mid-object",
            json_bytes=broken,
        ).key

    def duplicate_key(self, shard: int, key: str, src: Source) -> str:
        im = load(src)
        note = f"key {key} already used in an earlier shard (different image)"
        return self._add(
            shard,
            encode(im, "jpg"),
            "jpg",
            stamp_caption(src),
            im.size,
            src,
            ERROR,
            "duplicate_key",
            note,
            key,
            key=key,
        ).key

    def cut_off(self, shard: int, src: Source) -> str:
        im = load(src)
        sample = self._add(
            shard,
            encode(im, "jpg"),
            "jpg",
            stamp_caption(src),
            im.size,
            src,
            ERROR,
            "truncated_shard",
            "the shard ends in the middle of this sample's .jpg data",
        )
        sample.cut = True
        return sample.key

    # --- filtered ----------------------------------------------------------------------

    def tiny(self, shard: int, src: Source, side: int = 24) -> str:
        im = load(src).resize((side, side), Image.Resampling.LANCZOS)
        return self._add(
            shard,
            encode(im, "jpg"),
            "jpg",
            stamp_caption(src),
            im.size,
            src,
            FILTERED,
            "image_too_small",
            f"{side}x{side} px",
        ).key

    def strip(self, shard: int, src: Source, caption: str, size: tuple[int, int]) -> str:
        with Image.open(src.file) as raw:
            im = flatten(raw).crop((0, 400, size[0], 400 + size[1]))
        note = f"{size[0]}x{size[1]} px crop, aspect {size[0] / size[1]:g}"
        return self._add(
            shard,
            encode(im, "jpg"),
            "jpg",
            caption,
            im.size,
            src,
            FILTERED,
            "aspect_ratio_out_of_range",
            note,
        ).key

    def term(self, shard: int, src: Source, caption: str, note: str) -> str:
        im = load(src)
        return self._add(
            shard,
            encode(im, "jpg"),
            "jpg",
            caption,
            im.size,
            src,
            FILTERED,
            "caption_term_match",
            note,
        ).key


def build(srcs: Sources) -> list[Sample]:
    """The whole sample set, in shard order."""
    b = Builder(srcs)
    sk, sl, st = srcs.skimage_photo, srcs.sklearn_photo, srcs.stamp

    # shard 0 ------------------------------------------------------------------------
    astronaut = b.good(
        0,
        sk("astronaut.png"),
        "Portrait of astronaut Eileen Collins in an orange flight suit beside an American "
        "flag and a space shuttle model",
    )
    b.good(0, st("animals/birds/crowned_crane"))
    b.good(0, sk("coffee.png"), "A red cup of coffee on a saucer with a spoon, on a wooden table")
    b.good(
        0,
        sk("camera.png"),
        "Black and white photo of a man looking through a camera on a tripod in a field",
        note="grayscale JPEG",
    )
    b.good(0, st("animals/mammals/aquatic/otter"))
    b.truncated_jpeg(0, st("vehicles/flight/balloon360"))
    b.good(0, sk("chelsea.png"), "Close-up of a tabby cat with green eyes", ext="webp", note="WebP")
    kiwi = b.good(0, st("food/fruit/kiwi"))
    fowl = b.good(0, st("animals/birds/helmeted_guineafowl"))
    b.tiny(0, st("food/fruit/apple_fuji"))
    b.exif_rotated(0, sk("rocket.jpg"), "A Falcon 9 rocket on the launch pad at night")
    b.good(0, st("animals/mammals/bears/european-bear"))
    b.not_an_image(0, "A red fire hydrant on a city sidewalk")
    china = b.good(0, sl("china.jpg"), "A traditional Chinese tower on a wooded hill above a lake")
    squirrel = b.good(0, st("animals/mammals/rodents/squirrel"))
    b.term(
        0,
        st("animals/mammals/cats/lion-2"),
        "Nature documentary still of a lion, may contain Graphic Violence",
        'matches "graphic violence" (different case)',
    )
    b.good(
        0, sk("hubble_deep_field.jpg"), "Hubble deep field view of thousands of distant galaxies"
    )
    b.good(
        0,
        st("food/fruit/Cherry_Stella"),
        ext="png",
        keep_alpha=True,
        note="RGBA PNG (transparent background kept)",
    )
    b.missing_caption(0, st("seasonal/christmas/Mince_Pie"))
    b.good(0, st("animals/mammals/bovines/indian_blackbuck"))
    b.good(0, sk("retina.jpg"), "Fundus photograph of a healthy human retina")
    b.good(0, st("animals/mammals/rodents/capybara"))
    b.bomb(0, "A plain black square")
    b.good(0, st("food/fruit/Apricot_whole"))

    # shard 1 ------------------------------------------------------------------------
    b.good(1, sl("flower.jpg"), "An orange dahlia flower against dark green leaves")
    b.near_duplicate(1, astronaut, "jpeg_q60", "Astronaut Eileen Collins, official NASA portrait")
    b.good(1, st("animals/mammals/pig_golden"))
    b.good(
        1,
        sk("clock_motion.png"),
        "A wall clock blurred by camera motion",
        ext="png",
        note="grayscale PNG",
    )
    b.invalid_caption(
        1, st("seasonal/christmas/Christmas_pudding"), "A Christmas pudding, flambé with brandy"
    )
    b.good(1, st("food/fruit/Strawberry2"))
    b.exact_duplicate(1, kiwi, "Kiwi fruit, whole")
    b.good(
        1,
        sk("brick.png"),
        "Black and white photo of a brick wall seen at an angle",
        note="grayscale JPEG",
    )
    b.good(1, st("food/spices/ginger"))
    b.strip(
        1, sk("hubble_deep_field.jpg"), "A narrow strip of night sky full of galaxies", (800, 80)
    )
    b.near_duplicate(1, china, "resized", "Chinese tower above a lake, small version")
    b.good(1, st("household/Lightbulb"))
    b.invalid_json(1, st("seasonal/christmas/Roast_turkey"))
    b.good(1, st("household/tools/cementmixer"))
    b.near_duplicate(1, fowl, "mirrored", "A helmeted guinea fowl walking")
    b.good(1, sk("gravel.png"), "Close-up of grey gravel", note="grayscale JPEG")
    b.good(1, st("plants/flowers/anemone_red"))
    b.term(
        1,
        st("animals/mammals/cats/tiger_sumatran"),
        "Sumatran tiger after the hunt, \uff27\uff2f\uff32\uff25 warning",
        'matches "gore" only after NFKC + casefold (full-width "\uff27\uff2f\uff32\uff25")',
    )
    b.good(1, st("plants/flowers/daffodil"), ext="png", note="RGB PNG")
    b.duplicate_key(1, squirrel, st("vehicles/construction/dumper"))
    b.good(1, st("plants/mushrooms/cep-1"))

    # shard 2 (cut off inside its fourth sample) ---------------------------------------
    b.good(2, st("plants/trees/holm_oak"), note="before the cut of the truncated shard")
    b.good(2, st("plants/trees/liberia-palm"), note="before the cut of the truncated shard")
    b.good(2, st("vehicles/emergency/firetruck"), note="before the cut of the truncated shard")
    b.cut_off(2, st("vehicles/garbagetruck"))
    return b.samples


# --------------------------------------------------------------------------------------
# writing


def tar_bytes(samples: Iterable[Sample]) -> bytes:
    """A tar of the samples' members (sorted by extension within a sample)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for sample in samples:
            for ext in sorted(sample.members):
                data = sample.members[ext]
                info = tarfile.TarInfo(f"{sample.key}.{ext}")
                info.size = len(data)
                info.mtime = TAR_MTIME
                info.mode = TAR_MODE
                info.uid = info.gid = 0
                info.uname = info.gname = TAR_USER
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cut_point(tar: bytes, sample: Sample) -> int:
    """Offset in the middle of the data of ``sample``'s image member."""
    name = f"{sample.key}.{sample.image_ext}"
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:") as tf:
        for info in tf.getmembers():
            if info.name == name:
                return info.offset_data + info.size // 2
    raise RuntimeError(f"{name} not in shard")


def write_shards(samples: list[Sample], out: Path) -> list[Path]:
    paths = []
    for shard in sorted({s.shard for s in samples}):
        members = [s for s in samples if s.shard == shard]
        data = tar_bytes(members)
        cut = [s for s in members if s.cut]
        if cut:
            data = data[: cut_point(data, cut[0])]
        path = out / SHARD_NAME.format(shard)
        path.write_bytes(data)
        paths.append(path)
        LOG.info("wrote %s: %d samples, %d bytes", path.name, len(members), len(data))
    return paths


def write_expected(samples: list[Sample], path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["key", "shard", "state", "reason", "note", "related_key"])
        for s in samples:
            writer.writerow(
                [s.key, SHARD_NAME.format(s.shard), s.state, s.reason, s.note, s.related_key]
            )


def ensure_gpl_text(out: Path) -> None:
    """Put the GPL-2 text in ``out/LICENSES`` (kept if already there)."""
    target = out / GPL_TARGET
    if target.is_file():
        return
    for cand in GPL_SOURCES:
        if cand.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(cand.read_bytes())
            return
    LOG.warning(
        "%s is missing and no GPL-2 text was found (%s); add it by hand from "
        "https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt",
        target,
        ", ".join(map(str, GPL_SOURCES)),
    )


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_notice(samples: list[Sample], srcs: Sources, terms: Path, path: Path) -> None:
    by_source: dict[Source, list[str]] = {}
    synthetic: list[str] = []
    for s in samples:
        ref = f"`{s.key}` ({SHARD_NAME.format(s.shard)})"
        if not s.sources:
            synthetic.append(ref + f": {s.note}")
        for src in s.sources:
            by_source.setdefault(src, []).append(ref)
    lines = [
        "# Sample data: sources and licences",
        "",
        "Generated by `python scripts/make_sample_data.py` (do not edit by hand). It is",
        "deterministic: running the script again in the same environment rewrites",
        "byte-identical files. `expected.csv` lists the outcome the pipeline should reach",
        "for each sample occurrence (one row per occurrence, in shard order); the caption",
        f"terms used by the planted `caption_term_match` cases are in `{_rel(terms)}`.",
        "",
        "All images were converted by the script (transparent stamps composited on white,",
        f"longer side at most {MAX_SIDE} px, JPEG quality {JPEG_QUALITY}, a few PNG and one",
        "WebP); some planted cases transform them further (re-encoding, resizing,",
        "mirroring, rotation with an EXIF Orientation tag, cropping, truncation). Each",
        "sample's `KEY.json` also names its source file and licence.",
        "",
        "Packages the images were taken from:",
        "",
        f"* {srcs.skimage_pkg}: photos in `skimage/data/`; licence statements from the",
        "  docstrings of `skimage/data/_fetchers.py`. (scikit-image code itself: BSD-3-Clause.)",
        f"* {srcs.sklearn_pkg}: `sklearn/datasets/images/`; licence statements from",
        "  `sklearn/datasets/images/README.txt`.",
        f"* {srcs.tux_pkg} (upstream Tux Paint stamps, {TUX_ORIGIN.split(', ')[1]}):",
        "  licence from the package's `/usr/share/doc/tuxpaint-stamps-default/copyright`:",
        f"  `Files: *`, `{TUX_AUTHOR}`, `License: GPL-2`",
        '  ("either version 2 of the License, or (at your option) any later version").',
        "  The full licence text is in `LICENSES/GPL-2.0.txt`. The unmodified originals",
        "  (the preferred form for modification) are the PNG files at the paths below, in",
        "  that Debian package and in the upstream tuxpaint-stamps source release.",
        "",
        "## Images",
        "",
        "| Source file | Sample key(s) | Licence | Author / copyright (as stated by the source) |",
        "|---|---|---|---|",
    ]
    for src, refs in by_source.items():
        author = src.author if src.author.endswith((".", '"')) else src.author + "."
        origin = f" Origin: {src.origin}" if src.origin else ""
        lines.append(
            f"| {_md(src.package)}: `{src.path}` | {', '.join(refs)} | {_md(src.licence)} | "
            f"{_md(author)}{_md(origin)} |"
        )
    lines += [
        "",
        "Synthetic files written by the script itself (no third-party content; covered by",
        "the repository's licence):",
        "",
    ]
    lines += [f"* {item}" for item in synthetic]
    lines += [
        "",
        "## Captions",
        "",
        "Captions of Tux Paint stamps are the first (English) line of the stamp's `.txt`",
        f"file in the same package ({TUX_LICENCE}), except where `expected.csv` marks a",
        "planted case. All other captions were written for this dataset and are covered",
        "by the repository's licence.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------------------
# checks


def normalize(text: str) -> list[str]:
    """Words of ``text`` after NFKC, removal of invisible characters and casefold."""
    norm = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
    return _WORD.findall(norm)


def read_terms(path: Path) -> list[tuple[str, ...]]:
    terms = []
    for line in path.read_text(encoding="utf-8").splitlines():
        term = line.split("#", 1)[0].strip()
        if term:
            terms.append(tuple(normalize(term)))
    return terms


def term_matches(caption: str, terms: list[tuple[str, ...]]) -> list[str]:
    tokens = normalize(caption)
    found = []
    for term in terms:
        n = len(term)
        if any(tuple(tokens[i : i + n]) == term for i in range(len(tokens) - n + 1)):
            found.append(" ".join(term))
    return found


def _fail(sample: Sample, message: str) -> None:
    raise RuntimeError(
        f"self-check failed for {sample.key} ({sample.state}/{sample.reason}): {message}"
    )


def check(samples: list[Sample], terms: list[tuple[str, ...]], out: Path) -> None:
    """Check that every planted case is what expected.csv says it is."""
    seen_keys: set[str] = set()
    for s in samples:
        image = s.members.get(s.image_ext or "")
        if s.caption is not None and bool(term_matches(s.caption, terms)) != (
            s.reason == "caption_term_match"
        ):
            _fail(s, f"caption/term mismatch: {term_matches(s.caption, terms)}")
        if s.reason == "duplicate_key":
            if s.key not in seen_keys:
                _fail(s, "key not seen before")
        elif s.key in seen_keys:
            _fail(s, "unplanned duplicate key")
        seen_keys.add(s.key)
        if s.reason == "decode_error":
            try:
                decode(image or b"")
            except (OSError, SyntaxError, ValueError):
                continue
            _fail(s, "decodes fine")
        if s.reason == "too_many_pixels":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(image or b"")) as im:
                    w, h = im.size
            if w * h <= BOMB_PIXELS or len(image or b"") >= 200_000:
                _fail(s, f"{w}x{h}, {len(image or b'')} bytes")
            continue
        if s.reason == "missing_caption" and "txt" in s.members:
            _fail(s, "has a caption")
        if s.reason == "invalid_caption_encoding":
            try:
                s.members["txt"].decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                _fail(s, "caption is valid UTF-8")
        if s.reason == "invalid_json":
            try:
                json.loads(s.members["json"])
            except json.JSONDecodeError:
                pass
            else:
                _fail(s, "json parses")
        else:
            doc = json.loads(s.members["json"])
            if doc["key"] != s.key:
                _fail(s, "json key differs")
        if image is None:
            _fail(s, "no image")
        im = decode(image)
        w, h = im.size
        aspect = max(w, h) / min(w, h)
        if s.reason == "image_too_small" and min(w, h) >= MIN_SIDE:
            _fail(s, f"{w}x{h} is not too small")
        stretched = aspect > MAX_ASPECT and min(w, h) >= MIN_SIDE
        if s.reason == "aspect_ratio_out_of_range" and not stretched:
            _fail(s, f"{w}x{h} does not fail on aspect ratio alone")
        if s.state in (KEPT, DUPLICATE) and (min(w, h) < MIN_SIDE or aspect > MAX_ASPECT):
            _fail(s, f"{w}x{h} would be filtered")
        if s.reason != "invalid_json":
            doc = json.loads(s.members["json"])
            if (doc["width"], doc["height"]) != (w, h):
                _fail(s, f"json size {doc['width']}x{doc['height']} != displayed {w}x{h}")
    by_key = {s.key: s for s in samples if s.reason != "duplicate_key"}
    for s in samples:
        if s.state == DUPLICATE and s.reason == "exact_duplicate":
            kept = by_key[s.related_key]
            if kept.members[kept.image_ext or ""] != s.members[s.image_ext or ""]:
                _fail(s, "bytes differ from the kept copy")
            if not kept.key < s.key:
                _fail(s, "the kept copy does not have the smaller key")
    _check_shards(samples, out)


def _check_shards(samples: list[Sample], out: Path) -> None:
    """Read the written shards back with tarfile; only the cut shard may end early."""
    for shard in sorted({s.shard for s in samples}):
        path = out / SHARD_NAME.format(shard)
        expected = [
            f"{s.key}.{ext}" for s in samples if s.shard == shard for ext in sorted(s.members)
        ]
        names: list[str] = []
        truncated = False
        try:
            with tarfile.open(path, mode="r:") as tf:
                for info in tf:
                    tf.extractfile(info).read()  # type: ignore[union-attr]
                    names.append(info.name)
        except (tarfile.ReadError, OSError):
            truncated = True
        cut = [s for s in samples if s.shard == shard and s.cut]
        if cut:
            whole = [n for n in expected if not n.startswith(cut[0].key)]
            if not truncated and names[: len(whole)] != whole:
                raise RuntimeError(f"{path.name}: expected a truncated shard, got {names}")
        elif truncated or names != expected:
            raise RuntimeError(f"{path.name}: members {names} != {expected}")


# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build the sample WebDataset shards, expected.csv and NOTICE.md in "
        "data/sample/ from locally installed, openly licensed photos.",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output folder (default: data/sample)"
    )
    parser.add_argument(
        "--stamps",
        type=Path,
        default=None,
        help=f"Tux Paint stamps folder (default: the first of {', '.join(map(str, STAMP_DIRS))})",
    )
    parser.add_argument(
        "--terms",
        type=Path,
        default=DEFAULT_TERMS,
        help="caption term list the planted caption_term_match cases must match "
        "(default: configs/terms/violence.txt)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log each shard written")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    srcs = Sources(find_stamps(args.stamps))
    terms = read_terms(args.terms)
    samples = build(srcs)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("shard-*.tar"):
        old.unlink()
    write_shards(samples, args.out)
    ensure_gpl_text(args.out)
    write_expected(samples, args.out / "expected.csv")
    write_notice(samples, srcs, args.terms.resolve(), args.out / "NOTICE.md")
    check(samples, terms, args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    if total > SIZE_BUDGET:
        LOG.warning("data/sample is %d bytes, over the %d-byte budget", total, SIZE_BUDGET)
    counts: dict[str, int] = {}
    for s in samples:
        counts[s.state] = counts.get(s.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    print(f"{len(samples)} samples ({summary}) in {args.out}, {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
