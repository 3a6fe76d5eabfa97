#!/usr/bin/env python3
"""A folder of image files against the same samples in tar shards: time, CPU and peak
memory of whole runs, and whether the kept shards are the same bytes.

The bench shards (``make_bench_data.py``) are unpacked once into a folder beside them
(``nN-PX-folder/``: ``KEY.jpg``, ``KEY.txt``, ``KEY.json`` flat, so the keys, and so
the kept shards, are the tars'). Each run is a fresh child process (``mitigate run``
with the bench config: image_quality and caption_terms, no model, one decode process),
tar and folder in alternation, ``--repeat`` times; the child reports its wall and CPU
time (its own and its children's) and its peak RSS. Ratios are folder /
tar from the same round; peak RSS at two sizes shows what grows with the dataset.

    python benchmarks/bench_folder.py --data bench_data --sizes 1600 6400 --repeat 2
    python benchmarks/bench_folder.py --data bench_data --sizes 1600 6400 --per-part 1000

A folder is one source, so its manifest parts are blocks of
``output.samples_per_manifest_part`` samples (the tars here hold 100 each), and the
manifest writer holds a block's records: ``--per-part`` shows what that costs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_pipeline import ensure_data  # noqa: E402


def as_folder(shards: list[Path], folder: Path) -> Path:
    """The shards' members as files of ``folder`` (made once)."""
    done = folder / ".complete"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        for shard in shards:
            with tarfile.open(shard) as tar:
                for member in tar:
                    if member.isfile():
                        (folder / member.name).write_bytes(tar.extractfile(member).read())
        done.write_text("")
    return folder


def child(inputs: list[str], out: str, per_part: int) -> None:
    from mitigate.cli import main

    sets = [
        f"input.paths={json.dumps(inputs)}",
        f"output.path={out}",
        "output.overwrite=true",
        "filters=[{name: image_quality}, {name: caption_terms, category: violence, "
        "terms_file: terms/violence.txt}]",
        "rebalance.embedding_filter=null",
        "decode.processes=1",
        f"output.samples_per_manifest_part={per_part}",
    ]
    args = ["run", "--config", str(REPO / "configs" / "default.yaml")]
    started = time.perf_counter()
    code = main([*args, *(a for s in sets for a in ("--set", s))])
    wall = time.perf_counter() - started
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(
        json.dumps(
            {
                "code": code,
                "wall": wall,
                "cpu": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
                "rss_mb": me.ru_maxrss / 1024,
            }
        )
    )


def run(inputs: list[str], out: Path, per_part: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--out", str(out), "--per-part", str(per_part)]
    cmd += inputs
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        raise SystemExit(f"run failed: {done.stderr[-2000:]}")
    return result


def shard_members(out: Path) -> list[tuple[str, bytes]]:
    """The kept shards' members in order, each ``KEY.json`` without its ``source``
    (a tar's path, or the folder's): what must be the same from either input."""
    found = []
    for path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:
            for member in tar:
                data = tar.extractfile(member).read()
                if member.name.endswith(".json"):
                    meta = json.loads(data)
                    meta["mitigate"].pop("source")
                    data = json.dumps(meta, sort_keys=True).encode()
                found.append((member.name, data))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "bench_data")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1600, 6400])
    parser.add_argument("--long-side", type=int, default=1024, metavar="PX")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--per-part", type=int, default=100_000, help="output.samples_per_manifest_part"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("inputs", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.inputs, args.out, args.per_part)
        return
    for n in args.sizes:
        shards = ensure_data(args.data, n, args.long_side)
        folder = as_folder(shards, args.data / f"n{n}-{args.long_side}px-folder")
        with tempfile.TemporaryDirectory() as tmp:
            rows = []
            for _ in range(args.repeat):
                tar = run([str(s) for s in shards], Path(tmp) / "tar", args.per_part)
                fold = run([str(folder)], Path(tmp) / "folder", args.per_part)
                same = shard_members(Path(tmp) / "tar") == shard_members(Path(tmp) / "folder")
                rows.append((tar, fold, same))
                print(
                    f"n={n}: tar {tar['wall']:.1f} s wall / {tar['cpu']:.1f} CPU-s, "
                    f"folder {fold['wall']:.1f} / {fold['cpu']:.1f}: folder/tar wall "
                    f"{fold['wall'] / tar['wall']:.2f}, CPU {fold['cpu'] / tar['cpu']:.2f}; "
                    f"peak RSS {tar['rss_mb']:.0f} / {fold['rss_mb']:.0f} MB; kept shards "
                    f"the same (KEY.json but its source): {same}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
