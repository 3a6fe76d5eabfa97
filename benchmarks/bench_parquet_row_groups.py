#!/usr/bin/env python3
"""A Parquet table that holds its images in one row group (img2dataset's
``output_format=parquet``, pyarrow's default of 1M rows a group) against the same table
in row groups of 500 rows and the same samples as a tar: wall and CPU time and peak
memory of whole runs (fresh child processes, in alternation, ``--repeat`` times).

Parquet has no row offset, so before session 27 every chunk of a one-group table read
it from its first row (rows x chunks in all); a process now keeps the table open
between chunks (``mitigate.samples._OpenTables``). Ratios are against the tar of the
same round.

    python benchmarks/bench_parquet_row_groups.py --rows 6000 --repeat 2
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def make_inputs(folder: Path, rows: int) -> dict[str, Path]:
    """6,000 distinct ~60 KB JPEGs (500 noise images, a trailer of the row after EOI)
    as a one-group table, a 500-row-group table and a tar."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(5)
    base = []
    for _ in range(500):
        buf = io.BytesIO()
        pixels = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, "JPEG", quality=95)
        base.append(buf.getvalue())
    images = [base[i % 500] + b"%08d" % i for i in range(rows)]
    keys = [f"k{i:06d}" for i in range(rows)]
    table = pa.table(
        {
            "key": keys,
            "jpg": pa.array(images, pa.binary()),
            "caption": [f"photo {i}" for i in range(rows)],
        }
    )
    out = {"one group": folder / "one.parquet", "500-row groups": folder / "rg500.parquet"}
    pq.write_table(table, out["one group"], row_group_size=rows)
    pq.write_table(table, out["500-row groups"], row_group_size=500)
    out["tar"] = folder / "same.tar"
    with tarfile.open(out["tar"], "w") as tar:
        for key, data in zip(keys, images, strict=True):
            for name, body in ((f"{key}.jpg", data), (f"{key}.txt", f"photo {key}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return out


def child(path: str, out: str) -> None:
    from mitigate.cli import main

    sets = [
        f"input.paths={json.dumps([path])}",
        f"output.path={out}",
        "output.overwrite=true",
        "filters=[{name: image_quality}]",
        "rebalance.enabled=false",
        "decode.processes=1",
    ]
    started = time.perf_counter()
    code = main(
        ["run", "--config", str(REPO / "configs" / "default.yaml")]
        + [a for s in sets for a in ("--set", s)]
    )
    wall = time.perf_counter() - started
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    print(json.dumps({"code": code, "wall": wall, "cpu": cpu, "rss_mb": me.ru_maxrss / 1024}))


def run(path: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", str(path), str(out)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        raise SystemExit(f"run failed: {done.stderr[-2000:]}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--make", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.make:
        make_inputs(Path(args.make), args.rows)
        return
    with tempfile.TemporaryDirectory() as tmp:
        # made in a process of its own: a child's peak RSS starts at its parent's (Linux
        # keeps the high-water mark across exec), and the images take ~1.5 GB to make
        cmd = [sys.executable, __file__, "--make", tmp, "--rows", str(args.rows)]
        subprocess.run(cmd, check=True)
        inputs = {
            "one group": Path(tmp) / "one.parquet",
            "500-row groups": Path(tmp) / "rg500.parquet",
            "tar": Path(tmp) / "same.tar",
        }
        for r in range(args.repeat):
            got = {name: run(path, Path(tmp) / "out") for name, path in inputs.items()}
            tar = got["tar"]
            for name, res in got.items():
                print(
                    f"round {r + 1}, {name:>14}: {res['wall']:5.1f} s wall, "
                    f"{res['cpu']:5.1f} CPU-s, peak RSS {res['rss_mb']:.0f} MB; "
                    f"wall / tar {res['wall'] / tar['wall']:.2f}, CPU / tar "
                    f"{res['cpu'] / tar['cpu']:.2f}"
                )


if __name__ == "__main__":
    main()
