"""Hypothesis strategies shared by the near-dup search tests: clustered hashes as
``(base pHashes, derived items)`` for :func:`mitigate.neardup.clustered_hashes`."""

from __future__ import annotations

from hypothesis import strategies as st

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
