"""Per-sample cost of the ``blocklist`` filter's score against the matcher it replaced.

The baseline is the pre-filter ``Blocklist.match_phash`` (copied below as it was: it
built the listed array on every call); the filter keeps the sorted array once per
process. 2,000 random pHash pairs against random lists of 100 and 100,000 pHashes,
``max_distance`` 4.

Run: .venv/bin/python benchmarks/bench_blocklist.py
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import numpy as np

from mitigate import neardup
from mitigate.config import validate_config
from mitigate.filters import ScoringItem, build_filter
from mitigate.records import SampleRecord

SAMPLES = 2_000


def old_match_phash(
    listed_set: frozenset[int], max_distance: int, phash: str, mirror: str
) -> tuple[int, int] | None:
    """The matcher as it was in mitigate.near.Blocklist before the blocklist was a filter."""
    values = [int(phash, 16), int(mirror, 16)]
    listed = np.fromiter(listed_set, dtype=np.uint64, count=len(listed_set))
    best = None
    for v in values:
        dist = neardup.popcount64(listed ^ np.uint64(v))
        i = int(dist.argmin())
        if dist[i] <= max_distance and (best is None or dist[i] < best[1]):
            best = (int(listed[i]), int(dist[i]))
    return best


def main() -> None:
    rng = random.Random(0)
    for n_list in (100, 100_000):
        folder = Path(tempfile.mkdtemp())
        values = [rng.getrandbits(64) for _ in range(n_list)]
        (folder / "bl.txt").write_text("".join(f"{v:016x}\n" for v in values))
        entry = {"name": "blocklist", "path": "bl.txt", "max_distance": 4}
        flt = build_filter(validate_config({"filters": [entry]}, folder).filters[0])
        recs = [
            SampleRecord(
                "k",
                "s",
                i,
                sha256=f"{i:064x}",
                phash=f"{rng.getrandbits(64):016x}",
                phash_mirror=f"{rng.getrandbits(64):016x}",
            )
            for i in range(SAMPLES)
        ]
        listed = frozenset(values)
        t = time.perf_counter()
        for r in recs:
            old_match_phash(listed, 4, r.phash, r.phash_mirror)
        old = time.perf_counter() - t
        t = time.perf_counter()
        flt.score([ScoringItem(r, None) for r in recs])
        new = time.perf_counter() - t
        print(
            f"list {n_list:>7,}: baseline {old / SAMPLES * 1e6:8.1f} us/sample, "
            f"filter score {new / SAMPLES * 1e6:8.1f} us/sample, ratio {new / old:.2f}"
        )


if __name__ == "__main__":
    main()
