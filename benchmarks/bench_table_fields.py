#!/usr/bin/env python3
"""What carrying a table row's other columns into the shards costs (``output.table_fields``,
README "What a kept shard holds"): whole runs on a Parquet table of image paths with the
columns of a LAION-style metadata table (url, license, width, height, similarity,
punsafe, pwatermark, aesthetic, a ~200-byte EXIF text), with the fields on and off,
alternated, at two sizes; wall time, CPU and peak RSS of each run (a fresh process,
``benchmarks/bench_pipeline.py --child``: one Beam worker, decode in ``--workers``
processes, the default filters minus nsfw).

The images are those of ``bench_data/n{N}-1024px`` (``benchmarks/make_bench_data.py``),
written out once as files beside the table (``bench_data/table-fields-{N}/``).

    python benchmarks/bench_table_fields.py --sizes 1600 6400 --repeat 2
    python benchmarks/bench_table_fields.py --sizes 1600 6400 --repeat 1 --embedding-dim 768
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _table(n: int, dim: int = 0) -> Path:
    """bench_data/table-fields-{n}/t.parquet, made from the n-sample bench tars once
    (t-emb{dim}.parquet: with a column of ``dim`` float32s a row, an embedding)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = REPO / "bench_data" / f"table-fields-{n}"
    table = folder / "t.parquet"
    if dim and not (folder / f"t-emb{dim}.parquet").exists():
        base = pq.read_table(_table(n))
        rng = np.random.default_rng(0)
        emb = rng.standard_normal((base.num_rows, dim)).astype(np.float32)
        column = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), dim)
        pq.write_table(base.append_column("embedding", column), folder / f"t-emb{dim}.parquet")
    if dim:
        return folder / f"t-emb{dim}.parquet"
    if table.exists():
        return table
    tars = sorted((REPO / "bench_data" / f"n{n}-1024px").glob("*.tar"))
    if not tars:
        raise SystemExit(
            f"no bench_data/n{n}-1024px: python benchmarks/make_bench_data.py "
            f"--out bench_data/n{n}-1024px --n {n} --long-side 1024"
        )
    (folder / "images").mkdir(parents=True, exist_ok=True)
    cols: dict[str, list] = {c: [] for c in ("key", "image", "caption")}
    for path in tars:
        with tarfile.open(path) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name, member in members.items():
                key, ext = name.rsplit(".", 1)
                if ext != "jpg":
                    continue
                (folder / "images" / name).write_bytes(tar.extractfile(member).read())
                caption = tar.extractfile(members[f"{key}.txt"]).read().decode()
                cols["key"].append(key)
                cols["image"].append(f"images/{name}")
                cols["caption"].append(caption)
    rows = len(cols["key"])
    cols |= {
        "url": [f"https://images.example.com/photos/{k}/original.jpg" for k in cols["key"]],
        "license": ["https://creativecommons.org/licenses/by/2.0/"] * rows,
        "width": [1024] * rows,
        "height": [768] * rows,
        "similarity": [0.3 + (i % 40) / 100 for i in range(rows)],
        "punsafe": [(i % 97) / 1000 for i in range(rows)],
        "pwatermark": [(i % 89) / 100 for i in range(rows)],
        "aesthetic": [4.5 + (i % 30) / 10 for i in range(rows)],
        "exif": [
            json.dumps({"Image Make": "Canon", "Image Model": f"EOS {i % 9}D", "EXIF ISO": i % 800})
            + " " * 120
            for i in range(rows)
        ],
    }
    pq.write_table(pa.table(cols), table)
    return table


def _run(table: Path, fields: bool, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(REPO / "benchmarks" / "bench_pipeline.py"), "--child"]
        cmd += ["--workers", str(workers), "--mode", "processes", "--out", f"{tmp}/out"]
        cmd += ["--set", f"output.table_fields={str(fields).lower()}", str(table)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"run failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        manifest = sum(p.stat().st_size for p in Path(tmp, "out", "manifest").glob("*"))
        shards = sum(p.stat().st_size for p in Path(tmp, "out", "shards").glob("*"))
    return result | {"manifest_mb": manifest / 1e6, "shards_mb": shards / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1600, 6400])
    parser.add_argument("--repeat", type=int, default=2, help="runs per arm and size")
    parser.add_argument("--workers", type=int, default=1, help="decode processes")
    parser.add_argument(
        "--embedding-dim", type=int, default=0, help="add a column of this many float32s a row"
    )
    args = parser.parse_args()
    print(f"one Beam worker, {args.workers} decode process(es); medians of {args.repeat}")
    print("| samples | table_fields | wall s | parent RSS MB | manifest MB | shards MB | kept |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        table = _table(n, args.embedding_dim)
        runs: dict[bool, list[dict]] = {True: [], False: []}
        for _ in range(args.repeat):
            for fields in (False, True):  # alternated: the machine's load hits both
                runs[fields].append(_run(table, fields, args.workers))
        walls = {}
        for fields in (False, True):
            rs = runs[fields]
            walls[fields] = statistics.median(r["wall"] for r in rs)
            print(
                f"| {rs[0]['n']} | {str(fields).lower()} | {walls[fields]:.2f} | "
                f"{max(r['rss_parent_mb'] for r in rs):.0f} | {rs[0]['manifest_mb']:.2f} | "
                f"{rs[0]['shards_mb']:.1f} | {rs[0]['kept']} |"
            )
        print(f"n={n}: wall with / without the fields {walls[True] / walls[False]:.3f}x")


if __name__ == "__main__":
    main()
