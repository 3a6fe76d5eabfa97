"""Test data shared by the near-dup search tests: planted hash sets, and hypothesis
strategies for clustered hashes as ``(base pHashes, derived items)`` for
:func:`mitigate.neardup.clustered_hashes`."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from mitigate import neardup as nd

U64_MAX = 2**64 - 1

#: A few base pHashes.
BASE = st.lists(st.integers(0, U64_MAX), min_size=1, max_size=6)
#: Items derived from them: ``(base index, bits to flip, from the mirror, exact copy)``.
DERIVED = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.lists(st.integers(0, 63), max_size=12),
        st.booleans(),
        st.booleans(),
    ),
    max_size=40,
)


def planted(seed: int = 0, k: int = 10, n_random: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """Random hashes plus planted neighbours at every distance 0..k (pHash and mirror
    rule), chains and hot identical groups."""
    return nd.synthetic_hashes(
        n_random,
        k=k,
        n_planted=4 * (k + 1) * 5,
        n_mirror_planted=2 * (k + 1) * 5,
        n_chains=3,
        chain_length=6,
        hot_sizes=(60, 7, 2),
        seed=seed,
    )
