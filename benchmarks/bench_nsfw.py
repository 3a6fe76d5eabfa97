#!/usr/bin/env python3
"""Cost of the ``nsfw`` filter inside the pipeline against bare onnxruntime, one run.

* bare: the same images, decoded once with the pipeline's decoder (not timed), then
  the nsfw preset's preprocessing and ``session.run`` in batches of 32, in a plain loop;
* pipeline: the whole pipeline (DirectRunner, in-process) with ``filters: [nsfw]``,
  minus the same pipeline with no filters: the marginal cost of the filter, which is
  preprocessing + RunInference (batching, shared model, metrics) + moving items, plus
  what a run pays once for a model filter (opening the model, the report's sections).

overhead = pipeline marginal cost / bare cost - 1 (target: <= 15%). Runs alternate
(bare, with, without, repeated) and the medians are compared, since the machine is
shared.

With two ``--sizes`` the marginal cost *per image* is also measured as the slope
between them (what the N-th image costs, the run's fixed costs cancelled), and the
fixed part is printed apart. ``--rebalance off`` turns rebalancing off in both runs:
with a filter that drops samples, rebalancing fits its classifier, which the run
without filters never does, so that cost belongs to rebalancing, not to the model.

    python benchmarks/bench_nsfw.py --n 400 --long-side 1024 --repeat 3
    python benchmarks/bench_nsfw.py --sizes 400 1600 --rebalance off --repeat 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from bench_pipeline import ensure_data  # noqa: E402


def bare_seconds(shards: list[Path]) -> tuple[int, float]:
    from mitigate.config import validate_config
    from mitigate.decode import decode_image
    from mitigate.filters import build_filter

    nsfw = build_filter(validate_config({"filters": [{"name": "nsfw"}]}).filters[0])
    session = nsfw.load_model()
    images = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".jpg"):
                    data = tar.extractfile(member).read()
                    images.append(decode_image(data, max_pixels=10**9).working)
    started = time.perf_counter()
    for start in range(0, len(images), 32):
        batch = np.stack([nsfw.preprocess(im) for im in images[start : start + 32]])
        session.run(["outputs"], {"input:0": batch})
    return len(images), time.perf_counter() - started


def pipeline_seconds(shards: list[Path], with_nsfw: bool, rebalance: bool = True) -> float:
    from mitigate.config import load_config
    from mitigate.pipeline.run import run

    with tempfile.TemporaryDirectory() as tmp:
        filters = "[{name: nsfw}]" if with_nsfw else "[]"
        config, _ = load_config(
            REPO / "configs" / "default.yaml",
            [
                f"input.paths={json.dumps([str(s) for s in shards])}",
                f"output.path={tmp}/out",
                f"filters={filters}",
                # like for like: rebalancing fits on captions in both runs
                "rebalance.embedding_filter=null",
                f"rebalance.enabled={'true' if rebalance else 'false'}",
            ],
        )
        started = time.perf_counter()
        run(config)
        return time.perf_counter() - started


def measure(
    data: Path, n: int, long_side: int, repeat: int, rebalance: bool
) -> tuple[int, float, float, float]:
    """Images, and median seconds of bare inference, the run with nsfw, the run without."""
    shards = ensure_data(data, n, long_side)
    bare, with_model, without = [], [], []
    count = 0
    for _ in range(repeat):
        count, seconds = bare_seconds(shards)
        bare.append(seconds)
        with_model.append(pipeline_seconds(shards, True, rebalance))
        without.append(pipeline_seconds(shards, False, rebalance))
    b, w, wo = (statistics.median(x) for x in (bare, with_model, without))
    return count, b, w, wo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "bench_data")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--sizes", type=int, nargs="+", help="several sizes (overrides --n)")
    parser.add_argument("--long-side", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rebalance", choices=("on", "off"), default="on")
    args = parser.parse_args(argv)
    data = args.data.resolve()
    rows = []
    for size in args.sizes or [args.n]:
        n, b, w, wo = measure(data, size, args.long_side, args.repeat, args.rebalance == "on")
        marginal = w - wo
        rows.append((n, b, w, wo))
        print(
            f"{n} images, {args.long_side or 'native'} px, median of {args.repeat} runs, "
            f"rebalancing {args.rebalance}"
        )
        print(f"bare onnxruntime (preprocess + run):  {b / n * 1e3:7.2f} ms/image")
        print(f"pipeline with nsfw:                   {w / n * 1e3:7.2f} ms/image (whole run)")
        print(f"pipeline without filters:             {wo / n * 1e3:7.2f} ms/image (whole run)")
        print(f"nsfw inside the pipeline (marginal):  {marginal / n * 1e3:7.2f} ms/image")
        print(f"overhead over bare inference:         {marginal / b - 1:+7.1%}")
    if len(rows) >= 2:
        (n1, b1, w1, wo1), (n2, b2, w2, wo2) = rows[0], rows[-1]
        slope = ((w2 - wo2) - (w1 - wo1)) / (n2 - n1)
        bare_slope = (b2 - b1) / (n2 - n1)
        fixed = (w2 - wo2) - slope * n2
        print(
            f"per image, slope {n1} -> {n2}: marginal {slope * 1e3:.2f} ms, "
            f"bare {bare_slope * 1e3:.2f} ms, overhead {slope / bare_slope - 1:+.1%}"
        )
        print(f"fixed marginal cost of the filter per run: {fixed:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
