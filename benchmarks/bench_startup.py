#!/usr/bin/env python3
"""Start-up cost of the CLI: ``mitigate --help`` and ``mitigate validate`` against a bare
``python -c pass``, each in a fresh process, in one run.

CPU seconds (user + sys of the child) are reported beside wall time because the shared
machine's load inflates wall time; the validate row uses the default config (three
filters, the nsfw model among them) after one warm-up run, which remembers the model
check (``$MITIGATE_CACHE_DIR``, a temporary folder here).

    python benchmarks/bench_startup.py --repeat 5
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "mitigate --help": ["-m", "mitigate.cli", "--help"],
    "mitigate validate": ["-m", "mitigate.cli", "validate", "--config", "configs/default.yaml"],
}


def measure(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=REPO, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (median)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "MITIGATE_CACHE_DIR": cache}
        measure(COMMANDS["mitigate validate"], env)  # warm-up: checks the model once
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
        for _ in range(args.repeat):  # alternate, so load changes hit every row alike
            for name, cmd in COMMANDS.items():
                runs[name].append(measure(cmd, env))
    print(f"{'command':<20} {'wall s':>7} {'CPU s':>7}  (medians of {args.repeat})")
    for name, values in runs.items():
        wall = sorted(v[0] for v in values)[len(values) // 2]
        cpu = sorted(v[1] for v in values)[len(values) // 2]
        print(f"{name:<20} {wall:>7.2f} {cpu:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
