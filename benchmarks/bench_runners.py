#!/usr/bin/env python3
"""Samples/s of the same pipeline on the DirectRunner (1 and 2 worker processes) and on
Dask distributed (a LocalCluster of 2 worker processes on 127.0.0.1), same data, same
run. Default config (nsfw, image_quality, caption_terms, exact and near dedup) without
rebalancing, which the Dask runner refuses.

    python benchmarks/bench_runners.py --n 800
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_pipeline import ensure_data  # noqa: E402


def timed(shards: list[Path], extra: list[str]) -> tuple[float, int]:
    from mitigate.config import load_config
    from mitigate.pipeline.run import run

    with tempfile.TemporaryDirectory() as tmp:
        config, _ = load_config(
            REPO / "configs" / "default.yaml",
            [
                f"input.paths={json.dumps([str(s) for s in shards])}",
                f"output.path={tmp}/o",
                "rebalance.enabled=false",
                "input.chunk_size=32",
                *extra,
            ],
        )
        started = time.perf_counter()
        summary = run(config)
        return time.perf_counter() - started, summary["input_count"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "bench_data")
    parser.add_argument("--n", type=int, default=800)
    parser.add_argument("--long-side", type=int, default=0)
    args = parser.parse_args(argv)
    shards = ensure_data(args.data, args.n, args.long_side)
    from distributed import LocalCluster

    rows = []
    rows.append(("direct, 1 worker", 1, *timed(shards, [])))
    rows.append(
        (
            "direct, 2 processes",
            2,
            *timed(
                shards,
                ["runner.direct_num_workers=2", "runner.direct_running_mode=multi_processing"],
            ),
        )
    )
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        rows.append(
            (
                "dask, 2 processes",
                2,
                *timed(
                    shards, ["runner.name=dask", f"runner.dask_address={cluster.scheduler_address}"]
                ),
            )
        )
    base = rows[0][3] / rows[0][2]
    print(f"{'runner':<22} {'wall s':>7} {'samples/s':>10} {'x direct-1':>11}")
    for name, _, wall, n in rows:
        print(f"{name:<22} {wall:>7.1f} {n / wall:>10.1f} {n / wall / base:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
