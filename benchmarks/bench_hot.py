#!/usr/bin/env python3
"""Hot identical-hash groups: CPU time and peak RSS of the verified near-duplicate
decision (:func:`mitigate.near.decide_near_duplicates`, one worker, ``dedup.keep``
medoid and resolution) on N samples that share one pHash, with leaders
(:mod:`mitigate.hot`) and, where affordable, with every pair verified (the path before
it: ``hot.HOT_MIN`` set above N), in the same run.

Data: one real photo (``data/near_eval/animals-donkey.jpg``, longer side 160 px);
``--pool`` real copies of it (JPEG quality 40-95 x brightness 0.90-1.10 in 101 steps
x a shift of the crop window by 0-2 pixels in x and y; signatures of the decoded
copies, as the pipeline computes them) plus 3 look-alikes (a letter, a digit printed on
it, recoloured) that must be refused. Every sample is given the photo's pHash and
mirror pHash (planted: the case measured is one hash shared by N samples). The N
samples cycle through the pool (distinct keys; beyond the pool a signature repeats,
and byte-identical signatures are scored once against a leader). Each (N, path) runs
in a fresh process so peak RSS is its own; the table gives CPU seconds of the decision
alone, peak RSS (and before the decision, with the items built), pairs scored, the kept
count, and the ratio old / new where both ran. ``--one-round-max`` runs the sizes up to
it with one round of leaders too (path ``one``: ``hot.ROUNDS = 1``, the rule before
the rounds over orphans), in the same run. ``--partitioned`` sizes run through the
Beam graph on the DirectRunner twice, ``dedup.partition: clusters`` (path ``part``) and
``none`` (path ``pipe``: one worker), on the same records: CPU, peak RSS, pairs scored
(every call of the verification kernel counted) and whether every record's decision is
the same in both.

    python benchmarks/bench_hot.py --sizes 1000 10000 100000 --old-max 1000 --pool 50000
    python benchmarks/bench_hot.py --sizes 10000 100000 --old-max 0 \
        --one-round-max 100000 --pool 50000
    python benchmarks/bench_hot.py --sizes --partitioned 10000 --pool 50000
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def make_pool(n_pool: int) -> tuple[str, str, list[bytes], list[bytes]]:
    import near_edits as ne

    from mitigate import hashing, verify

    im = Image.open(ROOT / "data" / "near_eval" / "animals-donkey.jpg").convert("RGB")
    im.thumbnail((160, 160))
    p, m = hashing.phash_pair(im)
    sigs: list[bytes] = []
    t = 0
    while len(sigs) < n_pool:
        q = 40 + t % 56
        b = 0.90 + 0.2 * ((t // 56) % 101) / 100
        dx, dy = (t // 5656) % 3, (t // 16968) % 3
        edited = ne.brightness(b)(im.crop((dx, dy, im.width - 2 + dx, im.height - 2 + dy)))
        sigs.append(verify.signature(Image.open(io.BytesIO(ne.jpeg(edited, q)))))
        t += 1
    looks = [verify.signature(ne.VARIANTS[v](im)) for v in ("letter_A", "digit_5", "recolour")]
    return hashing.to_hex(p), hashing.to_hex(m), sigs, looks


def _peak_rss_mb() -> float:
    """This process' peak RSS (VmHWM: unlike ru_maxrss it does not carry the parent's
    peak over the exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    from mitigate import hot, verify
    from mitigate.near import HashItem, decide_near_duplicates

    data = json.loads(Path(args.data).read_text())
    # memory-mapped: only the rows used (N of them at most) count in this process' RSS
    table = np.load(Path(args.data).with_suffix(".npy"), mmap_mode="r")
    if args.spread and args.n < table.shape[0]:  # N copies spread over the whole pool
        rows = np.linspace(0, table.shape[0] - 1, args.n).round().astype(int).tolist()
    else:
        rows = list(range(min(args.n, table.shape[0])))
    pool = [table[t].tobytes() for t in rows]
    del table
    items = [
        HashItem(f"c{t:07d}", data["p"], data["m"], 25600 - t % 7, pool[t % len(pool)])
        for t in range(args.n)
    ]
    items += [
        HashItem(f"look{t}", data["p"], data["m"], 25600, bytes.fromhex(s))
        for t, s in enumerate(data["looks"])
    ]
    if args.path in ("old", "part-old"):
        hot.HOT_MIN = 10**12  # never hot: every pair of the group verified
    if args.path in ("one", "part-one"):
        hot.ROUNDS = 1  # one round of leaders: the rule before the rounds
    scored = [0]

    def counting(i, j, sigs, stop_above=None):
        scored[0] += len(np.asarray(i))
        return verify.pair_scores(i, j, sigs, stop_above=stop_above)

    if args.path == "pipe":
        partitioned(args, items, "none")
        return
    if args.path.startswith("part"):
        partitioned(args, items)
        return
    rss_items = _peak_rss_mb()
    t0 = time.process_time()
    decisions, report = decide_near_duplicates(
        items, 10, verify_threshold=1.0, keep_rule=args.rule, score_pairs=counting
    )
    cpu = time.process_time() - t0
    dropped = sum(d.reason == "near_duplicate" for d in decisions)
    print(
        json.dumps(
            {
                "cpu_s": cpu,
                "peak_rss_mb": _peak_rss_mb(),
                "rss_before_mb": rss_items,
                "scored_pairs": scored[0],
                "kept": len(items) - dropped,
                "hot": report.get("hot"),
                "clusters": report.get("cluster_sizes"),
            }
        )
    )


def count_kernel_pairs() -> list[int]:
    """Count every pair :func:`mitigate.verify.pair_scores` scores in this process,
    whoever calls it: the function is replaced wherever a loaded ``mitigate`` module
    holds it (as an attribute or a default argument). The DirectRunner runs the steps
    in this process, so the count covers the pipeline's search and hot stages alike."""
    import importlib
    import inspect

    from mitigate import verify

    for name in ("mitigate.pipeline.near", "mitigate.pipeline.near_partitioned"):
        importlib.import_module(name)
    real = verify.pair_scores
    scored = [0]

    def counting(i, j, sigs, stop_above=None):
        scored[0] += len(np.asarray(i).reshape(-1))
        return real(i, j, sigs, stop_above=stop_above)

    for mod in [m for n, m in list(sys.modules.items()) if n.startswith("mitigate")]:
        for attr, value in list(vars(mod).items()):
            if value is real:
                setattr(mod, attr, counting)
            fns = [value] if inspect.isfunction(value) else []
            if inspect.isclass(value):
                fns += [f for f in vars(value).values() if inspect.isfunction(f)]
            for f in fns:
                if f.__defaults__ and any(d is real for d in f.__defaults__):
                    f.__defaults__ = tuple(counting if d is real else d for d in f.__defaults__)
                kw = f.__kwdefaults__ or {}
                for key, d in kw.items():
                    if d is real:
                        kw[key] = counting
    return scored


def partitioned(args: argparse.Namespace, items: list, partition: str = "clusters") -> None:
    """The Beam graph (``dedup.partition``: ``clusters``, the partitioned graph, or
    ``none``, one worker; other settings default) on the DirectRunner, records in and
    out (:class:`mitigate.pipeline.near.NearDedup`), pairs scored counted
    (:func:`count_kernel_pairs`) and a digest of every record's decision."""
    import apache_beam as beam

    from mitigate.config import DecodeConfig, validate_config
    from mitigate.pipeline.near import NearDedup
    from mitigate.records import SampleRecord

    records = [
        SampleRecord(
            it.key,
            "mem://bench",
            t,
            width=160,
            height=it.size // 160,  # the items here are sized by pixels alone
            phash=it.phash,
            phash_mirror=it.mirror,
            signature=it.signature,
        )
        for t, it in enumerate(items)
    ]
    del items
    config = validate_config({"dedup": {"partition": partition, "keep": args.rule}})
    scored = count_kernel_pairs()
    # the steps are pickled by value (this is __main__): they report through files
    res = Path(args.data).with_suffix(f".{args.n}.{args.rule}.{partition}")
    rss_items = _peak_rss_mb()
    t0 = time.process_time()
    with beam.Pipeline(runner="DirectRunner") as pl:
        out, report = pl | beam.Create(records) | NearDedup(config.dedup, DecodeConfig())
        _ = (
            out
            | beam.Map(lambda r: f"{r.key} {r.state} {r.reason} {r.duplicate_of}")
            | beam.combiners.ToList()
            | beam.Map(lambda v, f=f"{res}.out": Path(f).write_text("\n".join(sorted(v))))
        )
        _ = report | beam.Map(
            lambda r, f=f"{res}.hot": Path(f).write_text(
                json.dumps([r.get("hot"), r.get("cluster_sizes")])
            )
        )
    cpu = time.process_time() - t0
    lines = Path(f"{res}.out").read_text().splitlines()
    assert len(lines) == len(records), (len(lines), len(records))  # every sample once
    print(
        json.dumps(
            {
                "cpu_s": cpu,
                "peak_rss_mb": _peak_rss_mb(),
                "rss_before_mb": rss_items,
                "scored_pairs": scored[0],
                "kept": sum(" duplicate " not in x for x in lines),
                "hot": json.loads(Path(f"{res}.hot").read_text())[0],
                "clusters": json.loads(Path(f"{res}.hot").read_text())[1],
                "digest": hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12],
            }
        )
    )


def _hot_cols(h: dict | None) -> str:
    if not h or not h.get("groups"):
        return "-"
    return "leaders {leaders} followers {followers} orphans {orphans} stranded {stranded}".format(
        **h
    )


def main() -> None:
    from mitigate import verify

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="*", default=[1000, 10000, 100000])
    ap.add_argument("--old-max", type=int, default=1000, help="largest N for the old path")
    ap.add_argument("--pool", type=int, default=2000, help="distinct copies")
    ap.add_argument("--rules", nargs="+", default=["medoid", "resolution"])
    ap.add_argument(
        "--partitioned",
        type=int,
        nargs="*",
        default=[],
        help="sizes for the partitioned graph on the DirectRunner (CPU includes Beam)",
    )
    ap.add_argument("--part-old-max", type=int, default=0, help="largest N, old path there")
    ap.add_argument(
        "--one-round-max",
        type=int,
        default=0,
        help="largest N to run with one round of leaders too (path 'one': hot.ROUNDS = 1)",
    )
    ap.add_argument("--cache", help="folder to keep the pool in between runs")
    ap.add_argument(
        "--spread",
        action="store_true",
        help="N below the pool: copies spread evenly over the pool (every kind of edit) "
        "instead of its first N",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--rule", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.cache or tmp) / f"pool{args.pool}.json"
        if not data.exists():
            t0 = time.time()
            p, m, pool, looks = make_pool(args.pool)
            print(f"pool built in {time.time() - t0:.1f} s")
            np.save(data.with_suffix(".npy"), verify.as_signatures(pool))
            data.write_text(json.dumps({"p": p, "m": m, "looks": [s.hex() for s in looks]}))
        table = np.load(data.with_suffix(".npy"))
        if not verify.is_signature(table[0].tobytes()):  # a pool of an older signature
            raise SystemExit(f"{data}: signatures of another version; delete the cache")
        distinct = np.unique(table, axis=0).shape[0]
        print(f"pool: {table.shape[0]} copies ({distinct} distinct signatures) + 3 look-alikes")
        del table
        print(
            f"{'rule':<10} {'N':>7} {'path':<8} {'CPU s':>8} {'peak RSS MB':>11} "
            f"{'RSS in MB':>9} {'pairs scored':>12} {'kept':>5} {'old/new CPU':>11}  hot"
        )

        def paths(prefix: str, n: int, old_max: int) -> tuple[str, ...]:
            """The paths one size runs: new, one round and old (where affordable)."""
            first = ("new",) if not prefix else ("part", "pipe")  # pipe: one worker, Beam
            return (
                first
                + ((prefix + "one",) if n <= args.one_round_max else ())
                + ((prefix + "old",) if n <= old_max else ())
            )

        runs = [(rule, n, paths("", n, args.old_max)) for rule in args.rules for n in args.sizes]
        runs += [
            (rule, n, paths("part-", n, args.part_old_max))
            for rule in args.rules
            for n in args.partitioned
        ]
        for rule, n, paths in runs:
            got = {}
            for path in paths:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        "--data",
                        str(data),
                        "--n",
                        str(n),
                        "--path",
                        path,
                        "--rule",
                        rule,
                        *(["--spread"] if args.spread else []),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                got[path] = r = json.loads(out.strip().splitlines()[-1])
                ratio = ""
                if path.endswith(("old", "one")) or path == "pipe":
                    base = got["part" if path.startswith("p") else "new"]["cpu_s"]
                    ratio = f"{r['cpu_s'] / max(base, 1e-9):.2f}x"
                same = ""
                if path == "pipe":  # the partitioned graph must decide as one worker
                    same = " decisions " + (
                        "same" if r["digest"] == got["part"]["digest"] else "DIFFER"
                    )
                print(
                    f"{rule:<10} {n:>7} {path:<8} {r['cpu_s']:>8.2f} "
                    f"{r['peak_rss_mb']:>11.0f} {r['rss_before_mb']:>9.0f} "
                    f"{r['scored_pairs']:>12} {r['kept']:>5} {ratio:>11}  "
                    f"{_hot_cols(r['hot'])}{same} clusters {json.dumps(r.get('clusters'))}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
