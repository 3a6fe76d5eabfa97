#!/usr/bin/env python3
"""Run another benchmark script with the decode pool lending none of its workers
(``DecodePool.lend_idle`` a no-op): the near-dup decision's pair scoring as before the
lending, for an A/B of whole runs in one session.

    python benchmarks/no_lending.py benchmarks/bench_pipeline.py --child --workers 2 ...
"""

from __future__ import annotations

from mitigate.decode_pool import DecodePool

DecodePool.lend_idle = lambda self: None  # type: ignore[method-assign]

if __name__ == "__main__":
    from wrapping import run_next

    run_next()
