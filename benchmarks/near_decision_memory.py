#!/usr/bin/env python3
"""Memory of the one-worker near-dup decision alone (``pipeline.near._decide``) on the
items of a finished run (its kept and near-duplicate samples, as ``bench_medoid.py``
loads them): Python's traced peak (``tracemalloc``: numpy's arrays included) and the
process's RSS before and after, and its peak RSS. Two runs of different sizes give how
the decision's memory grows with the items.

    python benchmarks/bench_pipeline.py --child --workers 1 --mode processes \\
        --out /tmp/run6400 "$PWD"/bench_data/n6400-1024px/*.tar
    python benchmarks/near_decision_memory.py /tmp/run6400
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run's output folder")
    args = parser.parse_args()
    from bench_medoid import load_items

    from mitigate import verify
    from mitigate.config import load_config
    from mitigate.pipeline.near import _decide

    config, _ = load_config(HERE.parent / "configs" / "default.yaml", [])
    items = load_items(args.run)
    verify.pair_scores([0], [1], verify.as_signatures([i.signature for i in items[:2]]))
    before = _rss_mb()
    tracemalloc.start()
    started = time.perf_counter()
    _decide(items, [], config.dedup, 1)
    wall = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    top = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{len(items)} items; decision {wall:.1f} s (traced, slower than untraced); "
        f"traced peak {peak / 2**20:.0f} MB; RSS {before:.0f} MB before, {_rss_mb():.0f} "
        f"after, peak {top:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
