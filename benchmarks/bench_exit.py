#!/usr/bin/env python3
"""What ending a process costs (issue 14), in the same run, arms alternating:

* **the command**: ``mitigate run`` on ``--samples`` bench samples (no model filter),
  the whole process's wall time, and the time from ``main()``'s return to the
  process's end, with the console script's exit (``cli.entry``: exit handlers, then
  ``os._exit``) against Python's own (``sys.exit(cli.main())``, as before);
* **a decode pool's close**: ``DecodePool.close`` of ``--processes`` booted workers,
  each ending with ``os._exit`` once its pipe closes (now) against returning into the
  interpreter's teardown (as before).

    python benchmarks/bench_exit.py --data bench_data --samples 1600 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mitigate import workers
from mitigate.config import DecodeConfig
from mitigate.decode_pool import DecodePool
from mitigate.pipeline.fs import open_read

REPO = Path(__file__).resolve().parent.parent

_PROBE = """
import sys, time
from mitigate import cli
def returned():
    sys.stderr.write(f"\\nMAIN-RETURNED {{time.time():.6f}}\\n")
{call}
"""
ENTRY = """
exit_now = cli.exit_now
def marked(code):
    returned()
    exit_now(code)
cli.exit_now = marked
cli.entry()
"""
MAIN = """
code = cli.main()
returned()
sys.exit(code)
"""
ARMS = {"entry (now)": ENTRY, "sys.exit(main()) (before)": MAIN}


def command(call: str, shards: list[str], out: str) -> tuple[float, float]:
    """(process wall s, main's return to the process's end s)."""
    argv = [
        "run",
        "--output",
        out,
        "--set",
        f"input.paths={json.dumps(shards)}",
        "--set",
        "output.overwrite=true",
        "--set",
        "filters=[{name: image_quality}]",
        "--set",
        "rebalance.embedding_filter=null",
    ]
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(call=call), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    ended = time.time()
    if proc.returncode != 0:
        raise SystemExit(f"the run failed: {proc.stderr[-2000:]}")
    returned = float(proc.stderr.split("MAIN-RETURNED")[-1].split()[0])
    return ended - started, ended - returned


def pool_close(processes: int, before: bool) -> float:
    """Seconds ``DecodePool.close`` takes once its workers are up."""
    boot = workers._BOOT
    if before:  # the worker's loop returns, and the interpreter tears down
        workers._BOOT = boot.replace("import serve; serve()", "import _serve; _serve()")
    try:
        pool = DecodePool(processes, DecodeConfig(), [], keep_images=False, opener=open_read)
        pool.start()
        while pool.booting():
            time.sleep(0.02)
        started = time.perf_counter()
        pool.close()
        return time.perf_counter() - started
    finally:
        workers._BOOT = boot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "bench_data")
    parser.add_argument("--samples", type=int, default=1600)
    parser.add_argument("--long-side", type=int, default=1024)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    folder = args.data / f"n{args.samples}-{args.long_side}px"
    shards = sorted(str(p.resolve()) for p in folder.glob("*.tar"))
    if not shards:
        raise SystemExit(f"no shards in {folder}: make them with benchmarks/make_bench_data.py")

    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in ARMS}
    closes: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(ARMS.items()) if r % 2 == 0 else list(ARMS.items())[::-1]
            for name, call in order:
                runs[name].append(command(call, shards, f"{tmp}/out"))
            for before in (r % 2 == 0, r % 2 != 0):
                closes[before].append(pool_close(args.processes, before))

    print(f"mitigate run, {args.samples} samples, medians of {args.rounds} rounds:")
    for name, values in runs.items():
        wall = statistics.median(v[0] for v in values)
        tail = statistics.median(v[1] for v in values)
        print(f"  {name:<28} process {wall:6.2f} s, main's return to exit {tail:5.2f} s")
    now, before = (statistics.median(v[0] for v in runs[k]) for k in ARMS)
    print(f"  process wall, now / before: {now / before:.2f}")
    print(f"DecodePool.close, {args.processes} workers up, medians of {args.rounds}:")
    print(f"  os._exit (now) {statistics.median(closes[False]):.3f} s,")
    print(f"  the interpreter's teardown (before) {statistics.median(closes[True]):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
