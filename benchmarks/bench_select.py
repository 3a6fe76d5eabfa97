#!/usr/bin/env python3
"""`mitigate select` over a large run: peak memory at two sizes, and time against the
floor of reading the two columns it needs.

A run of the default config (nsfw with stored embeddings) on the bundled sample data is
made once; a large run is its manifest parts and embedding files linked again and again
(symlinks: no disk) under one folder, so its rows repeat the sample's. Each strategy then
runs as the CLI would, in a child process, and the child's peak RSS is read
(``resource.getrusage(RUSAGE_CHILDREN)`` of a fresh helper per run). The baseline, in the
same run: a child that reads the key and score columns of every part with pyarrow and
nothing else.

    python benchmarks/bench_select.py --sizes 40000 160000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MITIGATE = Path(sys.executable).parent / "mitigate"

_MEASURE = r"""
import resource, subprocess, sys, time, json
t = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t
if proc.returncode:
    sys.exit(proc.stderr[-2000:])
print(json.dumps({"wall": wall,
                  "rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

_FLOOR = r"""
import sys
from pathlib import Path
import pyarrow.parquet as pq
n = 0
for p in sorted(Path(sys.argv[1], "manifest").glob("part-*.parquet")):
    n += pq.read_table(p, columns=["key", "score_nsfw"]).num_rows
print(n)
"""


# The command before session 21, in its steps: every column of every part, every row a
# dict, every embedding in one float32 matrix (the selection functions are today's).
_BEFORE = r"""
import sys
from pathlib import Path
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from mitigate import review, select
from mitigate.layout import Layout
folder, strategy, n, threshold, positives = sys.argv[1:6]
n, threshold = int(n), float(threshold)
parts = sorted(Path(folder, "manifest").glob("part-*.parquet"))
table = pa.concat_tables([pq.read_table(p) for p in parts])
keys = table.column("key").to_pylist()
scores = table.column("score_nsfw").to_numpy(zero_copy_only=False).astype(np.float64)
if strategy == "uncertain":
    picked = select.select_uncertain(keys, scores, threshold, n)
elif strategy == "positives":
    picked = select.select_positives(keys, scores, threshold, n)
else:
    layout = Layout(folder)
    files = [layout.embeddings_beside("nsfw", p.name) for p in parts]
    emb = np.concatenate([np.load(f, mmap_mode="r") for f in files]).astype(np.float32)
    wanted = [k for k, v in review.read_labels(positives).items() if v]
    picked = [i for i, _, _ in select.select_neighbours(keys, emb, wanted, scores, threshold, n)]
rows = table.to_pylist()
print(len([rows[i]["state"] for i in picked]))
"""


def measure(cmd: list[str]) -> dict[str, float]:
    """Wall time and peak RSS of ``cmd`` run in a fresh helper process."""
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def base_run(tmp: Path) -> Path:
    out = tmp / "base"
    subprocess.run(
        [str(MITIGATE), "run", "--output", str(out), "--set", "rebalance.enabled=false"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    return out


def large_run(base: Path, rows: int, folder: Path, per_part: int = 1000) -> int:
    """A run folder of about ``rows`` rows in parts of about ``per_part`` (an input
    shard's worth): ``base``'s rows again and again, each copy's keys made its own
    (``KEY-cN``), the embeddings copied alongside."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parts = sorted((base / "manifest").glob("part-*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in parts])
    vectors = np.concatenate(
        [np.load(base / "embeddings" / "nsfw" / f"{p.stem}.npy") for p in parts]
    )
    copies = max(1, round(rows / table.num_rows))
    per = max(1, round(per_part / table.num_rows))  # copies a part
    (folder / "manifest").mkdir(parents=True)
    (folder / "embeddings" / "nsfw").mkdir(parents=True)
    for name in ("summary.json", "config.yaml"):
        (folder / name).write_bytes((base / name).read_bytes())
    for n, first in enumerate(range(0, copies, per)):
        chunk = []
        for c in range(first, min(first + per, copies)):
            keys = pc.binary_join_element_wise(table.column("key"), f"c{c}", "-")
            chunk.append(table.set_column(table.schema.get_field_index("key"), "key", keys))
        pq.write_table(pa.concat_tables(chunk), folder / "manifest" / f"part-{n:06d}.parquet")
        np.save(
            folder / "embeddings" / "nsfw" / f"part-{n:06d}.npy",
            np.concatenate([vectors] * len(chunk)),
        )
    return copies * table.num_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[40000, 160000])
    parser.add_argument("--n", type=int, default=200, help="samples to select")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        base = base_run(tmp)
        print(f"base run on the bundled sample: {time.perf_counter() - started:.1f} s")
        import pyarrow.parquet as pq

        table = pq.read_table(base / "manifest", columns=["key", "score_nsfw"]).to_pylist()
        top = sorted(
            (r for r in table if r["score_nsfw"] is not None), key=lambda r: -r["score_nsfw"]
        )
        scored = sorted(r["score_nsfw"] for r in top)
        high, low = scored[-1] + 1e-6, scored[len(scored) // 2]  # nothing dropped / half
        labels = tmp / "positives.csv"
        labels.write_text("key,label\n" + "".join(f"{r['key']}-c0,1\n" for r in top[:3]))
        results: dict[tuple[int, str], dict[str, float]] = {}
        sizes = {}
        for size in args.sizes:
            folder = tmp / f"run{size}"
            sizes[size] = large_run(base, size, folder)
            floor = measure([sys.executable, "-c", _FLOOR, str(folder)])
            results[(size, "floor")] = floor
            for strategy in ("uncertain", "positives", "neighbours"):
                # positives: below the run's threshold, so that there are some to spread
                threshold = low if strategy == "positives" else high
                child = [sys.executable, "-c", _BEFORE, str(folder), strategy]
                before = measure([*child, str(args.n), str(threshold), str(labels)])
                results[(size, f"{strategy} (before)")] = before
                out = tmp / f"sel-{size}-{strategy}"
                results[(size, strategy)] = got = measure(
                    [
                        str(MITIGATE),
                        "select",
                        "--from",
                        str(folder),
                        "--filter",
                        "nsfw",
                        "--n",
                        str(args.n),
                        "--strategy",
                        strategy,
                        "--positives",
                        str(labels),
                        "--threshold",
                        str(threshold),
                        "--output",
                        str(out),
                    ]
                )
                # rows of selection.csv: a strategy that found nothing would be fast
                got["selected"] = len((out / "selection.csv").read_text().splitlines()) - 1
    small, large = args.sizes
    print(
        f"{'strategy':<22} {'rows':>8} {'wall s':>7} {'x floor':>8} {'peak RSS MB':>12} "
        f"{'selected':>8}"
    )
    arms = ["floor"] + [
        f"{s}{w}" for s in ("uncertain", "positives", "neighbours") for w in (" (before)", "")
    ]
    for strategy in arms:
        for size in args.sizes:
            r, f = results[(size, strategy)], results[(size, "floor")]
            print(
                f"{strategy:<22} {sizes[size]:>8} {r['wall']:>7.2f} {r['wall'] / f['wall']:>8.2f} "
                f"{r['rss_mb']:>12.0f} {r.get('selected', ''):>8}"
            )
        a, b = results[(small, strategy)], results[(large, strategy)]
        slope = (b["rss_mb"] - a["rss_mb"]) * 1024 / (sizes[large] - sizes[small])
        print(f"{'':<22} peak RSS slope {sizes[small]} -> {sizes[large]}: {slope:.3f} KB a row")
    return 0


if __name__ == "__main__":
    sys.exit(main())
