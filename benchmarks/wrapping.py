"""The tail every wrapper script shares (``no_*.py``, ``before_session19.py``,
``stage_times.py``): run the script named by its first argument as ``__main__``, with
the rest as that script's arguments. Wrappers chain (``no_prestart.py no_queue.py
bench_pipeline.py ...``): each patches something, then hands over to the next."""

from __future__ import annotations

import runpy
import sys


def run_next() -> None:
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")
