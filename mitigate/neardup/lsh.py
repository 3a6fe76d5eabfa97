"""Bit-sampling LSH: table keys, collision probability, recall and the plan choice."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from mitigate.neardup.bits import _ONE, HASH_BITS, _check_k
from mitigate.neardup.cost import COST_LSH_KEY_NS, _join_cost_ns

logger = logging.getLogger(__name__)


# ======================================================================================
# Bit-sampling LSH
# ======================================================================================


@dataclass(frozen=True)
class LSHParams:
    """Bit-sampling LSH: ``n_tables`` tables, each keyed by ``bits_per_table`` bit positions
    drawn without replacement from the 64 hash bits with ``np.random.default_rng(seed)``."""

    bits_per_table: int
    n_tables: int
    seed: int = 0

    def positions(self) -> NDArray[np.int64]:
        """Sampled bit positions, shape ``(n_tables, bits_per_table)``, sorted per table."""
        return lsh_bit_positions(self.bits_per_table, self.n_tables, self.seed)


def lsh_bit_positions(bits_per_table: int, n_tables: int, seed: int = 0) -> NDArray[np.int64]:
    """Deterministic bit positions ``(n_tables, bits_per_table)`` for bit-sampling LSH."""
    if not 1 <= bits_per_table <= HASH_BITS:
        raise ValueError(f"bits_per_table must be in [1, {HASH_BITS}]")
    if n_tables < 1:
        raise ValueError("n_tables must be >= 1")
    rng = np.random.default_rng(seed)
    out = np.empty((n_tables, bits_per_table), np.int64)
    for t in range(n_tables):
        out[t] = np.sort(rng.choice(HASH_BITS, size=bits_per_table, replace=False))
    return out


def _lsh_luts(positions: NDArray[np.int64]) -> list[tuple[int, NDArray[np.uint64]]]:
    """Per used byte of the hash: a 256-entry table mapping the byte to its key bits."""
    values = np.arange(256, dtype=np.uint64)
    luts: list[tuple[int, NDArray[np.uint64]]] = []
    for byte in range(8):
        lut = np.zeros(256, np.uint64)
        used = False
        for t, pos in enumerate(positions.tolist()):
            if pos // 8 == byte:
                lut |= ((values >> np.uint64(pos % 8)) & _ONE) << np.uint64(t)
                used = True
        if used:
            luts.append((byte, lut))
    return luts


def _lsh_table_key(
    byte_view: NDArray[np.uint8], luts: list[tuple[int, NDArray[np.uint64]]]
) -> NDArray[np.uint64]:
    key = np.zeros(byte_view.shape[0], np.uint64)
    for byte, lut in luts:
        key |= lut[byte_view[:, byte]]
    return key


def _bytes_le(h: NDArray[np.uint64]) -> NDArray[np.uint8]:
    """Bytes of each hash, least significant first: column b holds bits 8b..8b+7."""
    return np.ascontiguousarray(h, dtype="<u8").view(np.uint8).reshape(-1, 8)


def lsh_collision_probability(d: int, bits_per_table: int) -> float:
    """Probability that two hashes ``d`` bits apart agree on all sampled positions of one
    table: ``C(64 - d, b) / C(64, b)`` (positions drawn without replacement)."""
    return math.comb(HASH_BITS - d, bits_per_table) / math.comb(HASH_BITS, bits_per_table)


def lsh_recall_at(d: int, params: LSHParams) -> float:
    """Theoretical probability that a pair at distance ``d`` is found (any table)."""
    p = lsh_collision_probability(d, params.bits_per_table)
    return 1.0 - (1.0 - p) ** params.n_tables


def estimate_lsh_cost_ns(n_nodes: int, bits_per_table: int, n_tables: int) -> float:
    """Estimated nanoseconds of an LSH self-join over ``n_nodes`` unique hashes with
    mirror queries (``2 * n_nodes`` exact-key probes per table), random hashes."""
    per_table = 2 * n_nodes * COST_LSH_KEY_NS + _join_cost_ns(
        n_nodes, 2 * n_nodes, bits_per_table, 0
    )
    return n_tables * per_table


def plan_lsh(
    k: int,
    n_nodes: int,
    *,
    target_recall: float = 0.95,
    seed: int = 0,
    bits_per_table: int | None = None,
    n_tables: int | None = None,
) -> LSHParams:
    """Choose LSH parameters so a pair at distance exactly ``k`` is found with
    probability ``>= target_recall`` (closer pairs: higher), at minimal estimated cost.

    ``n_tables = ceil(log(1 - R) / log(1 - p_k(b)))`` for each candidate ``b``; the
    ``b`` minimising :func:`estimate_lsh_cost_ns` wins (about ``log2(n_nodes)``: e.g.
    k=10, R=0.95, 1M nodes -> b=20, L~180).  Either value can be fixed by the caller.
    """
    k = _check_k(k)
    if not 0.0 < target_recall < 1.0:
        raise ValueError("target_recall must be in (0, 1)")

    def tables_for(b: int) -> int:
        p = lsh_collision_probability(k, b)
        if p >= 1.0:
            return 1
        if p <= 0.0:
            raise ValueError(f"b={b} bits cannot find pairs at distance {k}")
        return max(1, math.ceil(math.log(1.0 - target_recall) / math.log1p(-p)))

    if bits_per_table is not None:
        L = n_tables if n_tables is not None else tables_for(bits_per_table)
        return LSHParams(bits_per_table, L, seed)
    best: tuple[float, LSHParams] | None = None
    for b in range(4, min(40, HASH_BITS - k) + 1):
        L = n_tables if n_tables is not None else tables_for(b)
        cost = estimate_lsh_cost_ns(n_nodes, b, L)
        if best is None or cost < best[0]:
            best = (cost, LSHParams(b, L, seed))
    assert best is not None
    logger.debug("plan_lsh(k=%d, n=%d): %s", k, n_nodes, best[1])
    return best[1]
