#!/usr/bin/env python3
"""What a worker process costs to start, and what its first calls cost after.

- A decode worker (``DecodePool``, one process): wall seconds of its boot (the start
  call: imports, filters, and the decode path's kernels, ``decode_pool._warm_decode``)
  and of its first three calls of 16 samples; its CPU seconds in all (from /proc).
- The pair scorer's warm-up call (``workers.warm_scoring``: verification's kernels) in a fresh
  worker and in a decode worker that has decoded a chunk (what ``PairScorer`` borrows).

Each round runs in a fresh process of its own (numba's import is once a process).

    python benchmarks/bench_worker_start.py --data bench_data/n1600-1024px --rounds 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def measure(data: str) -> dict[str, object]:
    """One round, in this (fresh) process."""
    import os

    from mitigate.config import load_config
    from mitigate.decode_pool import DecodePool
    from mitigate.filters import build_filter, scored_at_decode
    from mitigate.pipeline.fs import open_read
    from mitigate.sources import index_tar
    from mitigate.workers import Worker, warm_scoring

    config, _ = load_config(REPO / "configs" / "default.yaml", [])
    built = [build_filter(c) for c in config.filters]
    filters = [f.config for f in scored_at_decode(built)]
    shard = sorted(Path(data).glob("*.tar"))[0]
    with open(shard, "rb") as f:
        records = list(index_tar(f, str(shard), max_image_bytes=config.decode.max_image_bytes))

    def cpu_of(pid: int) -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    out: dict[str, object] = {}
    pool = DecodePool(1, config.decode, filters, keep_images=False, opener=open_read)
    try:
        started = time.perf_counter()
        pool.start()
        (worker,) = pool._workers
        assert worker is not None
        worker.ready()
        out["boot"] = time.perf_counter() - started
        chunks = []
        for k in range(3):
            started = time.perf_counter()
            pool.run(records[16 * k : 16 * (k + 1)])
            chunks.append(time.perf_counter() - started)
        out["chunks"] = chunks
        out["worker_cpu"] = cpu_of(worker.proc.pid)
        started = time.perf_counter()
        worker.call(warm_scoring)
        out["warm_in_decode_worker"] = time.perf_counter() - started
    finally:
        pool.close()
    fresh = Worker()
    try:
        started = time.perf_counter()
        fresh.call(warm_scoring)
        out["warm_in_fresh_worker"] = time.perf_counter() - started
    finally:
        fresh.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "bench_data" / "n1600-1024px")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    code = (
        f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import bench_worker_start as b; "
        f"print(json.dumps(b.measure({str(args.data)!r})))"
    )
    for r in range(args.rounds):
        text = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        got = json.loads(text.strip().splitlines()[-1])
        chunks = ", ".join(f"{c:.3f}" for c in got["chunks"])
        print(
            f"round {r}: decode worker boot {got['boot']:.2f} s, first calls of 16 samples "
            f"{chunks} s, its CPU {got['worker_cpu']:.2f} s; scoring kernels' warm-up "
            f"{got['warm_in_decode_worker']:.3f} s in that worker, "
            f"{got['warm_in_fresh_worker']:.3f} s in a fresh one"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
