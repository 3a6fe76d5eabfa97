#!/usr/bin/env python3
"""How much more decode work N processes get done on this machine than one: the ceiling
of any "N workers vs 1" ratio of the pipeline, measured on its own decode step.

``bench_pipeline.parallel_capacity`` measures that ceiling with a loop of Python integer
additions, which lives in each core's caches. The decode step (reading a sample's
bytes, sha256, the JPEG decode at draft scale, the hashes, the signature and the rule
filters: ``stages.load_payloads``, ``compute_signals``, ``score_items``, as a decode
worker runs them) streams images through memory. Where virtual CPUs share a physical
core or its memory bandwidth, two of them decode less than twice what one decodes.

Each round runs one fresh process that decodes ``--limit`` samples alone, then N fresh
processes at the same time, the first decoding the same samples and each other the
next ``--limit`` (different images, as a pool's workers decode: the same ones at once
would share their bytes in the caches), and the spin loop the same way; a process
reports the wall and CPU seconds of its decode loop only (imports and a first warm-up
chunk left out). Capacity = N x (the first's wall alone) / (its wall beside the others).
Rounds alternate; medians are printed.

    python benchmarks/bench_decode_capacity.py --data bench_data/n1600-1024px --rounds 3

``--pool-stage`` first times the decode pool's own stage (every sample of ``--data``
through ``DecodePool`` in calls of ``--chunk``) with one worker and with
``--processes``, in fresh processes, rounds alternating.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))


def decode_all(paths: list[str], limit: int, chunk: int, part: int = 0) -> dict[str, float]:
    """Decode samples ``part * limit`` to ``(part + 1) * limit`` of ``paths`` as a decode
    worker does, a chunk at a time; the wall and CPU seconds of the loop after a first
    warm-up chunk."""
    from mitigate import stages
    from mitigate.config import load_config
    from mitigate.filters import build_filter, scored_at_decode
    from mitigate.pipeline.fs import open_read
    from mitigate.sources import index_tar

    config, _ = load_config(REPO / "configs" / "default.yaml", [])
    filters = scored_at_decode(build_filter(c) for c in config.filters)
    for flt in filters:
        flt.setup()
    records = []
    for path in paths:
        with open(path, "rb") as f:
            records.extend(index_tar(f, path, max_image_bytes=config.decode.max_image_bytes))
        if len(records) >= (part + 1) * limit:
            break
    records = records[part * limit : (part + 1) * limit]
    chunks = [records[k : k + chunk] for k in range(0, len(records), chunk)]

    def run(part: list) -> None:
        payloads = stages.load_payloads(part, open_read, config.decode.max_image_bytes)
        items = stages.compute_signals(payloads, config.decode, filters)
        stages.score_items(items, filters)

    run(chunks[0])  # lazy imports, compiled kernels loaded
    wall, cpu = time.perf_counter(), time.process_time()
    for part in chunks[1:]:
        run(part)
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def pool_stage(paths: list[str], limit: int, chunk: int, processes: int) -> dict[str, float]:
    """The decode pool's own stage: ``limit`` samples in calls of ``chunk`` on
    ``processes`` workers, as ``ProcessChunk`` hands them over (a first chunk, which
    starts the workers, left out): wall seconds, and the CPU seconds of the workers
    (from /proc) and of this process."""
    import os

    from mitigate.config import load_config
    from mitigate.decode_pool import DecodePool
    from mitigate.filters import build_filter, scored_at_decode
    from mitigate.pipeline.fs import open_read
    from mitigate.sources import index_tar

    config, _ = load_config(REPO / "configs" / "default.yaml", [])
    built = [build_filter(c) for c in config.filters]
    filters = [f.config for f in scored_at_decode(built)]
    records = []
    for path in paths:
        with open(path, "rb") as f:
            records.extend(index_tar(f, path, max_image_bytes=config.decode.max_image_bytes))
    records = records[:limit]
    chunks = [records[k : k + chunk] for k in range(0, len(records), chunk)]

    def cpu_of(pid: int) -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    pool = DecodePool(processes, config.decode, filters, keep_images=False, opener=open_read)
    try:
        pool.run(chunks[0])
        pids = [w.proc.pid for w in pool._workers if w is not None]
        before = [cpu_of(pid) for pid in pids]
        wall, cpu = time.perf_counter(), time.process_time()
        for part in chunks[1:]:
            pool.run(part)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        workers = sum(cpu_of(pid) for pid in pids) - sum(before)
    finally:
        pool.close()
    return {"wall": wall, "cpu": cpu, "workers_cpu": workers}


def _spin() -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    sum(range(40_000_000))
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def _together(n: int, call: str) -> list[dict[str, float]]:
    """``call`` in ``n`` fresh processes at once; ``{part}`` in it is each one's index."""

    def code(part: int) -> str:
        return (
            f"import json, sys; sys.path.insert(0, {str(HERE)!r}); "
            f"import bench_decode_capacity as b; print(json.dumps(b.{call.format(part=part)}))"
        )

    procs = [
        subprocess.Popen([sys.executable, "-c", code(k)], stdout=subprocess.PIPE, text=True)
        for k in range(n)
    ]
    out = []
    for p in procs:
        text, _ = p.communicate()
        if p.returncode:
            raise SystemExit(f"a measuring process failed ({p.returncode})")
        out.append(json.loads(text.strip().splitlines()[-1]))
    return out


def _pool_rows(paths: list[str], args: argparse.Namespace) -> None:
    rows: dict[int, list[dict[str, float]]] = {1: [], args.processes: []}
    for _ in range(args.rounds):
        for n in rows:
            call = f"pool_stage({paths!r}, {10**9}, {args.chunk}, {n})"
            rows[n].extend(_together(1, call))
    print(f"the decode pool's stage, {args.data}, calls of {args.chunk}, medians of {args.rounds}")
    for n, got in rows.items():
        walls = ", ".join(f"{g['wall']:.2f}" for g in got)
        print(
            f"  {n} worker(s): wall {statistics.median(g['wall'] for g in got):.2f} s "
            f"(rounds {walls}); workers' CPU {statistics.median(g['workers_cpu'] for g in got):.2f}"
            f" s; this process's CPU {statistics.median(g['cpu'] for g in got):.2f} s"
        )
    one = statistics.median(g["wall"] for g in rows[1])
    many = statistics.median(g["wall"] for g in rows[args.processes])
    print(f"  {args.processes} workers / 1: {one / many:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "bench_data" / "n1600-1024px")
    parser.add_argument("--limit", type=int, default=1600, help="samples each process decodes")
    parser.add_argument("--chunk", type=int, default=32, help="samples a call (a pool share)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--pool-stage",
        action="store_true",
        help="also time the decode pool's stage (DecodePool over every sample of --data "
        "in calls of --chunk) with 1 and --processes workers, rounds alternating",
    )
    args = parser.parse_args(argv)
    paths = sorted(str(p) for p in args.data.glob("*.tar"))
    if not paths:
        raise SystemExit(f"no .tar files in {args.data}")
    if args.pool_stage:
        _pool_rows(paths, args)
    calls = {
        "decode step": f"decode_all({paths!r}, {args.limit}, {args.chunk}, {{part}})",
        "spin loop": "_spin()",
    }
    got: dict[str, dict[str, list[float]]] = {
        name: {"capacity": [], "one wall": [], "one cpu": [], "n cpu": []} for name in calls
    }
    for _ in range(args.rounds):
        for name, call in calls.items():
            (one,) = _together(1, call)
            many = _together(args.processes, call)
            row = got[name]
            row["capacity"].append(args.processes * one["wall"] / many[0]["wall"])
            row["one wall"].append(one["wall"])
            row["one cpu"].append(one["cpu"])
            row["n cpu"].append(statistics.mean(m["cpu"] for m in many))
    print(
        f"{args.processes} processes at once vs one alone, medians of {args.rounds} rounds "
        f"({args.limit} different samples of {args.data} a process for the decode step)"
    )
    for name, row in got.items():
        rounds = ", ".join(f"{c:.2f}" for c in row["capacity"])
        one_cpu, n_cpu = statistics.median(row["one cpu"]), statistics.median(row["n cpu"])
        print(
            f"  {name:11s} capacity {statistics.median(row['capacity']):.2f}x (rounds {rounds}); "
            f"CPU a process: alone {one_cpu:.2f} s, beside {args.processes - 1} other(s) "
            f"{n_cpu:.2f} s ({n_cpu / one_cpu:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
