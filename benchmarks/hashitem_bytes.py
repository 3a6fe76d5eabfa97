"""Bytes per HashItem as the one-worker near-dup search holds them (tracemalloc, 100k items),
without and with the centre-view hash.

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

# the same items with a centre-view hash (issue 12: phash_centre, 32 hex digits)
del items
tracemalloc.stop()
tracemalloc.start()
items = [
    HashItem(
        f"{i:09d}",
        f"{(i * 2654435761) % 2**64:016x}",
        f"{(i * 40503) % 2**64:016x}",
        1024 * 768 + i,
        None,
        f"{(i * 69069) % 2**64:016x}{(i * 1103515245) % 2**64:016x}",
    )
    for i in range(n)
]
cur, _ = tracemalloc.get_traced_memory()
print(f"{cur / n:.0f} bytes per HashItem with a centre-view hash (32 hex digits)")
