#!/usr/bin/env python3
"""What the report costs a run, cold: import of :mod:`mitigate.report` and
``write_report`` of a finished run's folder, in a fresh process each time (as the end
of ``mitigate run`` pays it), against an earlier tree's report in the same rounds.

The earlier tree is a checkout (e.g. ``git worktree add /tmp/wt_old HEAD~1``) whose
``mitigate`` package is put first on ``PYTHONPATH``; its own dependencies must be
installed (the report before this change needed matplotlib). Rounds alternate which
tree goes first; the figures are wall seconds of the child (imports, reading the
manifest, charts, thumbnails, the page written), medians of the rounds.

    python benchmarks/bench_report_cold.py /tmp/run1600 --previous /tmp/wt_old --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from mitigate.report import write_report
t1 = time.perf_counter()
write_report(sys.argv[1])
t2 = time.perf_counter()
import mitigate.report as r
print(json.dumps({"import": t1 - t0, "write": t2 - t1, "from": r.__file__,
                  "matplotlib": "matplotlib" in sys.modules}))
"""


def child(run: Path, tree: Path | None) -> dict:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"  # the report is written into the run's folder
        shutil.copytree(run, copy)
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(copy)],
            env=env,
            cwd=tmp,  # not the repo: "-c" puts the working folder first on sys.path
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a finished run's output folder")
    parser.add_argument("--previous", type=Path, help="an earlier checkout of the repo")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    arms: dict[str, Path | None] = {"this tree": None}
    if args.previous is not None:
        arms["previous"] = args.previous.resolve()
    times: dict[str, list[dict]] = {name: [] for name in arms}
    names = list(arms)
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(child(args.run, arms[name]))
    for name, rows in times.items():
        total = [t["import"] + t["write"] for t in rows]
        print(
            f"{name:>10}: report {statistics.median(total):.3f} s cold (median of "
            f"{len(rows)}: import {statistics.median(t['import'] for t in rows):.3f} s, "
            f"write {statistics.median(t['write'] for t in rows):.3f} s; rounds "
            + " ".join(f"{x:.2f}" for x in total)
            + f"); matplotlib imported: {rows[0]['matplotlib']}; {rows[0]['from']}"
        )
    if "previous" in times:
        now = statistics.median(t["import"] + t["write"] for t in times["this tree"])
        old = statistics.median(t["import"] + t["write"] for t in times["previous"])
        print(f"this tree / previous: {now / old:.2f}x ({old - now:+.3f} s a run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
