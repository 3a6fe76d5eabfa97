#!/usr/bin/env python3
"""Where one worker's time goes: the per-sample steps alone, then the whole run.

CPU seconds (``time.process_time``, not wall time, so other jobs on a shared machine
distort the figures less), on the shards of ``--data``:

* each per-sample step on its own, in this process, in a plain loop over every sample:
  tar index, reading the sample's members by offset, sha256, the decode (JPEG at draft
  scale, EXIF, reduce), pHash pair, verification signature, RGB working image, the two
  model-free filters, manifest rows, and shard writing (which reads the members again);
* the whole pipeline (default config minus nsfw, one in-process worker) in a fresh child
  process, with its phases timed from inside: imports, graph construction, the Beam run
  (everything between the first and the last element), the HTML report.

"Beam and the other stages" is the run's CPU minus the per-sample steps it contains:
per-element and shuffle costs, exact and near dedup, rebalancing, the summary.

``--cprofile FILE`` also runs the whole pipeline once more under cProfile (a third
fresh process; the profiler inflates Python-heavy code, so read its counts and its
ranking, not its seconds), saves the stats to FILE and prints the top functions by own
time and the call counts of Beam's repeated introspections (see runners/beam_memo.py).
``--old-graph`` runs them with the record routing as before stream 14f
(``benchmarks/old_graph.py``); ``--compare-graph`` prints the ``--split`` parts of
a run before and after, alternating, ``--rounds`` times each.
``--cuts-off`` runs the whole-pipeline processes with the fixed-cost cuts of issue 14 off
(those memos, and the runner-API round trip the local runner skips): the before.

    python benchmarks/make_bench_data.py --out bench_data/n1600-1024px --n 1600 --long-side 1024
    python benchmarks/profile_pipeline.py --data bench_data/n1600-1024px
    python benchmarks/profile_pipeline.py --data bench_data/n1600-1024px --cprofile /tmp/run.prof
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
FILTERS = (
    "filters=[{name: image_quality}, {name: caption_terms, category: violence, "
    "terms_file: terms/violence.txt}]"
)


def steps(shards: list[Path]) -> tuple[int, dict[str, float]]:
    """CPU seconds of each per-sample step over every sample of ``shards``."""
    from PIL import ImageOps

    from mitigate import decode, hashing, output, stages, verify
    from mitigate.config import load_config
    from mitigate.filters import build_filter
    from mitigate.sources import index_tar, parse_payload, read_members

    config, _ = load_config(
        REPO / "configs" / "default.yaml", [FILTERS, "rebalance.embedding_filter=null"]
    )
    cpu: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        started = time.process_time()
        result = fn()
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - started
        return result

    records = []
    for shard in shards:
        with open(shard, "rb") as f:
            records += timed("tar index", lambda f=f, s=shard: list(index_tar(f, str(s))))
    payloads = []
    for shard in shards:
        mine = [r for r in records if r.source == str(shard)]
        payloads += timed(
            "read members",
            lambda m=mine: stages.load_payloads(m, lambda p: open(p, "rb"), 1 << 30),
        )
    images = [data for _, data in payloads]
    timed("sha256", lambda: [hashlib.sha256(d).hexdigest() for d in images])
    size = config.decode.working_size

    def draft_decode() -> list:
        out = []
        for data in images:
            im = decode.open_image(data)
            im.draft("RGB", (size, size))
            im.load()
            orientation = im.getexif().get(0x0112, 1)
            out.append(ImageOps.exif_transpose(im) if orientation != 1 else im)
        return out

    decoded = timed("decode: JPEG at draft scale + EXIF", draft_decode)
    reduced = timed("decode: reduce", lambda: [decode._reduce(im, size) for im in decoded])
    timed("pHash pair", lambda: [hashing.phash_pair(im, exact=False) for im in reduced])
    working = timed("RGB working image", lambda: [decode._to_rgb(im) for im in reduced])
    timed("verification signature", lambda: [verify.signature(im) for im in working])
    items = stages.compute_signals(payloads, config.decode)
    filters = [build_filter(c) for c in config.filters]
    for flt in filters:
        flt.setup()
    timed("filters (image_quality, caption_terms)", lambda: stages.score_items(items, filters))
    decided = [stages.finalize(stages.decide(i.record, filters)) for i in items]
    timed("manifest rows (Parquet)", lambda: output.write_manifest(decided, [], io.BytesIO()))

    def write_shards() -> None:
        writer = output.ShardWriter(io.BytesIO())
        for record in decided:
            with open(record.source, "rb") as handle:
                data = read_members(handle, record, {record.image_ext or "", "txt", "json"})
            payload = parse_payload(record, data)
            writer.add(record, payload.image, data["txt"], payload.meta, record.key)
        writer.close()

    timed("shard writing (members read again)", write_shards)
    return len(records), cpu


def child(
    shards: list[str],
    out: str,
    cuts: bool = True,
    cprofile: str | None = None,
    extra: list[str] | None = None,
    split: bool = False,
    old_graph: bool = False,
) -> None:
    """One in-process run; CPU seconds of its phases (and with ``split``, of the parts
    of the Beam run: :func:`install_split`) as JSON."""
    started = time.process_time()
    import apache_beam  # noqa: F401

    import mitigate.pipeline.run as run_module
    from mitigate.config import load_config

    phases = {"imports": time.process_time() - started}
    if old_graph:
        sys.path.insert(0, str(HERE))
        import old_graph as old_graph_module

        old_graph_module.install()
    if not cuts:  # issue 14's fixed-cost cuts off: Beam's own behaviour
        from mitigate.runners import beam_memo
        from mitigate.runners.local import LocalRunner

        beam_memo.uninstall()
        LocalRunner.is_fnapi_compatible = lambda self: False  # type: ignore[method-assign]

    def timing(name: str, fn: Callable) -> Callable:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] = phases.get(name, 0.0) + time.process_time() - t

        return wrapped

    run_module.build = timing("graph construction", run_module.build)
    run_module._execute = timing("Beam run", run_module._execute)
    run_module.write_html_report = timing("HTML report", run_module.write_html_report)
    overrides = [
        f"input.paths={json.dumps(shards)}",
        f"output.path={out}",
        "input.chunk_size=32",
        FILTERS,
        "rebalance.embedding_filter=null",
        *(extra or []),
    ]
    config, _ = load_config(REPO / "configs" / "default.yaml", overrides)
    parts = install_split() if split else None
    t = time.process_time()
    if cprofile:
        import cProfile

        profiler = cProfile.Profile()
        summary = profiler.runcall(run_module.run, config)
        profiler.dump_stats(cprofile)
    else:
        summary = run_module.run(config)
    phases["whole run() call"] = time.process_time() - t
    phases["total CPU of the process"] = time.process_time()
    print(json.dumps({"n": summary["input_count"], "cpu": phases, "split": parts}))


# (label, module, attribute): the parts of the Beam run timed by ``--split``; a part
# nested in another (indented label) is also inside its parent's figure
SPLIT = (
    ("index (IndexSource)", "mitigate.pipeline.build", "IndexSource.process"),
    (
        "decode step (read, sha256, decode, hashes, signature, rule filters)",
        "mitigate.pipeline.process",
        "Decode._here",
    ),
    ("filter decisions (Decide)", "mitigate.pipeline.process", "Decide.process"),
    ("near-dup decision (one worker)", "mitigate.pipeline.near", "_decide"),
    ("  candidate search (pHash + centre view)", "mitigate.centre", "candidate_pairs"),
    ("  verification + medoid: pair scores", "mitigate.verify", "pair_scores"),
    ("  medoid centrality (its pair scores included)", "mitigate.keep", "centrality"),
    ("near-dup join (Apply)", "mitigate.pipeline.near", "_apply"),
    ("rebalancing fit", "mitigate.pipeline.rebalance", "fit"),
    ("rebalancing raw weights", "mitigate.pipeline.rebalance", "raw_weights"),
    ("manifest parts (WriteManifestPart)", "mitigate.pipeline.build", "WriteManifestPart.process"),
    ("output shards (WriteShard)", "mitigate.pipeline.build", "WriteShard.process"),
    ("summary.json (WriteSummary)", "mitigate.pipeline.build", "WriteSummary.process"),
)


def install_split() -> dict[str, list[float]]:
    """Wrap the SPLIT functions (and pickle as Beam's fallback coder uses it) with CPU
    counters; returns ``{label: [seconds, calls]}``, filled while the run goes. A
    generator's output is taken in full inside its timing. The pickle counters use
    ``perf_counter`` (a syscall per call would cost as much as a small ``dumps``): the
    Beam worker runs in this process's one thread, so wall time there is its CPU time
    on a machine with an idle core."""
    import functools
    import importlib
    import inspect
    import pickle
    import types

    from apache_beam.coders import coders

    parts: dict[str, list[float]] = {}

    def wrap(label: str, fn: Callable, clock: Callable[[], float]) -> Callable:
        acc = parts.setdefault(label, [0.0, 0])
        is_gen = inspect.isgeneratorfunction(fn)

        # same name and signature: Beam reads process()'s parameters, and cloudpickle
        # then pickles the wrapper by reference (so its counters stay these)
        @functools.wraps(fn)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            try:
                out = fn(*args, **kwargs)
                return list(out) if is_gen else out
            finally:
                acc[0] += clock() - t
                acc[1] += 1

        return wrapped

    for label, module, attr in SPLIT:
        owner = importlib.import_module(module)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        setattr(owner, name, wrap(label, getattr(owner, name), time.process_time))
    # which stage output (or other caller: the output counters' size estimates) pickles
    # what: a label per (step, type) in parts["crossings: ..."], seconds left at 0
    from apache_beam.runners.worker import bundle_processor

    writing: list[str | None] = [None]
    write = bundle_processor.DataOutputOperation.process

    def process(self: Any, value: Any) -> None:
        writing[0] = str(self.name_context.step_name)
        try:
            write(self, value)
        finally:
            writing[0] = None

    bundle_processor.DataOutputOperation.process = process
    timed_dumps = wrap("pickle.dumps (Beam's fallback coder)", pickle.dumps, time.perf_counter)

    def dumps(obj: Any, protocol: int) -> bytes:
        where = writing[0] or "(not a stage output: size estimates)"
        label = f"crossings: {type(obj).__name__} written by {where}"
        parts.setdefault(label, [0.0, 0])[1] += 1
        return timed_dumps(obj, protocol)

    fast = types.SimpleNamespace(
        HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL,
        dumps=dumps,
        loads=wrap("pickle.loads (Beam's fallback coder)", pickle.loads, time.perf_counter),
    )
    coders.pickle = fast  # PickleCoder._create_impl reads it when a coder is first used
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of benchmark shards")
    parser.add_argument("--cprofile", metavar="FILE", help="also profile one run into FILE")
    parser.add_argument(
        "--cuts-off", action="store_true", help="whole runs with issue 14's fixed-cost cuts off"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one more config override for the whole runs (e.g. decode.processes=1)",
    )
    parser.add_argument(
        "--no-steps",
        action="store_true",
        help="skip the per-sample steps alone (they hold every decoded image: GBs at 6,400)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="time the parts of the Beam run (one more whole run, counters inside)",
    )
    parser.add_argument(
        "--old-graph", action="store_true", help="record routing as before stream 14f"
    )
    parser.add_argument(
        "--compare-graph",
        action="store_true",
        help="--split runs before (--old-graph) and after, alternating, --rounds each",
    )
    parser.add_argument("--rounds", type=int, default=1, help="rounds of --compare-graph")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("shards", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        child(
            args.shards,
            args.out,
            not args.cuts_off,
            args.cprofile,
            args.set,
            args.split,
            args.old_graph,
        )
        return 0
    shards = sorted(args.data.resolve().glob("*.tar"))  # absolute: the config resolves paths
    memo = ["--cuts-off"] if args.cuts_off else []
    memo += [f"--set={kv}" for kv in args.set]
    memo += ["--old-graph"] if args.old_graph and not args.compare_graph else []

    def whole_run(extra: list[str]) -> dict:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--data", str(args.data), "--child", *memo, *extra]
            cmd += ["--out", str(Path(tmp) / "out"), *map(str, shards)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return json.loads(proc.stdout.strip().splitlines()[-1])

    if args.compare_graph:
        compare_graph(args.rounds, lambda extra: whole_run(["--split", *extra]))
        return 0
    whole = whole_run([])
    n, cpu = (whole["n"], {}) if args.no_steps else steps(shards)
    per = 1000 / n
    print(f"{n} samples from {args.data}; CPU ms per sample (one worker)")
    if cpu:
        print("per-sample steps alone:")
        for name, seconds in cpu.items():
            print(f"  {name:<42} {seconds * per:7.2f}")
        print(f"  {'sum':<42} {sum(cpu.values()) * per:7.2f}")
    print("whole pipeline, one in-process worker (fresh process):")
    for name, seconds in whole["cpu"].items():
        print(f"  {name:<42} {seconds * per:7.2f}   ({seconds:.1f} s)")
    if cpu:
        rest = whole["cpu"]["Beam run"] - sum(cpu.values())
        print(f"  {'Beam run minus the per-sample steps':<42} {rest * per:7.2f}")
    if args.split:
        print_split(whole_run(["--split"]), per)
    if args.cprofile:
        whole_run(["--cprofile", args.cprofile])
        print_profile(args.cprofile)
    return 0


def compare_graph(rounds: int, split_run: Callable[[list[str]], dict]) -> None:
    """``--split`` runs with the graph before stream 14f and now, alternating: the
    Beam run's CPU, pickles per sample, and each run's parts."""
    rows: list[tuple[str, float, float, float]] = []
    for r in range(rounds):
        for label, extra in (("before", ["--old-graph"]), ("now", [])):
            run = split_run(extra)
            n = run["n"]
            per = 1000 / n
            pickles = sum(c for k, (_, c) in run["split"].items() if k.startswith("crossings: "))
            beam_run = run["cpu"]["Beam run"]
            print(f"== round {r + 1}, {label}: {beam_run:.2f} s Beam run")
            print_split(run, per)
            total = run["cpu"]["total CPU of the process"]
            rows.append((label, beam_run * per, pickles / n, total))
    print("graph   Beam run CPU ms/sample   pickles/sample   process CPU s")
    for label, ms, pickles, total in rows:
        print(f"{label:<7} {ms:>22.2f} {pickles:>16.2f} {total:>15.1f}")


def print_split(run: dict, per: float) -> None:
    """The parts of one run's Beam run, CPU ms per sample, and what is left."""
    beam_run = run["cpu"]["Beam run"]
    print(f"parts of the Beam run (another fresh process, counters inside: {beam_run:.1f} s)")
    top = 0.0
    crossings = {k: v for k, v in run["split"].items() if k.startswith("crossings: ")}
    for label, (seconds, calls) in run["split"].items():
        if label in crossings:
            continue
        top += 0.0 if label.startswith(" ") else seconds
        print(f"  {label:<70} {seconds * per:7.2f}   ({seconds:.2f} s, {calls} calls)")
    rest = beam_run - top
    print(
        f"  {'rest: Beam itself (element dispatch, other coders, groups, channels)':<70} "
        f"{rest * per:7.2f}   ({rest:.2f} s)"
    )
    n = 1000 / per
    total = sum(calls for _, calls in crossings.values())
    print(f"objects Beam's fallback coder pickled, per sample ({total / n:.2f} in all):")
    for label, (_, calls) in sorted(crossings.items(), key=lambda kv: -kv[1][1]):
        print(f"  {calls / n:6.2f}  {label.removeprefix('crossings: ')}")


# Beam's repeated introspections (runners/beam_memo.py) and the record coder's pickling
WATCHED = ("get_dofn_specs", "view_as", "_pickle.dumps", "_pickle.loads", "add_argument")


def print_profile(path: str) -> None:
    """Top functions by own time, then the call counts of the WATCHED functions."""
    import pstats

    stats = pstats.Stats(path)
    stats.sort_stats("tottime").print_stats(25)
    print("calls of watched functions (cProfile, one run):")
    for (filename, line, name), (_, calls, tottime, cumtime, _) in sorted(stats.stats.items()):
        label = f"{Path(filename).name}:{line}({name})" if line else name
        if any(w in label for w in WATCHED):
            print(f"  {label:<60} {calls:>8} calls {tottime:8.2f} s own {cumtime:8.2f} s cum")


if __name__ == "__main__":
    sys.exit(main())
