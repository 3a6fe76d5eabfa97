"""Tests for mitigate.neardup (near-duplicate search on 64-bit perceptual hashes).

Every search mode is compared with an independent reference (pure-Python loops or the
chunked numpy brute force, itself checked against pure Python), on data that plants
neighbours at every distance 0..k, mirror-rule pairs, identical-hash hot groups and
chains.
"""

from __future__ import annotations

import itertools
import math

import neardup_keys as nk
import numpy as np
import pytest
from hash_strategies import BASE, DERIVED, planted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mitigate import neardup as nd
from mitigate.neardup import bits, mih, synthetic

HSET = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
U64_MAX = 2**64 - 1


# --------------------------------------------------------------------------------------
# helpers (independent reference implementations)
# --------------------------------------------------------------------------------------


def py_dist(pa: int, ma: int | None, pb: int, mb: int | None) -> int:
    d = bin(pa ^ pb).count("1")
    if mb is not None:
        d = min(d, bin(pa ^ mb).count("1"))
    if ma is not None:
        d = min(d, bin(ma ^ pb).count("1"))
    return d


def py_pairs(p: np.ndarray, m: np.ndarray | None, k: int) -> set[tuple[int, int, int]]:
    pl = [int(x) for x in p]
    ml = None if m is None else [int(x) for x in m]
    out = set()
    for i, j in itertools.combinations(range(len(pl)), 2):
        d = py_dist(pl[i], None if ml is None else ml[i], pl[j], None if ml is None else ml[j])
        if d <= k:
            out.add((i, j, d))
    return out


def greedy_reference(
    n: int, edges: set[tuple[int, int, int]], rank: list[int]
) -> tuple[list[bool], list[int], list[int]]:
    """Per-component greedy written independently of the library (adjacency dicts)."""
    adj: dict[int, dict[int, int]] = {i: {} for i in range(n)}
    for i, j, d in edges:
        adj[i][j] = d
        adj[j][i] = d
    seen = [False] * n
    keep = [True] * n
    dup = [-1] * n
    dist = [-1] * n
    for s in range(n):
        if seen[s]:
            continue
        comp, stack = [], [s]
        seen[s] = True
        while stack:
            x = stack.pop()
            comp.append(x)
            for y in adj[x]:
                if not seen[y]:
                    seen[y] = True
                    stack.append(y)
        kept: list[int] = []
        for x in sorted(comp, key=lambda v: (rank[v], v)):
            near = [y for y in kept if y in adj[x]]
            if near:
                best = min(near, key=lambda v: (rank[v], v))
                keep[x], dup[x], dist[x] = False, best, adj[x][best]
            else:
                kept.append(x)
    return keep, dup, dist


def check_keep_invariants(n: int, edges: nd.PairSet, rank: np.ndarray, res: nd.KeepResult) -> None:
    pos = nd.rank_positions(rank)
    emap = {}
    for i, j, d in edges.to_set():
        emap[(i, j)] = d
        emap[(j, i)] = d
    # no edge joins two kept items
    for i, j in zip(edges.i.tolist(), edges.j.tolist(), strict=True):
        assert not (res.keep[i] and res.keep[j]), (i, j)
    # dropped items point to a kept, better-ranked neighbour at the edge distance
    for x in np.flatnonzero(~res.keep).tolist():
        y = int(res.duplicate_of[x])
        assert res.keep[y]
        assert (x, y) in emap and emap[(x, y)] == res.distance[x]
        assert pos[y] < pos[x]
    assert np.all(res.duplicate_of[res.keep] == -1)
    assert np.all(res.distance[res.keep] == -1)
    # every component keeps its best-ranked item
    for c in np.unique(res.component).tolist():
        members = np.flatnonzero(res.component == c)
        assert members.min() == c
        assert res.keep[members[np.argmin(pos[members])]]


# --------------------------------------------------------------------------------------
# popcount, distances, input handling
# --------------------------------------------------------------------------------------


def test_popcount_matches_python_and_lut() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, U64_MAX, size=2000, dtype=np.uint64, endpoint=True)
    x[:4] = [0, U64_MAX, 1 << 63, 0x5555_5555_5555_5555]
    ref = np.array([bin(int(v)).count("1") for v in x])
    assert np.array_equal(nd.popcount64(x), ref)
    assert np.array_equal(bits._popcount_lut(x), ref)
    assert np.array_equal(bits._popcount_lut(x.reshape(40, 50)), ref.reshape(40, 50))


def test_pair_distance_rule_and_symmetry() -> None:
    rng = np.random.default_rng(2)
    p, m = (rng.integers(0, U64_MAX, size=300, dtype=np.uint64, endpoint=True) for _ in range(2))
    d = nd.pair_distance(p[:150], m[:150], p[150:], m[150:])
    d_rev = nd.pair_distance(p[150:], m[150:], p[:150], m[:150])
    ref = [
        py_dist(int(a), int(b), int(c), int(e))
        for a, b, c, e in zip(p[:150], m[:150], p[150:], m[150:], strict=True)
    ]
    assert d.tolist() == ref
    assert np.array_equal(d, d_rev)
    # H(m_i, m_j) is deliberately not part of the rule
    a, b = np.uint64(0), np.uint64(U64_MAX)
    assert int(nd.pair_distance(a, a, b, a)[()]) == 0  # p_a vs m_b identical
    x = np.uint64(0x5555_5555_5555_5555)
    assert int(nd.pair_distance(a, x, b, x)[()]) == 32  # m_a == m_b alone does not match


def test_as_hashes_conversions() -> None:
    signed = np.array([-1, 5, -(2**63)], dtype=np.int64)
    u = nd.as_hashes(signed)
    assert u.dtype == np.uint64
    assert u.tolist() == [U64_MAX, 5, 2**63]
    assert nd.as_hashes([U64_MAX, 3]).tolist() == [U64_MAX, 3]
    hexes = nd.uint64_to_hex(u)
    assert hexes[0] == "ffffffffffffffff"
    assert nd.hex_to_uint64(hexes).tolist() == u.tolist()
    with pytest.raises(TypeError):
        nd.as_hashes(np.array([1.5]))
    with pytest.raises(ValueError):
        nd.as_hashes(np.zeros((2, 2), np.uint64))
    with pytest.raises(ValueError):
        nd.brute_force_pairs(u, u[:2], 3)
    with pytest.raises(ValueError):
        nd.find_near_duplicates(u, None, 65)


# --------------------------------------------------------------------------------------
# brute force reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_mirror", [True, False])
def test_brute_force_equals_python(with_mirror: bool) -> None:
    p, m = planted(seed=3, k=6, n_random=90)
    mm = m if with_mirror else None
    ref = py_pairs(p, mm, 6)
    got = nd.brute_force_pairs(p, mm, 6)
    assert got.to_set() == ref
    assert np.all(got.i < got.j)
    assert np.all(np.diff(got.i * len(p) + got.j) > 0)  # sorted, unique
    small_blocks = nd.brute_force_pairs(p, mm, 6, block_elems=37)
    assert small_blocks.same_as(got)
    qi, xi, dd = nd.brute_force_join(p[:20], None if mm is None else mm[:20], p, mm, 6)
    joined = {(a, b, c) for a, b, c in zip(qi.tolist(), xi.tolist(), dd.tolist(), strict=True)}
    expect = {
        (a, b, d)
        for a in range(20)
        for b in range(len(p))
        if (
            d := py_dist(
                int(p[a]),
                None if mm is None else int(mm[a]),
                int(p[b]),
                None if mm is None else int(mm[b]),
            )
        )
        <= 6
    }
    assert joined == expect


# --------------------------------------------------------------------------------------
# exact search modes == brute force
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data10() -> tuple[np.ndarray, np.ndarray, nd.PairSet]:
    p, m = planted(seed=5, k=10)
    return p, m, nd.brute_force_pairs(p, m, 10)


def test_planted_data_covers_all_cases(data10: tuple[np.ndarray, np.ndarray, nd.PairSet]) -> None:
    p, _, bf = data10
    assert set(bf.dist.tolist()) == set(range(11))  # every distance 0..k present
    h_pp = nd.hamming(p[bf.i], p[bf.j])
    assert np.count_nonzero(h_pp > 10) >= 50  # pairs that only the mirror rule finds
    _, counts = np.unique(p, return_counts=True)
    assert counts.max() >= 60  # hot value


@pytest.mark.parametrize("k", [0, 1, 3, 6, 10, 13])
def test_exact_auto_equals_brute_force(k: int) -> None:
    p, m = planted(seed=10 + k, k=max(k, 1))
    bf = nd.brute_force_pairs(p, m, k)
    assert nd.find_near_duplicates(p, m, k, mode="exact").same_as(bf)
    assert nd.find_near_duplicates(p, m, k, mode="auto").same_as(bf)
    if k < 13:
        assert nk.band_pairs(p, m, k).same_as(bf)
    bf0 = nd.brute_force_pairs(p, None, k)
    assert nd.find_near_duplicates(p, None, k, mode="exact").same_as(bf0)


def test_exact_every_substring_count(data10: tuple[np.ndarray, np.ndarray, nd.PairSet]) -> None:
    p, m, bf = data10
    for n_sub in range(3, 12):
        plan = nd.make_plan(10, n_sub)
        assert nd.find_near_duplicates(p, m, 10, mode="exact", plan=plan).same_as(bf), n_sub
    # caller-chosen, looser-than-needed radii are accepted and still exact
    loose = nd.plan_mih(10, len(p), m=4, radii=[3, 3, 3, 3])
    assert nd.find_near_duplicates(p, m, 10, mode="exact", plan=loose).same_as(bf)


@pytest.mark.parametrize(("k", "n_sub"), [(0, 1), (1, 1), (3, 2), (5, 2)])
def test_exact_long_substrings_sorted_index(k: int, n_sub: int) -> None:
    """Substrings longer than DENSE_TABLE_MAX_BITS use the binary-search index."""
    p, m = planted(seed=50 + k, k=max(k, 1), n_random=600)
    plan = nd.make_plan(k, n_sub)
    assert max(plan.lengths) > nd.DENSE_TABLE_MAX_BITS
    got = nd.find_near_duplicates(p, m, k, mode="exact", plan=plan)
    assert got.same_as(nd.brute_force_pairs(p, m, k))


@pytest.mark.parametrize("k", [4, 10])
def test_exact_on_sparse_hashes(k: int) -> None:
    """Low-popcount hashes (flat / blank images give pHashes such as 0x8000...): hot
    substring values and stored hashes close to the empty-slot sentinels."""
    rng = np.random.default_rng(k)
    bits = [rng.choice(64, size=int(rng.integers(0, 5)), replace=False) for _ in range(500)]
    sparse = np.array([sum(1 << int(b) for b in bb) for bb in bits], np.uint64)
    dense = rng.integers(0, U64_MAX, size=300, dtype=np.uint64, endpoint=True)
    p = np.concatenate([sparse, dense])
    m = p ^ np.uint64(1 << 63)
    bf = nd.brute_force_pairs(p, m, k)
    assert 0 < len(bf) < 0.5 * len(p) * (len(p) - 1) / 2
    for plan in (None, nk.plan_bands(k), nd.make_plan(k, 4), nd.make_plan(k, 2)):
        if plan is not None and plan.probes_per_query() > 50_000:
            continue
        got = nd.find_near_duplicates(p, m, k, mode="exact", plan=plan)
        assert got.same_as(bf)
    assert nd.find_near_duplicates(p, m, k, mode="lsh").to_set() <= bf.to_set()


def test_bucket_expansion_batches() -> None:
    """Variable-size bucket expansion gives the same matches however it is batched."""
    rng = np.random.default_rng(12)
    full = rng.integers(0, 2**12, size=400, dtype=np.uint64)  # close hashes: many matches
    cnt = rng.integers(0, 30, size=60)
    lo = np.concatenate([[0], np.cumsum(cnt)[:-1]]) % 350
    rows = rng.integers(0, 400, size=60)
    ids = np.arange(400, dtype=np.int64)[::-1]
    whole = mih._expand_verify(lo, cnt, rows, full, ids, full, 6, 1 << 22)
    for cap in (1, 7, 50):
        part = mih._expand_verify(lo, cnt, rows, full, ids, full, 6, cap)
        assert sorted(zip(*map(np.ndarray.tolist, part), strict=True)) == sorted(
            zip(*map(np.ndarray.tolist, whole), strict=True)
        )
    want = sorted(
        (int(r), int(ids[x]))
        for r, a, c in zip(rows, lo, cnt, strict=True)
        for x in range(a, a + c)
        if bin(int(full[x]) ^ int(full[r])).count("1") <= 6
    )
    assert sorted(zip(*map(np.ndarray.tolist, whole), strict=True)) == want
    assert len(want) > 50


def test_underpowered_plan_misses_pairs(data10: tuple[np.ndarray, np.ndarray, nd.PairSet]) -> None:
    """The equality tests have teeth: radii violating the pigeonhole bound lose pairs."""
    p, m, bf = data10
    with pytest.raises(ValueError):
        nd.make_plan(10, 4, [2, 2, 1, 1])
    bad = nd.MIHPlan(starts=(0, 16, 32, 48), lengths=(16,) * 4, radii=(1, 1, 1, 1), k=10)
    got = nd.find_near_duplicates(p, m, 10, mode="exact", plan=bad)
    assert got.to_set() < bf.to_set()


@HSET
@given(
    base=BASE,
    derived=DERIVED,
    k=st.integers(0, 12),
)
def test_exact_equals_python_hypothesis(
    base: list[int], derived: list[tuple[int, list[int], bool, bool]], k: int
) -> None:
    """Clustered random hashes: copies of a few bases with a few flipped bits, some
    taken from the base's mirror, some exact duplicates (hot values)."""
    pa, ma = nd.clustered_hashes(base, derived)
    ref = py_pairs(pa, ma, k)
    assert nd.find_near_duplicates(pa, ma, k, mode="exact").to_set() == ref
    assert nd.brute_force_pairs(pa, ma, k).to_set() == ref
    if k < 63:
        assert nk.band_pairs(pa, ma, k).to_set() == ref


def test_plans_are_exact_and_documented() -> None:
    for k in (0, 1, 2, 3, 5, 8, 10, 13, 16):
        for n in (100, 10_000, 1_000_000):
            plan = nd.plan_mih(k, n, 2 * n)
            assert sum(r + 1 for r in plan.radii) > k
            assert sum(plan.lengths) == 64
    assert nd.pigeonhole_radii(10, 4) == (2, 2, 2, 1)
    assert nd.pigeonhole_radii(10, 11) == (0,) * 11
    assert nd.pigeonhole_radii(3, 6) == (0, 0, 0, 0, -1, -1)
    assert nk.plan_bands(10).m == 11
    assert [ln for _, ln in nd.split_bits(5)] == [13, 13, 13, 13, 12]


def test_distributed_keys_reproduce_exact_pairs(
    data10: tuple[np.ndarray, np.ndarray, nd.PairSet],
) -> None:
    """Simulate a group-by-key pipeline with substring_keys / probe_keys / band_keys."""
    p, m, bf = data10
    n = len(p)
    for plan in (nd.make_plan(10, 5), nk.plan_bands(10)):
        index: dict[tuple[int, int], list[int]] = {}
        sk = nk.substring_keys(p, plan)
        for z in range(plan.m):
            if plan.radii[z] < 0:
                continue
            for i, v in enumerate(sk[:, z].tolist()):
                index.setdefault((z, v), []).append(i)
        rows, zs, vals = nk.probe_keys(np.concatenate([p, m]), plan)
        ci: list[int] = []
        cj: list[int] = []
        for r, z, v in zip(rows.tolist(), zs.tolist(), vals.tolist(), strict=True):
            for j in index.get((z, v), ()):
                ci.append(r % n)
                cj.append(j)
        got = nk.verify_candidates(p, m, ci, cj, 10)
        assert got.same_as(bf)
    bands = nk.band_keys(p, 10)
    assert bands.shape == (n, 11)
    assert np.array_equal(bands, nk.substring_keys(p, nk.plan_bands(10)))


def test_verify_candidates_canonicalises() -> None:
    p = np.array([0, 0b111, 0b1, U64_MAX], np.uint64)
    got = nk.verify_candidates(p, None, [1, 0, 2, 2, 3, 0], [0, 1, 0, 2, 0, 2], 3)
    assert got.to_set() == {(0, 1, 3), (0, 2, 1)}
    assert len(got) == 2


def test_expand_node_pairs_counts() -> None:
    p = np.array([5, 5, 5, 5, 7, 7, 1 << 40], np.uint64)
    got = nd.find_near_duplicates(p, None, 2, mode="exact")
    # 6 pairs inside the 4-group, 1 inside the 2-group, 4*2 across (H(5,7) = 1)
    assert len(got) == 6 + 1 + 8
    assert got.to_set() == py_pairs(p, None, 2)


# --------------------------------------------------------------------------------------
# LSH
# --------------------------------------------------------------------------------------


def test_lsh_keys_are_sampled_bits() -> None:
    rng = np.random.default_rng(7)
    h = rng.integers(0, U64_MAX, size=50, dtype=np.uint64, endpoint=True)
    params = nd.LSHParams(bits_per_table=13, n_tables=4, seed=3)
    keys = nk.lsh_keys(h, params)
    pos = params.positions()
    for t in range(4):
        for i in range(50):
            want = sum(((int(h[i]) >> int(b)) & 1) << s for s, b in enumerate(pos[t]))
            assert int(keys[i, t]) == want
    assert np.array_equal(pos, nd.LSHParams(13, 4, 3).positions())
    assert not np.array_equal(pos, nd.LSHParams(13, 4, 4).positions())


def test_lsh_is_sound_and_deterministic(data10: tuple[np.ndarray, np.ndarray, nd.PairSet]) -> None:
    p, m, bf = data10
    params = nd.plan_lsh(10, len(p), target_recall=0.9)
    a = nd.find_near_duplicates(p, m, 10, mode="lsh", lsh=params)
    b = nd.find_near_duplicates(p, m, 10, mode="lsh", lsh=params)
    assert a.same_as(b)
    assert a.to_set() <= bf.to_set()  # verified: never a false pair, distances exact
    assert len(a) >= 0.9 * len(bf)
    weak = nd.LSHParams(bits_per_table=24, n_tables=2, seed=0)
    c = nd.find_near_duplicates(p, m, 10, mode="lsh", lsh=weak)
    assert len(c) < len(a)  # fewer tables, longer keys: lower recall
    # identical hashes always collide, so all distance-0 pairs of distinct items are found
    assert {x for x in bf.to_set() if x[2] == 0} <= c.to_set()


def test_lsh_theory_matches_planted_recall() -> None:
    """Per-distance recall of a weak LSH agrees with 1 - (1 - p_d)^L."""
    k = 10
    p, _ = nd.synthetic_hashes(3000, k=k, n_planted=3000, seed=11)
    params = nd.LSHParams(bits_per_table=16, n_tables=6, seed=1)
    found = nd.find_near_duplicates(p, None, k, mode="lsh", lsh=params).to_set()
    truth = nd.brute_force_pairs(p, None, k)
    for d in (2, 5, 8):
        sel = [(i, j, dd) for i, j, dd in truth.to_set() if dd == d]
        rate = sum(x in found for x in sel) / len(sel)
        expect = nd.lsh_recall_at(d, params)
        assert abs(rate - expect) < 4 * math.sqrt(expect * (1 - expect) / len(sel)) + 0.02


def test_plan_lsh_meets_target() -> None:
    for k in (4, 10):
        for n in (10_000, 1_000_000):
            params = nd.plan_lsh(k, n, target_recall=0.95)
            assert nd.lsh_recall_at(k, params) >= 0.95
            fewer = nd.LSHParams(params.bits_per_table, params.n_tables - 1, 0)
            assert params.n_tables == 1 or nd.lsh_recall_at(k, fewer) < 0.95


# --------------------------------------------------------------------------------------
# recall estimation
# --------------------------------------------------------------------------------------


def test_wilson_interval_known_values() -> None:
    lo, hi = nd.wilson_interval(5, 10, 0.95)
    assert lo == pytest.approx(0.2366, abs=1e-4)
    assert hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = nd.wilson_interval(10, 10, 0.95)
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)


@pytest.fixture(scope="module")
def weak_lsh() -> tuple[np.ndarray, np.ndarray, nd.PairSet, float]:
    p, m = nd.synthetic_hashes(
        2500, k=10, n_planted=1100, n_mirror_planted=550, hot_sizes=(12, 5), seed=21
    )
    found = nd.find_near_duplicates(
        p, m, 10, mode="lsh", lsh=nd.LSHParams(bits_per_table=18, n_tables=5, seed=2)
    )
    truth = nd.brute_force_pairs(p, m, 10).to_set()
    true_recall = len(found.to_set() & truth) / len(truth)
    return p, m, found, true_recall


def test_recall_estimate_close_and_covered(
    weak_lsh: tuple[np.ndarray, np.ndarray, nd.PairSet, float],
) -> None:
    p, m, found, truth = weak_lsh
    assert 0.3 < truth < 0.9  # a regime where recall estimation is informative
    covered = 0
    errors = []
    for seed in range(20):
        est = nd.estimate_pair_recall(p, m, 10, found, n_samples=400, seed=seed)
        assert est.ci_low <= est.recall <= est.ci_high
        assert est.n_true_pairs > 0
        covered += est.ci_low <= truth <= est.ci_high
        errors.append(est.recall - truth)
    assert covered >= 16  # nominal 95 %: 19/20 expected
    assert abs(float(np.mean(errors))) < 0.03  # unbiased
    full = nd.estimate_pair_recall(p, m, 10, found, n_samples=len(p), seed=0)
    assert full.recall == pytest.approx(truth, abs=1e-12)  # whole population: exact
    truth_pairs = nd.brute_force_pairs(p, m, 10)
    ident = (p[truth_pairs.i] == p[truth_pairs.j]) & (m[truth_pairs.i] == m[truth_pairs.j])
    distinct = {
        (i, j, d)
        for i, j, d, x in zip(
            truth_pairs.i.tolist(),
            truth_pairs.j.tolist(),
            truth_pairs.dist.tolist(),
            ident.tolist(),
            strict=True,
        )
        if not x
    }
    want = len(distinct & found.to_set()) / len(distinct)
    skip = nd.estimate_pair_recall(p, m, 10, found, n_samples=len(p), skip_identical=True)
    assert skip.recall == pytest.approx(want, abs=1e-12)
    assert skip.n_true_pairs == 2 * len(distinct) < full.n_true_pairs


def test_recall_ci_accounts_for_clustering() -> None:
    """Pairs found all-or-nothing per cluster: a plain pair-level binomial interval is
    far too narrow here; the design-effect-adjusted one must still cover the truth."""
    rng = np.random.default_rng(5)
    centres = rng.integers(0, U64_MAX, size=60, dtype=np.uint64, endpoint=True)
    members = np.repeat(centres, 15) ^ synthetic._flip_masks(rng, rng.integers(0, 3, size=900))
    background = rng.integers(0, U64_MAX, size=600, dtype=np.uint64, endpoint=True)
    p = np.concatenate([members, background])
    cluster = np.concatenate([np.repeat(np.arange(60), 15), np.full(600, -1)])
    truth = nd.brute_force_pairs(p, None, 4)
    keep = (cluster[truth.i] % 2 == 0) & (cluster[truth.i] == cluster[truth.j])
    found = nd.PairSet(truth.i[keep], truth.j[keep], truth.dist[keep])
    true_recall = len(found) / len(truth)
    covered = 0
    for seed in range(30):
        est = nd.estimate_pair_recall(p, None, 4, found, n_samples=100, seed=seed)
        covered += est.ci_low <= true_recall <= est.ci_high
        assert est.effective_n < est.n_true_pairs / 3  # strong design effect detected
    assert covered >= 25


def test_recall_estimate_extremes(data10: tuple[np.ndarray, np.ndarray, nd.PairSet]) -> None:
    p, m, bf = data10
    perfect = nd.estimate_pair_recall(p, m, 10, bf, n_samples=300, seed=0)
    assert perfect.recall == 1.0 and perfect.ci_high == 1.0 and perfect.ci_low > 0.8
    none = nd.estimate_pair_recall(p, m, 10, nd.PairSet.empty(), n_samples=300, seed=0)
    assert none.recall == 0.0 and none.ci_low == 0.0 and none.ci_high < 0.2
    lonely = nd.estimate_pair_recall(np.array([0, U64_MAX], np.uint64), None, 3, nd.PairSet.empty())
    assert math.isnan(lonely.recall) and (lonely.ci_low, lonely.ci_high) == (0.0, 1.0)
    a = nd.estimate_pair_recall(p, m, 10, bf, n_samples=300, seed=4)
    assert a == nd.estimate_pair_recall(p, m, 10, bf, n_samples=300, seed=4)


def test_choose_mode_rule(monkeypatch) -> None:
    from mitigate.neardup import compiled

    assert nd.choose_mode(500, 10) == "brute"
    assert nd.choose_mode(100_000, 10) == "exact"
    assert nd.choose_mode(1_000_000, 4) == "exact"
    # priced with the compiled kernel, exact search stays the choice at 10M and 100M
    assert nd.choose_mode(10_000_000, 10) == "exact"
    assert nd.choose_mode(100_000_000, 12) == "exact"
    # without the kernel, the numpy join's cost makes LSH the choice at 10M
    monkeypatch.setattr(compiled, "compiled_available", lambda: False)
    assert nd.choose_mode(10_000_000, 10) == "lsh"
    assert nd.choose_mode(10_000_000, 10, max_exact_slowdown=100.0) == "exact"


# --------------------------------------------------------------------------------------
# components and keep rule
# --------------------------------------------------------------------------------------


def random_graph(rng: np.random.Generator, n: int, n_edges: int) -> nd.PairSet:
    i = rng.integers(0, n, size=n_edges)
    j = rng.integers(0, n, size=n_edges)
    d = rng.integers(0, 11, size=n_edges)
    ci, cj, cd = bits.canonical_pairs(i, j, d)
    assert cd is not None
    return nd.PairSet(ci, cj, cd)


def test_union_find_and_scipy_agree() -> None:
    rng = np.random.default_rng(8)
    for n, e in ((50, 30), (400, 380), (1000, 3000)):
        g = random_graph(rng, n, e)
        a = nd.connected_components(n, g.i, g.j)
        b = nd.connected_components(n, g.i, g.j, method="union_find")
        assert np.array_equal(a, b)
        # labels are the smallest member and edges never cross components
        assert np.all(a <= np.arange(n)) and np.all(a[a] == a)
        assert np.all(a[g.i] == a[g.j])
    chain = 200_000
    lab = nd.connected_components(
        chain, np.arange(chain - 1), np.arange(1, chain), method="union_find"
    )
    assert np.all(lab == 0)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_keep_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    g = random_graph(rng, n, int(rng.integers(0, 2 * n)))
    rank = rng.integers(0, n // 3 + 1, size=n)  # many ties -> broken by index
    res = nd.greedy_keep(n, g, rank)
    check_keep_invariants(n, g, rank, res)
    keep, dup, dist = greedy_reference(n, g.to_set(), nd.rank_positions(rank).tolist())
    assert res.keep.tolist() == keep
    assert res.duplicate_of.tolist() == dup
    assert res.distance.tolist() == dist


def test_long_chains() -> None:
    n = 20_001
    chain = nd.PairSet(np.arange(n - 1), np.arange(1, n), np.full(n - 1, 7, np.uint8))
    res = nd.greedy_keep(n, chain, np.arange(n))  # rank follows the chain
    assert res.keep.tolist() == [i % 2 == 0 for i in range(n)]  # a kept, b dropped, c kept
    assert np.all(res.duplicate_of[1::2] == np.arange(0, n - 1, 2))
    assert np.all(res.component == 0)
    rev = nd.greedy_keep(n, chain, -np.arange(n))  # best item at the far end
    assert rev.keep[-1] and not rev.keep[-2] and rev.duplicate_of[-2] == n - 1
    check_keep_invariants(n, chain, -np.arange(n), rev)
    rank = np.random.default_rng(3).permutation(n)
    rnd = nd.greedy_keep(n, chain, rank)
    check_keep_invariants(n, chain, rank, rnd)
    # every dropped chain item has a kept neighbour; kept ones never touch
    assert 0.3 * n < rnd.keep.sum() < 0.7 * n


def test_hash_chain_dedup() -> None:
    """A hash chain a-b-c-...: consecutive items exactly k bits apart, all other pairs
    more than k apart (random walk, rejecting steps that come back near the past)."""
    k = 10
    rng = np.random.default_rng(4)
    chain = [int(rng.integers(0, U64_MAX, dtype=np.uint64, endpoint=True))]
    while len(chain) < 60:
        step = sum(1 << int(b) for b in rng.choice(64, size=k, replace=False))
        cand = chain[-1] ^ step
        if all(bin(cand ^ q).count("1") > k for q in chain[:-1]):
            chain.append(cand)
    h = np.array(chain, np.uint64)
    bf = nd.brute_force_pairs(h, None, k)
    assert {(i, j) for i, j, _ in bf.to_set()} == {(t, t + 1) for t in range(59)}
    rank = np.arange(60)
    res = nd.deduplicate(h, None, k, rank, mode="exact")
    check_keep_invariants(60, bf, rank, res)
    assert res.keep.tolist() == [t % 2 == 0 for t in range(60)]
    assert res.duplicate_of[1::2].tolist() == list(range(0, 59, 2))
    assert np.all(res.distance[1::2] == k)
    assert np.all(res.component == 0)


@pytest.mark.parametrize("mode", ["exact", "brute"])
def test_deduplicate_equals_item_level_greedy(mode: str) -> None:
    p, m = planted(seed=31, k=10, n_random=1200)
    n = len(p)
    rng = np.random.default_rng(0)
    area = rng.integers(1, 5, size=n) * 100  # many ties
    rank = nd.rank_by_area(area, np.ones(n, np.int64), np.arange(n)[::-1])
    bf = nd.brute_force_pairs(p, m, 10)
    want = nd.greedy_keep(n, bf, rank)
    got = nd.deduplicate(p, m, 10, rank, mode=mode)  # type: ignore[arg-type]
    assert np.array_equal(got.keep, want.keep)
    assert np.array_equal(got.duplicate_of, want.duplicate_of)
    assert np.array_equal(got.distance, want.distance)
    assert np.array_equal(got.component, want.component)
    check_keep_invariants(n, bf, rank, got)
    again = nd.deduplicate(p, m, 10, rank, mode=mode)  # type: ignore[arg-type]
    assert np.array_equal(again.keep, got.keep)


def test_rank_by_area_orders_largest_first() -> None:
    w = np.array([10, 20, 20, 5])
    h = np.array([10, 10, 10, 100])
    keys = np.array(["b", "z", "a", "c"])
    pos = nd.rank_by_area(w, h, keys)
    # areas 100, 200, 200, 500 -> item 3, then 2 ("a") before 1 ("z"), then 0
    assert pos.tolist() == [3, 2, 1, 0]
    assert nd.rank_positions(np.array([1, 0, 1, 0])).tolist() == [2, 0, 3, 1]


# --------------------------------------------------------------------------------------
# reference-set matching (decontamination)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mirrors", [(True, True), (True, False), (False, True), (False, False)])
def test_match_reference_equals_brute(mirrors: tuple[bool, bool]) -> None:
    k = 8
    p, m = planted(seed=41, k=k, n_random=800)
    rp, rm = nd.synthetic_hashes(150, k=k, n_planted=30, seed=42)
    # exact duplicates, mirror matches, and ties: two distinct refs 1 bit from p[i]
    tie_a, tie_b = p[40:60] ^ np.uint64(1 << 3), p[40:60] ^ np.uint64(1 << 7)
    rp = np.concatenate([rp, rp[:5], m[:40] ^ np.uint64(0b1011), tie_b, tie_a])
    rm = np.concatenate([rm, rm[:5], p[:40], tie_b, tie_a])
    im = m if mirrors[0] else None
    qm = rm if mirrors[1] else None
    keys = [f"ref{i}" for i in range(len(rp))]
    got = nd.match_reference(p, im, rp, qm, k, ref_keys=keys)
    qi, xi, dd = nd.brute_force_join(p, im, rp, qm, k)
    best: dict[int, tuple[int, int]] = {}
    for a, b, d in zip(qi.tolist(), xi.tolist(), dd.tolist(), strict=True):
        if a not in best or (d, b) < best[a]:
            best[a] = (d, b)
    want_idx = [best[i][1] if i in best else -1 for i in range(len(p))]
    want_d = [best[i][0] if i in best else -1 for i in range(len(p))]
    assert got.ref_index.tolist() == want_idx
    assert got.distance.tolist() == want_d
    assert got.ref_key == [None if r < 0 else f"ref{r}" for r in want_idx]
    assert sum(r >= 0 for r in want_idx) > (40 if any(mirrors) else 5)
    brute = nd.match_reference(p, im, rp, qm, k, mode="brute")
    assert np.array_equal(brute.ref_index, got.ref_index)


# --------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------


def test_determinism() -> None:
    a = nd.synthetic_hashes(500, k=6, n_planted=50, n_mirror_planted=20, hot_sizes=(9,), seed=9)
    b = nd.synthetic_hashes(500, k=6, n_planted=50, n_mirror_planted=20, hot_sizes=(9,), seed=9)
    c = nd.synthetic_hashes(500, k=6, n_planted=50, n_mirror_planted=20, hot_sizes=(9,), seed=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    r1 = nd.find_near_duplicates(*a, 6, mode="exact")
    shuffled = np.random.default_rng(0).permutation(len(a[0]))
    r2 = nd.find_near_duplicates(a[0][shuffled], a[1][shuffled], 6, mode="exact")
    back = {
        (min(shuffled[i], shuffled[j]), max(shuffled[i], shuffled[j]), d) for i, j, d in r2.to_set()
    }
    assert back == r1.to_set()  # independent of input order
    assert nd.find_near_duplicates(*a, 6, mode="lsh").same_as(
        nd.find_near_duplicates(*a, 6, mode="lsh")
    )
