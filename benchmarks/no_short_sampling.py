#!/usr/bin/env python3
"""Run another benchmark script with Beam's own state sampler period (200 ms) on the
local runner (``runners.local.short_state_sampling`` a no-op), for an A/B of whole runs
in one session.

    python benchmarks/no_short_sampling.py benchmarks/bench_pipeline.py --child --workers 2 ...
"""

from __future__ import annotations

import runpy
import sys

from mitigate.runners import local

local.short_state_sampling = lambda: None  # type: ignore[assignment]

if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
