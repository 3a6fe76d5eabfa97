#!/usr/bin/env python3
"""Build a benchmark dataset of real JPEGs as WebDataset shards (100 samples each).

Sources, all local (nothing is downloaded):

* every PNG stamp of Debian's ``tuxpaint-stamps-default`` package (GPL-2.0-or-later),
  composited on white and saved as JPEG quality 90 at its native size, captioned with
  the first (English) line of the stamp's ``.txt`` file;
* the openly licensed photos shipped in the scikit-image wheel (``skimage/data/``).

``--n`` chooses the number of samples. When it exceeds the number of source images,
the sources are cycled and every repeat is perturbed deterministically (cycle ``c``
crops ``c`` pixels off the right edge, or the bottom edge of narrow images, or pads
tiny ones) so that no two samples have the same bytes and exact dedup keeps them all
(byte-identical source files are used once).

The output is deterministic for given arguments (fixed tar metadata and order).

    python benchmarks/make_bench_data.py --out bench_data --n 2000
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import logging
import os
import re
import tarfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

LOG = logging.getLogger("make_bench_data")

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

TAR_MTIME = 1_700_000_000
TAR_USER = "bigdata"  # as webdataset's TarWriter
TAR_MODE = 0o444
JPEG_QUALITY = 90
MIN_CROPPED_SIDE = 8  # below this, repeats are padded instead of cropped

TUX_LICENCE = "GPL-2.0-or-later"
# scikit-image photos with a clear licence (see skimage/data/_fetchers.py), and captions.
SKIMAGE_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut.png": ("Public domain", "Portrait of astronaut Eileen Collins"),
    "camera.png": ("CC0-1.0", "A man looking through a camera on a tripod"),
    "coffee.png": ("CC0-1.0", "A cup of coffee on a saucer"),
    "chelsea.png": ("CC0-1.0", "A tabby cat"),
    "rocket.jpg": ("Public domain", "A rocket on the launch pad at night"),
    "hubble_deep_field.jpg": ("Public domain", "Distant galaxies in deep space"),
    "retina.jpg": ("CC0-1.0", "A photograph of a human retina"),
    "clock_motion.png": ("Public domain", "A motion-blurred wall clock"),
    "brick.png": ("CC0-1.0", "A brick wall"),
    "gravel.png": ("CC0-1.0", "Grey gravel"),
    "grass.png": ("CC0-1.0", "Grass"),
}


@dataclass(frozen=True)
class SourceImage:
    """One source file and the caption and licence that go with it."""

    file: Path
    label: str  # shown in the sample's json "source"
    caption: str
    licence: str


def find_stamps(explicit: Path | None) -> Path:
    """The Tux Paint stamps folder, or exit with a message saying how to get it."""
    candidates = (explicit,) if explicit is not None else STAMP_DIRS
    for cand in candidates:
        if cand is not None and (cand / "animals").is_dir():
            return cand
    raise SystemExit(STAMPS_HELP.format(where=", ".join(str(c) for c in candidates)))


def stamp_caption(png: Path) -> str:
    """First line of the stamp's ``.txt``; mirror variants share their base stamp's text;
    stamps without any text get a caption made from the file name."""
    for txt in (png.with_suffix(".txt"), png.with_name(re.sub(r"_mirror$", "", png.stem) + ".txt")):
        if txt.is_file():
            lines = txt.read_text(encoding="utf-8").lstrip("\ufeff").splitlines()
            if lines and lines[0].strip():
                return lines[0].strip()
    return re.sub(r"[_\-]+", " ", png.stem).strip().capitalize() + "."


def list_sources(stamps: Path) -> list[SourceImage]:
    """All source images in a fixed order: stamps (sorted by path), then skimage photos.

    Byte-identical stamp files (the package ships a few under two names) are listed
    once, so that every sample of the benchmark has distinct image bytes.
    """
    out = []
    seen: dict[str, Path] = {}
    for png in sorted(stamps.rglob("*.png")):
        digest = hashlib.sha256(png.read_bytes()).hexdigest()
        if digest in seen:
            LOG.info("skipped %s: same bytes as %s", png, seen[digest])
            continue
        seen[digest] = png
        label = f"tuxpaint-stamps-default: {png.relative_to(stamps)}"
        out.append(SourceImage(png, label, stamp_caption(png), TUX_LICENCE))
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        LOG.warning("scikit-image is not installed; using the Tux Paint stamps only")
        return out
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    for name, (licence, caption) in SKIMAGE_PHOTOS.items():
        if (data / name).is_file():
            out.append(
                SourceImage(data / name, f"scikit-image: skimage/data/{name}", caption, licence)
            )
        else:
            LOG.warning("skimage/data/%s not found; skipped", name)
    return out


def flatten(im: Image.Image) -> Image.Image:
    """RGB or L image; transparency composited onto white."""
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im if im.mode in ("L", "RGB") else im.convert("RGB")


def perturb(im: Image.Image, cycle: int) -> Image.Image:
    """The ``cycle``-th variant of ``im`` (cycle 0: unchanged)."""
    if cycle == 0:
        return im
    w, h = im.size
    if w - cycle >= MIN_CROPPED_SIDE:
        return im.crop((0, 0, w - cycle, h))
    if h - cycle >= MIN_CROPPED_SIDE:
        return im.crop((0, 0, w, h - cycle))
    fill = 255 if im.mode == "L" else (255, 255, 255)
    padded = Image.new(im.mode, (w + cycle, h), fill)
    padded.paste(im, (0, 0))
    return padded


def make_sample(job: tuple[int, str, SourceImage, int, int]) -> tuple[str, dict[str, bytes]]:
    """Encode one sample: ``(index, key, source, cycle, long_side)`` -> ``(key, members)``."""
    _, key, src, cycle, long_side = job
    with Image.open(src.file) as raw:
        raw.load()
        im = perturb(flatten(raw), cycle)
    if long_side:
        # Resized (mostly enlarged) to a typical training-image size, so decode cost
        # matches what a pipeline sees on img2dataset output at that size.
        scale = long_side / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=JPEG_QUALITY)
    note = f" (variant {cycle})" if cycle else ""
    doc = {
        "key": key,
        "status": "success",
        "caption": src.caption,
        "width": im.width,
        "height": im.height,
        "original_width": im.width,
        "original_height": im.height,
        "source": src.label + note,
        "license": src.licence,
    }
    members = {
        "jpg": buf.getvalue(),
        "json": json.dumps(doc, indent=4, ensure_ascii=False).encode("utf-8"),
        "txt": src.caption.encode("utf-8"),
    }
    return key, members


def jobs(
    sources: list[SourceImage], n: int, shard_size: int, long_side: int = 0
) -> Iterator[tuple[int, str, SourceImage, int, int]]:
    """Sample ``i`` uses source ``i mod len(sources)``, perturbed by cycle ``i div len``."""
    for i in range(n):
        cycle, which = divmod(i, len(sources))
        shard, idx = divmod(i, shard_size)
        yield i, f"{shard:05d}{idx:04d}", sources[which], cycle, long_side


def parallel_map(
    pool: ProcessPoolExecutor, todo: Iterable[tuple[int, str, SourceImage, int]], batch: int = 512
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``make_sample`` over ``todo`` in order, submitting a bounded batch at a time."""
    pending: list[tuple[int, str, SourceImage, int]] = []
    for job in todo:
        pending.append(job)
        if len(pending) == batch:
            yield from pool.map(make_sample, pending, chunksize=16)
            pending = []
    if pending:
        yield from pool.map(make_sample, pending, chunksize=16)


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = TAR_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = TAR_USER
    tar.addfile(info, io.BytesIO(data))


def write_shards(
    samples: Iterable[tuple[str, dict[str, bytes]]], out: Path, shard_size: int
) -> tuple[int, int, int]:
    """Write samples in order, ``shard_size`` per shard; returns (samples, shards, bytes)."""
    count = size = 0
    paths: list[Path] = []
    tar: tarfile.TarFile | None = None
    try:
        for key, members in samples:
            if tar is None or count % shard_size == 0:
                if tar is not None:
                    tar.close()
                paths.append(out / f"shard-{len(paths):05d}.tar")
                LOG.info("writing %s", paths[-1])
                tar = tarfile.open(paths[-1], mode="w", format=tarfile.PAX_FORMAT)
            for ext in sorted(members):
                add_member(tar, f"{key}.{ext}", members[ext])
            count += 1
    finally:
        if tar is not None:
            tar.close()
    size = sum(p.stat().st_size for p in paths)
    return count, len(paths), size


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Build a benchmark WebDataset of real JPEGs (Tux Paint stamps and "
        "scikit-image photos), cycling with small perturbations when --n exceeds the "
        "number of source images.",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("bench_data"), help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--n", type=int, default=None, help="number of samples (default: one per source image)"
    )
    parser.add_argument(
        "--shard-size", type=int, default=100, help="samples per shard (default: %(default)s)"
    )
    parser.add_argument(
        "--stamps",
        type=Path,
        default=None,
        help=f"Tux Paint stamps folder (default: first of {', '.join(map(str, STAMP_DIRS))})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="encoding processes (default: %(default)s)",
    )
    parser.add_argument(
        "--long-side",
        type=int,
        default=0,
        metavar="PX",
        help="resize every image so its longer side is PX pixels (default: native size)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    if args.n is not None and args.n < 1:
        parser.error("--n must be at least 1")
    if args.shard_size < 1:
        parser.error("--shard-size must be at least 1")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    sources = list_sources(find_stamps(args.stamps))
    n = args.n if args.n is not None else len(sources)
    args.out.mkdir(parents=True, exist_ok=True)
    stale = sorted(args.out.glob("shard-*.tar"))
    for old in stale:
        old.unlink()
    if stale:
        LOG.info("removed %d old shards from %s", len(stale), args.out)
    start = time.perf_counter()
    todo = jobs(sources, n, args.shard_size, args.long_side)
    if args.workers == 1:
        count, shards, size = write_shards(map(make_sample, todo), args.out, args.shard_size)
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            results = parallel_map(pool, todo)
            count, shards, size = write_shards(results, args.out, args.shard_size)
    elapsed = time.perf_counter() - start
    print(
        f"wrote {count} samples ({len(sources)} source images) in {shards} shards to "
        f"{args.out}: {size / 1e6:.1f} MB in {elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
