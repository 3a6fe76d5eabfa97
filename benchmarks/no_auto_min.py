#!/usr/bin/env python3
"""Run another benchmark script with ``decode.processes: auto`` starting its pool
whatever the run's size, as before session 16 (``decode_pool.AUTO_MIN_SAMPLES`` = 0),
so that the size rule is measured against the same tree.

    python benchmarks/no_auto_min.py benchmarks/bench_pipeline.py --child --mode auto ...
"""

from __future__ import annotations

from mitigate import decode_pool

decode_pool.AUTO_MIN_SAMPLES = 0

if __name__ == "__main__":
    from wrapping import run_next

    run_next()
