"""Choosing a search mode and finding all near-duplicate pairs of a hash set."""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mitigate.neardup.bits import PairSet, _check_k, canonical_pairs, pair_distance
from mitigate.neardup.brute import brute_force_pairs
from mitigate.neardup.compiled import (
    Engine,
    compiled_self_join,
    estimate_compiled_cost_ns,
    plan_compiled,
    use_compiled,
)
from mitigate.neardup.cost import COST_BRUTE_PAIR_NS
from mitigate.neardup.groups import HashGroups, collapse_identical, expand_node_pairs
from mitigate.neardup.lsh import (
    LSHParams,
    _bytes_le,
    _lsh_luts,
    _lsh_table_key,
    estimate_lsh_cost_ns,
    plan_lsh,
)
from mitigate.neardup.mih import _join_on_keys, _mih_join
from mitigate.neardup.plan import MIHPlan, estimate_mih_cost_ns, plan_mih

logger = logging.getLogger(__name__)

Mode = Literal["auto", "exact", "lsh", "brute"]


# ======================================================================================
# Self-join on unique nodes
# ======================================================================================


def _filter_self(
    q: NDArray[np.int64], u: NDArray[np.int64], n: int, mirrored: bool
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Map raw self-join matches to node pairs.

    Queries ``0..n-1`` are the pHashes of nodes ``0..n-1``, queries ``n..2n-1`` their
    mirrors; self matches are dropped, orientation and duplicates are left to
    :func:`canonical_pairs`.
    """
    node = np.where(q < n, q, q - n) if mirrored else q
    keep = node != u
    return node[keep], u[keep]


def _finish_node_pairs(
    a: NDArray[np.int64],
    b: NDArray[np.int64],
    p: NDArray[np.uint64],
    m: NDArray[np.uint64] | None,
    k: int,
) -> PairSet:
    i, j, _ = canonical_pairs(a, b)
    d = pair_distance(p[i], None if m is None else m[i], p[j], None if m is None else m[j])
    if np.any(d > k):  # pragma: no cover - would be a bug in the join
        raise AssertionError("join produced an unverified pair")
    return PairSet(i, j, d.astype(np.uint8))


def _self_join_queries(n: int, mirrored: bool) -> int:
    """Query-equivalents of an MIH self-join: pHash queries probe half of the Hamming
    ball (``n_self`` trick of :func:`_join_on_keys`), mirror queries all of it."""
    return n // 2 + (n if mirrored else 0)


def _self_join_exact(
    p: NDArray[np.uint64],
    m: NDArray[np.uint64] | None,
    k: int,
    plan: MIHPlan | None,
    engine: Engine = "auto",
) -> PairSet:
    n = p.shape[0]
    if use_compiled(engine, n, plan):
        kplan = plan if plan is not None else plan_compiled(k, n, m is not None)
        logger.debug("exact search on %d nodes: compiled kernel, plan %s", n, kplan)
        a, b = compiled_self_join(p, m, k, kplan)
        return _finish_node_pairs(a, b, p, m, k)
    queries = p if m is None else np.concatenate([p, m])
    plan = plan if plan is not None else plan_mih(k, n, _self_join_queries(n, m is not None))
    q, u = _mih_join(p, queries, k, plan, n_self=n)
    a, b = _filter_self(q, u, n, m is not None)
    return _finish_node_pairs(a, b, p, m, k)


def _self_join_lsh(
    p: NDArray[np.uint64], m: NDArray[np.uint64] | None, k: int, params: LSHParams
) -> PairSet:
    n = p.shape[0]
    queries = p if m is None else np.concatenate([p, m])
    pview = _bytes_le(p)
    mview = None if m is None else _bytes_le(m)
    pos = params.positions()
    out_a: list[NDArray[np.int64]] = []
    out_b: list[NDArray[np.int64]] = []
    for t in range(params.n_tables):
        luts = _lsh_luts(pos[t])
        pkeys = _lsh_table_key(pview, luts)
        qkeys = pkeys if mview is None else np.concatenate([pkeys, _lsh_table_key(mview, luts)])
        q, u = _join_on_keys(
            pkeys,
            p,
            qkeys,
            queries,
            params.bits_per_table,
            pos[t],
            0,
            k,
        )
        a, b = _filter_self(q, u, n, m is not None)
        out_a.append(a)
        out_b.append(b)
    if not out_a:
        return PairSet.empty()
    return _finish_node_pairs(np.concatenate(out_a), np.concatenate(out_b), p, m, k)


def choose_mode(
    n: int,
    k: int,
    *,
    target_recall: float = 0.95,
    max_exact_slowdown: float = 4.0,
    always_exact_below_s: float = 10.0,
) -> Literal["brute", "exact", "lsh"]:
    """Pick a search mode for ``n`` unique hashes (with mirror queries) and threshold ``k``.

    Rule (all costs from the calibrated models :func:`estimate_mih_cost_ns`,
    :func:`estimate_lsh_cost_ns`, ``COST_BRUTE_PAIR_NS``):

    * ``"brute"`` when the ``n(n-1)/2`` brute-force pairs are cheaper than the best MIH
      plan (only tiny inputs, ~ a few thousand hashes);
    * otherwise ``"exact"`` when the MIH estimate is below ``always_exact_below_s``
      seconds, or at most ``max_exact_slowdown`` times the LSH estimate at
      ``target_recall`` (exactness is worth up to that factor);
    * otherwise ``"lsh"``.

    Model numbers (uniform random hashes, with mirror queries, LSH at 95 % recall at
    distance k): k=4 exact costs about the same as LSH at every size; k=8 exact/LSH is
    ~2-3 up to 10M (switch at ~19M); k=10 the ratio is 1.3 at 100k, 2.3 at 1M
    (benchmark, same run: 1.5 and 2.3), 3.0 at 3M and 5.1 at 10M, so with the default
    factor 4 the switch to LSH happens at ~6M unique hashes; k=12 switches at ~3.7M.
    From ``COMPILED_MIN_NODES`` unique hashes the exact search runs in the compiled
    kernel (:mod:`.compiled`), and its own cost model prices it: ~5x below the numpy
    join at 1M, so exact stays the choice at every size the models cover (measured at
    10M: 590 CPU-s, BENCHMARKS.md); the numpy rule above applies only where numba is
    missing.
    """
    k = _check_k(k)
    if n < 2:
        return "exact"
    n_query = _self_join_queries(n, True)
    if use_compiled("auto", n, None):  # the search will run in the kernel: price that
        exact = estimate_compiled_cost_ns(plan_compiled(k, n, True), n, True)
    else:
        exact = estimate_mih_cost_ns(plan_mih(k, n, n_query), n, n_query)
    brute = COST_BRUTE_PAIR_NS * n * (n - 1) / 2
    if brute <= exact:
        return "brute"
    if exact <= always_exact_below_s * 1e9:
        return "exact"
    lsh_params = plan_lsh(k, n, target_recall=target_recall)
    lsh = estimate_lsh_cost_ns(n, lsh_params.bits_per_table, lsh_params.n_tables)
    mode: Literal["exact", "lsh"] = "exact" if exact <= max_exact_slowdown * lsh else "lsh"
    logger.debug(
        "choose_mode(n=%d, k=%d): exact=%.3gs lsh=%.3gs -> %s", n, k, exact * 1e-9, lsh * 1e-9, mode
    )
    return mode


def find_node_pairs(
    groups: HashGroups,
    k: int,
    *,
    mode: Mode = "auto",
    plan: MIHPlan | None = None,
    lsh: LSHParams | None = None,
    engine: Engine = "auto",
) -> PairSet:
    """Near-duplicate pairs between *distinct* nodes of ``groups`` (node indices).

    ``mode``: ``"exact"`` (MIH, ``plan`` overrides :func:`plan_mih` /
    :func:`plan_compiled`), ``"lsh"`` (``lsh`` overrides :func:`plan_lsh`), ``"brute"``
    or ``"auto"`` (:func:`choose_mode`).  ``engine`` (exact mode only): ``"compiled"``
    (the numba kernel), ``"numpy"`` or ``"auto"`` (the kernel from
    ``COMPILED_MIN_NODES`` nodes on); both give the same pairs.
    """
    k = _check_k(k)
    p, m = groups.node_phash, groups.node_mirror
    n = groups.n_nodes
    if mode == "auto":
        mode = "exact" if plan is not None else choose_mode(n, k)
    logger.debug("find_node_pairs: %d nodes, k=%d, mode=%s", n, k, mode)
    if mode == "brute":
        return brute_force_pairs(p, m, k)
    if mode == "exact":
        return _self_join_exact(p, m, k, plan, engine)
    if mode == "lsh":
        return _self_join_lsh(p, m, k, lsh if lsh is not None else plan_lsh(k, n))
    raise ValueError(f"unknown mode {mode!r}")


def find_near_duplicates(
    phash: ArrayLike,
    mirror: ArrayLike | None,
    k: int,
    *,
    mode: Mode = "auto",
    plan: MIHPlan | None = None,
    lsh: LSHParams | None = None,
    engine: Engine = "auto",
) -> PairSet:
    """All item pairs with pair distance ``<= k`` (``"exact"``/``"brute"``: identical to
    :func:`brute_force_pairs`; ``"lsh"``: a subset of it).

    Identical ``(phash, mirror)`` values are collapsed before searching and expanded
    afterwards; the output is quadratic in the size of identical groups.  ``engine``:
    see :func:`find_node_pairs`.
    """
    groups = collapse_identical(phash, mirror)
    found = find_node_pairs(groups, k, mode=mode, plan=plan, lsh=lsh, engine=engine)
    return expand_node_pairs(groups, found)
