#!/usr/bin/env python3
"""How far ``decode.hash_mode: fast``'s pHash (of the reduced decode) is from
``imagehash.phash`` of the full image (``hash_mode: exact``, bit-identical to it): the
share of images whose two pHashes are equal, within 2, 4 and 6 bits, and the largest
distance, at working sizes 128 and 256. What a blocklist of pHash values computed
elsewhere can expect to match (``filters/blocklist.py``).

    python benchmarks/bench_fast_phash.py data/sample/*.tar
    python benchmarks/bench_fast_phash.py bench_data/unique-1024px/*.tar
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from bench_hashing import load  # benchmarks/: the images that decode, of every shard

from mitigate.decode import DecodedImage, decode_image

MAX_PIXELS = 50_000_000  # decode.max_pixels default


def distances(datas: list[bytes], working_size: int) -> np.ndarray:
    out = []
    for data in datas:
        fast, exact = (
            decode_image(
                data,
                max_pixels=MAX_PIXELS,
                working_size=working_size,
                hash_mode=mode,
                signature=False,
            )
            for mode in ("fast", "exact")
        )
        assert isinstance(fast, DecodedImage) and isinstance(exact, DecodedImage)
        out.append(bin(fast.phash ^ exact.phash).count("1"))
    return np.asarray(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", nargs="+")
    args = parser.parse_args(argv)
    datas = load(args.shards)
    for size in (128, 256):
        d = distances(datas, size)
        print(
            f"working_size {size}: {len(d)} images; fast == exact {np.mean(d == 0):.1%}, "
            f"within 2 bits {np.mean(d <= 2):.1%}, 4 {np.mean(d <= 4):.1%}, "
            f"6 {np.mean(d <= 6):.1%}; largest {d.max()} bits"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
