"""Cost of the live progress side channel (mitigate/progress.py).

Two measurements in one run:
1. ``emit`` per call with the progress file set, against the no-op call without it.
2. The whole pipeline on the bundled sample data (49 samples, default config with nsfw
   and rebalancing, DirectRunner in-process), alternating runs with the progress file
   set (and a poller reading it every 0.5 s, as the command line does) and without it;
   best of N each. Ratio = with / without.

    python benchmarks/bench_progress.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import timeit
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def emit_cost(n: int) -> tuple[float, float]:
    from mitigate import progress

    os.environ.pop(progress.ENV, None)
    off = min(timeit.repeat(lambda: progress.emit("processed", 16), number=n, repeat=3)) / n
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[progress.ENV] = os.path.join(tmp, "p.txt")
        on = min(timeit.repeat(lambda: progress.emit("processed", 16), number=n, repeat=3)) / n
        os.environ.pop(progress.ENV)
    return off, on


def one_run(with_progress: bool, out: Path) -> float:
    import io

    from mitigate.config import load_config
    from mitigate.pipeline.run import run
    from mitigate.progress import LiveProgress, ProgressRenderer

    config, _ = load_config(REPO / "configs" / "default.yaml", [f"output.path={str(out)!r}"])
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    if with_progress:
        fd, path = tempfile.mkstemp()
        os.close(fd)
        renderer = ProgressRenderer(io.StringIO(), terminal=False, sources=3)
        with LiveProgress(renderer, path):
            run(config)
    else:
        run(config)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    off, on = emit_cost(args.calls)
    print(f"emit: {off * 1e6:.2f} µs without a progress file, {on * 1e6:.2f} µs with one")
    times: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        one_run(False, Path(tmp) / "warm")  # imports, model files in the page cache
        for _ in range(args.repeats):
            for flag in (False, True):
                times[flag].append(one_run(flag, Path(tmp) / "out"))
    best_off, best_on = min(times[False]), min(times[True])
    print(
        f"pipeline (49 samples): without {best_off:.2f} s, with {best_on:.2f} s "
        f"(best of {args.repeats}); ratio {best_on / best_off:.3f}"
    )
    print(
        "all runs:",
        {("with" if k else "without"): [round(t, 2) for t in v] for k, v in times.items()},
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
