#!/usr/bin/env python3
"""Build ``data/probe/animals/``: real images of a category no shipped model covers.

``mitigate train`` turns labels into a filter (a linear probe on a backbone's stored
embeddings). Its tests and the README walk-through need real images with a category
that ``nsfw`` knows nothing about: here "animal" (label 1) against other objects
(label 0: food, plants, vehicles, buildings, household things, clothes, ...). The
images are the photo stamps of Debian's ``tuxpaint-stamps-default`` package
(GPL-2.0-or-later, the licence text is in ``data/sample/LICENSES/GPL-2.0.txt``),
cartoon variants left out, composited on white, shrunk to at most 160 px and
re-encoded as JPEG so the set stays small (about 1 MB).

Writes ``shard-00000.tar`` (WebDataset: ``KEY.jpg``, ``KEY.txt`` the stamp's English
description, ``KEY.json`` its source path and licence), ``labels.csv`` (``key,label``
for every sample) and ``NOTICE.md``. Deterministic: the same stamps and Pillow build
give the same bytes. Run ``python scripts/make_probe_data.py`` from the repo root.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import tarfile
from pathlib import Path

from PIL import Image

LOG = logging.getLogger("make_probe_data")
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "data" / "probe" / "animals"
STAMP_DIRS = (Path("/usr/share/tuxpaint/stamps"), Path("/tmp/tux/usr/share/tuxpaint/stamps"))
POSITIVE = ("animals",)
NEGATIVE = (
    "clothes",
    "food",
    "hobbies",
    "household",
    "medical",
    "military",
    "naturalforces",
    "plants",
    "space",
    "sports",
    "town",
    "vehicles",
)
PER_CLASS = 80
MAX_SIDE = 160
JPEG_QUALITY = 85
TAR_MTIME = 1_700_000_000
LICENCE = "GPL-2.0-or-later (Tux Paint stamps, Bill Kendrick et al.)"


def photos(stamps: Path, categories: tuple[str, ...]) -> list[Path]:
    """Every photo stamp (PNG, not a cartoon variant) under the categories, sorted."""
    found = [
        p
        for cat in categories
        for p in (stamps / cat).rglob("*.png")
        if "cartoon" not in p.relative_to(stamps).parts and p.with_suffix(".txt").is_file()
    ]
    return sorted(found, key=lambda p: p.relative_to(stamps).as_posix())


def spread(paths: list[Path], n: int) -> list[Path]:
    """``n`` paths evenly spaced over the sorted list (all of them if there are fewer)."""
    if len(paths) <= n:
        return paths
    return [paths[i * len(paths) // n] for i in range(n)]


def jpeg(path: Path) -> bytes:
    with Image.open(path) as raw:
        rgba = raw.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    image = Image.alpha_composite(white, rgba).convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def caption(path: Path) -> str:
    lines = path.with_suffix(".txt").read_text(encoding="utf-8").lstrip("\ufeff").splitlines()
    return (lines[0].strip() if lines else "") or path.stem.replace("_", " ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stamps", type=Path, help="Tux Paint stamps folder")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stamps = next(
        (d for d in ((args.stamps,) if args.stamps else STAMP_DIRS) if (d / "animals").is_dir()),
        None,
    )
    if stamps is None:
        raise SystemExit("Tux Paint stamps not found: apt-get install tuxpaint-stamps-default")
    pos = spread(photos(stamps, POSITIVE), PER_CLASS)
    neg = spread(photos(stamps, NEGATIVE), PER_CLASS)
    # interleave so that any prefix of the shard holds both classes
    samples = [(p, 1) for p in pos] + [(p, 0) for p in neg]
    samples.sort(key=lambda s: s[0].stem + s[0].parent.name)
    args.out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    rows = []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, (path, label) in enumerate(samples):
            key = f"{i:09d}"
            rel = path.relative_to(stamps).as_posix()
            meta = {"source": f"usr/share/tuxpaint/stamps/{rel}", "license": LICENCE}
            members = {
                "jpg": jpeg(path),
                "txt": caption(path).encode("utf-8"),
                "json": json.dumps(meta, sort_keys=True).encode("utf-8"),
            }
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                info.mtime = TAR_MTIME
                info.mode = 0o644
                info.uname = info.gname = "mitigate"
                tar.addfile(info, io.BytesIO(data))
            rows.append((key, label, rel))
    (args.out / "shard-00000.tar").write_bytes(buf.getvalue())
    with open(args.out / "labels.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["key", "label"])
        writer.writerows((key, label) for key, label, _ in rows)
    notice = [
        "# Probe-training data: animal (1) vs other objects (0)",
        "",
        "Generated by `python scripts/make_probe_data.py` (do not edit by hand).",
        f"{len(pos)} animal and {len(neg)} other photo stamps of Debian's",
        "`tuxpaint-stamps-default` package (Copyright 2002-2022 Bill Kendrick et al.,",
        "GPL-2.0-or-later; full text in `data/sample/LICENSES/GPL-2.0.txt`), composited",
        f"on white, shrunk to at most {MAX_SIDE} px and re-encoded as JPEG quality",
        f"{JPEG_QUALITY}. The unmodified originals are the PNG files listed below.",
        "",
        "| key | label | original |",
        "|---|---|---|",
        *(f"| {key} | {label} | `{rel}` |" for key, label, rel in rows),
        "",
    ]
    (args.out / "NOTICE.md").write_text("\n".join(notice), encoding="utf-8")
    LOG.info("%d samples (%d animal) -> %s", len(rows), len(pos), args.out)


if __name__ == "__main__":
    main()
