#!/usr/bin/env python3
"""``decode.working_size``: what the reduced decode costs and how far its hashes move,
at two sizes (default 256, what ``auto`` was before and is with nsfw, and 128, ``auto``
without a model filter), on real JPEGs.

For the first ``--n`` JPEGs of the shards: the decode path (``decode_image``: JPEG at
draft scale, pHash pair, centre view, signature, RGB working image) timed at each size,
alternating image by image, calling thread's CPU time; then the pHash's Hamming distance
between the sizes and to the exact hash (``hash_mode=exact``), and the verification score
of each image's two signatures (0 = the same; ``dedup.verify_threshold`` is 1.0).

    python benchmarks/bench_working_size.py bench_data/n400-1024px/shard-0000[0-3].tar
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tarfile
import time
from pathlib import Path

import numpy as np


def jpegs(shards: list[Path], n: int) -> list[bytes]:
    """The first ``n`` JPEG members of the shards, their bytes."""
    out: list[bytes] = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith((".jpg", ".jpeg")):
                    f = tar.extractfile(member)
                    if f is not None:
                        out.append(f.read())
                if len(out) >= n:
                    return out
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", type=Path, nargs="+")
    parser.add_argument("--n", type=int, default=400, help="JPEGs used")
    parser.add_argument("--sizes", type=int, nargs=2, default=[256, 128])
    parser.add_argument("--repeat", type=int, default=3, help="timed passes (best kept)")
    args = parser.parse_args(argv)
    from mitigate import verify
    from mitigate.decode import DecodedImage, decode_image

    datas = jpegs(args.shards, args.n)
    big, small = args.sizes
    for data in datas[:20]:  # one-time set-up (plugins, kernels) outside the timing
        for size in (big, small):
            decode_image(data, max_pixels=10**9, working_size=size)
    best = {big: np.inf, small: np.inf}
    for r in range(args.repeat):
        spent = {big: 0.0, small: 0.0}
        for k, data in enumerate(datas):
            for size in (big, small) if (k + r) % 2 else (small, big):
                t0 = time.thread_time()
                decode_image(data, max_pixels=10**9, working_size=size)
                spent[size] += time.thread_time() - t0
        best = {s: min(best[s], spent[s]) for s in best}
    print(f"{len(datas)} JPEGs from {len(args.shards)} shard(s); best of {args.repeat} passes")
    for size in (big, small):
        print(f"  working_size {size:4d}: decode path {best[size] / len(datas) * 1e3:.3f} ms")
    print(f"  {small} / {big}: {best[small] / best[big]:.2f}x")

    dist, exact_big, exact_small, shorter = [], [], [], {big: [], small: []}
    sigs: list[bytes] = []
    for data in datas:
        got = {s: decode_image(data, max_pixels=10**9, working_size=s) for s in (big, small)}
        exact = decode_image(data, max_pixels=10**9, hash_mode="exact")
        assert all(isinstance(d, DecodedImage) for d in (*got.values(), exact))
        a, b = got[big], got[small]
        dist.append(bin(a.phash ^ b.phash).count("1"))
        exact_big.append(bin(a.phash ^ exact.phash).count("1"))
        exact_small.append(bin(b.phash ^ exact.phash).count("1"))
        for s in (big, small):
            shorter[s].append(min(got[s].working.size))
        sigs += [a.signature, b.signature]
    idx = np.arange(0, len(sigs), 2)
    scores = verify.pair_scores(idx, idx + 1, sigs)

    def summary(xs: list[int] | np.ndarray) -> str:
        xs = np.asarray(xs, dtype=float)
        return (
            f"mean {xs.mean():.2f}, median {statistics.median(xs.tolist()):.2f}, "
            f"95th {np.percentile(xs, 95):.2f}, max {xs.max():.2f}"
        )

    for s in (big, small):
        print(f"  working image's shorter side at {s}: median {statistics.median(shorter[s])} px")
    print(f"  pHash bits apart, {big} vs {small}: {summary(dist)}")
    print(
        f"  pHash bits from exact: at {big} {summary(exact_big)}; at {small} {summary(exact_small)}"
    )
    print(f"  verification score of an image's two signatures: {summary(scores)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
