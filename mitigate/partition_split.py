"""Oversized partitions are searched in blocks, so no search task holds more than
``dedup.max_partition_size`` entries (Beam-free; wired in
:mod:`mitigate.pipeline.near_batched`).

Clusters in Hamming space are balanced on random hashes, but real data is not random:
near-blank images, one meme in ten thousand crops, a stamp family -- a single centroid
can draw far more hashes than ``max_partition_size``, and the worker that searches that
partition would hold all of them. A partition whose size exceeds the bound is cut into
``B`` blocks by a stable hash of the node id (about ``0.45 * max_partition_size`` entries
a block) and searched as the ``B * (B - 1) / 2`` *tasks* ``(i, j)``, ``i < j``, each
holding two blocks (at most ~0.9 of the bound). A task reports

* every pair across its two blocks (each cross pair lives in exactly one task), and
* the pairs inside a block ``x`` only in the task that *owns* ``x``: ``(x, x + 1)``, and
  ``(B - 2, B - 1)`` for the last block,

so the pair set is exactly the partition's pair set, every pair reported once. The
price is CPU and shuffle: each entry of an oversized partition is sent to ``B - 1``
tasks, and a block's inner pairs are searched ``B - 1`` times (reported once). Only
oversized partitions pay it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

I64 = NDArray[np.int64]

#: A block holds about this fraction of ``max_partition_size`` (two blocks a task, and
#: room for the hash's imbalance between blocks).
BLOCK_FILL = 0.45

#: Task key of a partition that is not split: ``(partition, 1, 0, 0)``.
Task = tuple[int, int, int, int]


def n_blocks(size: int, max_partition_size: int) -> int:
    """Blocks a partition of ``size`` entries is cut into (1: searched whole)."""
    if size <= max_partition_size:
        return 1
    return max(2, math.ceil(size / (BLOCK_FILL * max_partition_size)))


def block_of(ids: I64, n: int) -> I64:
    """The block of every node id, in ``[0, n)``: the splitmix64 finaliser of the id
    (every bit of the id moves every bit of the result, so ids that share their low or
    high bits still spread), the same on every runner and in every chunk."""
    x = np.asarray(ids, np.int64).astype(np.uint64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    return (x % np.uint64(n)).astype(np.int64)


def to_tasks(element: tuple[int, tuple], blocks: Mapping[int, int]) -> list[tuple[Task, tuple]]:
    """One partition chunk ``(partition, (ids, pHash, mirror))`` -> its search tasks.
    ``blocks`` maps the oversized partitions to their number of blocks."""
    pid, (ids, p, m) = element
    nb = blocks.get(pid, 1)
    if nb == 1:
        return [((pid, 1, 0, 0), (ids, p, m))]
    out: list[tuple[Task, tuple]] = []
    blk = block_of(ids, nb)
    for b in range(nb):
        sel = blk == b
        if not sel.any():
            continue
        part = (ids[sel], p[sel], m[sel])
        for c in range(nb):
            if c != b:
                out.append(((pid, nb, min(b, c), max(b, c)), part))
    return out


def task_pairs(task: Task, a: I64, b: I64, d: np.ndarray) -> tuple[I64, I64, np.ndarray]:
    """The pairs a task reports out of all it found among its nodes (see the module)."""
    _, nb, i, j = task
    if nb == 1:
        return a, b, d
    ba, bb = block_of(a, nb), block_of(b, nb)
    owner = np.where(ba < nb - 1, ba, nb - 2)  # inner pairs of block x: task (owner, owner + 1)
    keep = (ba != bb) | ((owner == i) & (j == i + 1))
    return a[keep], b[keep], d[keep]
