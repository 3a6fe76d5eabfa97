"""Bytes per HashItem as the one-worker near-dup search holds them (tracemalloc, 100k items).

Run: .venv/bin/python benchmarks/hashitem_bytes.py
"""

from __future__ import annotations

import tracemalloc

from mitigate.near import HashItem

n = 100_000
tracemalloc.start()
items = [
    HashItem(
        f"{i:09d}",
        f"{(i * 2654435761) % 2**64:016x}",
        f"{(i * 40503) % 2**64:016x}",
        1024 * 768 + i,
    )
    for i in range(n)
]
cur, _ = tracemalloc.get_traced_memory()
print(
    f"{cur / n:.0f} bytes per HashItem"
    " (key of 9 chars, two 16-hex pHashes, int resolution, no signature)"
)
