"""In-memory reference helpers for the rebalance tests (no library caller)."""

from __future__ import annotations

from collections.abc import Sequence

from mitigate.rebalance.sampling import SampleEntry


def bottom_k_threshold(sample: Sequence[SampleEntry], n: int) -> int | None:
    """Hash at or above which a new key cannot enter a full bottom-``n`` sample.

    Returns ``None`` while ``sample`` holds fewer than ``n`` entries (any key may still
    enter). Useful to drop elements early (e.g. before a shuffle) without changing
    the final sample. A key whose hash equals the threshold can enter only if it
    sorts before the last entry's key.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(sample) < n:
        return None
    return sample[n - 1][0]
