"""Bytes per HashItem as the one-worker near-dup search holds them (tracemalloc, 100k items),
without and with the centre-view hash.

Run: .venv/bin/python benchmarks/hashitem_bytes.py
"""

from __future__ import annotations

import tracemalloc

from mitigate.near import HashItem

N = 100_000


def bytes_per_item(centre: bool) -> float:
    """Traced bytes per item of N HashItems (key of 9 chars, two 16-hex pHashes, int
    resolution, no signature; with ``centre``, a 32-hex-digit centre-view hash too)."""
    tracemalloc.start()
    items = [
        HashItem(
            f"{i:09d}",
            f"{(i * 2654435761) % 2**64:016x}",
            f"{(i * 40503) % 2**64:016x}",
            1024 * 768 + i,
            None,
            f"{(i * 69069) % 2**64:016x}{(i * 1103515245) % 2**64:016x}" if centre else None,
        )
        for i in range(N)
    ]
    cur, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del items
    return cur / N


print(
    f"{bytes_per_item(False):.0f} bytes per HashItem"
    " (key of 9 chars, two 16-hex pHashes, int resolution, no signature)"
)
print(f"{bytes_per_item(True):.0f} bytes per HashItem with a centre-view hash (32 hex digits)")
