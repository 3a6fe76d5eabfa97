#!/usr/bin/env python3
"""``rebalance.C: auto`` climbing its grid with an early stop (``C_patience``, default 2)
against fitting the whole grid (``C_patience: 0``), arms alternating in this process.

Two fit samples shaped like a run's (``bench_fit_columns.sample``: hashed caption terms
beside a 1,024-d normalised embedding, ~60 % kept):

- ``no bias``: the kept flag is drawn at random, as when a filter removes samples
  unrelated to their features. A weak ``C`` wins and the held-out loss rises along the
  strong end of the grid, whose fits cost the most solver iterations.
- ``bias``: removal follows the embedding's first coordinates, so a strong ``C`` wins
  and the climb reaches the top of the grid: the early stop saves nothing there, and
  must cost nothing.

For each: the median seconds of each arm, the values fitted, the chosen ``C`` and
whether every loss the early stop computed is the whole grid's, bit for bit.

    python benchmarks/bench_c_climb.py --rows 5000 20000 --rounds 3

``--memory``: instead, one selection (default patience, "no bias") on each size, and the
process's resident set before it and its peak after (run each size in a fresh process:
the peak is the process's).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fit_columns import sample

from mitigate.rebalance import FeatureConfig, key_hash64
from mitigate.rebalance_select import DEFAULT_FOLDS, DEFAULT_PATIENCE, fold_ids, select_C


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--embedding-dim", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="peak RSS of one selection")
    args = parser.parse_args(argv)
    cfg = FeatureConfig(embedding_dim=args.embedding_dim)
    if args.memory:
        for rows in args.rows:
            feats, kept, keys = sample(rows, args.embedding_dim, seed=rows)
            hashes = np.array([key_hash64(k, 0) for k in keys], dtype=np.uint64)
            folds = fold_ids(hashes, DEFAULT_FOLDS)
            with open("/proc/self/status") as status:
                rss = int(status.read().split("VmRSS:")[1].split()[0]) // 1024
            sel = select_C(feats, kept, folds, feature_config=cfg)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            print(
                f"{rows} rows: RSS {rss} MB before the selection, peak {peak} MB after it "
                f"({len(sel.log_loss)} values x {DEFAULT_FOLDS} folds fitted, C={sel.C:g})"
            )
        return 0
    arms = {f"patience {DEFAULT_PATIENCE} (default)": DEFAULT_PATIENCE, "whole grid": 0}
    print(f"{'rows':>6} {'data':<8} {'arm':<20} {'C auto s':>9} {'values fitted':>13} {'C':>6}")
    for rows in args.rows:
        feats, random_kept, keys = sample(rows, args.embedding_dim, seed=rows)
        folds = fold_ids(np.array([key_hash64(k, 0) for k in keys], dtype=np.uint64), DEFAULT_FOLDS)
        rng = np.random.default_rng(rows)
        emb = feats[:, -args.embedding_dim :].toarray()
        odds = 4.0 * emb[:, 0] * np.sqrt(args.embedding_dim) + 2.0 * emb[:, 1] * np.sqrt(
            args.embedding_dim
        )
        biased_kept = rng.random(rows) < 1 / (1 + np.exp(-(0.4 + odds)))
        for data, kept in (("no bias", random_kept), ("bias", biased_kept)):
            times: dict[str, list[float]] = {name: [] for name in arms}
            got = {}
            for r in range(args.rounds):
                for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
                    started = time.perf_counter()
                    got[name] = select_C(
                        feats, kept, folds, feature_config=cfg, patience=arms[name]
                    )
                    times[name].append(time.perf_counter() - started)
            for name in arms:
                sel = got[name]
                print(
                    f"{rows:>6} {data:<8} {name:<20} {statistics.median(times[name]):>9.2f}"
                    f" {len(sel.log_loss):>13} {sel.C:>6g}"
                )
            early, whole = got.values()
            same = all(whole.log_loss[c] == v for c, v in early.log_loss.items())
            ratio = statistics.median(times[next(iter(arms))]) / statistics.median(
                times["whole grid"]
            )
            print(
                f"{'':>6} {data:<8} early stop / whole grid: {ratio:.2f}; same C: "
                f"{early.C == whole.C}; losses bit for bit: {same}; whole grid's losses: "
                + ", ".join(f"{c:g}: {v:.5f}" for c, v in whole.log_loss.items())
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
