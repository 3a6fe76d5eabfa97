#!/usr/bin/env python3
"""Run another benchmark script and print, at its end, the wall and CPU seconds of every
stage the FnApiRunner ran (the stages run one after another in its one process), the
longest first: where a local run's wall time goes once the decode step is spread over
worker processes. CPU is this process's (its threads), not the decode workers'.

    python benchmarks/stage_times.py benchmarks/bench_pipeline.py --child --workers 2 \\
        --mode processes --out /tmp/run "$PWD"/bench_data/n6400-1024px/*.tar
"""

from __future__ import annotations

import atexit
import sys
import time

from apache_beam.runners.portability.fn_api_runner import fn_runner

_rows: list[tuple[str, float, float]] = []
_bundle = fn_runner.FnApiRunner._execute_bundle
_start = time.perf_counter()


def _timed(self, context, manager, bundle_input):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        return _bundle(self, context, manager, bundle_input)
    finally:
        _rows.append((manager.stage.name, time.perf_counter() - wall, time.process_time() - cpu))


@atexit.register
def _show() -> None:
    stages: dict[str, list[float]] = {}
    for name, wall, cpu in _rows:
        row = stages.setdefault(name, [0.0, 0.0, 0])
        row[0] += wall
        row[1] += cpu
        row[2] += 1
    total = sum(row[0] for row in stages.values())
    whole = time.perf_counter() - _start
    print(f"stages: {total:.2f} s wall of {whole:.2f} s in all", file=sys.stderr)
    for name, (wall, cpu, n) in sorted(stages.items(), key=lambda kv: -kv[1][0])[:15]:
        print(f"  {wall:6.2f} s wall {cpu:6.2f} s CPU  x{n}  {name[:100]}", file=sys.stderr)


fn_runner.FnApiRunner._execute_bundle = _timed  # type: ignore[method-assign]

if __name__ == "__main__":
    from wrapping import run_next

    run_next()
