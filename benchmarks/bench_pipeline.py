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

Wall time needs a quiet machine; CPU time (the baseline's ``process_time``, the child's
and its workers' user+sys from ``getrusage``) is much less sensitive to other jobs, so
every row reports both, with the ratio to the baseline in each: ``x base wall`` is
samples/s per core against the baseline's samples/s, ``x base CPU`` the baseline's CPU
per sample over the pipeline's (how many times cheaper per sample the pipeline is).
``--compare-before`` adds one-worker rows with the fixed-cost cuts of issue 14 switched
off (Beam's introspection memos, ``runners/beam_memo.py``, and the runner-API round
trip the local runner skips, ``runners/local.py``): their before/after in the same run.
``--compare-medoid`` adds rows (one worker and the parallel mode, both sizes) whose
medoid measure scores pairs as before stream 14c (``mitigate/keep.py``: every ordered
pair, verified candidates scored again): same outputs, the cost before.
``--compare-graph`` adds rows the same way with the record routing as before stream 14f
(``benchmarks/old_graph.py``: exact dedup and the one-worker near-dup join split the
records and rejoined them with Flattens): same outputs, the cost before.
``--compare-scorer`` adds rows the same way with verification's local part as before
its compiled kernel (``benchmarks/old_scoring.py``, also in the pair-scoring worker
processes): same outputs, the cost before.
``--compare-pickling`` adds rows the same way with records, hash items and decisions
pickled as pickle's default for a dataclass (``benchmarks/old_pickling.py``, in the Beam
worker process only): same outputs, the cost before.
``--compare-working-size`` adds rows the same way with ``decode.working_size=256``, the
size before ``auto`` (which is 128 without a model filter, 256 with nsfw): pHashes and
signatures a few bits apart, the cost before.
``--compare-thumbnail`` adds rows the same way with pHash's 32 x 32 thumbnail by Pillow's
resize instead of the compiled kernel (``mitigate/thumbnail.py``; in the Beam worker
process only, so compare one-process rows): same outputs, the cost before.
``--compare-chunk-hashing`` adds rows the same way with the hashes computed one sample
at a time instead of a chunk's together (``decode.decode_images``; in the Beam worker
process only, so compare one-process rows): same outputs, the cost before.
``--compare-pool-start`` adds rows the same way with the decode pool's workers started
one after the other, each waited for (before ``Worker(wait=False)``; compare the
parallel rows): same outputs, the cost before.

    python benchmarks/make_bench_data.py --out bench_data/n3200 --n 3200
    python benchmarks/bench_pipeline.py --data bench_data --sizes 800 3200
    python benchmarks/bench_pipeline.py --sizes 1600 6400 --long-side 1024 \
        --workers 2 --mode multi_threading --compare-before
    python benchmarks/bench_pipeline.py --sizes 1600 6400 --long-side 1024 \
        --workers 2 --mode processes

Every "1 worker" row decodes in its one process (``decode.processes=1``).
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


def baseline(shards: list[Path]) -> tuple[int, float, float]:
    """Naive: full decode + phash(image) + phash(mirror) per image, one core.
    Returns (images, wall seconds, CPU seconds)."""
    n = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith((".jpg", ".png", ".webp")):
                    image = Image.open(io.BytesIO(tar.extractfile(member).read()))
                    image.load()
                    imagehash.phash(image)
                    imagehash.phash(ImageOps.mirror(image))
                    n += 1
    return n, time.perf_counter() - started, time.process_time() - cpu_started


#: replaced versions a run can use instead of the code of the tree (``--compare-NAME``):
#: name -> the module under benchmarks/ that installs it (medoid: a function here)
OLD_VERSIONS = {
    "medoid": "",
    "graph": "old_graph",
    "scorer": "old_scoring",
    "pickling": "old_pickling",
    "working_size": "",  # a config value: decode.working_size=256, what auto replaced
    "thumbnail": "",  # pHash's thumbnail by Pillow's resize, not mitigate/thumbnail.py
    "chunk_hashing": "",  # hashes one sample at a time, not a chunk's in one call
    "pool_start": "",  # decode workers started one after the other
}


def old_medoid_scoring() -> None:
    """The medoid measure's pair scoring as before stream 14c: every ordered (member,
    anchor) pair scored, none reused (the code it replaced, verbatim)."""
    import numpy as np

    from mitigate import keep, verify

    def ordered(gi, ga, keys, signatures, score_pairs, known):
        used = sorted(set(gi.tolist()) | set(ga.tolist()), key=lambda x: keys[x])
        pos = np.zeros(len(keys), dtype=np.int64)
        pos[used] = np.arange(len(used))
        sigs = verify.as_signatures([signatures[x] for x in used])
        return score_pairs(pos[gi], pos[ga], sigs)

    keep._chunk_scores = ordered


def child(
    shards: list[str],
    out: str,
    workers: int,
    mode: str,
    nsfw: bool,
    cuts: bool = True,
    old: Sequence[str] = (),
    sets: Sequence[str] = (),
) -> None:
    """Run the pipeline once and print its timing and peak memory as JSON; ``old``:
    names of :data:`OLD_VERSIONS` to run as they were before."""
    from mitigate.config import load_config
    from mitigate.pipeline.run import run

    sys.path.insert(0, str(HERE))
    for name in old:
        if name == "medoid":
            old_medoid_scoring()
        elif name == "working_size":
            pass  # an override below
        elif name == "thumbnail":  # this process only: compare one-process rows
            from mitigate import thumbnail

            thumbnail._kernel = lambda: None
        elif name == "chunk_hashing":  # this process only: compare one-process rows
            from mitigate import decode, stages

            def one_at_a_time(datas: Sequence[bytes], **kw: Any) -> list[Any]:
                return [decode.decode_image(data, **kw) for data in datas]

            stages.decode_images = one_at_a_time  # type: ignore[assignment]
        elif name == "pool_start":
            from mitigate import decode_pool
            from mitigate.workers import Worker

            def waited(init: Any = None, wait: bool = True) -> Worker:
                return Worker(init)  # each start waited for, as before wait=False

            decode_pool.Worker = waited  # type: ignore[assignment,misc]
        else:  # benchmarks/old_graph.py, old_scoring.py, old_pickling.py
            importlib.import_module(OLD_VERSIONS[name]).install()

    if not cuts:  # the fixed-cost cuts off: Beam's own behaviour
        from mitigate.runners import beam_memo
        from mitigate.runners.local import LocalRunner

        beam_memo.uninstall()
        LocalRunner.is_fnapi_compatible = lambda self: False  # type: ignore[method-assign]

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
    if "working_size" in old:  # before `auto`: 256 whatever the filters
        overrides += ["decode.working_size=256"]
    if mode == "processes":  # one Beam worker, `workers` decode processes (decode_pool)
        overrides += [f"decode.processes={workers}"]
    elif mode == "auto":  # one Beam worker, decode.processes: auto
        overrides += ["decode.processes=auto"]
    else:
        overrides += ["decode.processes=1"]
        if workers > 1:
            overrides += [
                f"runner.direct_num_workers={workers}",
                f"runner.direct_running_mode={mode}",
            ]
    config, _ = load_config(REPO / "configs" / "default.yaml", [*overrides, *sets])
    sampler = SubprocessRss()
    started = time.perf_counter()
    summary = run(config)
    wall = time.perf_counter() - started
    sampler.stop()
    print(
        json.dumps(
            {
                "n": summary["input_count"],
                "kept": summary["counts"]["kept"]["total"],
                "wall": wall,
                "rss_parent_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                # ru_maxrss of children counts what a child had mapped from this
                # process before its exec; the sampler reads each one's own VmRSS
                "rss_workers_mb": max(
                    sampler.peak_mb,
                    0 if mode in ("processes", "auto") else _children_maxrss_mb(),
                ),
            }
        )
    )


_SPIN = (
    "import time\nt = time.perf_counter()\nsum(range(40_000_000))\nprint(time.perf_counter() - t)"
)


def parallel_capacity(processes: int = 2) -> float:
    """How many times one process's throughput ``processes`` CPU-bound processes get
    together on this machine now (``processes`` on a machine whose cores are all free
    and real; less where virtual CPUs share physical ones or other jobs run): the
    ceiling of any "N workers vs 1" ratio measured in the same run."""

    def spin(n: int) -> float:
        procs = [
            subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE, text=True)
            for _ in range(n)
        ]
        return max(float(p.communicate()[0]) for p in procs)

    one = min(spin(1) for _ in range(2))
    many = min(spin(processes) for _ in range(2))
    return processes * one / many


def _children_maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


class SubprocessRss:
    """Largest resident set of any subprocess of this process (decode and scoring
    workers), sampled from /proc every 0.1 s while the run lasts (Linux)."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        me = os.getpid()
        while not self._done.wait(0.1):
            for children in Path(f"/proc/{me}/task").glob("*/children"):
                try:
                    pids = children.read_text().split()
                except OSError:
                    continue
                for pid in pids:
                    try:
                        status = Path(f"/proc/{pid}/status").read_text()
                    except OSError:
                        continue
                    for line in status.splitlines():
                        if line.startswith("VmRSS:"):
                            self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def pipeline_run(
    shards: list[Path],
    workers: int,
    mode: str,
    nsfw: bool,
    cuts: bool = True,
    old: Sequence[str] = (),
) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--child", "--workers", str(workers), "--mode", mode]
        cmd += ["--out", str(Path(tmp) / "out"), *(["--nsfw"] if nsfw else [])]
        cmd += [*([] if cuts else ["--cuts-off"]), *(f"--old={name}" for name in old)]
        cmd += list(map(str, shards))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(
            f"pipeline run failed (exit {proc.returncode}, {workers} workers, {len(shards)} "
            f"shards):\n{proc.stderr[-4000:]}"
        )
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
        choices=["in_memory", "multi_threading", "multi_processing", "processes", "auto"],
        help="the parallel run's direct_running_mode, or `processes`: one Beam worker "
        "with --workers decode processes (decode.processes), or `auto`: one Beam worker "
        "with decode.processes: auto (the default config's: one per core, after a warm-up)",
    )
    parser.add_argument(
        "--nsfw", action="store_true", help="also run the large size with the nsfw filter"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per row (median reported)")
    parser.add_argument(
        "--compare-before",
        action="store_true",
        help="also run one worker at each size with the fixed-cost cuts off",
    )
    parser.add_argument(
        "--compare-medoid",
        action="store_true",
        help="also run each size, 1 worker and parallel, with the medoid measure's pair "
        "scoring as before stream 14c",
    )
    parser.add_argument(
        "--compare-graph",
        action="store_true",
        help="also run each size, 1 worker and parallel, with the record routing as before "
        "stream 14f (benchmarks/old_graph.py)",
    )
    parser.add_argument(
        "--compare-scorer",
        action="store_true",
        help="also run each size, 1 worker and parallel, with verification's local part as "
        "before its compiled kernel (benchmarks/old_scoring.py)",
    )
    parser.add_argument(
        "--compare-pickling",
        action="store_true",
        help="also run each size, 1 worker and parallel, with records pickled as before "
        "compact_pickling (benchmarks/old_pickling.py; the Beam worker process only)",
    )
    parser.add_argument(
        "--compare-working-size",
        action="store_true",
        help="also run each size, 1 worker and parallel, with decode.working_size=256 "
        "(before `auto`; without nsfw auto is 128): different hashes, the cost before",
    )
    parser.add_argument(
        "--compare-thumbnail",
        action="store_true",
        help="also run each size, 1 worker and parallel, with pHash's thumbnail by Pillow's "
        "resize (before mitigate/thumbnail.py; the Beam worker process only): same outputs",
    )
    parser.add_argument(
        "--compare-chunk-hashing",
        action="store_true",
        help="also run each size, 1 worker and parallel, with the hashes computed one sample "
        "at a time (before decode.decode_images; the Beam worker process only): same outputs",
    )
    parser.add_argument(
        "--compare-pool-start",
        action="store_true",
        help="also run each size, 1 worker and parallel, with the decode workers started one "
        "after the other (before Worker(wait=False)): same outputs",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--old", action="append", default=[], choices=OLD_VERSIONS, help=argparse.SUPPRESS
    )
    parser.add_argument("--cuts-off", action="store_true", help=argparse.SUPPRESS)
    # with --child: config overrides after the benchmark's own (e.g. the
    # runner.spill_signatures=false of BENCHMARKS.md's session-21 rows)
    parser.add_argument("--set", dest="sets", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("shards", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        child(
            args.shards,
            args.out,
            args.workers,
            args.mode,
            args.nsfw,
            not args.cuts_off,
            args.old,
            args.sets,
        )
        return 0

    small, large = sorted(args.sizes)
    data = {n: ensure_data(args.data.resolve(), n, args.long_side) for n in (small, large)}
    capacity = parallel_capacity(args.workers)
    n_base, t_base, cpu_base = baseline(data[small])
    base_rate = n_base / t_base
    base_cpu_ms = cpu_base / n_base * 1000
    # (samples, workers, nsfw, fixed-cost cuts on, medoid scoring as now)
    plan = [(small, 1, False, True, True), (small, args.workers, False, True, True)]
    plan += [(large, 1, False, True, True), (large, args.workers, False, True, True)]
    # each right after its like (same load)
    compared = [name for name in OLD_VERSIONS if getattr(args, f"compare_{name}")]
    if compared:
        plan = [v for row in plan for v in (row, (*row[:4], False))]
    if args.compare_before:
        plan += [(small, 1, False, False, True), (large, 1, False, False, True)]
    if args.nsfw:
        plan += [(large, 1, True, True, True), (large, args.workers, True, True, True)]
    runs: dict[tuple[int, int, bool, bool, bool], list[dict]] = {row: [] for row in plan}
    for _ in range(args.repeat):  # rows alternate, so load changes hit every row alike
        for n, workers, nsfw, memo, medoid in plan:
            runs[(n, workers, nsfw, memo, medoid)].append(
                pipeline_run(
                    data[n],
                    workers,
                    args.mode,
                    nsfw,
                    memo,
                    () if medoid else compared,
                )
            )
    result = {row: sorted(rs, key=lambda r: r["wall"])[len(rs) // 2] for row, rs in runs.items()}
    print(
        f"baseline (full decode + 2x imagehash.phash, 1 core, {n_base} images): "
        f"{base_rate:.1f} samples/s wall, {base_cpu_ms:.2f} ms CPU per sample"
    )
    print(f"parallel: direct_num_workers={args.workers}, {args.mode}; medians of {args.repeat}")
    print(
        f"machine: {args.workers} CPU-bound processes get {capacity:.2f}x the throughput of one "
        f"(measured before the runs: the ceiling of 'x 1 worker wall')"
    )
    final_capacity = parallel_capacity(args.workers)
    print(f"machine, measured again after the runs: {final_capacity:.2f}x")
    print(
        f"{'samples':>8} {'nsfw':>5} {'workers':>7} {'cuts':>5} {'code':>6} {'wall s':>7} "
        f"{'CPU s':>7} {'CPU ms/sample':>13} {'samples/s/core':>15} {'x base wall':>11} "
        f"{'x base CPU':>10} {'x 1 worker wall':>15} {'CPU vs 1 worker':>15} "
        f"{'peak RSS parent MB':>19} {'peak RSS workers MB':>20}"
    )
    for (n, workers, nsfw, memo, medoid), r in result.items():
        per_core = r["n"] / r["wall"] / workers
        one = result.get((n, 1, nsfw, memo, medoid), r)
        cpu_ms = r["cpu"] / r["n"] * 1000
        print(
            f"{n:>8} {'yes' if nsfw else 'no':>5} {workers:>7} {'on' if memo else 'off':>5} "
            f"{'now' if medoid else 'old':>6} "
            f"{r['wall']:>7.1f} {r['cpu']:>7.1f} {cpu_ms:>13.2f} {per_core:>15.1f} "
            f"{per_core / base_rate:>11.2f} {base_cpu_ms / cpu_ms:>10.2f} "
            f"{one['wall'] / r['wall']:>15.2f} {r['cpu'] / one['cpu']:>15.2f} "
            f"{r['rss_parent_mb']:>19.0f} {r['rss_workers_mb']:>20.0f}"
        )
    # what grows with the data: the one-worker process's peak RSS between the two sizes
    one_small = result[(small, 1, False, True, True)]
    one_large = result[(large, 1, False, True, True)]
    slope = (one_large["rss_parent_mb"] - one_small["rss_parent_mb"]) / (large - small) * 1000
    print(
        f"peak RSS slope, 1 worker, {small} -> {large} samples: {slope:.1f} MB per 1,000 "
        f"samples ({slope * 1024 / 1000:.1f} KB per sample)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
