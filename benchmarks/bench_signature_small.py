#!/usr/bin/env python3
"""The verification signature of images under 128 px a side, in isolation (issue 12,
eighth round): ``verify.signature`` (the kernel's exact copy of Pillow's BOX resize and
the cells) and the fused pass ``verify.grey_and_signature`` against Pillow's
``resize((64, 64), BOX)`` alone, which the fifth-to-seventh rounds called before their
cells kernel (so the old path cost at least that), and Pillow's ``convert("L")`` (what
the decode path pays for pHash's greyscale image either way). Real photos
(``data/near_eval``) resized to each size; process CPU time, best of 5 loops, all in one
run, so the ratios hold on a shared machine. The last two sizes (both sides >= 128 px)
take the point-sampled path: there "fused greyscale alone" is the decode path's cost
without the signature, and the difference to the fused column the signature's.

    python benchmarks/bench_signature_small.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from mitigate import verify

DATA = Path(__file__).resolve().parent.parent / "data" / "near_eval"
SIZES = [(60, 40), (100, 90), (120, 127), (64, 64), (200, 110), (400, 100), (200, 300), (384, 256)]


def best_us(fn: Callable[[], object], loops: int) -> float:
    fn()
    best = float("inf")
    for _ in range(5):
        t0 = time.process_time()
        for _ in range(loops):
            fn()
        best = min(best, (time.process_time() - t0) / loops * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=400, help="calls a timed loop")
    parser.add_argument("--photos", type=int, default=6, help="photos of data/near_eval")
    args = parser.parse_args(argv)
    photos = [Image.open(p).convert("RGB") for p in sorted(DATA.glob("photos-*.jpg"))]
    photos = photos[: args.photos]
    print(
        "| size | signature() us | fused grey + signature us | fused greyscale alone us | "
        "Pillow BOX alone us | Pillow convert L us | signature / BOX |"
    )
    print("|---|--:|--:|--:|--:|--:|--:|")
    for size in SIZES:
        images = [p.resize(size, Image.Resampling.BICUBIC) for p in photos]
        t = dict.fromkeys(("sig", "fused", "bare", "box", "grey"), 0.0)
        for im in images:
            t["sig"] += best_us(lambda im=im: verify.signature(im), args.loops)
            t["fused"] += best_us(lambda im=im: verify.grey_and_signature(im), args.loops)
            bare = verify.grey_and_signature(im, with_signature=False)
            t["bare"] += best_us(
                (lambda im=im: verify.grey_and_signature(im, with_signature=False))
                if bare is not None
                else (lambda im=im: im.convert("L")),
                args.loops,
            )
            t["box"] += best_us(lambda im=im: im.resize((64, 64), Image.Resampling.BOX), args.loops)
            t["grey"] += best_us(lambda im=im: im.convert("L"), args.loops)
        n = len(images)
        print(
            f"| {size[0]} x {size[1]} | {t['sig'] / n:.1f} | {t['fused'] / n:.1f} | "
            f"{t['bare'] / n:.1f} | "
            f"{t['box'] / n:.1f} | {t['grey'] / n:.1f} | {t['sig'] / t['box']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
