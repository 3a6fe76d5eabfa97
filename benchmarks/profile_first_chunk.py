#!/usr/bin/env python3
"""cProfile of the first chunk a fresh process decodes, as a decode worker does it
(``decode_pool._decode_share``) but without the start call's warm-up
(``decode_pool._warm_decode``): what that warm-up moves into a worker's boot.

    python benchmarks/profile_first_chunk.py --data bench_data/n1600-1024px
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "bench_data" / "n1600-1024px")
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    from mitigate import decode_pool
    from mitigate.config import load_config
    from mitigate.filters import build_filter, scored_at_decode
    from mitigate.pipeline.fs import open_read
    from mitigate.sources import index_tar

    config, _ = load_config(REPO / "configs" / "default.yaml", [])
    filters = scored_at_decode(build_filter(c) for c in config.filters)
    for flt in filters:
        flt.setup()
    # decode_pool._setup's state, without its warm-up
    decode_pool._state.update(
        decode=config.decode, filters=filters, keep_images=False, opener=open_read
    )
    shard = sorted(args.data.glob("*.tar"))[0]
    with open(shard, "rb") as f:
        records = list(index_tar(f, str(shard), max_image_bytes=config.decode.max_image_bytes))
    profile = cProfile.Profile()
    for k, name in enumerate(("first", "second")):
        part = records[k * args.samples : (k + 1) * args.samples]
        started = time.perf_counter()
        if k == 0:
            profile.enable()
        decode_pool._decode_share(part)
        if k == 0:
            profile.disable()
        print(f"{name} chunk of {len(part)} samples: {time.perf_counter() - started:.3f} s")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
