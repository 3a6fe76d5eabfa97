"""Benchmark of reading a run for ``mitigate calibrate`` (``review.calibration_data``)
at two sizes: peak memory and time, this tree against another checkout.

For each size N it writes a synthetic manifest (parts of 100,000 rows: a 30-character
key and a ``score_nsfw`` a row, 1 % of them empty) and 1,000 labels on keys spread over
the run, then reads it in a fresh child process per tree (``--previous TREE``: that
checkout's ``mitigate`` first on ``PYTHONPATH``), which prints its time and VmHWM.

Usage::

    git worktree add /tmp/wt_old HEAD~1
    python benchmarks/bench_calibrate_read.py --sizes 1000000 4000000 --previous /tmp/wt_old
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PART_ROWS = 100_000
LABELS = 1_000


def make_run(out: Path, n: int) -> dict[str, bool]:
    rng = np.random.default_rng(0)
    (out / "manifest").mkdir(parents=True)
    for i, start in enumerate(range(0, n, PART_ROWS)):
        rows = min(PART_ROWS, n - start)
        keys = [f"train-00000-of-00001-{start + j:09d}" for j in range(rows)]
        scores = rng.random(rows)
        scores[rng.random(rows) < 0.01] = np.nan
        table = pa.table({"key": keys, "score_nsfw": scores})
        pq.write_table(table, out / "manifest" / f"part-{i:06d}.parquet")
    picked = rng.choice(n, LABELS, replace=False)
    return {f"train-00000-of-00001-{j:09d}": bool(j % 3 == 0) for j in picked.tolist()}


def child(out: str, labels: str) -> dict:
    from mitigate import review

    wanted = json.loads(Path(labels).read_text())
    t0 = time.perf_counter()
    scored, _, every, missing = review.calibration_data(out, "nsfw", wanted)
    seconds = time.perf_counter() - t0
    hwm = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
    return {
        "s": seconds,
        "rss_mib": hwm,
        "scored": len(scored),
        "every": len(every),
        "missing": len(missing),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--previous", type=Path, help="another checkout to compare with")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    arms = [("this tree", None)] + ([("previous", args.previous)] if args.previous else [])
    results = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp, "run")
            labels = Path(tmp, "labels.json")
            labels.write_text(json.dumps(make_run(out, n)))
            for label, tree in arms:
                env = dict(os.environ)
                if tree is not None:
                    env["PYTHONPATH"] = str(tree.resolve())
                done = subprocess.run(
                    [sys.executable, __file__, "--child", str(out), str(labels)],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                )
                res = json.loads(done.stdout.strip().splitlines()[-1])
                results.append((n, label, res))
                print(
                    f"{n:>10,} rows  {label:<9}  {res['s']:6.2f} s  "
                    f"peak RSS {res['rss_mib']:7.0f} MiB  labelled scores {res['scored']}, "
                    f"scores {res['every']:,}",
                    flush=True,
                )
    if args.previous is not None:
        for (n, _, new), (_, _, old) in zip(results[::2], results[1::2], strict=True):
            same = (new["scored"], new["every"]) == (old["scored"], old["every"])
            print(
                f"{n:,} rows: this tree / previous: time {new['s'] / old['s']:.2f}x, peak RSS "
                f"{new['rss_mib'] / old['rss_mib']:.2f}x; counts {'equal' if same else 'DIFFER'}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
