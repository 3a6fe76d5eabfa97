#!/usr/bin/env python3
"""Whole-pipeline throughput and peak memory against a naive baseline, in one run.

Baseline (one core, in this process): for every image of the benchmark shards, a full
decode with Pillow plus ``imagehash.phash`` of the image and of its mirror image, which
is what a script without the pipeline's decode-once design does just to get the two
hashes. The pipeline does more per sample (sha256, EXIF orientation, mode
normalisation, two filters, exact dedup, manifest, shard writing) and is still compared
with it as samples per second per core.

Each pipeline run is a fresh child process, so its peak RSS (``ru_maxrss``, parent and
worker processes reported separately) is its own; two dataset sizes show whether
memory grows with the data.

    python benchmarks/make_bench_data.py --out bench_data/n3200 --n 3200
    python benchmarks/bench_pipeline.py --data bench_data --sizes 800 3200
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import imagehash
from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
log = logging.getLogger("bench_pipeline")


def ensure_data(root: Path, n: int, long_side: int) -> list[Path]:
    """Shards with ``n`` samples under root/nN[-PX] (built once, then reused)."""
    folder = root / (f"n{n}-{long_side}px" if long_side else f"n{n}")
    if not any(folder.glob("*.tar")):
        cmd = [sys.executable, str(HERE / "make_bench_data.py"), "--out", str(folder)]
        subprocess.run([*cmd, "--n", str(n), "--long-side", str(long_side)], check=True)
    return sorted(folder.glob("*.tar"))


def baseline(shards: list[Path]) -> tuple[int, float]:
    """Naive: full decode + phash(image) + phash(mirror) per image, one core."""
    n = 0
    started = time.perf_counter()
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith((".jpg", ".png", ".webp")):
                    image = Image.open(io.BytesIO(tar.extractfile(member).read()))
                    image.load()
                    imagehash.phash(image)
                    imagehash.phash(ImageOps.mirror(image))
                    n += 1
    return n, time.perf_counter() - started


def child(shards: list[str], out: str, workers: int, mode: str, nsfw: bool) -> None:
    """Run the pipeline once and print its timing and peak memory as JSON."""
    from mitigate.config import load_config
    from mitigate.pipeline.run import run

    overrides = [
        f"input.paths={json.dumps(shards)}",
        f"output.path={out}",
        "output.overwrite=true",
        "input.chunk_size=32",
    ]
    if not nsfw:
        # The default config minus the model filter (whose embeddings rebalancing then
        # cannot use: it fits on caption features alone).
        overrides += [
            "filters=[{name: image_quality}, {name: caption_terms, category: violence, "
            "terms_file: terms/violence.txt}]",
            "rebalance.embedding_filter=null",
        ]
    if workers > 1:
        overrides += [f"runner.direct_num_workers={workers}", f"runner.direct_running_mode={mode}"]
    config, _ = load_config(REPO / "configs" / "default.yaml", overrides)
    started = time.perf_counter()
    summary = run(config)
    wall = time.perf_counter() - started
    print(
        json.dumps(
            {
                "n": summary["input_count"],
                "kept": summary["counts"]["kept"]["total"],
                "wall": wall,
                "rss_parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            }
        )
    )


def pipeline_run(shards: list[Path], workers: int, mode: str, nsfw: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--child", "--workers", str(workers), "--mode", mode]
        cmd += ["--out", str(Path(tmp) / "out"), *(["--nsfw"] if nsfw else []), *map(str, shards)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # CPU of the child and its worker processes (threads are inside the child).
    result["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "bench_data", help="data folder")
    parser.add_argument(
        "--sizes", type=int, nargs=2, default=[800, 3200], help="two dataset sizes (samples)"
    )
    parser.add_argument(
        "--long-side",
        type=int,
        default=0,
        metavar="PX",
        help="resize benchmark images to this longer side (default: native, mostly ~150 px)",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="the parallel run's direct_num_workers"
    )
    parser.add_argument(
        "--mode",
        default="multi_processing",
        choices=["in_memory", "multi_threading", "multi_processing"],
        help="the parallel run's direct_running_mode",
    )
    parser.add_argument(
        "--nsfw", action="store_true", help="also run the large size with the nsfw filter"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (median reported)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("shards", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        child(args.shards, args.out, args.workers, args.mode, args.nsfw)
        return 0

    small, large = sorted(args.sizes)
    data = {n: ensure_data(args.data, n, args.long_side) for n in (small, large)}
    n_base, t_base = baseline(data[small])
    base_rate = n_base / t_base
    plan = [(small, 1, False), (small, args.workers, False)]
    plan += [(large, 1, False), (large, args.workers, False)]
    if args.nsfw:
        plan += [(large, 1, True), (large, args.workers, True)]
    runs: dict[tuple[int, int, bool], list[dict]] = {row: [] for row in plan}
    for _ in range(args.repeat):  # rows alternate, so load changes hit every row alike
        for n, workers, nsfw in plan:
            runs[(n, workers, nsfw)].append(pipeline_run(data[n], workers, args.mode, nsfw))
    result = {row: sorted(rs, key=lambda r: r["wall"])[len(rs) // 2] for row, rs in runs.items()}
    print(f"baseline (full decode + 2x imagehash.phash, 1 core): {base_rate:.1f} samples/s")
    print(f"parallel: direct_num_workers={args.workers}, {args.mode}; medians of {args.repeat}")
    print(
        f"{'samples':>8} {'nsfw':>5} {'workers':>7} {'wall s':>7} {'CPU s':>7} "
        f"{'samples/s/core':>15} {'x baseline':>10} {'x 1 worker':>10} "
        f"{'peak RSS parent MB':>19} {'peak RSS workers MB':>20}"
    )
    for (n, workers, nsfw), r in result.items():
        per_core = r["n"] / r["wall"] / workers
        speedup = result[(n, 1, nsfw)]["wall"] / r["wall"]
        print(
            f"{n:>8} {'yes' if nsfw else 'no':>5} {workers:>7} {r['wall']:>7.1f} {r['cpu']:>7.1f} "
            f"{per_core:>15.1f} {per_core / base_rate:>10.2f} {speedup:>10.2f} "
            f"{r['rss_parent_mb']:>19.0f} {r['rss_workers_mb']:>20.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
