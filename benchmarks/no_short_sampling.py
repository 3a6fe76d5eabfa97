#!/usr/bin/env python3
"""Run another benchmark script with Beam's own state sampler period (200 ms) on the
local runner (``runners.local.short_state_sampling`` a no-op), for an A/B of whole runs
in one session.

    python benchmarks/no_short_sampling.py benchmarks/bench_pipeline.py --child --workers 2 ...
"""

from __future__ import annotations

from mitigate.runners import local

local.short_state_sampling = lambda: None  # type: ignore[assignment]

if __name__ == "__main__":
    from wrapping import run_next

    run_next()
