#!/usr/bin/env python3
"""The whole ``mitigate run`` command, start to exit, against the same tree with one
change undone (issue 14): each arm a fresh process on the bench samples (the default
filters minus nsfw), arms alternating, medians of wall and CPU time (the command and
the processes it starts).

``--before MODULE`` names a script in benchmarks/ that undoes the change when it is
imported (e.g. ``no_early_workers``: the decode workers boot when the decode step first
needs them, as before session 17).

    python benchmarks/bench_command.py --samples 6400 --processes 2 \
        --before no_early_workers --rounds 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
_RUN = "import sys\n{patch}from mitigate.cli import entry\nentry()\n"


def command(shards: list[str], processes: str, out: str, patch: str) -> tuple[float, float]:
    """(wall s, CPU s) of one ``mitigate run``."""
    filters = (
        "[{name: image_quality}, "
        "{name: caption_terms, category: violence, terms_file: terms/violence.txt}]"
    )
    argv = ["run", "--output", out, "--overwrite"]
    for setting in (
        f"input.paths={json.dumps(shards)}",
        f"decode.processes={processes}",
        f"filters={filters}",
        "rebalance.embedding_filter=null",
    ):
        argv += ["--set", setting]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _RUN.format(patch=patch), *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"the run failed: {proc.stderr[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "bench_data")
    parser.add_argument("--samples", type=int, default=6400)
    parser.add_argument("--long-side", type=int, default=1024)
    parser.add_argument("--processes", default="auto", help="decode.processes")
    parser.add_argument(
        "--before", required=True, help="a script in benchmarks/, e.g. no_early_workers"
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    folder = args.data / f"n{args.samples}-{args.long_side}px"
    shards = sorted(str(p.resolve()) for p in folder.glob("*.tar"))
    if not shards:
        raise SystemExit(f"no shards in {folder}: make them with benchmarks/make_bench_data.py")
    if not (HERE / f"{args.before}.py").is_file():
        raise SystemExit(f"--before: no benchmarks/{args.before}.py")
    patches = {
        "now": "",
        f"before ({args.before})": f"sys.path.insert(0, {str(HERE)!r})\nimport {args.before}\n",
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in patches}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in list(patches) if r % 2 == 0 else list(patches)[::-1]:
                runs[name].append(command(shards, args.processes, f"{tmp}/out", patches[name]))
                print(f"  round {r + 1} {name}: {runs[name][-1][0]:.2f} s", file=sys.stderr)
    print(
        f"mitigate run, {len(shards)} shards of {args.samples} samples, "
        f"decode.processes={args.processes}, medians of {args.rounds} rounds:"
    )
    for name, got in runs.items():
        wall = statistics.median(g[0] for g in got)
        cpu = statistics.median(g[1] for g in got)
        rounds = ", ".join(f"{g[0]:.2f}" for g in got)
        print(f"  {name:<28} wall {wall:6.2f} s (rounds {rounds}), CPU {cpu:6.2f} s")
    now, before = (statistics.median(g[0] for g in got) for got in runs.values())
    print(f"  wall, now / before: {now / before:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
