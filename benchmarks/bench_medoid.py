#!/usr/bin/env python3
"""The one-worker near-dup decision alone, with the medoid measure's pair scoring as now
(``mitigate/keep.py``: each unordered pair once, verified candidates' scores reused)
and as before stream 14c (every ordered pair, verified pairs scored again), rounds
alternating, in one process; the decisions must be identical.

Items: the samples that reached near dedup in a finished run (its manifest: kept, or a
near duplicate), with their pHashes, centre hashes and signatures, so the decode and
the rest of the pipeline are out of the timing (they are the noise of whole runs on a
shared machine).

    python benchmarks/bench_pipeline.py --child --workers 1 --mode processes \\
        --out /tmp/run6400 "$PWD"/bench_data/n6400-1024px/*.tar
    python benchmarks/bench_medoid.py /tmp/run6400 --rounds 3
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))


def load_items(run: Path) -> list:
    import pyarrow.parquet as pq

    from mitigate.near import HashItem

    items = []
    for part in sorted(glob.glob(str(run / "manifest" / "*.parquet"))):
        for row in pq.read_table(part).to_pylist():
            if row["state"] == "kept" or row["reason"] == "near_duplicate":
                items.append(
                    HashItem(
                        row["key"],
                        row["phash"],
                        row["phash_mirror"],
                        (row["width"] or 0) * (row["height"] or 0),
                        row["signature"],
                        row["phash_centre"],
                    )
                )
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="output folder of a finished run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from bench_pipeline import old_medoid_scoring

    from mitigate import keep
    from mitigate.config import load_config
    from mitigate.pipeline.near import _decide

    config, _ = load_config(REPO / "configs" / "default.yaml", [])
    items = load_items(args.run)
    now = keep._chunk_scores
    old_medoid_scoring()
    before = keep._chunk_scores
    calls = {"now": [0, 0], "before": [0, 0]}  # pairs scored in the medoid measure, calls
    scorer = keep.centrality.__defaults__[0]

    def counting(version: str):
        def score(i, j, sigs, stop_above=None):
            calls[version][0] += len(i)
            calls[version][1] += 1
            return scorer(i, j, sigs, stop_above=stop_above)

        return score

    cpu: dict[str, list[float]] = {"now": [], "before": []}
    outputs = {}
    for r in range(args.rounds):
        for version, fn in (("before", before), ("now", now)):

            def chunk_scores(
                gi, ga, keys, sigs, score_pairs, known, fn=fn, v=version, first=r == 0
            ):  # pairs counted in the first round
                return fn(gi, ga, keys, sigs, counting(v) if first else score_pairs, known)

            keep._chunk_scores = chunk_scores
            started = time.process_time()
            outputs[version] = _decide(items, [], config.dedup, 1)
            cpu[version].append(time.process_time() - started)
    keep._chunk_scores = now
    assert outputs["now"] == outputs["before"], "decisions differ"
    n = len(items)
    print(f"{n} items from {args.run}; one-worker near-dup decision, CPU s, {args.rounds} rounds")
    for version in ("before", "now"):
        best = min(cpu[version])
        pairs, ncalls = calls[version]
        print(
            f"  medoid scoring {version:<6}: best {best:6.2f} s ({best / n * 1000:.2f} ms a "
            f"sample), all {', '.join(f'{c:.2f}' for c in cpu[version])}; medoid pairs scored "
            f"{pairs:,} in {ncalls} calls"
        )
    print(f"  now / before (best): {min(cpu['now']) / min(cpu['before']):.2f}; decisions identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
