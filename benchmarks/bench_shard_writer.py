#!/usr/bin/env python3
"""The shard writer (``output.ShardWriter``) against ``tarfile``'s stream mode, which
wrote the shards before session 19: the same samples (read once from ``--data``'s tars
into memory, as ``WriteShard`` reads them from the input) written to shards of
``--per-shard`` samples in a temporary folder through a local file handle, each arm in
turn per round; medians, their ratio, and a check that both arms wrote the same bytes.

    python benchmarks/bench_shard_writer.py --data bench_data/n6400-1024px --limit 2400 --rounds 5
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import io
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

from mitigate.output import ShardWriter
from mitigate.pipeline.fs import open_read
from mitigate.samples import SampleReader, shard_sample
from mitigate.sources import index_tar


class TarfileWriter(ShardWriter):
    """The writer as it was: ``tarfile.open(fileobj, "w|", PAX_FORMAT)``, a ``TarInfo``
    with the fixed metadata per member, ``addfile``."""

    def __init__(self, fileobj) -> None:  # type: ignore[no-untyped-def]
        self._tar = tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT)
        self.count = 0

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), 0, 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        self._tar.close()


def write_all(cls, samples, folder: Path, per_shard: int) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    """Wall seconds to write every shard, and a digest of their bytes."""
    started = time.perf_counter()
    for n in range(0, len(samples), per_shard):
        with open(folder / f"shard-{n // per_shard:06d}.tar", "wb") as f:
            writer = cls(f)
            for record, image, caption, meta in samples[n : n + per_shard]:
                writer.add(record, image, caption, meta)
            writer.close()
    wall = time.perf_counter() - started
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        digest.update(path.read_bytes())
        path.unlink()
    return wall, digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="bench_data/n6400-1024px")
    parser.add_argument("--limit", type=int, default=2400)
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    records = []
    for path in sorted(glob.glob(f"{args.data}/*.tar")):
        with open(path, "rb") as f:
            records += index_tar(f, path, max_image_bytes=10**8)
        if len(records) >= args.limit:
            break
    samples = []
    with SampleReader(open_read) as reader:
        for record in records[: args.limit]:
            samples.append((record, *shard_sample(reader, record)))
    mb = sum(len(s[1]) for s in samples) / 2**20
    arms = {"now (ShardWriter)": ShardWriter, "tarfile w| (before)": TarfileWriter}
    times: dict[str, list[float]] = {name: [] for name in arms}
    digests = set()
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name, cls in arms.items():
                wall, digest = write_all(cls, samples, Path(tmp), args.per_shard)
                times[name].append(wall)
                digests.add(digest)
    print(f"{len(samples)} samples ({mb:.0f} MB of images) in shards of {args.per_shard}:")
    for name, walls in times.items():
        rounds = ", ".join(f"{w:.3f}" for w in walls)
        print(f"  {name:22s} {statistics.median(walls):.3f} s (rounds {rounds})")
    now, before = (statistics.median(w) for w in times.values())
    print(f"  now / before: {now / before:.2f}x; same bytes: {len(digests) == 1}")
    return 0 if len(digests) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
