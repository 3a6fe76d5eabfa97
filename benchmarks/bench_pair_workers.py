#!/usr/bin/env python3
"""The one-worker near-dup decision with its pair scoring on worker processes: now
(``workers.PairScorer``: workers started once a decision, warm for every call, chunks
taken as they come) against before (``benchmarks/old_pair_workers.py``: a fresh worker
per call and part), against one process, and with the workers of a decode pool lent to
it ("lent", as in a local run: ``workers.borrow``), rounds alternating in one run; the
decisions must be identical.

Wall seconds of ``pipeline.near._decide`` on the items of a finished run (its manifest's
kept and near-duplicate samples, as ``bench_medoid.py`` loads them), and CPU seconds of
this process and of its finished worker processes.

    python benchmarks/bench_pipeline.py --child --workers 1 --mode processes \\
        --out /tmp/run6400 "$PWD"/bench_data/n6400-1024px/*.tar
    python benchmarks/bench_pair_workers.py /tmp/run6400 --rounds 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _lending_pool(config, processes: int):  # type: ignore[no-untyped-def]
    """A decode pool that has decoded a few samples, its workers lent (as a local run's
    are when its near-dup decision starts): the "lent" row's scoring workers."""
    from mitigate.decode_pool import DecodePool
    from mitigate.pipeline.fs import open_read
    from mitigate.sources import index_tar

    shard = REPO / "data" / "sample" / "shard-00000.tar"
    with open(shard, "rb") as f:
        records = list(index_tar(f, str(shard), max_image_bytes=10**8))[:8]
    pool = DecodePool(processes, config.decode, [], keep_images=False, opener=open_read)
    pool.run(records)
    pool.lend_idle()
    return pool


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="output folder of a finished run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument(
        "--min-parallel-pairs",
        type=int,
        default=4096,
        help="workers.MIN_PARALLEL_PAIRS here (4096: the 6,400-sample decision uses workers)",
    )
    args = parser.parse_args(argv)
    from mitigate import workers

    workers.MIN_PARALLEL_PAIRS = args.min_parallel_pairs
    import old_pair_workers
    from bench_medoid import load_items

    from mitigate import verify
    from mitigate.config import load_config
    from mitigate.pipeline.near import _decide

    config, _ = load_config(REPO / "configs" / "default.yaml", [])
    items = load_items(args.run)
    table = verify.as_signatures([item.signature for item in items[:2]])
    verify.pair_scores([0], [1], table)  # this process's kernels loaded first, for all rows
    rows = {
        "1 process": (1, False),
        "now": (args.processes, False),
        "old": (args.processes, True),
        "lent": (args.processes, False),
    }
    wall: dict[str, list[float]] = {name: [] for name in rows}
    cpu: dict[str, list[float]] = {name: [] for name in rows}
    decided = {}
    for _ in range(args.rounds):
        for name, (processes, old) in rows.items():
            (old_pair_workers.install if old else old_pair_workers.uninstall)()
            pool = _lending_pool(config, processes - 1) if name == "lent" else None
            started, c = time.perf_counter(), _cpu()
            decided[name] = _decide(items, [], config.dedup, processes)
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(_cpu() - c)
            if pool is not None:
                pool.close()
    old_pair_workers.uninstall()
    assert decided["now"] == decided["1 process"] == decided["old"] == decided["lent"], (
        "decisions differ"
    )
    print(
        f"{len(items)} items from {args.run}; near-dup decision, medians of {args.rounds} "
        f"alternating rounds ({args.processes} processes for now/old); identical decisions"
    )
    base = statistics.median(wall["1 process"])
    for name in rows:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        each = ", ".join(f"{x:.2f}" for x in wall[name])
        print(
            f"  {name:9s} wall {w:5.2f} s (rounds {each}), x 1 process {base / w:4.2f}; "
            f"CPU with workers {c:5.2f} s"
            + (
                " (this process only: lent workers are not ended when timed)"
                if name == "lent"
                else ""
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
