"""Connected components in star rounds (mitigate.components) against the one-worker
components, on chains, stars and random graphs; and the keep rule per component."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mitigate import components as cc
from mitigate import neardup as nd
from mitigate.components import KeyPair
from mitigate.near import HashItem


def _key(i: int) -> str:
    return f"{i:06d}"  # string order == numeric order


def _reference(n: int, edges: list[tuple[int, int]]) -> dict[str, str]:
    """Smallest member of every non-isolated node's component (scipy)."""
    i = np.array([a for a, _ in edges], np.int64)
    j = np.array([b for _, b in edges], np.int64)
    labels = nd.connected_components(n, i, j)
    touched = set(i.tolist()) | set(j.tolist())
    return {_key(v): _key(int(labels[v])) for v in touched}


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 60),
    data=st.data(),
    rounds=st.integers(0, 4),
)
def test_labels_equal_the_one_worker_components_after_any_number_of_rounds(n, data, rounds):
    edges = data.draw(
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=80)
    )
    edges = [(a, b) for a, b in edges if a != b]
    labels, _ = cc.component_labels([(_key(a), _key(b)) for a, b in edges], rounds)
    assert labels == _reference(n, edges)


def test_long_chain_is_one_component_and_rounds_shrink_what_one_worker_finishes():
    n = 5000
    order = np.random.default_rng(0).permutation(n)  # chain visits keys in random order
    chain = [(_key(int(a)), _key(int(b))) for a, b in itertools.pairwise(order)]
    remaining = {}
    for rounds in (0, 2, 6):
        labels, remaining[rounds] = cc.component_labels(chain, rounds)
        assert set(labels) == {_key(v) for v in range(n)}
        assert set(labels.values()) == {_key(0)}
    assert remaining[0] > 1000 and remaining[6] < remaining[2] < remaining[0]
    assert remaining[6] <= 50, remaining  # the pipeline's STAR_ROUNDS


def test_stars_and_many_small_components():
    star = [(_key(0), _key(v)) for v in range(1, 200)]  # centre is the smallest
    star += [(_key(1000), _key(v)) for v in range(500, 600)]  # centre is the largest
    pairs = [(_key(2000 + 2 * i), _key(2001 + 2 * i)) for i in range(100)]
    labels, rest = cc.component_labels(star + pairs, 1)
    assert {labels[_key(v)] for v in range(200)} == {_key(0)}
    assert {labels[_key(v)] for v in [*range(500, 600), 1000]} == {_key(500)}
    assert all(labels[_key(2001 + 2 * i)] == _key(2000 + 2 * i) for i in range(100))
    assert rest == 0  # stars are settled after one round


def test_star_steps_keep_connectivity_and_never_add_larger_labels():
    assert cc.large_star("b", ["a", "c", "d"]) == [("c", "a"), ("d", "a")]
    assert cc.small_star("c", ["a", "b", "d"]) == [("b", "a"), ("c", "a")]
    assert cc.small_star("a", ["b"]) == []
    assert cc.finish([("c", "d"), ("b", "d"), ("x", "y")]) == {
        "b": "b",
        "c": "b",
        "d": "b",
        "x": "x",
        "y": "x",
    }


def _items(specs: list[tuple[str, int]]) -> list[HashItem]:
    return [HashItem(key, "0" * 16, "0" * 16, res) for key, res in specs]


def test_keep_rule_on_a_chain_is_the_greedy_rule_of_the_single_worker_path():
    # a~b~c~d~e, only neighbours within k: greedy keeps a, c, e (no kept pair within k)
    keys = ["a", "b", "c", "d", "e"]
    nodes = _items([(x, 100) for x in keys])
    pairs = [KeyPair(x, y, 10) for x, y in itertools.pairwise(keys)]
    fate = cc.keep_component(nodes, pairs)
    assert fate == {"a": None, "b": ("a", 10), "c": None, "d": ("c", 10), "e": None}
    # the same component through the single-worker keep rule
    res = nd.greedy_keep(
        5, nd.PairSet(np.arange(4), np.arange(1, 5), np.full(4, 10, np.uint8)), np.arange(5)
    )
    assert res.keep.tolist() == [fate[x] is None for x in keys]


def test_keep_rule_on_a_star_keeps_the_best_ranked_and_points_at_kept_samples():
    # centre has the highest resolution: one kept sample, every leaf points at it
    nodes = _items([("m", 1000)] + [(f"l{i}", 10) for i in range(6)])
    pairs = [KeyPair.of("m", f"l{i}", i) for i in range(6)]
    fate = cc.keep_component(nodes, pairs)
    assert fate["m"] is None
    assert {fate[f"l{i}"] for i in range(6)} == {("m", i) for i in range(6)}
    # a leaf ranks first: the centre is its duplicate, the other leaves stay (not within k)
    nodes = _items([("m", 10), ("l0", 1000)] + [(f"l{i}", 10) for i in range(1, 6)])
    fate = cc.keep_component(nodes, pairs)
    assert fate["l0"] is None and fate["m"] == ("l0", 0)
    assert all(fate[f"l{i}"] is None for i in range(1, 6))
    kept = {k for k, v in fate.items() if v is None}
    assert all(v[0] in kept for v in fate.values() if v is not None)
