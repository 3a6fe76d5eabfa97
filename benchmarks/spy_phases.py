#!/usr/bin/env python3
"""Wall time of one pipeline run's main thread by phase, from a py-spy recording.

py-spy (``pip install py-spy``; not a dependency of the project) samples the Beam
worker's stacks, idle ones included, so waits on decode processes count where they
happen. Each sample of the main thread is put in the first phase whose frame it holds
(the order below: a decode step waiting on its pool counts as decode):

    py-spy record --idle --rate 50 --format raw -o /tmp/spy.txt -- \\
        python benchmarks/bench_pipeline.py --child --workers 2 --mode processes \\
        --out /tmp/run6400p "$PWD"/bench_data/n6400-1024px/*.tar
    python benchmarks/spy_phases.py /tmp/spy.txt --rate 50
"""

from __future__ import annotations

import argparse
import collections
import sys

PHASES = [
    ("Decode.teardown", "decode pool shut down (workers exit)"),
    ("write_report", "report.html (charts, dedup thumbnails)"),
    ("_decide", "near-dup decision (one worker; pair scoring on the decode processes)"),
    ("Decode.process", "decode step (sends chunks to the decode processes, waits)"),
    ("_finish_summary", "summary.json and the rest after the Beam run"),
    ("pipeline/build.py", "steps in pipeline/build.py: index, manifest and shard writers, graph"),
    ("_find_and_load", "imports"),
    ("Pipeline.run", "Beam's own work in the run (stages after Decode, groups, coders)"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", help="py-spy --format raw output")
    parser.add_argument("--rate", type=float, default=50.0, help="py-spy's --rate")
    parser.add_argument("--main", default="<module> (bench_pipeline", help="main thread's root")
    args = parser.parse_args(argv)
    seconds: collections.Counter[str] = collections.Counter()
    with open(args.raw, encoding="utf-8") as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack.startswith(args.main):
                continue  # other threads
            phase = next((name for key, name in PHASES if key in stack), "other")
            seconds[phase] += int(count) / args.rate
    total = sum(seconds.values())
    print(f"main thread: {total:.1f} s sampled")
    for phase, s in seconds.most_common():
        print(f"  {s:6.1f} s  {s / total:5.1%}  {phase}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
