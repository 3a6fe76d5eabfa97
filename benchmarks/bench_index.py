"""Tar indexing: the defensive scanner (``mitigate.sources.index_tar``) against Python's
``tarfile`` streaming over the same shard, the reader the project used before.

Builds a shard of N samples (image of ``--image-kb`` KiB, caption, JSON sidecar) in a
temporary folder, then times, alternating and best of ``--repeat``: a bare ``tarfile``
``r|`` pass over every member (the baseline: what indexing cost before) and
``index_tar`` (headers only, seeking over data, resynchronising after damage). Prints
the ratio; peak RSS of each at two sizes shows that neither holds the shard.

    python benchmarks/bench_index.py --samples 2000 20000
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path


def make_shard(path: Path, n: int, image_kb: int) -> None:
    image = os.urandom(image_kb * 1024)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for i in range(n):
            for ext, data in (
                ("jpg", image),
                ("txt", f"caption {i}".encode()),
                ("json", json.dumps({"i": i}).encode()),
            ):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def baseline(path: Path) -> int:
    n = 0
    with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
        for info in tar:
            n += info.isfile()
    return n


def ours(path: Path) -> int:
    from mitigate.sources import index_tar

    with open(path, "rb") as f:
        return sum(1 for _ in index_tar(f, str(path)))


def _child(which: str, path: str) -> None:
    """Run one reader in a fresh process and print its peak RSS (MiB). VmHWM, not
    ru_maxrss: Linux carries ru_maxrss across exec, so a child would report the
    parent's peak from before the fork."""
    (baseline if which == "tarfile" else ours)(Path(path))
    status = Path("/proc/self/status").read_text()
    hwm = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    print(int(hwm.split()[1]) / 1024)


def peak_rss(which: str, path: Path) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--child", which, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--image-kb", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.samples:
            path = Path(tmp) / f"shard-{n}.tar"
            make_shard(path, n, args.image_kb)
            best = {"tarfile": float("inf"), "index_tar": float("inf")}
            for _ in range(args.repeat):
                for name, fn in (("tarfile", baseline), ("index_tar", ours)):
                    start = time.perf_counter()
                    fn(path)
                    best[name] = min(best[name], time.perf_counter() - start)
            size_mb = path.stat().st_size / 2**20
            print(
                f"N={n} ({size_mb:.0f} MiB): tarfile {best['tarfile'] * 1e6 / n:.1f} us/sample, "
                f"index_tar {best['index_tar'] * 1e6 / n:.1f} us/sample, "
                f"ratio index_tar/tarfile {best['index_tar'] / best['tarfile']:.2f}; peak RSS "
                f"tarfile {peak_rss('tarfile', path):.0f} MiB, "
                f"index_tar {peak_rss('index_tar', path):.0f} MiB"
            )
            path.unlink()


if __name__ == "__main__":
    main()
