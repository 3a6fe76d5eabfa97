#!/usr/bin/env python3
"""The one-worker near-dup decision's memory where few samples have a near copy (as in a
crawl, unlike the benchmark sets, whose images repeat ~7-32 times): N items with random
pHashes and real-format verification signatures, at two sizes. Prints the decision's
traced peak above the items, and, for comparison, what one table of every item's
signature takes (what the decision built before session 21: it now scores from a table
of the candidate pairs' ends only).

    python benchmarks/sparse_decision_memory.py --sizes 25000 100000
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np


def items_of(n: int) -> list:
    from PIL import Image

    from mitigate import verify
    from mitigate.near import HashItem

    rng = np.random.default_rng(0)
    base = bytearray(verify.signature(Image.new("RGB", (128, 128), (40, 90, 160))))
    out = []
    for i in range(n):
        sig = bytearray(base)
        sig[:64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()  # a sample of its own
        p = int(rng.integers(0, 2**63))
        out.append(HashItem(f"k{i:08d}", f"{p:016x}", f"{p ^ 0xFFFF:016x}", 1000, bytes(sig)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[25000, 100000])
    args = parser.parse_args(argv)
    from mitigate import verify
    from mitigate.config import load_config
    from mitigate.pipeline.near import _decide

    config, _ = load_config(None, [])
    rows = []
    for n in args.sizes:
        items = items_of(n)
        tracemalloc.start()
        started = time.perf_counter()
        _, report = _decide(items, [], config.dedup)
        wall = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        merged = report["verify"]["merged_pairs"] + report["verify"]["refused_pairs"]
        table = n * verify.SIG_BYTES
        rows.append((n, merged, wall, peak, table))
        print(
            f"{n:>8} items, {merged} verified pairs: decision {wall:.1f} s, traced peak above "
            f"the items {peak / 2**20:.0f} MB; one table of every signature: {table / 2**20:.0f} MB"
        )
    (a, _, _, pa, _), (b, _, _, pb, _) = rows
    print(f"traced peak slope {a} -> {b}: {(pb - pa) / (b - a):.0f} B an item")
    return 0


if __name__ == "__main__":
    sys.exit(main())
