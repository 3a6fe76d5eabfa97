#!/usr/bin/env python3
"""Precision and recall of near-duplicate detection (pHash + mirror pHash within k) on
real photos with planted edits, for a range of k: the measurement behind the default k.

Every source image gets six edited copies (JPEG re-encode q50, resize to 0.5x,
brightness +25%, horizontal flip, 5% crop, a white watermark band over 12% of the
height). A pair counts as a true near duplicate when both come from the same source.
Pairs are found with the exact search (``mitigate.neardup.find_near_duplicates``,
identical to all-pairs); hashes come from the pipeline's decoder (fast mode).

    python benchmarks/eval_near_k.py --data bench_data/n800 --ks 4 6 8 10 12 14
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from mitigate import neardup
from mitigate.decode import DecodedImage, decode_image

EDITS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg_q50": lambda im: im,
    "resize_0.5": lambda im: im.resize((max(1, im.width // 2), max(1, im.height // 2))),
    "brightness": lambda im: ImageEnhance.Brightness(im).enhance(1.25),
    "flip": ImageOps.mirror,
    "crop_5pct": lambda im: im.crop(
        (im.width // 40, im.height // 40, im.width - im.width // 40, im.height - im.height // 40)
    ),
    "watermark": lambda im: _band(im),
}


def _band(im: Image.Image) -> Image.Image:
    out = im.copy()
    h = max(1, im.height * 12 // 100)
    ImageDraw.Draw(out).rectangle((0, im.height - h, im.width, im.height), fill=(255, 255, 255))
    return out


def _hash(image: Image.Image, quality: int = 90) -> tuple[int, int]:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    decoded = decode_image(buf.getvalue(), max_pixels=10**9)
    assert isinstance(decoded, DecodedImage)
    return decoded.phash, decoded.phash_mirror


def load_images(folder: Path, limit: int) -> list[Image.Image]:
    out = []
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar:
                if m.name.endswith(".jpg") and len(out) < limit:
                    out.append(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB"))
    return out


def evaluate(images: list[Image.Image], ks: list[int]) -> list[dict]:
    phash, mirror, group, edit = [], [], [], []
    for g, im in enumerate(images):
        for name, fn in {"original": lambda x: x, **EDITS}.items():
            p, m = _hash(fn(im), 50 if name == "jpeg_q50" else 90)
            phash.append(p)
            mirror.append(m)
            group.append(g)
            edit.append(name)
    p_arr = neardup.as_hashes(phash)
    m_arr = neardup.as_hashes(mirror)
    group_arr = np.asarray(group)
    edit_arr = np.asarray(edit)
    rows = []
    for k in ks:
        pairs = neardup.find_near_duplicates(p_arr, m_arr, k, mode="exact")
        same = group_arr[pairs.i] == group_arr[pairs.j]
        found = {(int(a), int(b)) for a, b, s in zip(pairs.i, pairs.j, same, strict=True) if s}
        # recall: each edited copy paired with its original
        originals = {
            g: i for i, (g, e) in enumerate(zip(group, edit, strict=True)) if e == "original"
        }
        per_edit = {}
        for name in EDITS:
            idx = np.flatnonzero(edit_arr == name)
            hit = sum(
                1
                for i in idx
                if (min(i, originals[group[i]]), max(i, originals[group[i]])) in found
            )
            per_edit[name] = hit / len(idx)
        rows.append(
            {
                "k": k,
                "pairs": len(pairs.i),
                "precision": float(same.mean()) if len(same) else 1.0,
                "recall": float(np.mean(list(per_edit.values()))),
                **per_edit,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("bench_data/n800"))
    parser.add_argument("--limit", type=int, default=800, help="source images to use")
    parser.add_argument("--ks", type=int, nargs="+", default=[4, 6, 8, 10, 12, 14])
    args = parser.parse_args(argv)
    images = load_images(args.data, args.limit)
    rows = evaluate(images, args.ks)
    edits = list(EDITS)
    print(f"{len(images)} source images x {len(EDITS) + 1} versions")
    print(
        f"{'k':>3} {'pairs':>7} {'precision':>9} {'recall':>7} "
        + " ".join(f"{e:>10}" for e in edits)
    )
    for r in rows:
        print(
            f"{r['k']:>3} {r['pairs']:>7} {r['precision']:>9.4f} {r['recall']:>7.3f} "
            + " ".join(f"{r[e]:>10.3f}" for e in edits)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
