"""Tests for mitigate.select (active-learning export)."""

from __future__ import annotations

import bisect
import logging
import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mitigate.select import select_neighbours, select_positives, select_uncertain

# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

tied_or_nan = st.sampled_from([math.nan, 0.0, 0.2, 0.4, 0.45, 0.5, 0.55, 0.6, 1.0])


def table(scores: list[float], seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Unique keys in shuffled (not row) order, so key tie-breaks differ from row order."""
    order = np.random.default_rng(seed).permutation(len(scores))
    return [f"k{int(o):05d}" for o in order], np.asarray(scores, dtype=float)


def permuted(keys, scores, seed):
    perm = np.random.default_rng(seed).permutation(len(keys))
    return [keys[i] for i in perm], np.asarray(scores)[perm]


# --------------------------------------------------------------------------------------
# select_uncertain
# --------------------------------------------------------------------------------------


def test_uncertain_known_answer():
    keys = ["a", "b", "c", "d", "e", "f"]
    scores = [0.1, 0.49, 0.52, 0.9, 0.5, math.nan]
    assert select_uncertain(keys, scores, 0.5, 3) == [4, 1, 2]
    assert select_uncertain(keys, scores, 0.5, 0) == []
    # n larger than what is available: every scored sample, NaN never.
    assert select_uncertain(keys, scores, 0.5, 100) == [4, 1, 2, 0, 3]


def test_uncertain_ties_broken_by_key_not_row():
    keys = ["z", "y", "x", "w"]
    scores = np.array([0.25, 0.75, 0.75, 0.25])  # all at distance 0.25 from 0.5
    assert select_uncertain(keys, scores, 0.5, 2) == [3, 2]  # keys w, x
    assert select_uncertain(keys, scores, 0.5, 4) == [3, 2, 1, 0]


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(tied_or_nan, max_size=80),
    threshold=st.sampled_from([0.0, 0.5, 0.45, 1.0, 0.33]),
    n=st.integers(0, 90),
    seed=st.integers(0, 1000),
)
def test_uncertain_matches_full_sort(scores, threshold, n, seed):
    keys, arr = table(scores, seed)
    expected = sorted(
        (i for i in range(len(keys)) if not math.isnan(arr[i])),
        key=lambda i: (abs(arr[i] - threshold), keys[i], i),
    )[:n]
    got = select_uncertain(keys, arr, threshold, n)
    assert got == expected
    # Row order does not matter: the same keys are selected from a shuffled table.
    keys2, arr2 = permuted(keys, arr, seed + 1)
    assert [keys2[i] for i in select_uncertain(keys2, arr2, threshold, n)] == [keys[i] for i in got]


def test_uncertain_validation():
    with pytest.raises(ValueError, match="differ in length"):
        select_uncertain(["a"], [0.1, 0.2], 0.5, 1)
    with pytest.raises(ValueError, match="non-negative integer"):
        select_uncertain(["a"], [0.1], 0.5, -1)
    with pytest.raises(ValueError, match="non-negative integer"):
        select_uncertain(["a"], [0.1], 0.5, 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        select_uncertain(["a"], [0.1], math.nan, 1)
    assert select_uncertain([], [], 0.5, 3) == []


# --------------------------------------------------------------------------------------
# select_positives
# --------------------------------------------------------------------------------------


def test_positives_all_when_few():
    keys = ["e", "d", "c", "b", "a"]
    scores = [0.9, 0.3, 0.7, 0.7, math.nan]
    # score >= 0.7; highest first, ties by key (b before c); NaN never a positive.
    assert select_positives(keys, scores, 0.7, 10) == [0, 3, 2]
    assert select_positives(keys, scores, 0.7, 3) == [0, 3, 2]
    assert select_positives(keys, scores, 0.95, 10) == []
    assert select_positives(keys, scores, 0.7, 0) == []


@settings(max_examples=100, deadline=None)
@example(scores=[1.0, 1.0, 1.0, 1.0], n=3, seed=0, perm_seed=0)  # strata of sizes 1, 1, 2
@given(
    scores=st.lists(st.one_of(st.floats(0, 1), st.sampled_from([0.3, 0.5, 1.0])), max_size=300),
    n=st.integers(1, 40),
    seed=st.integers(0, 2**64 - 1),
    perm_seed=st.integers(0, 1000),
)
def test_positives_rank_strata(scores, n, seed, perm_seed):
    keys, arr = table(scores, perm_seed)
    t = 0.3
    got = select_positives(keys, arr, t, n, seed=seed)
    pos = sorted((i for i in range(len(keys)) if arr[i] >= t), key=lambda i: (arr[i], keys[i], i))
    m = len(pos)
    assert len(got) == min(n, m) and len(set(got)) == len(got)
    assert all(arr[i] >= t for i in got)
    assert got == sorted(got, key=lambda i: (-arr[i], keys[i], i))
    if m > n:
        # Exactly one selected sample in each of the n equal-count rank strata.
        # Stratum j holds ranks floor(j*m/n) .. floor((j+1)*m/n) - 1 (documented).
        bounds = [j * m // n for j in range(n + 1)]
        rank = {i: r for r, i in enumerate(pos)}
        strata = sorted(bisect.bisect_right(bounds, rank[i]) - 1 for i in got)
        assert strata == list(range(n)), strata
    # Deterministic and independent of row order.
    keys2, arr2 = permuted(keys, arr, perm_seed + 1)
    assert {keys2[i] for i in select_positives(keys2, arr2, t, n, seed=seed)} == {
        keys[i] for i in got
    }


def test_positives_spread_and_inclusion_rate():
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.random(500) * 0.5, 0.5 + rng.random(20) * 0.5])
    keys = [f"s{i}" for i in range(scores.size)]
    m, n = 20, 5
    counts = np.zeros(scores.size)
    picks = set()
    for seed in range(400):
        got = select_positives(keys, scores, 0.5, n, seed=seed)
        counts[got] += 1
        picks.add(tuple(got))
        chosen = np.sort(scores[got])
        ranks = np.searchsorted(np.sort(scores[scores >= 0.5]), chosen)
        assert list(ranks // (m // n)) == [0, 1, 2, 3, 4]  # one per quintile of ranks
    assert len(picks) > 100  # the seed matters
    rates = counts[500:] / 400  # each predicted positive is chosen about n / m = 25% of runs
    assert rates.min() > 0.15 and rates.max() < 0.35, rates
    assert counts[:500].sum() == 0


def test_positives_validation():
    with pytest.raises(ValueError, match="seed"):
        select_positives(["a"], [0.9], 0.5, 1, seed=-1)
    with pytest.raises(ValueError, match="NaN"):
        select_positives(["a"], [0.9], math.nan, 1)


# --------------------------------------------------------------------------------------
# select_neighbours
# --------------------------------------------------------------------------------------


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def at_similarity(p: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """A vector with cosine similarity ``cos`` to ``p`` (random direction, random length)."""
    p = unit(p)
    u = rng.standard_normal(p.size)
    u = unit(u - (u @ p) * p)
    return (cos * p + math.sqrt(1 - cos * cos) * u) * rng.uniform(0.5, 3.0)


def brute_force_neighbours(keys, emb, positive_keys, scores, threshold, n):
    unit_rows = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    pos = sorted((i for i, k in enumerate(keys) if k in set(positive_keys)), key=lambda i: keys[i])
    sims = unit_rows @ unit_rows[pos].T
    rows = []
    for i in range(len(keys)):
        if scores[i] < threshold and keys[i] not in set(positive_keys):
            j = int(np.argmax(sims[i]))
            rows.append((-sims[i, j], keys[i], i, pos[j]))
    rows.sort()
    return [(i, p, -s) for s, _, i, p in rows[:n]]


@pytest.fixture(scope="module")
def planted():
    """2000 random 128-d embeddings (cosine to anything ~N(0, 1/128), so < 0.45) with
    candidates planted at known similarities to three known positives."""
    rng = np.random.default_rng(42)
    n_rows, dim = 2000, 128
    emb = rng.standard_normal((n_rows, dim))
    scores = rng.uniform(0.0, 0.49, n_rows)  # all below the threshold 0.5 ...
    scores[rng.choice(n_rows, 300, replace=False)] = rng.uniform(0.5, 1.0, 300)  # ... but these
    keys = [f"key{int(i):05d}" for i in rng.permutation(n_rows)]
    positives = [10, 20, 30]
    scores[positives] = [0.9, 0.8, 0.1]  # a known positive the classifier missed
    plan = {  # row: (positive row, similarity)
        100: (10, 0.97),
        200: (20, 0.93),
        300: (30, 0.89),
        400: (10, 0.85),
        500: (20, 0.80),
        600: (30, 0.75),
    }
    for row, (p, cos) in plan.items():
        emb[row] = at_similarity(emb[p], cos, rng)
        scores[row] = 0.2
    emb[700] = at_similarity(emb[10], 0.99, rng)  # very similar, but scored >= threshold
    scores[700] = 0.7
    return keys, emb, [keys[p] for p in positives], scores, plan


def test_neighbours_finds_planted_candidates(planted):
    keys, emb, pos_keys, scores, plan = planted
    got = select_neighbours(keys, emb, pos_keys, scores, 0.5, 6)
    assert [(i, p) for i, p, _ in got] == [(row, p) for row, (p, _) in plan.items()]
    for (_, _, sim), (_, cos) in zip(got, plan.values(), strict=True):
        assert sim == pytest.approx(cos, abs=1e-12)
    # Beyond the planted ones come random rows, far less similar.
    more = select_neighbours(keys, emb, pos_keys, scores, 0.5, 10)
    assert more[:6] == got and all(sim < 0.5 for _, _, sim in more[6:])
    # Excluded: row 700 (score >= threshold) and row 30 (itself a known positive).
    every = select_neighbours(keys, emb, pos_keys, scores, 0.5, 10_000)
    assert {i for i, _, _ in every}.isdisjoint({700, 10, 20, 30})
    assert len(every) == int(np.count_nonzero(scores < 0.5)) - 1  # minus positive row 30


@pytest.mark.parametrize("n", [1, 5, 37, 5000])
@pytest.mark.parametrize("chunk_size", [None, 1, 64, 333, 10_000])
def test_neighbours_matches_brute_force(planted, n, chunk_size):
    keys, emb, pos_keys, scores, _ = planted
    got = select_neighbours(keys, emb, pos_keys, scores, 0.5, n, chunk_size=chunk_size)
    ref = brute_force_neighbours(keys, emb, pos_keys, scores, 0.5, n)
    assert [(i, p) for i, p, _ in got] == [(i, p) for i, p, _ in ref]
    assert np.allclose([s for *_, s in got], [s for *_, s in ref], rtol=0, atol=1e-12)
    assert len({i for i, _, _ in got}) == len(got)  # deduplicated by index


def test_neighbours_deterministic_and_row_order_free(planted):
    keys, emb, pos_keys, scores, _ = planted
    a = select_neighbours(keys, emb, pos_keys, scores, 0.5, 50)
    assert select_neighbours(keys, emb, pos_keys, scores, 0.5, 50) == a
    perm = np.random.default_rng(7).permutation(len(keys))
    keys2 = [keys[i] for i in perm]
    b = select_neighbours(keys2, emb[perm], pos_keys[::-1], scores[perm], 0.5, 50)
    assert [(keys2[i], keys2[p]) for i, p, _ in b] == [(keys[i], keys[p]) for i, p, _ in a]


def test_neighbours_exact_ties():
    # Axis-aligned vectors give exact similarities, so ties are real ties.
    emb = np.array(
        [
            [1.0, 0.0, 0.0],  # 0 positive "z"
            [0.0, 1.0, 0.0],  # 1 positive "y"
            [1.0, 1.0, 0.0],  # 2 "c": equally similar to both positives -> paired with "y"
            [3.0, 0.0, 4.0],  # 3 "b": 0.6 to "z"
            [0.0, 6.0, 8.0],  # 4 "a": 0.6 to "y" (tie with "b" -> "a" first)
            [0.0, 0.0, 1.0],  # 5 "d": 0.0
            [0.0, 0.0, 0.0],  # 6 "e": zero vector -> skipped
        ]
    )
    keys = ["z", "y", "c", "b", "a", "d", "e"]
    scores = np.zeros(7)
    got = select_neighbours(keys, emb, ["z", "y"], scores, 0.5, 10)
    assert got == [
        (2, 1, pytest.approx(math.sqrt(0.5))),
        (4, 1, pytest.approx(0.6)),
        (3, 0, pytest.approx(0.6)),
        (5, 1, 0.0),
    ]
    assert got[1][2] == got[2][2]
    for chunk_size in (1, 2, 3):
        assert select_neighbours(keys, emb, ["z", "y"], scores, 0.5, 2, chunk_size=chunk_size) == [
            got[0],
            got[1],
        ]


def test_neighbours_edge_cases(caplog):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((20, 8))
    keys = [f"k{i}" for i in range(20)]
    scores = np.linspace(0, 1, 20)
    assert select_neighbours(keys, emb, [], scores, 0.5, 5) == []
    assert select_neighbours(keys, emb, ["k19"], scores, 0.5, 0) == []
    with caplog.at_level(logging.WARNING, logger="mitigate.select"):
        assert select_neighbours(keys, emb, ["nope"], scores, 0.5, 5) == []
        assert select_neighbours(keys, emb, ["k19", "nope"], scores, 0.5, 3)
    assert "1 positive key(s) not in keys" in caplog.text
    # n larger than the candidates: all of them (scores < 0.5 -> rows 0..9), once each.
    got = select_neighbours(keys, emb, ["k19"], scores, 0.5, 1000)
    assert sorted(i for i, _, _ in got) == list(range(10))
    assert all(p == 19 for _, p, _ in got)
    # NaN scores are not candidates; a zero-vector positive is ignored.
    scores_nan = scores.copy()
    scores_nan[:5] = math.nan
    assert sorted(i for i, _, _ in select_neighbours(keys, emb, ["k19"], scores_nan, 0.5, 99)) == [
        5,
        6,
        7,
        8,
        9,
    ]
    emb0 = emb.copy()
    emb0[19] = 0.0
    assert select_neighbours(keys, emb0, ["k19"], scores, 0.5, 5) == []
    with pytest.raises(ValueError, match="shape"):
        select_neighbours(keys, emb[:5], ["k19"], scores, 0.5, 5)
    with pytest.raises(ValueError, match="chunk_size"):
        select_neighbours(keys, emb, ["k19"], scores, 0.5, 5, chunk_size=0)


class RowCounter:
    """An (N, D) array that records how many rows each read asks for."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.reads: list[int] = []

    def __getitem__(self, item):
        out = self.data[item]
        self.reads.append(out.shape[0])
        return out


def test_neighbours_bounded_memory(planted, tmp_path):
    keys, emb, pos_keys, scores, _ = planted
    expected = select_neighbours(keys, emb, pos_keys, scores, 0.5, 20, chunk_size=128)
    counted = RowCounter(emb)
    assert select_neighbours(keys, counted, pos_keys, scores, 0.5, 20, chunk_size=128) == expected
    assert counted.reads[0] == 3  # the positives
    assert max(counted.reads[1:]) == 128 and len(counted.reads) == 1 + math.ceil(2000 / 128)
    # Default chunking bounds the chunk x positives block (2**22 elements).
    many_pos = keys[:1500]
    counted = RowCounter(emb)
    select_neighbours(keys, counted, many_pos, scores, 0.5, 5)
    assert max(counted.reads[1:]) <= 2**22 // 1500
    # A memory-mapped file works and gives the same answer.
    np.save(tmp_path / "emb.npy", emb.astype(np.float32))
    mm = np.load(tmp_path / "emb.npy", mmap_mode="r")
    got = select_neighbours(keys, mm, pos_keys, scores, 0.5, 6, chunk_size=128)
    assert [i for i, _, _ in got] == [100, 200, 300, 400, 500, 600]
