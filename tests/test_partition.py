"""Partitioned near-duplicate search (mitigate.partition): which partitions a hash goes
to, the pairs found inside partitions against the exact search, and the recall estimate."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mitigate import neardup as nd
from mitigate import partition as pt


def _planted(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # planted copies at every distance 0..k, mirror-rule copies and chains
    return nd.synthetic_hashes(
        n, k=k, n_planted=3 * (k + 1), n_mirror_planted=k + 1, n_chains=2, seed=seed
    )


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    k=st.integers(0, 12),
    n=st.integers(20, 300),
    n_clusters=st.integers(2, 12),
    n_clusterings=st.integers(1, 4),
)
def test_partitioned_pairs_are_exactly_the_true_pairs_that_share_a_partition(
    seed, k, n, n_clusters, n_clusterings
):
    p, m = _planted(n, k, seed)
    plan = pt.fit_clusterings(p, m, n_clusters, n_clusterings, k=k, seed=seed)
    found, sizes = pt.partition_pairs(plan, p, m, k)
    exact = nd.find_near_duplicates(p, m, k, mode="exact")
    assert found.to_set() <= exact.to_set()  # never a false pair, distances exact
    ids = [set(x) for x in pt.assign(plan, p, m)]
    meet = {(i, j, d) for i, j, d in exact.to_set() if ids[i] & ids[j]}
    assert found.to_set() == meet
    assert sum(sizes) == sum(len(x) for x in ids)
    assert all(1 <= len(x) <= 2 * n_clusterings for x in ids)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10**6), k=st.integers(0, 12), n=st.integers(2, 300))
def test_one_partition_is_the_exact_search(seed, k, n):
    p, m = _planted(n, k, seed)
    plan = pt.fit_clusterings(p, m, 1, 5, k=k)
    assert plan.n_partitions == 1
    found, sizes = pt.partition_pairs(plan, p, m, k)
    assert found.same_as(nd.find_near_duplicates(p, m, k, mode="exact"))
    assert sizes == [p.size]


def test_planted_pairs_at_every_distance_are_found_by_several_clusterings():
    p, m = nd.synthetic_hashes(20_000, k=10, n_planted=2200, n_mirror_planted=440, seed=3)
    exact = nd.find_near_duplicates(p, m, 10, mode="exact")
    recall = {}
    for c in (1, 5):
        plan = pt.fit_clusterings(p[:4000], m[:4000], 16, c, k=10)
        found, _ = pt.partition_pairs(plan, p, m, 10)
        recall[c] = len(found) / len(exact)
        by_d = np.bincount(found.dist, minlength=11)[:11] / np.bincount(exact.dist, minlength=11)
        assert by_d[0] == 1.0  # identical hashes always meet
    assert recall[5] > recall[1] and recall[5] >= 0.9, recall


def test_fit_is_deterministic_and_centroids_partition_their_own_hashes():
    p, m = nd.synthetic_hashes(2000, k=10, seed=1)
    a = pt.fit_clusterings(p, m, 8, 3, seed=7)
    b = pt.fit_clusterings(p, m, 8, 3, seed=7)
    assert np.array_equal(a.centroids, b.centroids) and a.centroids.shape == (3, 8)
    assert not np.array_equal(a.centroids[0], a.centroids[1])  # independent clusterings
    ids = pt.assign(a, a.centroids[1], a.centroids[1])
    assert [x[1] for x in ids] == [8 + j for j in range(8)]
    with pytest.raises(ValueError, match="cannot fit 8 clusters"):
        pt.fit_clusterings(p[:2], m[:2], 8, 1)


def test_number_of_clusters_follows_n_and_the_partition_bound():
    assert pt.n_clusters_for(10, 10) == 1
    # mean partition half the bound: 2 entries a node (pHash, mirror) per probe
    assert pt.n_clusters_for(11, 10) == 2 * 11 * 2 // 10 + 1
    assert pt.n_clusters_for(10**9, 2_000_000) == 2000
    assert pt.n_clusters_for(10**9, 2_000_000, probes=2) == 4000


def test_recall_from_counts_matches_the_sampled_brute_force_estimate():
    p, m = nd.synthetic_hashes(3000, k=10, n_planted=800, n_mirror_planted=100, seed=2)
    plan = pt.fit_clusterings(p, m, 12, 1, k=10)
    found, _ = pt.partition_pairs(plan, p, m, 10)
    want = nd.estimate_pair_recall(p, m, 10, found, n_samples=500, seed=5)
    rng = np.random.default_rng(5)
    sample = np.sort(rng.choice(p.size, size=500, replace=False))
    truth = nd.brute_force_pairs(p, m, 10).to_set()
    pairs = {(i, j) for i, j, _ in found.to_set()}
    t = [sum(1 for i, j, _ in truth if q in (i, j)) for q in sample]
    f = [sum(1 for i, j, _ in truth if q in (i, j) and (i, j) in pairs) for q in sample]
    got = pt.recall_from_counts(t, f)
    assert 0 < got.recall < 1
    assert got == want


def test_stable_hash_does_not_depend_on_the_process():
    code = "from mitigate.partition import stable_hash; print(stable_hash('000010001'))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outs == {str(pt.stable_hash("000010001"))}


def test_multi_probe_adds_the_next_nearest_centroids_and_finds_more_pairs():
    p, m = nd.synthetic_hashes(2000, k=10, n_planted=600, n_mirror_planted=100, seed=4)
    plan = pt.fit_clusterings(p, m, 16, 2, k=10)
    one = pt.assign(plan, p, m)
    two = pt.assign(dataclasses.replace(plan, probes=2), p, m)
    assert all(set(a) < set(b) for a, b in zip(one, two, strict=True))
    assert max(len(b) for b in two) == 2 * 2 * 2  # clusterings x (pHash, mirror) x probes
    exact = nd.find_near_duplicates(p, m, 10, mode="exact")
    found1, _ = pt.partition_pairs(plan, p, m, 10)
    found2, _ = pt.partition_pairs(dataclasses.replace(plan, probes=2), p, m, 10)
    assert found1.to_set() < found2.to_set() <= exact.to_set()
