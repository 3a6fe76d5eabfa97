#!/usr/bin/env python3
"""Which copy the near-duplicate keep rule keeps (issue 12, ``dedup.keep``), on groups
of independent edits of real images with a known original.

Every source image (the real photos scikit-image and scikit-learn ship, and with
``--stamps`` every ``--stamp-every``-th Tux Paint stamp) is saved as the original
(JPEG quality ``--original-quality``) and as copies made from the same pixels: the
issue's edits (``tests/near_edits.py``: JPEG q40, half size, brightness +-15 %, a
watermark band, a 3 % border crop, a mirror image) and helper-37's (a small logo in a
corner, a blur, a gamma, a sharpen, a JPEG q60 re-encode). Each group is the original
and a random subset of its copies (every size from one copy to all, ``--groups-per``
groups a source, the same subsets for every rule), decoded as the pipeline decodes
(pHash, mirror, signature), keyed by a hash of the name so the keys say nothing of
which copy is the original, then decided by
:func:`mitigate.near.decide_near_duplicates` with the default verification (k = 10,
threshold 1.0).

A group is counted where its original was merged with at least one copy. "original"
means the kept sample is the original or its mirror image (equally central under a
mirror-tolerant score, and the same pixels); the other columns count which copy was
kept in its place ("pairs": groups of the original and one copy). Rules:
``resolution`` and ``medoid`` with the tie window :data:`mitigate.keep.MEDOID_TIE` set to
each ``--ties`` value, each with three size keys: pixels alone (with tie 0, the rule
before session 27), pixels then the file's bytes, and pixels then the JPEG quality
(:func:`mitigate.keep.size_key`, the rule now, at tie 0.1).

    python benchmarks/eval_keep.py --stamps /usr/share/tuxpaint/stamps --ties 0 0.05 0.1 0.2
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from eval_near_verify import _flatten, package_photos  # noqa: E402
from near_edits import EDITS, jpeg  # noqa: E402

from mitigate import hashing, keep, verify  # noqa: E402
from mitigate.decode import DecodedImage, decode_image  # noqa: E402
from mitigate.near import HashItem, decide_near_duplicates  # noqa: E402


def logo(image: Image.Image) -> Image.Image:
    """A small red disc with letters in the bottom-right corner (a channel's logo)."""
    out = image.convert("RGB").copy()
    s = max(8, min(out.size) // 10)
    x0, y0 = out.width - s - out.width // 40, out.height - s - out.height // 40
    draw = ImageDraw.Draw(out)
    draw.ellipse([x0, y0, x0 + s, y0 + s], fill=(230, 30, 30))
    draw.text((x0 + s // 4, y0 + s // 5), "TV", fill=(255, 255, 255))
    return out


def gamma(image: Image.Image, g: float = 0.7) -> Image.Image:
    a = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    return Image.fromarray((a**g * 255).clip(0, 255).astype(np.uint8))


#: name -> (edit, JPEG quality): the issue's edits and helper-37's
COPIES: dict[str, tuple[Callable[[Image.Image], Image.Image], int]] = {
    **EDITS,
    "logo": (logo, 90),
    "blur": (lambda im: im.filter(ImageFilter.GaussianBlur(2)), 90),
    "gamma_0.7": (gamma, 90),
    "sharpen": (lambda im: im.filter(ImageFilter.UnsharpMask(radius=2, percent=150)), 90),
    "jpeg_q60": (lambda im: im, 60),
}


#: helper-39's: a third-size thumbnail (saved at q50) upscaled to twice the original's
#: size (blurry, 4x the pixels: a scraped repost), and a PNG of a q30 re-encode
def _upscaled(image: Image.Image) -> Image.Image:
    small = image.resize((max(1, image.width // 3), max(1, image.height // 3)))
    thumb = Image.open(io.BytesIO(jpeg(small, 50)))
    return thumb.resize((image.width * 2, image.height * 2), Image.Resampling.BICUBIC)


HARD = ("upscaled_2x", "png_of_q30")


def hard_copy(edit: str, image: Image.Image) -> bytes:
    if edit == "upscaled_2x":
        return jpeg(_upscaled(image), 80)
    buf = io.BytesIO()
    Image.open(io.BytesIO(jpeg(image, 30))).save(buf, "PNG")
    return buf.getvalue()


def sample_sources(max_side: int) -> list[tuple[str, Image.Image]]:
    """The bundled sample's photos (``data/sample/*.tar``, in every install: the test
    suite's sources), one per distinct image (the sample plants copies of its own)."""
    import tarfile

    out, seen = [], set()
    for shard in sorted((HERE.parent / "data" / "sample").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = []
            try:  # the sample plants a cut shard: its members up to the cut
                members.extend(tar)
            except tarfile.ReadError:
                pass
            for member in members:
                if not member.name.endswith(".jpg"):
                    continue
                try:  # the sample plants a cut shard and a broken file
                    data = tar.extractfile(member).read()
                    with Image.open(io.BytesIO(data)) as im:
                        image = _flatten(im, max_side)
                except (OSError, tarfile.ReadError):
                    continue
                digest = hashlib.sha256(image.tobytes()).hexdigest()
                if min(image.size) >= 64 and digest not in seen:
                    seen.add(digest)
                    out.append((f"sample:{member.name}", image))
    return out


def sources(stamps: Path | None, every: int, max_side: int) -> list[tuple[str, Image.Image]]:
    out = package_photos(max_side)
    if stamps is not None:
        for path in sorted(stamps.rglob("*.png"))[::every]:
            with Image.open(path) as im:
                out.append((f"stamp:{path.relative_to(stamps)}", _flatten(im, max_side)))
    return out


def item(name: str, data: bytes) -> tuple[HashItem, int, int]:
    """The sample's item as the pipeline makes it (key: a hash of the name), its
    pixels and its file's bytes."""
    dec = decode_image(data, max_pixels=10**9)
    assert isinstance(dec, DecodedImage), name
    key = hashlib.sha256(name.encode()).hexdigest()[:16]
    pixels = dec.width * dec.height
    it = HashItem(
        key,
        hashing.to_hex(dec.phash),
        hashing.to_hex(dec.phash_mirror),
        keep.size_key(pixels, dec.quality),
        dec.signature,
        hashing.to_hex_pair(*dec.centre) if dec.centre is not None else None,
    )
    return it, pixels, len(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stamps", type=Path, default=None, help="Tux Paint stamps folder")
    ap.add_argument("--stamp-every", type=int, default=8)
    ap.add_argument("--max-side", type=int, default=512)
    ap.add_argument("--original-quality", type=int, default=90)
    ap.add_argument("--groups-per", type=int, default=3)
    ap.add_argument("--ties", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.2])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--sample", action="store_true", help="the bundled sample's photos, not the packages'"
    )
    ap.add_argument(
        "--hard", action="store_true", help="helper-39's copies too (an upscale, a PNG of q30)"
    )
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    groups: list[list[tuple[HashItem, str, int, int]]] = []
    names = list(COPIES) + (list(HARD) if args.hard else [])
    found = (
        sample_sources(args.max_side)
        if args.sample
        else sources(args.stamps, args.stamp_every, args.max_side)
    )
    for name, image in found:
        made = {"original": item(f"{name}#original", jpeg(image, args.original_quality))}
        for edit, (fn, quality) in COPIES.items():
            made[edit] = item(f"{name}#{edit}", jpeg(fn(image), quality))
        if args.hard:
            for edit in HARD:
                made[edit] = item(f"{name}#{edit}", hard_copy(edit, image))
        for g in range(args.groups_per):
            size = 1 + (g * len(names)) // max(1, args.groups_per - 1) if g else 1
            size = min(size, len(names))
            picked = rng.choice(names, size=size, replace=False).tolist()
            groups.append([(made[k][0], k, made[k][1], made[k][2]) for k in ("original", *picked)])
    print(f"{len(groups)} groups of an original and 1-{len(names)} copies")

    def decide(rule: str, tie: float, size_key: str) -> collections.Counter[str]:
        kept_kinds: collections.Counter[str] = collections.Counter()
        saved = keep.MEDOID_TIE
        keep.MEDOID_TIE = tie
        try:
            for group in groups:
                items = [
                    it if size_key == "quality" else dataclasses.replace(it, size=px << 8 | 100)
                    for it, _, px, _ in group
                ]
                decisions, _ = decide_near_duplicates(
                    items, 10, verify_threshold=verify.DEFAULT_THRESHOLD, keep_rule=rule
                )
                kind = {it.key: k for it, (_, k, _, _) in zip(items, group, strict=True)}
                original = items[0].key
                dropped = {d.key: d.duplicate_of for d in decisions if d.reason == "near_duplicate"}
                if original in dropped:
                    kept = kind[dropped[original]]
                elif any(v == original for v in dropped.values()):
                    kept = "original"
                else:
                    continue  # the original merged with no copy
                good = kept in ("original", "flip")
                kept_kinds["original" if good else kept] += 1
                tag = "pair" if len(items) == 2 else "more"
                kept_kinds[f"{tag}:n"] += 1
                kept_kinds[f"{tag}:ok"] += good
        finally:
            keep.MEDOID_TIE = saved
        return kept_kinds

    rows = [("resolution", 0.0, "pixels"), ("resolution", 0.0, "quality")]
    rows += [("medoid", t, key) for key in ("pixels", "quality") for t in args.ties]
    print("| rule | tie | size key | groups | original kept | pairs | 3+ copies | in its place |")
    print("|---|--:|---|--:|--:|--:|--:|---|")
    for rule, tie, size_key in rows:
        got = decide(rule, tie, size_key)
        parts = {k: got.pop(k) for k in [k for k in got if ":" in k]}
        n = sum(got.values())
        others = ", ".join(f"{k} {v}" for k, v in got.most_common() if k != "original")
        pairs = f"{parts.get('pair:ok', 0)}/{parts.get('pair:n', 0)}"
        more = f"{parts.get('more:ok', 0)}/{parts.get('more:n', 0)}"
        size = {"pixels": "pixels", "quality": "JPEG quality, pixels"}[size_key]
        shown = f"{tie:g}" if rule == "medoid" else "-"
        print(
            f"| {rule} | {shown} | {size} | {n} | {got['original']} "
            f"({got['original'] / max(n, 1):.3f}) | {pairs} | {more} | {others} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
