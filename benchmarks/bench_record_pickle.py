#!/usr/bin/env python3
"""What a SampleRecord costs Beam's fallback coder: pickled by field values
(``records.SampleRecord.__reduce__``, now) against the default pickle of its attribute
dict (before stream 14c), in one run, rounds alternating.

Records: the light records of the benchmark shards as the stages after exact dedup see
them (decoded, decided, no signature, no pixels), and the same with their signature
(the stages before). Per record: bytes, ``pickle.dumps`` and ``pickle.loads`` µs, and
Beam's ``FastPrimitivesCoder`` encode + decode of a ``(key, record)`` pair.

    python benchmarks/bench_record_pickle.py bench_data/n400-1024px/*.tar
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def load_records(shards: list[str]) -> list:
    from mitigate import stages
    from mitigate.config import load_config
    from mitigate.filters import build_filter
    from mitigate.sources import index_tar

    overrides = [
        "filters=[{name: image_quality}, {name: caption_terms, category: violence, "
        "terms_file: terms/violence.txt}]",
        "rebalance.embedding_filter=null",
    ]
    config, _ = load_config(REPO / "configs" / "default.yaml", overrides)
    filters = [build_filter(c) for c in config.filters]
    for flt in filters:
        flt.setup()
    out = []
    for shard in shards:
        with open(shard, "rb") as f:
            records = list(index_tar(f, shard))
        payloads = stages.load_payloads(records, lambda p: open(p, "rb"), 1 << 30)
        items = stages.compute_signals(payloads, config.decode, filters)
        stages.score_items(items, filters)
        out += [stages.finalize(stages.decide(item.record, filters)) for item in items]
    return out


def timed(fn, items: list, repeat: int) -> float:
    """µs per item, the best of ``repeat`` passes."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for x in items:
            fn(x)
        best = min(best, time.perf_counter() - started)
    return best / len(items) * 1e6


def measure(records: list, repeat: int) -> dict[str, float]:
    from apache_beam.coders import coders

    coder = coders.FastPrimitivesCoder()
    dumped = [pickle.dumps(r, pickle.HIGHEST_PROTOCOL) for r in records]
    pairs = [(r.key, r) for r in records]
    encoded = [coder.encode(p) for p in pairs]
    return {
        "bytes": statistics.mean(len(d) for d in dumped),
        "dumps us": timed(lambda r: pickle.dumps(r, pickle.HIGHEST_PROTOCOL), records, repeat),
        "loads us": timed(pickle.loads, dumped, repeat),
        "coder encode us": timed(coder.encode, pairs, repeat),
        "coder decode us": timed(coder.decode, encoded, repeat),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", nargs="+")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--repeat", type=int, default=3, help="passes per round (best)")
    args = parser.parse_args(argv)
    from mitigate.records import SampleRecord

    signed = load_records([str(Path(s).resolve()) for s in args.shards])
    light = [dataclasses.replace(r, signature=None) for r in signed]
    now = SampleRecord.__reduce__
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for version in ("before", "now"):
            if version == "before":
                del SampleRecord.__reduce__  # object's: the attribute dict, by name
            try:
                for label, recs in (("light", light), ("with signature", signed)):
                    results.setdefault((label, version), []).append(measure(recs, args.repeat))
            finally:
                SampleRecord.__reduce__ = now
    print(f"{len(signed)} records from {len(args.shards)} shards; medians of {args.rounds} rounds")
    cols = ["bytes", "dumps us", "loads us", "coder encode us", "coder decode us"]
    print(f"{'records':<15} {'version':<7} " + " ".join(f"{c:>15}" for c in cols))
    for label in ("light", "with signature"):
        med = {
            v: {c: statistics.median(m[c] for m in results[(label, v)]) for c in cols}
            for v in ("before", "now")
        }
        for v in ("before", "now"):
            print(f"{label:<15} {v:<7} " + " ".join(f"{med[v][c]:>15.2f}" for c in cols))
        ratio = " ".join(f"{med['now'][c] / med['before'][c]:>15.2f}" for c in cols)
        print(f"{label:<15} {'now/bef':<7} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
