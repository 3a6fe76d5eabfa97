#!/usr/bin/env python3
"""Peak memory of the manifest writer for one large source: a part per block of
``output.samples_per_manifest_part`` samples written a row group at a time (now),
against one part for the whole source written as one Arrow table (before: the previous
``output.write_manifest``, kept here), and one part a row group at a time (row groups
only), at two source sizes.

The step that writes a source's manifest part gets the source's records as one group.
Dataflow and Flink hand a group's values over lazily, but the writer lists and sorts
them, so before this a source of N samples was N records in one worker's memory (a
table of 10^7 rows: tens of GB). Each arm runs in a fresh process that feeds
``pipeline.build.WriteManifestPart`` its groups as generators of final-state records
(kept, with scores, hashes, a caption and the verification signature, as after a run;
no image is read), writes the parts to a temporary folder and prints the process's peak
RSS; the ratios are against the before arm at the same size, measured in the same run.

    python benchmarks/bench_manifest_blocks.py --sizes 100000 400000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _records(source: str, first: int, stop: int):  # type: ignore[no-untyped-def]
    """Final-state records ``first`` .. ``stop - 1`` of ``source``, made one at a time."""
    import hashlib

    from mitigate.records import KEPT, SampleRecord

    for i in range(first, stop):
        digest = hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
        yield SampleRecord(
            key=f"{i:09d}",
            source=source,
            index=i,
            image_path=f"images/{digest[:2]}/{digest}.jpg",
            image_ext="jpg",
            caption=f"a photo of item {i} on a wooden table, seen from above",
            n_bytes=40_000 + i % 9_000,
            width=1024,
            height=768,
            format="JPEG",
            sha256=digest,
            phash=digest[:16],
            phash_mirror=digest[16:32],
            phash_centre=digest[32:48],
            signature=bytes.fromhex(digest) * 72,  # 2,304 bytes, as a real one's 2,315
            scores={"image_quality": 0.0, "caption_terms": 0.0},
            state=KEPT,
            weight=1.0,
        )


def _one_table(records, filter_ids, fileobj):  # type: ignore[no-untyped-def]
    """The manifest writer before row groups: every row, then one table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mitigate import output

    schema = output.manifest_schema(filter_ids)
    rows = [output.manifest_row(r, filter_ids) for r in records]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), fileobj, compression="zstd")
    return len(rows)


def child(n: int, per_part: int, one_table: int) -> dict:
    from mitigate import output
    from mitigate.layout import Layout
    from mitigate.pipeline.build import WriteManifestPart

    if one_table:
        output.write_manifest = _one_table

    source = "/data/table.parquet"
    with tempfile.TemporaryDirectory() as tmp:
        writer = WriteManifestPart(
            Layout(tmp), ["image_quality", "caption_terms"], [], None, per_part
        )
        started = time.perf_counter()
        rows = 0
        for block in range(-(-n // per_part)):
            first = block * per_part
            group = _records(source, first, min(first + per_part, n))
            for tag, value in writer.process(((0, block), group)):
                if tag == "parts":
                    rows += value["rows"]
        wall = time.perf_counter() - started
        parts = len(list(Path(tmp, "manifest").glob("part-*.parquet")))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "per_part": per_part, "rows": rows, "parts": parts, "peak_mb": peak, "s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[100_000, 400_000])
    parser.add_argument(
        "--per-part",
        type=int,
        default=None,
        help="block size of the 'now' arm (default: output.samples_per_manifest_part)",
    )
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    from mitigate.config import OutputConfig

    per_part = args.per_part or OutputConfig().samples_per_manifest_part
    print(f"manifest writer, one source; now: a part per {per_part:,} samples")
    results = {}
    for n in args.sizes:
        arms = (
            ("one table (before)", n, 1),
            ("row groups only", n, 0),
            ("blocks (now)", per_part, 0),
        )
        for arm, size, one_table in arms:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(n), str(size), str(one_table)],
                check=True,
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            assert r["rows"] == n, r
            results[(n, arm)] = r
            print(
                f"  {n:>9,} samples  {arm:18s} {r['parts']:3d} part(s)  peak RSS "
                f"{r['peak_mb']:7.1f} MB  {r['s']:6.2f} s"
            )
        before = results[(n, "one table (before)")]
        for arm, _, _ in arms[1:]:
            r = results[(n, arm)]
            print(
                f"             {arm} / before: peak {r['peak_mb'] / before['peak_mb']:.2f}x, "
                f"wall {r['s'] / before['s']:.2f}x"
            )
    small, large = args.sizes
    for arm, _, _ in arms:
        grow = results[(large, arm)]["peak_mb"] - results[(small, arm)]["peak_mb"]
        print(f"  {arm:18s} peak grows {grow * 1024 / (large - small):.2f} KB a sample")
    return 0


if __name__ == "__main__":
    sys.exit(main())
