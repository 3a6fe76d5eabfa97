#!/usr/bin/env python3
"""Run another benchmark script with no head start for the pair-scoring kernels in the
Beam worker (``pipeline.process._preload_scoring`` a no-op), for an A/B of whole runs in
one session. Chains with ``no_prestart.py`` and ``no_queue.py``:

    python benchmarks/no_preload.py benchmarks/bench_pipeline.py --child --workers 2 ...
"""

from __future__ import annotations

from mitigate.pipeline import process

process._preload_scoring = lambda: None  # type: ignore[assignment]

if __name__ == "__main__":
    from wrapping import run_next

    run_next()
