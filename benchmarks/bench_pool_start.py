#!/usr/bin/env python3
"""How long a decode pool takes to start its workers (issue 14): each worker imports the
decode path and sets up its filters (``decode_pool._setup``, ~0.5 s). Wall time, in the
same run, alternating: one worker; ``--processes`` workers started one after the other,
each waited for (the pool before session 13); the same started side by side
(``Worker(init, wait=False)``, then each one's ``ready()``: the pool now).

    python benchmarks/bench_pool_start.py --processes 2 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mitigate.config import load_config
from mitigate.decode_pool import _setup
from mitigate.pipeline.fs import open_read
from mitigate.workers import Worker

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    config, _ = load_config(
        REPO / "configs" / "default.yaml",
        ["filters=[{name: image_quality}]", "rebalance.embedding_filter=null"],
    )
    init = (_setup, (config.decode, list(config.filters), False, open_read))

    def one() -> list[Worker]:
        return [Worker(init)]

    def in_turn() -> list[Worker]:
        return [Worker(init) for _ in range(args.processes)]

    def side_by_side() -> list[Worker]:
        started = [Worker(init, wait=False) for _ in range(args.processes)]
        for w in started:
            w.ready()
        return started

    arms = {"one worker": one, "one after the other": in_turn, "side by side": side_by_side}
    t = dict.fromkeys(arms, 0.0)
    for r in range(args.rounds):
        names = list(arms) if r % 2 == 0 else list(arms)[::-1]
        for name in names:
            t0 = time.perf_counter()
            started = arms[name]()
            t[name] += time.perf_counter() - t0
            for w in started:
                w.close()
    for name, total in t.items():
        print(f"{name:>20}: {total / args.rounds:.3f} s")
    print(
        f"{args.processes} workers side by side / one after the other: "
        f"{t['side by side'] / t['one after the other']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
