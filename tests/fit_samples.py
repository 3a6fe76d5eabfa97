"""A fit sample for the rebalancing classifier where removal is independent of the
captions, shared by the tests of ``C: auto``'s early stop (selection, run, progress)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from mitigate import rebalance as rb
from mitigate import rebalance_select as rs


@dataclass(frozen=True)
class FitSample:
    features: sp.csr_matrix
    kept: np.ndarray
    hashes: list[int]
    folds: np.ndarray
    config: rb.FeatureConfig


def noise_fit_sample(n: int = 1500, seed: int = 4) -> FitSample:
    """Three random words a caption, 30 % removed at random: a weak ``C`` wins, and the
    held-out loss falls from C=0.01 to 0.1, then rises at 1 and 10 (the tests check the
    shape where they rely on it)."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 200, size=(n, 3))
    config = rb.FeatureConfig(n_features=2**12)
    features = config.featurize([" ".join(f"w{j}" for j in row) for row in words])
    kept = rng.random(n) > 0.3
    hashes = [rb.key_hash64(str(i), 0) for i in range(n)]
    return FitSample(features, kept, hashes, rs.fold_ids(hashes, 3), config)
