#!/usr/bin/env python3
"""Run another benchmark script with this session's local-run changes undone (issue 14,
session 19), for an A/B of whole runs in one session: no decode workers booted before
the pipeline (``no_prestart.py``), chunks in lockstep (``no_queue.py``), no head start
for the scoring kernels (``no_preload.py``), Beam's 200 ms state sampler period, and
the shards written through ``tarfile``'s stream mode (``bench_shard_writer.TarfileWriter``,
the same bytes).

    python benchmarks/before_session19.py benchmarks/bench_pipeline.py --child --workers 2 ...
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_shard_writer import TarfileWriter

from mitigate import decode_pool, output
from mitigate.decode_pool import DecodePool
from mitigate.pipeline import process
from mitigate.runners import local

decode_pool.prestart_for = lambda *args, **kwargs: 0  # type: ignore[assignment]
DecodePool.fits_ahead = lambda self, records: False  # type: ignore[method-assign]
process._preload_scoring = lambda: None  # type: ignore[assignment]
local.short_state_sampling = lambda: None  # type: ignore[assignment]
output.ShardWriter = TarfileWriter  # type: ignore[misc]

if __name__ == "__main__":
    from wrapping import run_next

    run_next()
