"""sha256 of every file of a run's output folder, timing fields normalised, to compare
two runs of the same input and config ("no behaviour change" checks).

Normalised: ``run.samples_per_second`` and ``run.wall_seconds`` in summary.json; in
report.html the wall time, the throughput and the staging-folder name in the title.

    python scripts/output_digest.py OUT > before.sha   # ... change code, run again ...
    python scripts/output_digest.py OUT | diff before.sha -
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path


def digest(root: Path) -> list[str]:
    lines = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.name == "summary.json":
            d = json.loads(data)
            d["run"].pop("samples_per_second", None)
            d["run"].pop("wall_seconds", None)
            data = json.dumps(d, sort_keys=True).encode()
        elif p.name == "report.html":
            data = re.sub(rb"[0-9.]+ samples/s", b"R samples/s", data)
            data = re.sub(rb"[0-9.]+ s\b", b"T s", data)
            data = re.sub(rb"\.mitigate-staging-[0-9a-f]+", b".mitigate-staging-X", data)
        lines.append(f"{hashlib.sha256(data).hexdigest()} {p.relative_to(root)}")
    return lines


if __name__ == "__main__":
    sys.stdout.write("".join(line + "\n" for line in digest(Path(sys.argv[1]))))
