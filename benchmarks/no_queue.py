#!/usr/bin/env python3
"""Run another benchmark script with the decode pool's chunks in lockstep, as before
chunks were queued (``DecodePool.fits_ahead`` always False: every chunk in flight is
received before the next is sent), for an A/B of whole runs in one session. Chains with
``no_prestart.py``:

    python benchmarks/no_queue.py benchmarks/bench_pipeline.py --child --workers 2 ...
    python benchmarks/no_prestart.py benchmarks/no_queue.py benchmarks/bench_pipeline.py ...
"""

from __future__ import annotations

from mitigate.decode_pool import DecodePool

DecodePool.fits_ahead = lambda self, records: False  # type: ignore[method-assign]

if __name__ == "__main__":
    from wrapping import run_next

    run_next()
