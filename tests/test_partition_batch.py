"""The array steps of the partitioned graph (mitigate/partition_batch.py): partitions
and search on batches against the exact pairs, components in bucketed star rounds
against scipy, and the keep rule per bucket of components against the one-worker path."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mitigate import neardup as nd
from mitigate import partition as pt
from mitigate import partition_batch as pb
from mitigate.near import HashItem

K = 10


def _ids(n: int, n_batches: int, seed: int) -> np.ndarray:
    """Distinct node ids spread over batches, in random order."""
    rng = np.random.default_rng(seed)
    batch = rng.integers(0, n_batches, size=n)
    pos = np.zeros(n, np.int64)
    for b in range(n_batches):
        sel = np.flatnonzero(batch == b)
        pos[sel] = np.arange(sel.size)
    return (batch.astype(np.int64) << 32) + pos


def _scipy_labels(n: int, a: np.ndarray, b: np.ndarray, ids: np.ndarray) -> dict[int, int]:
    comp = nd.connected_components(n, a, b)
    smallest: dict[int, int] = {}
    for i, c in enumerate(comp.tolist()):
        smallest[c] = min(smallest.get(c, ids[i]), int(ids[i]))
    touched = set(a.tolist()) | set(b.tolist())
    return {int(ids[i]): smallest[comp[i]] for i in sorted(touched)}


def test_star_rounds_on_buckets_label_a_long_chain_and_stars_like_scipy():
    n = 3000
    ids = _ids(n, n_batches=7, seed=0)
    order = np.random.default_rng(1).permutation(n)
    chain_a, chain_b = order[:-1][:2000], order[1:][:2000]  # one chain of 2001 nodes
    hub = order[2500]
    star_a = np.full(300, hub)
    star_b = order[2100:2400]  # a star of 301 nodes
    a = np.r_[chain_a, star_a, order[2450]]
    b = np.r_[chain_b, star_b, order[2451]]  # and one lone pair
    want = _scipy_labels(n, a, b, ids)
    for rounds, buckets in ((0, 1), (2, 3), (6, 4)):
        nodes, labels, rest = pb.component_labels(ids[a], ids[b], rounds, buckets)
        assert dict(zip(nodes.tolist(), labels.tolist(), strict=True)) == want, rounds
        if rounds == 0:
            assert rest > 100  # the one-worker finish really had work to do
    assert len(set(want.values())) == 3


def _planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return nd.synthetic_hashes(
        n, k=K, n_planted=n // 3, n_mirror_planted=n // 10, n_chains=2, chain_length=5, seed=seed
    )


def _batches(p: np.ndarray, m: np.ndarray, n_batches: int) -> list[pb.Batch]:
    ph, mh = nd.uint64_to_hex(p), nd.uint64_to_hex(m)
    by: dict[int, list[HashItem]] = {}
    for i in range(p.size):
        key = f"k{i:05d}"
        by.setdefault(pt.stable_hash(key) % n_batches, []).append(HashItem(key, ph[i], mh[i], 1))
    return [pb.Batch.of_items(bid, items) for bid, items in sorted(by.items())]


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), clusters=st.integers(1, 6), clusterings=st.integers(1, 3))
def test_batched_partitions_find_exactly_the_true_pairs_that_share_a_partition(
    seed, clusters, clusterings
):
    p, m = _planted(240, seed)
    batches = _batches(p, m, n_batches=3)
    ids = np.concatenate([b.ids for b in batches])
    bp = np.concatenate([b.phash for b in batches])
    bm = np.concatenate([b.mirror for b in batches])
    plan = pt.fit_clusterings(bp, bm, clusters, clusterings, k=K)
    by_pid: dict[int, list] = {}
    for b in batches:
        for pid, chunk in pb.assign_chunks(b, plan):
            by_pid.setdefault(pid, []).append(chunk)
    found = [pb.search_chunks(chunks, K, "exact") for chunks in by_pid.values()]
    a, b, d = pb.unique_pairs(*(np.concatenate([f[i] for f in found]) for i in range(3)))
    got = set(zip(a.tolist(), b.tolist(), d.tolist(), strict=True))
    exact = nd.brute_force_pairs(bp, bm, K)
    parts = pt.assign(plan, bp, bm)
    want = {
        (int(ids[i]), int(ids[j]), int(dist))
        for i, j, dist in exact.to_set()
        if set(parts[i]) & set(parts[j])
    }
    assert got == want
    # planted neighbours at every distance 0..k are in the data and, with one
    # partition, every one of them is found
    assert set(np.bincount(exact.dist, minlength=K + 1).nonzero()[0]) == set(range(K + 1))
    if clusters == 1:
        assert len(got) == len(exact)
