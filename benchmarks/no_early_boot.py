#!/usr/bin/env python3
"""Run another benchmark script with the decode pool started as before session 15: its
workers boot only when the warm-up is over (``decode.processes: auto``: 256 samples; a
number: the first chunk) and that chunk waits for them, instead of booting from half
the warm-up on while the Beam worker decodes until they are up. ``Decode._pooled`` is
replaced by its earlier code (less the lending, which is not part of it).

    python benchmarks/no_early_boot.py benchmarks/bench_pipeline.py --child --workers 2 ...
"""

from __future__ import annotations

from mitigate.decode_pool import DecodePool
from mitigate.filters import ModelFilter, build_filter
from mitigate.pipeline import fs, process


def _pooled(self):  # type: ignore[no-untyped-def]
    if self.processes < 2 or self._seen < self.warmup:
        return None
    if self._pool is None:
        models = any(isinstance(build_filter(c), ModelFilter) for c in self.filter_configs)
        configs = [f.config for f in self._filters]
        self._pool = DecodePool(
            self.processes, self.decode, configs, keep_images=models, opener=fs.open_read
        )
    return self._pool


process.Decode._pooled = _pooled  # type: ignore[method-assign]

if __name__ == "__main__":
    from wrapping import run_next

    run_next()
