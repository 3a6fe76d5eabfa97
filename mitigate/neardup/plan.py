"""Multi-index hashing plans: substring split, pigeonhole radii and the cost-based choice."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from mitigate.neardup.bits import HASH_BITS, _check_k
from mitigate.neardup.cost import _ball_volume, _join_cost_ns

logger = logging.getLogger(__name__)


MAX_PROBES_PER_SUBSTRING: int = 4_000_000
"""Refuse MIH plans whose Hamming ball for one substring has more probe values."""


# ======================================================================================
# Multi-index hashing plans and keys
# ======================================================================================


@dataclass(frozen=True)
class MIHPlan:
    """A multi-index hashing plan.

    Substring ``z`` covers hash bits ``[starts[z], starts[z] + lengths[z])`` and is probed
    with Hamming radius ``radii[z]`` (``-1`` = not probed).  The plan is *exact* for
    threshold ``k`` iff some substring matches everything (``radii[z] >= lengths[z]``) or
    ``sum(radii[z] + 1) > k`` (pigeonhole).
    """

    starts: tuple[int, ...]
    lengths: tuple[int, ...]
    radii: tuple[int, ...]
    k: int

    @property
    def m(self) -> int:
        """Number of substrings."""
        return len(self.starts)

    def probes_per_query(self) -> int:
        """Number of bucket probes one query hash makes (sum of Hamming-ball volumes)."""
        pairs = zip(self.lengths, self.radii, strict=True)
        return sum(_ball_volume(length, r) for length, r in pairs)


def split_bits(m: int) -> list[tuple[int, int]]:
    """Split 64 bits into ``m`` contiguous substrings ``(start, length)``, as even as
    possible, longer substrings first (``64 % m`` of them are one bit longer)."""
    if not 1 <= m <= HASH_BITS:
        raise ValueError(f"m must be in [1, {HASH_BITS}], got {m}")
    base, extra = divmod(HASH_BITS, m)
    out: list[tuple[int, int]] = []
    start = 0
    for z in range(m):
        length = base + (1 if z < extra else 0)
        out.append((start, length))
        start += length
    return out


def pigeonhole_radii(k: int, m: int) -> tuple[int, ...]:
    """Tightest radii that keep an ``m``-substring MIH exact for threshold ``k``.

    With ``k = m*q + a`` (``0 <= a < m``): the first ``a + 1`` substrings get radius
    ``q`` and the remaining ``m - a - 1`` get ``q - 1``.  Then ``sum(r_z + 1) = k + 1``:
    a pair whose substrings all exceeded their radii would differ in at least ``k + 1``
    bits.  Radius ``-1`` means the substring need not be probed at all.
    """
    k = _check_k(k)
    q, a = divmod(k, m)
    return tuple([q] * (a + 1) + [q - 1] * (m - a - 1))


def make_plan(k: int, m: int, radii: Sequence[int] | None = None) -> MIHPlan:
    """An MIH plan with ``m`` even substrings and the given (default: tight) radii.

    Raises ``ValueError`` when the radii would not make the search exact.
    """
    k = _check_k(k)
    parts = split_bits(m)
    r = tuple(int(v) for v in (pigeonhole_radii(k, m) if radii is None else radii))
    if len(r) != m:
        raise ValueError(f"need {m} radii, got {len(r)}")
    plan = MIHPlan(
        starts=tuple(s for s, _ in parts), lengths=tuple(ln for _, ln in parts), radii=r, k=k
    )
    covers_all = any(rz >= ln for rz, ln in zip(plan.radii, plan.lengths, strict=True))
    if not covers_all and sum(rz + 1 for rz in plan.radii) <= k:
        raise ValueError(f"radii {r} are not exact for k={k}: need sum(r+1) > k")
    for ln, rz in zip(plan.lengths, plan.radii, strict=True):
        if _ball_volume(ln, rz) > MAX_PROBES_PER_SUBSTRING:
            raise ValueError(f"substring of {ln} bits with radius {rz}: too many probes")
    return plan


def estimate_mih_cost_ns(plan: MIHPlan, n_index: int, n_query: int) -> float:
    """Estimated nanoseconds of an MIH join, assuming uniformly random hashes.

    Sum over probed substrings of one slot-table join: ``n_query * V(L, r)`` probes
    (``V`` = Hamming-ball volume), each scanning the table width chosen for the
    expected ``n_index / 2**L`` entries per bucket, plus the table build; priced with
    the ``COST_*`` constants.
    """
    return sum(
        _join_cost_ns(n_index, n_query, length, r)
        for length, r in zip(plan.lengths, plan.radii, strict=True)
        if r >= 0
    )


def plan_mih(
    k: int,
    n_index: int,
    n_query: int | None = None,
    *,
    m: int | None = None,
    radii: Sequence[int] | None = None,
) -> MIHPlan:
    """Choose an exact MIH plan for threshold ``k`` and the given sizes.

    ``m`` (number of substrings) defaults to the value in ``1..k+1`` minimising
    :func:`estimate_mih_cost_ns` with tight :func:`pigeonhole_radii`; the intuition is
    ``m ~ 64 / log2(n)`` so that each bucket holds ~1 random entry (Norouzi et al.).
    For random hashes this gives e.g. k=10: m=5 at 10k, m=4 at 100k, m=3 at 1M.  Pass
    ``m`` and/or ``radii`` to override (radii are validated for exactness).
    """
    k = _check_k(k)
    n_query = n_index if n_query is None else n_query
    if m is not None:
        return make_plan(k, m, radii)
    if radii is not None:
        return make_plan(k, len(radii), radii)
    best: tuple[float, MIHPlan] | None = None
    for cand_m in range(1, min(HASH_BITS, k + 1) + 1):
        try:
            plan = make_plan(k, cand_m)
        except ValueError:
            continue
        cost = estimate_mih_cost_ns(plan, n_index, n_query)
        if best is None or cost < best[0]:
            best = (cost, plan)
    assert best is not None
    logger.debug("plan_mih(k=%d, n=%d): m=%d radii=%s", k, n_index, best[1].m, best[1].radii)
    return best[1]
