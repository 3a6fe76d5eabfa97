#!/usr/bin/env python3
"""Rebalancing's density-ratio fits (issue 14), three arms alternating in this process:
as they are (over the columns in use; ``C: auto``'s grid on threads), the grid one fit
at a time (``rebalance_select.MAX_FIT_THREADS`` = 1), and both as before session 17
(``model._used_columns`` returning the whole matrix, one fit at a time).

The fit sample is synthetic but shaped like a run's: hashed caption terms (the default
2^18 columns; captions of 6-14 words from a Zipf vocabulary of 20,000) beside a
normalised embedding of ``--embedding-dim`` columns (1,024: the nsfw model's), ~60 % of
rows kept. For each size: the median seconds of one fit (``C`` = 0.1) and of ``C``
chosen by 3-fold held-out loss over the default grid (``rebalance.C: auto``: 15 fits),
and the largest difference of the coefficients between the arms.

    python benchmarks/bench_fit_columns.py --rows 68 500 5000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import scipy.sparse as sp

from mitigate import rebalance_select
from mitigate.rebalance import FeatureConfig, fit_density_ratio, key_hash64, normalize_embeddings
from mitigate.rebalance import model as model_module
from mitigate.rebalance_select import DEFAULT_FOLDS, fold_ids, select_C

_NOW = model_module._used_columns
_THREADS = rebalance_select.MAX_FIT_THREADS


def _whole(x: sp.csr_matrix) -> tuple[slice, sp.csr_matrix]:
    return slice(None), x


def sample(rows: int, dim: int, seed: int) -> tuple[sp.csr_matrix, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(20_000)])
    ranks = np.minimum(rng.zipf(1.3, size=rows * 14) - 1, vocab.size - 1)
    lengths = rng.integers(6, 15, size=rows)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    captions = [" ".join(vocab[ranks[s : s + n]]) for s, n in zip(starts, lengths, strict=True)]
    emb = normalize_embeddings(rng.normal(size=(rows, dim)).astype(np.float32))
    feats = sp.csr_matrix(FeatureConfig(embedding_dim=dim).featurize(captions, emb))
    kept = rng.random(rows) < 0.6
    keys = [f"{seed:04d}{i:09d}" for i in range(rows)]
    return feats, kept, keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[68, 500, 5000])
    parser.add_argument("--embedding-dim", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    cfg = FeatureConfig(embedding_dim=args.embedding_dim)
    arms = {
        "now": (_NOW, _THREADS),
        "grid one at a time": (_NOW, 1),
        "before (every column)": (_whole, 1),
    }
    print(f"{'rows':>6} {'columns used':>12} {'arm':<22} {'one fit s':>9} {'C auto s':>9}")
    for rows in args.rows:
        feats, kept, keys = sample(rows, args.embedding_dim, seed=rows)
        folds = fold_ids(np.array([key_hash64(k, 0) for k in keys], dtype=np.uint64), DEFAULT_FOLDS)
        used = np.unique(feats.indices).size
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
        coefs: dict[str, np.ndarray] = {}
        for r in range(args.rounds):
            for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
                model_module._used_columns, rebalance_select.MAX_FIT_THREADS = arms[name]
                started = time.perf_counter()
                model = fit_density_ratio(feats, feats[kept], feature_config=cfg, C=0.1)
                one = time.perf_counter() - started
                started = time.perf_counter()
                select_C(feats, kept, folds, feature_config=cfg)
                auto = time.perf_counter() - started
                times[name].append((one, auto))
                dense = np.zeros(cfg.width)
                dense[model.coef_indices] = model.coef_values
                coefs[name] = dense
        model_module._used_columns, rebalance_select.MAX_FIT_THREADS = _NOW, _THREADS
        for name, got in times.items():
            one = statistics.median(g[0] for g in got)
            auto = statistics.median(g[1] for g in got)
            print(f"{rows:>6} {used:>12} {name:<22} {one:>9.3f} {auto:>9.3f}")
        first, _, last = coefs.values()
        print(f"{'':>6} largest coefficient difference: {np.abs(first - last).max():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
