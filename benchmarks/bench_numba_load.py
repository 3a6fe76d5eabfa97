#!/usr/bin/env python3
"""What a process pays to use the scoring kernels when it has not loaded numba yet:
the import, the first kernel call (numba's dispatcher set-up and the cached machine
code), and peak RSS before and after. Why ``localscore.MIN_COMPILED_PAIRS`` exists.

    python benchmarks/bench_numba_load.py
"""

from __future__ import annotations

import resource
import sys
import time


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    import numpy as np

    from mitigate import localscore, verify

    assert "numba" not in sys.modules, "numba is loaded already"
    before = _rss_mb()
    t0 = time.process_time()
    import numba  # noqa: F401

    t1 = time.process_time()
    y = np.zeros((2, 64, 64), np.float32)
    c = np.zeros((2, 2, 16, 16), np.float32)
    i = np.zeros(1, np.int64)
    localscore.local_at(y, c, i, y, c, i, verify._WINDOWS[64], verify.CHROMA_UNIT)
    t2 = time.process_time()
    print(
        f"import numba {t1 - t0:.2f} CPU s, first kernel call {t2 - t1:.2f} CPU s; "
        f"peak RSS {before:.0f} MB before, {_rss_mb():.0f} MB after"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
