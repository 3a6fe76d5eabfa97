"""The compiled (numba) exact near-dup kernel: same pairs as brute force and as the
numpy join, each pair emitted once, plans, engine choice and the lazy numba import."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from hash_strategies import BASE, DERIVED
from hash_strategies import planted as shared_planted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mitigate import neardup as nd
from mitigate.neardup import compiled

U64_MAX = 2**64 - 1
HSET = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def planted(seed: int, k: int, n_random: int = 1200) -> tuple[np.ndarray, np.ndarray]:
    return shared_planted(seed, k, n_random)


def kernel_plans(k: int) -> list[nd.MIHPlan]:
    """The kernel's own plan and every even split it can run (3..12 substrings)."""
    plans = [compiled.plan_compiled(k, 50_000)]
    for m in range(3, 13):
        plan = nd.MIHPlan(
            tuple(s for s, _ in nd.split_bits(m)),
            tuple(ln for _, ln in nd.split_bits(m)),
            nd.pigeonhole_radii(k, m),
            k,
        )
        if compiled.plan_fits_kernel(plan) and plan.probes_per_query() <= 20_000:
            plans.append(plan)
    return plans


def raw_kernel_pairs(p: np.ndarray, m: np.ndarray | None, k: int, plan: nd.MIHPlan) -> list:
    groups = nd.collapse_identical(p, m)
    i, j = compiled.compiled_self_join(groups.node_phash, groups.node_mirror, k, plan)
    assert np.all(i < j)
    return list(zip(i.tolist(), j.tolist(), strict=True))


@pytest.mark.parametrize("k", [0, 1, 4, 10, 13])
@pytest.mark.parametrize("with_mirror", [True, False])
def test_kernel_equals_brute_force_every_plan(k: int, with_mirror: bool) -> None:
    p, m = planted(seed=100 + k, k=max(k, 1))
    mm = m if with_mirror else None
    bf = nd.brute_force_pairs(p, mm, k)
    if k >= 4:
        assert set(bf.dist.tolist()) == set(range(k + 1))  # every distance planted
    for plan in kernel_plans(k):
        got = nd.find_near_duplicates(p, mm, k, mode="exact", plan=plan, engine="compiled")
        assert got.same_as(bf), plan
        # the canonical-discovery rule emits every node pair exactly once
        raw = raw_kernel_pairs(p, mm, k, plan)
        assert len(raw) == len(set(raw)), plan


def test_kernel_mirror_rule_and_hot_groups() -> None:
    """Pairs found only through the mirror terms, and identical hashes, are kept."""
    p, m = planted(seed=7, k=10)
    bf = nd.brute_force_pairs(p, m, 10)
    only_mirror = nd.hamming(p[bf.i], p[bf.j]) > 10
    assert np.count_nonzero(only_mirror) >= 50
    assert np.count_nonzero(bf.dist == 0) >= 60 * 59 // 2
    got = nd.find_near_duplicates(p, m, 10, mode="exact", engine="compiled")
    assert got.same_as(bf)
    # without the mirror-rule pairs the result would differ: the test has teeth
    assert not nd.find_near_duplicates(p, None, 10, mode="exact", engine="compiled").same_as(bf)


def test_kernel_underpowered_plan_misses_pairs() -> None:
    p, m = planted(seed=3, k=10)
    bf = nd.brute_force_pairs(p, m, 10)
    bad = nd.MIHPlan(starts=(0, 16, 32, 48), lengths=(16,) * 4, radii=(1, 1, 1, 1), k=10)
    got = nd.find_near_duplicates(p, m, 10, mode="exact", plan=bad, engine="compiled")
    assert got.to_set() < bf.to_set()


@pytest.mark.parametrize("k", [4, 10])
def test_kernel_on_sparse_hashes(k: int) -> None:
    """Low-popcount hashes: hot substring values (big buckets) and many pairs."""
    rng = np.random.default_rng(k)
    bits = [rng.choice(64, size=int(rng.integers(0, 5)), replace=False) for _ in range(500)]
    sparse = np.array([sum(1 << int(b) for b in bb) for bb in bits], np.uint64)
    dense = rng.integers(0, U64_MAX, size=300, dtype=np.uint64, endpoint=True)
    p = np.concatenate([sparse, dense])
    m = p ^ np.uint64(1 << 63)
    bf = nd.brute_force_pairs(p, m, k)
    assert len(bf) > 10_000
    for plan in kernel_plans(k)[:4]:
        got = nd.find_near_duplicates(p, m, k, mode="exact", plan=plan, engine="compiled")
        assert got.same_as(bf), plan


@HSET
@given(
    base=BASE,
    derived=DERIVED,
    k=st.integers(0, 12),
    with_mirror=st.booleans(),
    m_sub=st.integers(3, 8),
)
def test_kernel_equals_brute_force_hypothesis(
    base: list[int],
    derived: list[tuple[int, list[int], bool, bool]],
    k: int,
    with_mirror: bool,
    m_sub: int,
) -> None:
    """Clustered hashes: copies of a few bases with a few flipped bits (some from the
    base's mirror, some identical), any k, any number of substrings."""
    pa, ma_all = nd.clustered_hashes(base, derived)
    ma = ma_all if with_mirror else None
    plan = nd.make_plan(k, m_sub) if m_sub <= k + 1 else None
    if plan is None:  # more substrings than k + 1: the tail is not probed
        parts = nd.split_bits(m_sub)
        plan = nd.MIHPlan(
            tuple(s for s, _ in parts),
            tuple(ln for _, ln in parts),
            nd.pigeonhole_radii(k, m_sub),
            k,
        )
    if not compiled.plan_fits_kernel(plan):
        plan = compiled.plan_compiled(k, len(pa))
    got = nd.find_near_duplicates(pa, ma, k, mode="exact", plan=plan, engine="compiled")
    assert got.same_as(nd.brute_force_pairs(pa, ma, k))


def test_kernel_equals_numpy_join_on_larger_data() -> None:
    """Above the engine threshold, with the plans each engine picks itself."""
    n = compiled.COMPILED_MIN_NODES + 5_000
    p, m = nd.synthetic_hashes(
        n,
        k=10,
        n_planted=n // 100,
        n_mirror_planted=n // 200,
        n_chains=10,
        chain_length=8,
        hot_sizes=(100, 10),
        seed=5,
    )
    ours = nd.find_near_duplicates(p, m, 10, mode="exact", engine="compiled")
    numpy_join = nd.find_near_duplicates(p, m, 10, mode="exact", engine="numpy")
    assert len(ours) > n // 100
    assert ours.same_as(numpy_join)
    again = nd.find_near_duplicates(p, m, 10, mode="exact", engine="auto")
    assert again.same_as(ours)  # deterministic, and auto gives the same
    rank = nd.rank_positions(np.arange(p.shape[0])[::-1].copy())
    kept = nd.deduplicate(p, m, 10, rank, mode="exact")
    assert kept.keep.sum() < p.shape[0]


def test_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    plan4 = nd.make_plan(10, 4)
    assert not compiled.use_compiled("numpy", 10**7, None)
    assert compiled.use_compiled("compiled", 10, None)
    assert not compiled.use_compiled("auto", compiled.COMPILED_MIN_NODES - 1, None)
    assert compiled.use_compiled("auto", compiled.COMPILED_MIN_NODES, plan4)
    long_plan = nd.make_plan(10, 2)  # 32-bit substrings: numpy's sorted index only
    assert not compiled.use_compiled("auto", 10**7, long_plan)
    with pytest.raises(ValueError, match="24 bits"):
        compiled.use_compiled("compiled", 10, long_plan)
    with pytest.raises(ValueError, match="unknown engine"):
        compiled.use_compiled("gpu", 10, None)  # type: ignore[arg-type]
    # auto runs the kernel from the threshold on (spied), the numpy join below it
    calls: list[int] = []
    real = compiled.compiled_self_join

    def spy(p: np.ndarray, *args: object) -> object:
        calls.append(p.shape[0])
        return real(p, *args)  # type: ignore[arg-type]

    monkeypatch.setattr("mitigate.neardup.search.compiled_self_join", spy)
    monkeypatch.setattr(compiled, "COMPILED_MIN_NODES", 800)
    p, m = planted(seed=1, k=10, n_random=300)
    bf = nd.brute_force_pairs(p, m, 10)
    assert nd.find_near_duplicates(p, m, 10, mode="exact").same_as(bf)
    assert calls == []
    p, m = planted(seed=2, k=10, n_random=800)
    assert nd.find_near_duplicates(p, m, 10, mode="exact").same_as(nd.brute_force_pairs(p, m, 10))
    assert len(calls) == 1


def test_small_searches_do_not_import_numba() -> None:
    """Bundled-sample-sized runs stay on numpy and never pay numba's import/JIT."""
    code = (
        "import sys, numpy as np\n"
        "from mitigate import neardup as nd\n"
        "p, m = nd.synthetic_hashes(2000, k=10, n_planted=50, seed=0)\n"
        "r = nd.find_near_duplicates(p, m, 10)\n"
        "assert len(r) > 0\n"
        "print('numba' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def test_popcount_intrinsic() -> None:
    from mitigate.neardup import _kernels

    rng = np.random.default_rng(0)
    x = np.concatenate(
        [np.array([0, 1, U64_MAX, 1 << 63], np.uint64), rng.integers(0, U64_MAX, 200, np.uint64)]
    )
    assert _kernels.popcount_array(x).tolist() == [bin(int(v)).count("1") for v in x]


def test_plan_compiled_is_exact_and_scales() -> None:
    for k in (0, 1, 2, 5, 10, 16):
        for n in (10_000, 1_000_000, 10_000_000):
            plan = compiled.plan_compiled(k, n)
            assert sum(plan.lengths) == 64
            assert compiled.plan_fits_kernel(plan)
            assert sum(r + 1 for r in plan.radii) > k  # pigeonhole: exact
    # longer substrings as the data grows (buckets stay small)
    small, large = compiled.plan_compiled(10, 20_000), compiled.plan_compiled(10, 1_000_000)
    assert small.m > large.m == 4
    assert min(large.lengths) < 16 < max(large.lengths)  # the uneven split measured best
    t = compiled.compiled_cost_terms(large, 1_000_000)
    assert t.shape == (5,) and np.all(t[:4] > 0) and t[4] == 0  # 8 MB of hashes: in cache
    assert compiled.compiled_cost_terms(large, 10_000_000)[4] > 0


def test_grouped_masks_cover_the_ball() -> None:
    for length, radius in itertools.product((5, 13, 16), (0, 1, 2)):
        masks, off = compiled._grouped_masks(length, radius)
        assert sorted(masks.tolist()) == sorted(nd.mih._ball_masks(length, radius).tolist())
        assert masks[off[0] : off[1]].tolist() == [0]
        for g in range(length):
            grp = masks[off[g + 1] : off[g + 2]]
            assert all(int(v).bit_length() - 1 == g for v in grp.tolist())
