#!/usr/bin/env python3
"""Peak memory of the exact-dedup and duplicate-key steps for one hot group: N samples
with the same image bytes (a crawl's placeholder image) or the same key (a table whose
key column is constant), now (two passes over the group's values) against before (the
group sorted in a list, the previous functions, kept here), at two sizes.

A GroupByKey's values reach these steps as a re-iterable that a distributed runner
(Dataflow, Flink) decodes as it is read; each arm is a fresh process whose group makes
its records anew on every read (kept-to-be records with hashes, a caption and a
2,304-byte signature, as on runners whose records carry it), consumes the step's output
one record at a time and prints its peak RSS.

    python benchmarks/bench_hot_groups.py --sizes 100000 400000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class _Values:
    """A group's values, made anew on every read (as decoded from a shuffle)."""

    def __init__(self, n: int, step: str) -> None:
        self.n, self.step = n, step

    def __iter__(self):  # type: ignore[no-untyped-def]
        import hashlib

        from mitigate.records import SampleRecord

        for i in range(self.n):
            digest = hashlib.sha256(i.to_bytes(8, "little")).hexdigest()
            yield SampleRecord(
                key="constant" if self.step == "keys" else f"{i:09d}",
                source="/data/crawl.parquet",
                index=i,
                image_path=f"images/{digest}.jpg",
                caption=f"a photo of item {i} on a wooden table",
                width=640,
                height=480,
                sha256="0" * 64 if self.step == "exact" else digest,
                phash=digest[:16],
                signature=bytes.fromhex(digest) * 72,
            )


def _old_keys(records):  # type: ignore[no-untyped-def]
    """resolve_duplicate_keys before: every record listed and sorted."""
    from mitigate.records import Reason

    out, keyed = [], []
    for rec in records:
        (out if rec.reason == Reason.INVALID_KEY else keyed).append(rec)
    ordered = sorted(keyed, key=lambda r: r.order)
    first = ordered[0]
    out.append(first)
    for rec in ordered[1:]:
        detail = f"key {rec.key!r} already used at {first.source} (sample {first.index})"
        out.append(rec.with_error(Reason.DUPLICATE_KEY, detail))
    return out


def _old_exact(records):  # type: ignore[no-untyped-def]
    """resolve_exact_duplicates before: every record listed and sorted."""
    from mitigate.records import DUPLICATE, Reason, keep_rank

    ordered = sorted(records, key=keep_rank)
    best = ordered[0]
    out = [best]
    for rec in ordered[1:]:
        out.append(
            dataclasses.replace(
                rec,
                state=DUPLICATE,
                reason=Reason.EXACT_DUPLICATE,
                detail=f"same image bytes (sha256 {best.sha256}) as {best.key!r}",
                duplicate_of=best.key,
                distance=0,
            )
        )
    return out


def child(n: int, step: str, old: bool) -> dict:
    from mitigate import stages

    fn = {
        ("exact", False): stages.resolve_exact_duplicates,
        ("exact", True): _old_exact,
        ("keys", False): stages.resolve_duplicate_keys,
        ("keys", True): _old_keys,
    }[(step, old)]
    started = time.perf_counter()
    kept = 0
    for record in fn(_Values(n, step)):
        kept += record.state == "pending"
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kept": kept, "peak_mb": peak, "s": wall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[100_000, 400_000])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        n, step, old = args.child
        print(json.dumps(child(int(n), step, old == "1")))
        return 0
    peaks: dict[tuple[str, str, int], float] = {}
    for step, what in (("exact", "one image, N samples"), ("keys", "one key, N samples")):
        print(f"{step}: {what}")
        for n in args.sizes:
            for arm, old in (("before (sorted list)", "1"), ("now (two passes)", "0")):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(n), step, old],
                    check=True,
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                )
                r = json.loads(out.stdout.strip().splitlines()[-1])
                assert r["kept"] == 1, r
                peaks[(step, arm, n)] = r["peak_mb"]
                print(f"  {n:>9,}  {arm:21s} peak RSS {r['peak_mb']:7.1f} MB  {r['s']:6.2f} s")
        small, large = args.sizes
        for arm in ("before (sorted list)", "now (two passes)"):
            grow = peaks[(step, arm, large)] - peaks[(step, arm, small)]
            print(f"  {arm:21s} peak grows {grow * 1024 / (large - small):.2f} KB a sample")
    return 0


if __name__ == "__main__":
    sys.exit(main())
