"""Oversized partitions searched in blocks (mitigate/partition_split.py): the tasks of a
partition report exactly the partition's pairs, each once, and hold about the bound."""

from __future__ import annotations

import numpy as np
import pytest

from mitigate import neardup as nd
from mitigate import partition_batch as pb
from mitigate import partition_split as ps


def _chunks(n: int, seed: int, n_chunks: int = 3) -> list[tuple]:
    p, m = nd.synthetic_hashes(
        n, k=10, n_planted=n // 2, n_mirror_planted=n // 10, hot_sizes=(6, 4), seed=seed
    )
    rng = np.random.default_rng(seed)
    ids = rng.choice(2**40, size=p.size, replace=False).astype(np.int64)
    cut = np.sort(rng.choice(np.arange(1, p.size), size=n_chunks - 1, replace=False))
    return [
        (ids[s:e], p[s:e], m[s:e]) for s, e in zip(np.r_[0, cut], np.r_[cut, p.size], strict=True)
    ]


def _pairs(a, b, d) -> list[tuple[int, int, int]]:
    return sorted(zip(a.tolist(), b.tolist(), d.tolist(), strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bound", [100, 250, 1000])
def test_tasks_report_exactly_the_partition_pairs_once(seed: int, bound: int) -> None:
    chunks = _chunks(400, seed)
    size = sum(c[0].size for c in chunks)
    want = _pairs(*pb.search_chunks(chunks, 10, "exact"))
    assert len(want) > 100
    nb = ps.n_blocks(size, bound)
    tasks: dict[tuple, list] = {}
    for chunk in chunks:
        for key, part in ps.to_tasks((7, chunk), {7: nb} if nb > 1 else {}):
            tasks.setdefault(key, []).append(part)
    got: list[tuple[int, int, int]] = []
    for key, parts in tasks.items():
        got += _pairs(*ps.task_pairs(key, *pb.search_chunks(parts, 10, "exact")))
    assert sorted(got) == want  # the same pairs, none twice
    held = [sum(p[0].size for p in parts) for parts in tasks.values()]
    if size <= bound:
        assert list(tasks) == [(7, 1, 0, 0)] and held == [size]
    else:
        assert len(tasks) == nb * (nb - 1) // 2 and nb >= 2
        assert max(held) <= 1.25 * bound  # two blocks of ~0.45 of the bound, hash imbalance
        assert max(held) < size


def test_blocks_are_a_function_of_the_node_id_alone() -> None:
    ids = np.arange(10_000, dtype=np.int64) << 32
    blocks = ps.block_of(ids, 7)
    assert blocks.min() == 0 and blocks.max() == 6
    counts = np.bincount(blocks, minlength=7)
    assert counts.min() > 0.8 * counts.mean()  # balanced on structured ids
    np.testing.assert_array_equal(ps.block_of(ids[::-1], 7), blocks[::-1])
    assert ps.n_blocks(100, 100) == 1 and ps.n_blocks(101, 100) == 3
