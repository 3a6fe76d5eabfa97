#!/usr/bin/env python3
"""What the one Beam worker holds per sample, and where (issue 14, stream 14m).

Each size runs in a fresh child process: the default config minus nsfw (as
``bench_pipeline.py`` runs it), one in-process FnApiRunner worker decoding in its own
process (``decode.processes=1``). Every child reports its peak RSS (``ru_maxrss``);
the slope between sizes, in MB per 1,000 samples, is what grows with the dataset.

``--stages`` reads the resident set (VmRSS) before and after every bundle the
FnApiRunner executes and prints the stages that grew it (``--trim`` also runs
``gc.collect()`` and glibc's ``malloc_trim(0)`` after each, to show what of the growth
is freed memory the allocators kept). ``--tracemalloc`` takes a snapshot of the Python
heap each time it grows past its last high-water mark by 5 % and prints the largest
allocation sites of the highest one, per sample. Both slow the run (tracemalloc ~3x);
their RSS is not the plain run's, so the plain rows are measured without them.

    python benchmarks/bench_memory.py --data bench_data --sizes 400 1600 6400 --long-side 1024
    python benchmarks/bench_memory.py --data bench_data --sizes 6400 --long-side 1024 --stages
    python benchmarks/bench_memory.py --data bench_data --sizes 1600 --long-side 1024 --tracemalloc
    python benchmarks/bench_memory.py --data bench_data --sizes 1600 --record-bytes
    python benchmarks/bench_memory.py --data bench_data --sizes 1600 6400 --old-pickling
    python benchmarks/bench_memory.py --data bench_data --sizes 1600 6400 --nsfw
    python benchmarks/bench_memory.py --data bench_data --sizes 1600 6400 --nsfw \
        --fit-sample 1000 --carry-embeddings
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import logging
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_pipeline import ensure_data  # noqa: E402

log = logging.getLogger("bench_memory")


def _overrides(
    shards: list[str], out: str, verify: bool, spill: str = "auto", nsfw: bool = False
) -> list[str]:
    """``nsfw``: the default config's filters (nsfw storing its embeddings, rebalancing
    on them), not the bench filters."""
    bench_filters = [
        "filters=[{name: image_quality}, {name: caption_terms, category: violence, "
        "terms_file: terms/violence.txt}]",
        "rebalance.embedding_filter=null",
    ]
    return [
        f"input.paths={json.dumps(shards)}",
        f"output.path={out}",
        "output.overwrite=true",
        "input.chunk_size=32",
        *([] if nsfw else bench_filters),
        "decode.processes=1",
        f"dedup.verify={'true' if verify else 'false'}",
        f"runner.spill_signatures={spill}",
    ]


def _vm_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class StageWatch:
    """RSS (VmRSS, Linux) before and after every bundle the FnApiRunner executes, with
    the stage's name: which stage the resident set grows in."""

    def __init__(self, trim: bool = False) -> None:
        from apache_beam.runners.portability.fn_api_runner import fn_runner

        self.rows: list[dict[str, Any]] = []
        original = fn_runner.FnApiRunner._execute_bundle
        rows = self.rows

        def execute(runner: Any, ctx: Any, bundle: Any, *args: Any, **kwargs: Any) -> Any:
            before = _vm_rss_mb()
            try:
                return original(runner, ctx, bundle, *args, **kwargs)
            finally:
                row = {"stage": bundle.stage.name, "before": before, "after": _vm_rss_mb()}
                if trim:  # what of the growth is freed memory the allocators keep
                    gc.collect()
                    ctypes.CDLL("libc.so.6").malloc_trim(0)
                    row["trimmed"] = _vm_rss_mb()
                rows.append(row)

        fn_runner.FnApiRunner._execute_bundle = execute  # type: ignore[method-assign]

    def stop(self) -> list[dict[str, Any]]:
        return self.rows


class HeapWatch:
    """tracemalloc snapshots at each new 5 % high-water mark of the traced heap."""

    def __init__(self) -> None:
        tracemalloc.start(1)
        self.best = 0
        self.snapshot: tracemalloc.Snapshot | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.2):
            current, _ = tracemalloc.get_traced_memory()
            if current > self.best * 1.05:
                self.snapshot = tracemalloc.take_snapshot()
                self.best = current

    def stop(self, top: int = 20) -> dict[str, Any]:
        self._done.set()
        self._thread.join()
        _, peak = tracemalloc.get_traced_memory()
        lines = []
        if self.snapshot is not None:
            for stat in self.snapshot.statistics("lineno")[:top]:
                frame = stat.traceback[0]
                where = f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
                lines.append({"where": where, "bytes": stat.size, "count": stat.count})
        tracemalloc.stop()
        return {"traced_peak": peak, "snapshot_total": self.best, "top": lines}


def record_bytes(shards: list[Path], n: int = 200) -> None:
    """Encoded size (Beam's coder for the records' PCollections) of the first ``n``
    decoded samples' records, with and without their verification signature."""
    from apache_beam.coders.typecoders import registry

    from mitigate import stages
    from mitigate.config import load_config
    from mitigate.pipeline import fs
    from mitigate.pipeline.signatures import without_signature
    from mitigate.records import SampleRecord
    from mitigate.sources import index_tar

    config, _ = load_config(
        REPO / "configs" / "default.yaml", _overrides([str(shards[0])], "unused", True)
    )
    coder = registry.get_coder(SampleRecord)
    with open(shards[0], "rb") as f:
        records = [r for r in index_tar(f, str(shards[0])) if isinstance(r, SampleRecord)][:n]
    payloads = stages.load_payloads(records, fs.open_read, config.decode.max_image_bytes)
    items = [i for i in stages.compute_signals(payloads, config.decode) if i.record.signature]
    sys.path.insert(0, str(HERE))
    import old_pickling

    for how in ("compact (now)", "pickle's default (old_pickling)"):
        if how.startswith("pickle"):
            old_pickling.install()
        full = sum(len(coder.encode(i.record)) for i in items) / len(items)
        light = sum(len(coder.encode(without_signature(i.record))) for i in items) / len(items)
        print(
            f"record encoded by {type(coder).__name__}, {how}, mean of {len(items)} decoded "
            f"samples: {full:.0f} B with its signature, {light:.0f} B without ({light / full:.2f}x)"
        )
    old_pickling.uninstall()


def child(
    shards: list[str],
    out: str,
    heap: bool,
    verify: bool,
    stages: bool,
    trim: bool = False,
    no_signatures: bool = False,
    old_pickling: bool = False,
    spill: str = "auto",
    nsfw: bool = False,
    carry_embeddings: bool = False,
    fit_sample: int | None = None,
) -> None:
    from mitigate.config import load_config
    from mitigate.pipeline.run import run

    if old_pickling:
        sys.path.insert(0, str(HERE))
        import old_pickling as old

        old.install()

    if carry_embeddings:  # the stored embeddings in the records, as before session 25
        from mitigate.pipeline import sigstore

        spill_all = sigstore.spill

        def signatures_only(store: str, records: Any, embeddings: bool = False) -> Any:
            return spill_all(store, records)

        sigstore.spill = signatures_only

    if no_signatures:  # an experiment: what the signatures cost, all in all
        from mitigate import stages as core

        compute = core.compute_signals

        def unsigned(*args: Any, **kwargs: Any) -> Any:
            items = compute(*args, **kwargs)
            for item in items:
                item.record.signature = None
            return items

        core.compute_signals = unsigned

    config, _ = load_config(
        REPO / "configs" / "default.yaml",
        _overrides(shards, out, verify, spill, nsfw)
        + ([f"rebalance.fit_sample_size={fit_sample}"] if fit_sample else []),
    )
    hw = HeapWatch() if heap else None
    sw = StageWatch(trim) if stages or trim else None
    started = time.perf_counter()
    summary = run(config)
    result: dict[str, Any] = {
        "n": summary["input_count"],
        "wall": time.perf_counter() - started,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if hw is not None:
        result["heap"] = hw.stop()
    if sw is not None:
        result["stages"] = sw.stop()
    print(json.dumps(result))


def run_child(shards: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--child", "--out", str(Path(tmp) / "out")]
        cmd += ["--tracemalloc"] * args.tracemalloc
        cmd += ["--no-verify"] * (not args.verify) + ["--stages"] * args.stages
        cmd += ["--trim"] * args.trim + ["--no-signatures"] * args.no_signatures
        cmd += ["--old-pickling"] * args.old_pickling
        cmd += ["--spill-signatures", args.spill_signatures] + ["--nsfw"] * args.nsfw
        cmd += ["--carry-embeddings"] * args.carry_embeddings
        cmd += ["--fit-sample", str(args.fit_sample)] if args.fit_sample else []
        proc = subprocess.run([*cmd, *map(str, shards)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(results: dict[int, dict[str, Any]]) -> None:
    sizes = sorted(results)
    print(f"{'samples':>8} {'wall s':>7} {'peak RSS MB':>11} {'slope MB/1k from prev':>22}")
    prev = None
    for n in sizes:
        r = results[n]
        slope = ""
        if prev is not None:
            p = results[prev]
            slope = f"{(r['rss_mb'] - p['rss_mb']) / (n - prev) * 1000:.1f}"
        print(f"{n:>8} {r['wall']:>7.1f} {r['rss_mb']:>11.0f} {slope:>22}")
        prev = n
    if len(sizes) > 1:
        a, b = results[sizes[0]], results[sizes[-1]]
        per = (b["rss_mb"] - a["rss_mb"]) / (sizes[-1] - sizes[0]) * 1024 * 1024
        print(f"slope {sizes[0]} -> {sizes[-1]}: {per / 1024:.1f} KB per sample")
    for n in sizes:
        r = results[n]
        if "stages" in r:
            print(f"\n{n} samples: RSS growth per stage (MB, stages that grew it by >= 1 MB)")
            print(f"{'before':>7} {'after':>7} {'trimmed':>7} {'grew':>6} {'B/sample':>9}  stage")
            for row in r["stages"]:
                grew = row["after"] - row["before"]
                if grew >= 1:
                    print(
                        f"{row['before']:>7.0f} {row['after']:>7.0f} "
                        f"{row.get('trimmed', float('nan')):>7.0f} {grew:>6.1f} "
                        f"{grew * 2**20 / n:>9.0f}  {row['stage'][:80]}"
                    )
        if "heap" in r:
            h = r["heap"]
            print(
                f"\n{n} samples: traced heap peak {h['traced_peak'] / 2**20:.1f} MB; "
                f"largest sites at the highest snapshot ({h['snapshot_total'] / 2**20:.1f} MB):"
            )
            print(f"{'MB':>8} {'B/sample':>9} {'blocks':>9}  line")
            for line in h["top"]:
                print(
                    f"{line['bytes'] / 2**20:>8.2f} {line['bytes'] / n:>9.0f} "
                    f"{line['count']:>9}  {line['where']}"
                )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "bench_data", help="data folder")
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 1600], help="samples")
    parser.add_argument("--long-side", type=int, default=1024, metavar="PX")
    parser.add_argument("--tracemalloc", action="store_true", help="largest heap sites")
    parser.add_argument("--stages", action="store_true", help="RSS before/after each stage")
    parser.add_argument(
        "--trim",
        action="store_true",
        help="with --stages: gc.collect() and malloc_trim(0) after every stage, RSS again",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="dedup.verify off (default: on, as configs/default.yaml)",
    )
    parser.add_argument(
        "--no-signatures",
        action="store_true",
        help="experiment: no verification signature on any record (implies --no-verify); "
        "the manifest's signature column is then empty",
    )
    parser.add_argument(
        "--record-bytes",
        action="store_true",
        help="only print a record's encoded size with and without its signature",
    )
    parser.add_argument(
        "--old-pickling",
        action="store_true",
        help="records, hash items and decisions pickled as before compact_pickling "
        "(benchmarks/old_pickling.py): the memory before",
    )
    parser.add_argument(
        "--spill-signatures",
        choices=["auto", "true", "false"],
        default="auto",
        help="runner.spill_signatures (auto: on, the local runner's default; false: the "
        "signatures in Beam's collections, as before session 21)",
    )
    parser.add_argument(
        "--nsfw",
        action="store_true",
        help="the default config's filters: nsfw with its stored embeddings, rebalancing on them",
    )
    parser.add_argument(
        "--carry-embeddings",
        action="store_true",
        help="experiment: stored embeddings ride in the records (not in the run's store), "
        "as before session 25",
    )
    parser.add_argument(
        "--fit-sample",
        type=int,
        help="rebalance.fit_sample_size (the fit's memory grows with it up to the cap, "
        "50,000 by default: a small one shows the per-sample growth of the rest)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("shards", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        child(
            args.shards,
            args.out,
            args.tracemalloc,
            args.verify and not args.no_signatures,
            args.stages,
            args.trim,
            args.no_signatures,
            args.old_pickling,
            args.spill_signatures,
            args.nsfw,
            args.carry_embeddings,
            args.fit_sample,
        )
        return 0
    if args.record_bytes:
        record_bytes(ensure_data(args.data.resolve(), min(args.sizes), args.long_side))
        return 0
    results = {}
    for n in sorted(args.sizes):
        shards = ensure_data(args.data.resolve(), n, args.long_side)
        results[n] = run_child(shards, args)
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
