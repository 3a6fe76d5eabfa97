#!/usr/bin/env python3
"""A hot identical-hash group end to end: ``mitigate run`` (default config) on a
WebDataset shard of N re-encoded copies of one real photo plus the look-alikes and a
few distinct photos, then what ``summary.json`` and the manifest say.

Data: ``data/near_eval/animals-donkey.jpg`` (longer side 320 px) saved N times as JPEG
(quality 40-95, brightness 0.92-1.08, the crop window shifted by 0-2 px: real
re-encodes with distinct bytes, so the exact stage keeps them all), 3 look-alikes
(a letter, a digit printed on it, recoloured) and the other ``data/near_eval`` photos
once each. Captions are neutral. The shard goes through the whole pipeline (decode,
filters, exact dedup, near-duplicate search with verification, rebalancing, writing);
the copies' pHash is computed by the pipeline (not planted), so the group is what the
pipeline finds.

    python benchmarks/hot_e2e.py --n 2000
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def write_shard(path: Path, n: int) -> dict[str, str]:
    """The shard; returns key -> kind (copy, look-alike, other)."""
    import near_edits as ne

    im = Image.open(ROOT / "data" / "near_eval" / "animals-donkey.jpg").convert("RGB")
    im.thumbnail((320, 320))
    samples: list[tuple[str, bytes, str]] = []
    for t in range(n):
        q = 40 + t % 56
        b = 0.92 + 0.16 * ((t // 56) % 9) / 8
        dx, dy = (t // 504) % 3, (t // 1512) % 3
        edited = ne.brightness(b)(im.crop((dx, dy, im.width - 2 + dx, im.height - 2 + dy)))
        samples.append((f"copy{t:05d}", ne.jpeg(edited, q), "copy"))
    for name in ("letter_A", "digit_5", "recolour"):
        samples.append((f"look-{name}", ne.jpeg(ne.VARIANTS[name](im), 90), "look-alike"))
    for p in sorted((ROOT / "data" / "near_eval").glob("*.jpg")):
        if p.name != "animals-donkey.jpg":
            other = Image.open(p).convert("RGB")
            other.thumbnail((320, 320))
            samples.append((f"other-{p.stem}", ne.jpeg(other, 90), "other"))
    with tarfile.open(path, "w") as tar:
        for key, data, _ in samples:
            for ext, body in (("jpg", data), ("txt", b"a photo")):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return {key: kind for key, _, kind in samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="copies of the photo")
    ap.add_argument("--keep", default=None, help="dedup.keep (default: the config's)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shard = Path(tmp) / "hot-000000.tar"
        kinds = write_shard(shard, args.n)
        out = Path(tmp) / "out"
        cmd = [
            sys.executable,
            "-m",
            "mitigate.cli",
            "run",
            "--config",
            str(ROOT / "configs" / "default.yaml"),
            "--input",
            str(shard),
            "--output",
            str(out),
        ]
        if args.keep:
            cmd += ["--set", f"dedup.keep={args.keep}"]
        t0 = time.time()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.time() - t0
        if proc.returncode:
            print(proc.stderr[-4000:])
            raise SystemExit(f"mitigate run failed ({proc.returncode})")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        summary = json.loads((out / "summary.json").read_text())
        table = pq.read_table(out / "manifest").to_pydict()
        states = collections.Counter(
            (kinds.get(k, "?"), s) for k, s in zip(table["key"], table["state"], strict=True)
        )
        dedup = summary.get("dedup", {})
        print(f"samples {len(kinds)} (copies {args.n}), manifest rows {len(table['key'])}")
        print(f"wall {wall:.1f} s, CPU {cpu:.1f} s, peak RSS {after.ru_maxrss / 1024:.0f} MB")
        print("states by kind:", dict(sorted(states.items())))
        print("dedup.hot:", json.dumps(dedup.get("near", dedup).get("hot")))
        near = dedup.get("near", dedup)
        print("cluster_sizes:", json.dumps(near.get("cluster_sizes")))
        print("near_duplicates:", near.get("near_duplicates"), "keep:", near.get("keep"))


if __name__ == "__main__":
    main()
