"""Connected components in bucketed star rounds over edge arrays
(mitigate.partition_batch) against scipy, on chains, stars and random graphs; and the
keep rule per bucket of components (chains and stars) against the one-worker rule."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mitigate import neardup as nd
from mitigate import partition_batch as pb


def _id(i: int, n_batches: int = 5) -> int:
    """Node id of sample i: batch i % n_batches, position i // n_batches."""
    return ((i % n_batches) << 32) + i // n_batches


def _ids(values) -> np.ndarray:
    return np.asarray([_id(int(v)) for v in values], np.int64)


def _reference(n: int, edges: list[tuple[int, int]]) -> dict[int, int]:
    """Smallest node id of every non-isolated node's component (scipy)."""
    i = np.array([a for a, _ in edges], np.int64)
    j = np.array([b for _, b in edges], np.int64)
    comp = nd.connected_components(n, i, j)
    smallest: dict[int, int] = {}
    for v in range(n):
        smallest[int(comp[v])] = min(smallest.get(int(comp[v]), _id(v)), _id(v))
    touched = set(i.tolist()) | set(j.tolist())
    return {_id(v): smallest[int(comp[v])] for v in touched}


def _labels(edges: list[tuple[int, int]], rounds: int, buckets: int) -> tuple[dict, int]:
    a = _ids([x for x, _ in edges])
    b = _ids([y for _, y in edges])
    nodes, labels, rest = pb.component_labels(a, b, rounds, buckets)
    return dict(zip(nodes.tolist(), labels.tolist(), strict=True)), rest


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 60),
    data=st.data(),
    rounds=st.integers(0, 4),
    buckets=st.integers(1, 4),
)
def test_labels_equal_the_one_worker_components_after_any_number_of_rounds(
    n, data, rounds, buckets
):
    edges = data.draw(
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=80)
    )
    edges = [(a, b) for a, b in edges if a != b]
    labels, _ = _labels(edges, rounds, buckets)
    assert labels == _reference(n, edges)


def test_long_chain_is_one_component_and_rounds_shrink_what_one_worker_finishes():
    n = 5000
    order = np.random.default_rng(0).permutation(n)  # the chain visits ids in random order
    chain = [(int(a), int(b)) for a, b in itertools.pairwise(order)]
    remaining = {}
    for rounds in (0, 2, 6):
        labels, remaining[rounds] = _labels(chain, rounds, buckets=3)
        assert set(labels) == {_id(v) for v in range(n)}
        assert set(labels.values()) == {min(_id(v) for v in range(n))}
    assert remaining[0] > 1000 and remaining[6] < remaining[2] < remaining[0]
    assert remaining[6] <= 50, remaining  # the pipeline's STAR_ROUNDS


def test_stars_and_many_small_components():
    star = [(0, v) for v in range(1, 200)]
    star += [(1000, v) for v in range(500, 600)]
    pairs = [(2000 + 2 * i, 2001 + 2 * i) for i in range(100)]
    labels, rest = _labels(star + pairs, 1, buckets=2)
    assert labels == _reference(2200, star + pairs)
    assert len({labels[_id(v)] for v in range(200)}) == 1
    assert rest == 0  # stars are settled after one round


def test_star_steps_on_arrays():
    a = np.array([2, 2, 2, 1, 3, 4], np.int64)  # node 2's neighbours 1, 3, 4 (both ways)
    b = np.array([1, 3, 4, 2, 2, 2], np.int64)
    big = pb.large_star(a[:3], b[:3])  # bucket holding node 2 only
    assert list(zip(*[x.tolist() for x in big], strict=True)) == [(1, 3), (1, 4)]
    small = pb.small_star(np.array([3, 3, 3]), np.array([1, 2, 4]))
    assert list(zip(*[x.tolist() for x in small], strict=True)) == [(1, 2), (1, 3)]
    nodes, labels = pb.finish(np.array([3, 2, 9]), np.array([4, 4, 8]))
    assert dict(zip(nodes.tolist(), labels.tolist(), strict=True)) == {
        2: 2,
        3: 2,
        4: 2,
        8: 8,
        9: 8,
    }


def _keep(resolution: dict[str, int], pairs: list[tuple[str, str, int]], rule="resolution"):
    keys = sorted(resolution)
    ids = np.arange(len(keys), dtype=np.int64)
    at = {k: i for i, k in enumerate(keys)}
    zeros = np.zeros(len(keys), np.uint64)
    members = [
        (
            ids,
            np.zeros(len(keys), np.int64),  # one component
            np.asarray(keys, np.str_),
            zeros,
            zeros,
            np.asarray([resolution[k] for k in keys], np.int64),
            [None] * len(keys),
        )
    ]
    edges = [
        (
            np.asarray([at[x] for x, _, _ in pairs], np.int64),
            np.asarray([at[y] for _, y, _ in pairs], np.int64),
            np.asarray([d for _, _, d in pairs], np.uint8),
            np.full(len(pairs), np.nan),
        )
    ]
    res = pb.keep_components(members, edges, rule)
    fate = {k: None for k in keys}
    for key, keeper, dist, score, _ in res.dropped:
        assert score is None
        fate[key] = (keeper, dist)
    return fate, res


def test_keep_rule_on_a_chain_is_the_greedy_rule_of_the_single_worker_path():
    # a~b~c~d~e, only neighbours within k: greedy keeps a, c, e (no kept pair within k)
    keys = ["a", "b", "c", "d", "e"]
    fate, res = _keep({x: 100 for x in keys}, [(x, y, 10) for x, y in itertools.pairwise(keys)])
    assert fate == {"a": None, "b": ("a", 10), "c": None, "d": ("c", 10), "e": None}
    assert res.clusters == [(5, "a", keys)]
    single = nd.greedy_keep(
        5, nd.PairSet(np.arange(4), np.arange(1, 5), np.full(4, 10, np.uint8)), np.arange(5)
    )
    assert single.keep.tolist() == [fate[x] is None for x in keys]


def test_keep_rule_on_a_star_keeps_the_best_ranked_and_points_at_kept_samples():
    pairs = [("m", f"l{i}", i) for i in range(6)]
    fate, _ = _keep({"m": 1000, **{f"l{i}": 10 for i in range(6)}}, pairs)
    assert fate["m"] is None
    assert {fate[f"l{i}"] for i in range(6)} == {("m", i) for i in range(6)}
    # a leaf ranks first: the centre is its duplicate, the other leaves stay (not within k)
    fate, _ = _keep({"m": 10, "l0": 1000, **{f"l{i}": 10 for i in range(1, 6)}}, pairs)
    assert fate["l0"] is None and fate["m"] == ("l0", 0)
    assert all(fate[f"l{i}"] is None for i in range(1, 6))
