#!/usr/bin/env python3
"""Run another benchmark script with no decode workers booted before the pipeline
(``decode_pool.prestart_for`` a no-op): the pool starts as before, at the decode step's
first chunk (or after its warm-up), for an A/B of whole runs in one session.

    python benchmarks/no_prestart.py benchmarks/bench_pipeline.py --child --workers 2 ...
"""

from __future__ import annotations

from mitigate import decode_pool

decode_pool.prestart_for = lambda *args, **kwargs: 0  # type: ignore[assignment]

if __name__ == "__main__":
    from wrapping import run_next

    run_next()
