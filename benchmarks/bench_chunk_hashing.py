#!/usr/bin/env python3
"""A chunk's hashes in one call against one call a sample (issue 14).

The decoder (``stages.compute_signals``) decodes a chunk of samples one by one and then
hashes their 32 x 32 thumbnails together (``decode.decode_images``,
``hashing.views_of_thumbnails``: pHash, mirror pHash and the centre pair). Here, on every
decodable image of the given shards (or the Tux Paint stamps): ``decode_images`` over
chunks of ``--chunk`` samples against ``decode_image`` one sample at a time (a chunk of
one), the arms taking turns chunk by chunk, the calling thread's CPU time
(``time.thread_time``). A third arm separates the two things that differ: the chunk's
images decoded one after the other as in ``decode_images``, then each thumbnail hashed
in a call of its own. Outputs are compared first: the same hashes, signatures and
working images, or the script stops.

    python benchmarks/bench_chunk_hashing.py bench_data/n400-1024px/shard-0000[0-3].tar
    python benchmarks/bench_chunk_hashing.py --stamps --limit 400
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from mitigate import decode, hashing  # noqa: E402

MAX_PIXELS = 50_000_000


def _fields(d: decode.DecodedImage | decode.DecodeFailure) -> tuple[object, ...]:
    if isinstance(d, decode.DecodeFailure):
        return (d.reason, d.detail)
    return (d.width, d.height, d.phash, d.phash_mirror, d.centre, d.signature, d.working.tobytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shards", nargs="*", type=Path)
    parser.add_argument("--stamps", action="store_true", help="the Tux Paint stamps (JPEG q90)")
    parser.add_argument("--limit", type=int, default=None, help="--stamps: the first N")
    parser.add_argument("--chunk", type=int, default=32, help="samples a chunk (default 32)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if args.stamps:
        from eval_near_verify import STAMPS, jpeg, load_sources

        images = [jpeg(im, 90) for _, im in load_sources(STAMPS, 384, args.limit)]
    else:
        from bench_hashing import load

        images = load(args.shards)
    if not images:
        raise SystemExit("no images")
    chunks = [images[i : i + args.chunk] for i in range(0, len(images), args.chunk)]

    def together(chunk: list[bytes]) -> list[decode.DecodedImage | decode.DecodeFailure]:
        return decode.decode_images(chunk, max_pixels=MAX_PIXELS)

    def alone(chunk: list[bytes]) -> list[decode.DecodedImage | decode.DecodeFailure]:
        return [decode.decode_image(d, max_pixels=MAX_PIXELS) for d in chunk]

    for chunk in chunks:  # the same outputs (and everything loaded before timing)
        if [_fields(d) for d in together(chunk)] != [_fields(d) for d in alone(chunk)]:
            raise SystemExit("decode_images differs from decode_image")

    def hashed_apart(chunk: list[bytes]) -> list[decode.DecodedImage | decode.DecodeFailure]:
        decoded = [decode._decode_one(d, MAX_PIXELS, 256, "fast", True) for d in chunk]
        return [
            r.hashed(hashing.views_of_thumbnails(r.thumbnail[None])[0])
            if isinstance(r, decode._Unhashed)
            else r
            for r in decoded
        ]

    for chunk in chunks:
        if [_fields(d) for d in hashed_apart(chunk)] != [_fields(d) for d in alone(chunk)]:
            raise SystemExit("the third arm differs from decode_image")
    arms = {"alone": alone, "together": together, "hashed_apart": hashed_apart}
    t = dict.fromkeys(arms, 0.0)
    names = list(arms)
    for r in range(args.repeat):
        for i, chunk in enumerate(chunks):
            turn = (i + r) % len(names)
            for name in names[turn:] + names[:turn]:
                t0 = time.thread_time()
                arms[name](chunk)
                t[name] += time.thread_time() - t0
    n = len(images) * args.repeat
    print(
        f"{len(images)} images x {args.repeat}, chunks of {args.chunk}: one call a sample "
        f"{t['alone'] / n * 1e3:.3f} ms, a chunk's hashes together {t['together'] / n * 1e3:.3f}"
        f" ms a sample: {(t['alone'] - t['together']) / n * 1e3:.3f} ms less "
        f"(together / alone {t['together'] / t['alone']:.3f})"
    )
    batching, locality = t["hashed_apart"] - t["together"], t["alone"] - t["hashed_apart"]
    print(
        f"  decoded one after the other, each hashed alone: {t['hashed_apart'] / n * 1e3:.3f} "
        f"ms a sample: the hashes in one call save {batching / n * 1e3:.3f} ms, the decodes "
        f"one after the other {locality / n * 1e3:.3f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
