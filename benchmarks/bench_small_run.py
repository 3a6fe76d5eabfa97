#!/usr/bin/env python3
"""Small local runs with and without numba's kernels (issue 14): ``mitigate run``, start
to exit, each arm a fresh process run the way the console script runs it, arms
alternating; medians of wall and CPU time.

Arms: ``now`` (the default: a local run under ``kernels.COMPILED_MIN_SAMPLES`` input
samples takes the kernels' numpy references and never loads numba), ``compiled`` (the
bar at 0: every run loads numba's kernels, as before session 18) and ``numpy`` (the bar
out of reach: every run takes the numpy references). Without ``--data``, the README's
first command (the bundled sample, default config); with it, those shards under the
same config (``--input``). The outputs of the arms are the same files (checked with
``scripts/output_digest.py`` after the last round).

    python benchmarks/bench_small_run.py --rounds 5
    python benchmarks/bench_small_run.py --data bench_data/n400-1024px --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_readme_run import timed  # noqa: E402
from output_digest import digest  # noqa: E402

_RUN = (
    "import sys\nfrom mitigate import kernels\n"
    "bar = sys.argv.pop(1)\n"
    "kernels.COMPILED_MIN_SAMPLES = kernels.COMPILED_MIN_SAMPLES if bar == 'now' else int(bar)\n"
    "from mitigate.cli import entry\nentry()\n"
)
ARMS = {"now": "now", "compiled": "0", "numpy": str(10**12)}


def command(bar: str, out: str, data: Path | None) -> tuple[float, float]:
    """(wall s, CPU s) of one ``mitigate run``."""
    extra = ["--input", str(data / "*.tar")] if data else []
    return timed(
        [sys.executable, "-c", _RUN, bar, "run", "--output", out, "--overwrite", *extra], REPO
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="a folder of .tar shards")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    data = args.data.resolve() if args.data else None
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in ARMS}
    digests = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out")
        for r in range(args.rounds):
            order = list(ARMS) if r % 2 == 0 else list(ARMS)[::-1]
            for name in order:
                times[name].append(command(ARMS[name], out, data))
                if r == args.rounds - 1:
                    digests[name] = digest(Path(out))
    for name, got in times.items():
        wall = statistics.median(t[0] for t in got)
        cpu = statistics.median(t[1] for t in got)
        print(f"{name:<9} wall {wall:6.2f} s, CPU {cpu:6.2f} s")
    now = statistics.median(t[0] for t in times["now"])
    before = statistics.median(t[0] for t in times["compiled"])
    print(f"wall, now / compiled (before): {now / before:.2f}")
    same = digests["now"] == digests["compiled"] == digests["numpy"]
    print(f"the three arms wrote the same files: {same}")
    for name in ("compiled", "numpy"):
        for line in sorted(set(digests[name]) ^ set(digests["now"])):
            print(f"  differs ({name} vs now): {line}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
