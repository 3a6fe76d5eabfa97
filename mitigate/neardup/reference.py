"""Matching items against a held-out reference set (evaluation-overlap dedup)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from mitigate.neardup.bits import _as_pair, _check_k, pair_distance
from mitigate.neardup.brute import brute_force_join
from mitigate.neardup.groups import collapse_identical
from mitigate.neardup.mih import _mih_join
from mitigate.neardup.plan import MIHPlan, plan_mih

# ======================================================================================
# Matching against a reference set (decontamination)
# ======================================================================================


@dataclass(frozen=True, eq=False)
class ReferenceMatch:
    """Closest reference per item: ``ref_index[i]`` (``-1`` when none within ``k``),
    ``distance[i]`` in bits (``-1`` when none), ``ref_key[i]`` when keys were given
    (``None`` when none within ``k``).  Ties go to the smallest reference index."""

    ref_index: NDArray[np.int64]
    distance: NDArray[np.int16]
    ref_key: list[object] | None = None


def match_reference(
    phash: ArrayLike,
    mirror: ArrayLike | None,
    ref_phash: ArrayLike,
    ref_mirror: ArrayLike | None,
    k: int,
    *,
    ref_keys: Sequence[object] | None = None,
    mode: Literal["exact", "brute"] = "exact",
    plan: MIHPlan | None = None,
) -> ReferenceMatch:
    """For every item, the closest reference hash within ``k`` (exact).

    Distance is the pair distance ``min(H(p, p'), H(p, m'), H(m, p'))`` (mirror terms
    skipped when the respective mirror is ``None``).  Both sides are collapsed to
    unique ``(phash, mirror)`` values first; ``"exact"`` runs MIH joins against the
    reference pHash index (item pHash and mirror queries) and the reference mirror
    index (item pHash queries).
    """
    k = _check_k(k)
    p, m = _as_pair(phash, mirror)
    rp, rm = _as_pair(ref_phash, ref_mirror)
    n = p.shape[0]
    if ref_keys is not None and len(ref_keys) != rp.shape[0]:
        raise ValueError("ref_keys must have one key per reference hash")
    items = collapse_identical(p, m)
    refs = collapse_identical(rp, rm)
    ip, im = items.node_phash, items.node_mirror
    qp, qm = refs.node_phash, refs.node_mirror
    if mode == "brute":
        a, b, _ = brute_force_join(ip, im, qp, qm, k)
    elif mode == "exact":
        parts_a: list[NDArray[np.int64]] = []
        parts_b: list[NDArray[np.int64]] = []
        nq = ip.shape[0]
        queries = ip if im is None else np.concatenate([ip, im])
        pl = plan if plan is not None else plan_mih(k, qp.shape[0], queries.shape[0])
        qa, qb = _mih_join(qp, queries, k, pl)
        parts_a.append(np.where(qa < nq, qa, qa - nq))
        parts_b.append(qb)
        if qm is not None:
            pl2 = plan if plan is not None else plan_mih(k, qm.shape[0], nq)
            qa, qb = _mih_join(qm, ip, k, pl2)
            parts_a.append(qa)
            parts_b.append(qb)
        a, b = np.concatenate(parts_a), np.concatenate(parts_b)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    ref_index = np.full(n, -1, np.int64)
    distance = np.full(n, -1, np.int16)
    if a.size:
        d = pair_distance(
            ip[a], None if im is None else im[a], qp[b], None if qm is None else qm[b]
        )
        ref_rep = refs.items[refs.offsets[:-1]][b]  # smallest reference index of the node
        o = np.lexsort((ref_rep, d, a))
        a, d, ref_rep = a[o], d[o], ref_rep[o]
        first = np.ones(a.size, dtype=bool)
        first[1:] = a[1:] != a[:-1]
        best_ref = np.full(items.n_nodes, -1, np.int64)
        best_d = np.full(items.n_nodes, -1, np.int16)
        best_ref[a[first]] = ref_rep[first]
        best_d[a[first]] = d[first]
        ref_index = best_ref[items.item_node]
        distance = best_d[items.item_node]
    keys = None
    if ref_keys is not None:
        keys = [None if r < 0 else ref_keys[r] for r in ref_index.tolist()]
    return ReferenceMatch(ref_index, distance, keys)
