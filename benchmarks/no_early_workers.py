#!/usr/bin/env python3
"""Run another benchmark script (or ``-m mitigate.cli ...``) with the decode workers
booted only when the decode step first needs them, as before session 17
(``decode_pool.boot_for_run`` does nothing), so that booting them at the run's start is
measured against the same tree.

    python benchmarks/no_early_workers.py benchmarks/bench_pipeline.py --child --workers 2 ...
"""

from __future__ import annotations

import runpy
import sys

from mitigate import decode_pool

decode_pool.boot_for_run = lambda *args, **kwargs: 0

if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
