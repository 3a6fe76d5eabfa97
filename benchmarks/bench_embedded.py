#!/usr/bin/env python3
"""Reading a Parquet table that holds its images (img2dataset's binary ``jpg`` column,
Hugging Face datasets ``Image`` structs): peak memory and time of the pipeline's two
reads (the index step's rows, then every image by row through ``SampleReader``, as the
decode chunks and the shard writer ask for them) against the baseline a user would write
(``pq.read_table`` of the table, then its rows), at two sizes.

Two layouts: ``img2dataset`` (one row group for the whole table, pyarrow's default
writer: pages of up to 1,024 rows) and ``datasets`` (row groups of 100 rows, as
``datasets`` writes image tables). Images are random bytes of ``--image-kb`` KB (only
reading is measured, not decoding). Each arm is a fresh process; it prints its peak RSS
(``VmHWM``).

    python benchmarks/bench_embedded.py --sizes 1000 4000

``--from-tars TABLE TAR...`` writes the samples of WebDataset tars (image, caption, key)
as a datasets-style Parquet table (row groups of 100), so that a whole run on it can be
compared with a run on the tars (``benchmarks/bench_pipeline.py --child``, BENCHMARKS.md).
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

REPO = Path(__file__).resolve().parent.parent


def _write(path: Path, n: int, layout: str, image_kb: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = __import__("random").Random(n)
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    writer = None
    step = 100
    for start in range(0, n, step):  # written in slices: the writer holds one at a time
        blobs = [rng.randbytes(image_kb * 1024) for _ in range(min(step, n - start))]
        keys = [f"{start + i:09d}" for i in range(len(blobs))]
        captions = [f"a photo, number {k}" for k in keys]
        if layout == "img2dataset":
            cols = {"key": keys, "caption": captions, "jpg": pa.array(blobs, pa.binary())}
        else:
            images = [{"bytes": b, "path": f"{k}.jpg"} for k, b in zip(keys, blobs, strict=True)]
            cols = {"image": pa.array(images, struct), "text": captions}
        table = pa.table(cols)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="none")
        # img2dataset: one row group for the table (row_group_size beyond n)
        if layout == "img2dataset":
            writer.write_table(table, row_group_size=10**9)
        else:
            writer.write_table(table, row_group_size=100)
    assert writer is not None
    writer.close()
    if layout == "img2dataset":  # one row group, as pyarrow writes a table in one call
        table = pq.read_table(path)
        pq.write_table(table, path, compression="none", row_group_size=10**9)
        del table


def _from_tars(table: Path, tars: list[str]) -> None:
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("key", pa.string()), ("image", struct), ("caption", pa.string())])
    rows: list[dict] = []
    with pq.ParquetWriter(table, schema, compression="none") as writer:
        for tar in tars:
            members: dict[str, dict[str, bytes]] = {}
            with tarfile.open(tar) as archive:
                for member in archive:
                    data = archive.extractfile(member)
                    if data is not None:
                        key, _, ext = member.name.partition(".")
                        members.setdefault(key, {})[ext] = data.read()
            for key, found in members.items():
                image = next(found[e] for e in ("jpg", "png", "webp") if e in found)
                caption = found["txt"].decode()
                rows.append(
                    {"key": key, "image": {"bytes": image, "path": None}, "caption": caption}
                )
                if len(rows) == 100:
                    writer.write_table(pa.Table.from_pylist(rows, schema))
                    rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema))


def _child(path: str, arm: str) -> None:
    start = time.perf_counter()
    n_bytes = 0
    if arm == "pipeline":
        from mitigate.samples import SampleReader
        from mitigate.tables import iter_table

        columns = {"key_column": "key", "image_column": "image", "caption_column": "caption"}
        with open(path, "rb") as f:
            records = iter_table(f, path, "parquet", **columns)
            # the index step's records, then each read by row (decode chunks / shards)
            with SampleReader(lambda p: open(p, "rb")) as reader:
                for record in records:
                    n_bytes += len(reader.image(record))
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        column = "jpg" if "jpg" in table.column_names else "image"
        for value in table.column(column).to_pylist():
            n_bytes += len(value if isinstance(value, bytes) else value["bytes"])
    seconds = time.perf_counter() - start
    # VmHWM, not ru_maxrss: the latter survives exec, so it would read the parent's peak
    status = Path("/proc/self/status").read_text()
    peak = int(status.split("VmHWM:")[1].split()[0]) / 1024
    print(json.dumps({"peak_mb": peak, "seconds": seconds, "bytes": n_bytes}))


def _run(path: Path, arm: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path), arm],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--image-kb", type=int, default=100)
    parser.add_argument("--child", nargs=2, metavar=("TABLE", "ARM"))
    parser.add_argument("--from-tars", nargs="+", metavar="TABLE TAR")
    args = parser.parse_args()
    if args.from_tars:
        _from_tars(Path(args.from_tars[0]), args.from_tars[1:])
        return
    if args.child:
        _child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for layout in ("img2dataset", "datasets"):
            for n in args.sizes:
                path = Path(tmp) / f"{layout}-{n}.parquet"
                _write(path, n, layout, args.image_kb)
                ours, base = _run(path, "pipeline"), _run(path, "read_table")
                assert ours["bytes"] == base["bytes"]
                print(
                    f"{layout:12s} n={n:6d} ({path.stat().st_size / 2**20:,.0f} MB): "
                    f"peak {ours['peak_mb']:,.0f} MB vs read_table {base['peak_mb']:,.0f} MB "
                    f"({ours['peak_mb'] / base['peak_mb']:.2f}x); "
                    f"time {ours['seconds']:.2f} s vs {base['seconds']:.2f} s "
                    f"({ours['seconds'] / base['seconds']:.2f}x)",
                    flush=True,
                )
                path.unlink()


if __name__ == "__main__":
    main()
