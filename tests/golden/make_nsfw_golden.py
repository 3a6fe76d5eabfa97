"""Regenerate nsfw_scores.csv: open_nsfw scores of the bundled photos, computed the way
the pipeline computes them (its single decode, then the nsfw preset's preprocessing).

Run only when the preprocessing changes on purpose; the test compares against this file.

    python tests/golden/make_nsfw_golden.py
"""

from __future__ import annotations

import csv
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE = HERE.parents[1] / "data" / "sample"


def main() -> int:
    from mitigate.config import validate_config
    from mitigate.decode import decode_image
    from mitigate.filters import ScoringItem, build_filter
    from mitigate.records import SampleRecord

    with open(SAMPLE / "expected.csv", newline="", encoding="utf-8") as f:
        kept = {(r["key"], r["shard"]) for r in csv.DictReader(f) if r["state"] == "kept"}
    nsfw = build_filter(validate_config({"filters": [{"name": "nsfw"}]}).filters[0])
    rows = []
    for shard in ("shard-00000.tar", "shard-00001.tar"):
        with tarfile.open(SAMPLE / shard) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                if ext in ("jpg", "png", "webp") and (key, shard) in kept:
                    decoded = decode_image(tar.extractfile(member).read(), max_pixels=50_000_000)
                    item = ScoringItem(
                        SampleRecord(key=key, source=shard, index=0), decoded.working
                    )
                    rows.append((key, f"{nsfw.score([item])[0].value:.6f}"))
    with open(HERE / "nsfw_scores.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "score"])
        writer.writerows(sorted(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
