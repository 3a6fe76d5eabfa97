#!/usr/bin/env python3
"""The README's first command, ``mitigate run`` on the bundled sample with the default
config, start to exit, against another checkout of the project (issue 14): each arm a
fresh process run the way the console script runs it (``cli.entry`` where the tree has
it, else ``sys.exit(cli.main())``), its ``mitigate`` package from its own tree
(``PYTHONPATH``; ``mitigate.pipeline`` comes from the installed checkout in both),
arms alternating; medians of wall and CPU time (the command and the processes it
starts).

    git worktree add /tmp/wt_old REV
    python benchmarks/bench_readme_run.py --previous /tmp/wt_old --rounds 5
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_RUN = (
    "import sys\nfrom mitigate import cli\n"
    "entry = getattr(cli, 'entry', None)\n"
    "entry() if entry else sys.exit(cli.main())\n"
)


def command(tree: Path, out: str) -> tuple[float, float]:
    """(wall s, CPU s) of one ``mitigate run`` of ``tree``'s package and config."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return timed([sys.executable, "-c", _RUN, "run", "--output", out, "--overwrite"], tree, env)


def timed(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(wall s, CPU s) of a command and the processes it starts; stops on a failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"the run in {cwd} failed: {proc.stderr[-2000:]}")
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--previous", type=Path, required=True, help="another checkout")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    if not (args.previous / "mitigate" / "cli.py").is_file():
        raise SystemExit(f"--previous: no mitigate/cli.py in {args.previous}")
    trees = {"this tree": REPO, f"previous ({args.previous})": args.previous}
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name in list(trees) if r % 2 == 0 else list(trees)[::-1]:
                runs[name].append(command(trees[name], f"{tmp}/out"))
    print(f"mitigate run on the bundled sample, default config, medians of {args.rounds}:")
    for name, got in runs.items():
        wall = statistics.median(g[0] for g in got)
        cpu = statistics.median(g[1] for g in got)
        rounds = ", ".join(f"{g[0]:.2f}" for g in got)
        print(f"  {name:<32} wall {wall:5.2f} s (rounds {rounds}), CPU {cpu:5.2f} s")
    now, before = (statistics.median(g[0] for g in got) for got in runs.values())
    print(f"  wall, this tree / previous: {now / before:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
