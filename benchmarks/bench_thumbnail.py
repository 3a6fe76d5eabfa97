#!/usr/bin/env python3
"""pHash's 32 x 32 thumbnail (``thumbnail.of_pixels``: Pillow's Lanczos resize in a
numba kernel) on the working images of real JPEGs: this tree's kernel against an
earlier ``mitigate/_sigkernel.py``'s ``lanczos`` (``--previous-kernel``), rounds
alternating over a rotation of different images (a loop over one image trains the
branch predictor on it); the thumbnails must be the same bytes. For scale, the decode
path (``decode_images``, chunks of 32) of the same JPEGs, per image.

    git show a5020f5:mitigate/_sigkernel.py > /tmp/sigkernel_prev.py
    python benchmarks/bench_thumbnail.py bench_data/n400-1024px/shard-0000[0-3].tar \\
        --previous-kernel /tmp/sigkernel_prev.py
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_working_size import jpegs  # benchmarks/: the same JPEGs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", type=Path, nargs="+")
    parser.add_argument("--n", type=int, default=400, help="JPEGs used")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--working-size", type=int, default=128)
    parser.add_argument("--previous-kernel", type=Path, help="an earlier _sigkernel.py")
    args = parser.parse_args(argv)
    import numpy as np
    from PIL import Image

    from mitigate import thumbnail, verify
    from mitigate.decode import decode_images

    datas = jpegs(args.shards, args.n)
    greys = []
    for data in datas:  # pHash's greyscale image, as the decode path's fused pass makes it
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (args.working_size, args.working_size))
            fused = verify.grey_and_signature(image.convert("RGB"), with_signature=False)
        assert fused is not None
        greys.append(fused[0])
    arms = {"now": thumbnail.of_pixels}
    if args.previous_kernel is not None:
        spec = importlib.util.spec_from_file_location("previous_sigkernel", args.previous_kernel)
        assert spec is not None and spec.loader is not None
        previous = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = previous  # importable by name: numba's cache reloads it
        spec.loader.exec_module(previous)

        def old(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
            hb, hk = thumbnail.taps(width)
            vb, vk = thumbnail.taps(height)
            return previous.lanczos(pixels, width, height, hb, hk, vb, vk)  # type: ignore[no-any-return]

        arms["previous"] = old
    for f in arms.values():  # compiled or loaded, and the same bytes
        for g in greys:
            assert np.array_equal(
                f(g.pixels, g.width, g.height), arms["now"](g.pixels, g.width, g.height)
            )
    us: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.rounds):
        for name, f in arms.items():
            started = time.thread_time()
            for g in greys:
                f(g.pixels, g.width, g.height)
            us[name].append((time.thread_time() - started) / len(greys) * 1e6)
    decode_images(datas[:32], max_pixels=10**8, working_size=args.working_size)  # warm
    started = time.thread_time()
    for k in range(0, len(datas), 32):
        decode_images(datas[k : k + 32], max_pixels=10**8, working_size=args.working_size)
    path = (time.thread_time() - started) / len(datas) * 1e6
    sides = statistics.median(min(g.width, g.height) for g in greys)
    print(
        f"{len(greys)} JPEGs, working size {args.working_size} (greyscale image's shorter "
        f"side: median {sides:.0f} px); thumbnail, calling thread's CPU, {args.rounds} "
        f"alternating rounds; the decode path {path:.0f} us an image"
    )
    for name, xs in us.items():
        each = ", ".join(f"{x:.1f}" for x in xs)
        print(f"  {name:8s} median {statistics.median(xs):6.1f} us an image (rounds {each})")
    if "previous" in us:
        ratio = statistics.median(us["now"]) / statistics.median(us["previous"])
        print(f"  now / previous: {ratio:.2f}; the same bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
