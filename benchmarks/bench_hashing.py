#!/usr/bin/env python3
"""The per-sample hashing path, before and after issue 14's byte-identical speed-up.

"Old" is the implementation as it was (``tests/hashing_reference.py``, kept verbatim);
"new" is ``mitigate.hashing`` and ``mitigate.verify`` now. On every decodable image of
the given shards, CPU time per sample (``time.process_time``: other processes on a
shared machine count less), old and new measured in the same run, in alternating order
round by round, and their ratio:

* the draft decode (``Image.open``, EXIF, ``draft``, ``load``, orientation, ``_reduce``):
  the floor the rest sits on, the same code old and new;
* the pHash pair (pHash and mirror pHash of the reduced image, fast mode), and inside it
  the grey 32x32 thumbnail and the two DCTs, medians and bits;
* the verification signature of the working image (since issue 12's fifth round a new
  definition: the old one is the fourth round's, computed as before issue 14);
* the whole ``decode_image`` (old: with the old pHash pair and signature swapped in);
* issue 12's cost figure: the signature as a share of the rest of the decode path, as
  ``eval_near_verify.py --cost-shards`` computes it, old and new;
* what hashing over a chunk would save: the new DCTs, medians and bits of 256 samples in
  one call against one call a sample (the decoder does not do this yet).

Before timing, every output is compared: the new pHash pairs (fast and exact mode) must
equal the old ones bit for bit on every image, or the script stops.

    python benchmarks/bench_hashing.py data/sample/shard-0000*.tar
    python benchmarks/make_bench_data.py --out bench_data/n400-1024px --n 400 --long-side 1024
    python benchmarks/bench_hashing.py bench_data/n400-1024px/shard-0000[0-3].tar
    python benchmarks/bench_hashing.py data/sample/shard-0000*.tar --rounds 1 \\
        --check-dir /usr/share/tuxpaint/stamps
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import hashing_reference as old

from mitigate import decode, hashing, verify

MAX_PIXELS = 50_000_000  # decode.max_pixels default
WORKING = 256  # decode.working_size default


def load(shards: list[Path]) -> list[bytes]:
    """Bytes of every image member that decodes (a truncated shard: what was read)."""
    images = []
    for shard in shards:
        with tarfile.open(shard) as tar:
            try:
                for m in tar:
                    if m.isfile() and m.name.rsplit(".", 1)[-1] in ("jpg", "png", "webp"):
                        data = tar.extractfile(m).read()  # type: ignore[union-attr]
                        if isinstance(
                            decode.decode_image(data, max_pixels=MAX_PIXELS), decode.DecodedImage
                        ):
                            images.append(data)
            except tarfile.ReadError:
                pass
    return images


def draft_decode(data: bytes) -> Image.Image:
    """decode._decode_opened up to the reduced image (fast mode)."""
    image = decode.open_image(data)
    orientation = image.getexif().get(0x0112, 1)
    if image.format == "JPEG":
        image.draft("RGB", (WORKING, WORKING))
    image.seek(0)
    image.load()
    oriented = ImageOps.exif_transpose(image) if orientation != 1 else image
    return decode._reduce(oriented, WORKING)


@contextlib.contextmanager
def old_path() -> Iterator[None]:
    """decode_image with the old pHash pair and signature."""
    saved = hashing.phash_pair, verify.signature
    hashing.phash_pair, verify.signature = old.phash_pair, old.signature  # type: ignore[assignment]
    try:
        yield
    finally:
        hashing.phash_pair, verify.signature = saved  # type: ignore[assignment]


def decode_and_sign(images: list[bytes], use_old: bool) -> tuple[float, float]:
    """CPU seconds of ``decode_image`` over ``images`` and of the signature of each
    working image right after its decode (warm in the cache, as in the pipeline): the
    old functions or the new."""
    sign = old.signature if use_old else verify.signature
    t_decode = t_sign = 0.0
    with old_path() if use_old else contextlib.nullcontext():
        for data in images:
            started = time.process_time()
            decoded = decode.decode_image(data, max_pixels=MAX_PIXELS)
            between = time.process_time()
            sign(decoded.working)  # type: ignore[union-attr]
            t_sign += time.process_time() - between
            t_decode += between - started
    return t_decode, t_sign


def check_identical(
    images: list[bytes], reduced: list[Image.Image], working: list[Image.Image]
) -> None:
    for i, (data, im) in enumerate(zip(images, reduced, strict=True)):
        full = ImageOps.exif_transpose(decode.open_image(data))
        pairs = [
            (hashing.phash_pair(im, exact=False), old.phash_pair(im, exact=False)),
            (hashing.phash_pair(full, exact=True), old.phash_pair(full, exact=True)),
        ]
        for new_out, old_out in pairs:
            if new_out != old_out:
                raise SystemExit(f"image {i}: new output differs from the old one")


def check_folder(folder: Path) -> int:
    """Identity only, on every PNG and JPEG under ``folder`` (e.g. the Tux Paint stamps:
    every Pillow mode they come in) at its size, doubled and at 1/9: the pHash pairs in
    both modes and the signature, old vs new. Returns the number of images checked."""
    n = 0
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg")):
        with Image.open(path) as image:
            image.load()
            w, h = image.size
            for im in (
                image,
                image.resize((w * 2, h * 2)),
                image.resize((max(1, w // 9), max(1, h // 9))),
            ):
                for exact in (True, False):
                    if hashing.phash_pair(im, exact=exact) != old.phash_pair(im, exact=exact):
                        raise SystemExit(f"{path} {im.size}: pHash pair differs (exact={exact})")
                if verify.signature(im) != old.signature(im):
                    raise SystemExit(f"{path} {im.size}: signature differs")
                n += 1
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shards", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=6, help="timing rounds (old and new each)")
    parser.add_argument(
        "--check-dir",
        type=Path,
        help="also check old == new on every PNG/JPEG under this folder (e.g. "
        "/usr/share/tuxpaint/stamps), no timing",
    )
    args = parser.parse_args()
    if args.check_dir:
        n = check_folder(args.check_dir)
        print(f"{n} images under {args.check_dir}: pHash pairs and signatures identical")

    images = load(args.shards)
    if not images:
        raise SystemExit("no decodable images in the shards")
    reduced = [draft_decode(d) for d in images]
    working = [decode._to_rgb(im) for im in reduced]
    thumbs = [old.gray_thumbnail(im, exact=False) for im in reduced]
    check_identical(images, reduced, working)
    sizes = sorted(min(w.size) for w in working)
    print(
        f"{len(images)} images, working shorter side {sizes[0]}..{sizes[-1]} px "
        f"(median {sizes[len(sizes) // 2]}); pHash pairs (fast and exact) identical old vs "
        "new on every image (the signature is issue 12's fifth round's, not the old one's)"
    )

    # name -> (inputs, old step, new step); None: the same code old and new
    steps: dict[str, tuple[list, Callable, Callable | None]] = {
        "draft decode + EXIF + reduce (floor)": (images, draft_decode, None),
        "pHash pair": (
            reduced,
            lambda im: old.phash_pair(im, exact=False),
            lambda im: hashing.phash_pair(im, exact=False),
        ),
        "  grey 32x32 thumbnail": (
            reduced,
            lambda im: old.gray_thumbnail(im, exact=False),
            lambda im: hashing.gray_thumbnail(im, exact=False),
        ),
        "  2 DCTs + medians + bits": (
            thumbs,
            lambda t: (old.phash_from_thumbnail(t), old.phash_from_thumbnail(np.fliplr(t))),
            lambda t: hashing._phashes(np.stack((t, t[:, ::-1]))),
        ),
        "signature (image not in cache)": (working, old.signature, verify.signature),
    }
    whole, after = "decode_image (whole path)", "signature right after it (as decoded)"
    cpu_old = dict.fromkeys([*steps, whole, after], 0.0)
    cpu_new = dict.fromkeys([*steps, whole, after], 0.0)
    for r in range(args.rounds):
        for name, (inputs, fn_old, fn_new) in steps.items():
            order = [(cpu_old, fn_old), (cpu_new, fn_new or fn_old)]
            for acc, fn in order if r % 2 == 0 else order[::-1]:
                started = time.process_time()
                for x in inputs:
                    fn(x)
                acc[name] += time.process_time() - started
        for acc, is_old in [(cpu_old, True), (cpu_new, False)][:: 1 if r % 2 == 0 else -1]:
            acc[whole], acc[after] = np.add(
                (acc[whole], acc[after]), decode_and_sign(images, is_old)
            )
    n = len(images) * args.rounds
    print(f"\nCPU ms per sample, {args.rounds} rounds, old and new alternating:")
    print(f"{'step':<42} {'old':>8} {'new':>8} {'new/old':>8}")
    for name in cpu_old:
        o, w = cpu_old[name] / n * 1e3, cpu_new[name] / n * 1e3
        print(f"{name:<42} {o:>8.3f} {w:>8.3f} {w / o:>8.2f}")
    # decode_image computes the signature once itself: the rest of the path is the rest
    share_old = cpu_old[after] / (cpu_old[whole] - cpu_old[after])
    share_new = cpu_new[after] / (cpu_new[whole] - cpu_new[after])
    print(
        "\nissue 12 cost (as eval_near_verify.py --cost-shards): signature / rest of the "
        f"decode path: old {share_old:.1%}, new {share_new:.1%}"
    )
    one, chunked = chunk_gain(thumbs, args.rounds)
    print(
        f"\npHash DCTs + medians + bits of a chunk of {CHUNK} samples in one call (not used "
        f"by the decoder, which hashes per sample): {chunked / len(thumbs) * 1e3:.3f} ms a "
        f"sample vs {one / len(thumbs) * 1e3:.3f} one call a sample ({chunked / one:.2f}x)"
    )
    return 0


CHUNK = 256


def chunk_gain(thumbs: list[np.ndarray], rounds: int) -> tuple[float, float]:
    """CPU seconds over ``thumbs`` of ``hashing._phashes`` one sample a call and one
    chunk of ``CHUNK`` samples (thumbnail and mirror each) a call: what hashing over a
    chunk would save. Same hashes, checked."""
    stacks = [np.stack((t, t[:, ::-1])) for t in thumbs]
    chunks = [np.concatenate(stacks[i : i + CHUNK]) for i in range(0, len(stacks), CHUNK)]
    per_sample = [h for st in stacks for h in hashing._phashes(st)]
    if per_sample != [h for c in chunks for h in hashing._phashes(c)]:
        raise SystemExit("chunked pHash differs from per-sample pHash")
    t_one = t_chunk = 0.0
    for _ in range(rounds):
        started = time.process_time()
        for st in stacks:
            hashing._phashes(st)
        between = time.process_time()
        for c in chunks:
            hashing._phashes(c)
        t_chunk += time.process_time() - between
        t_one += between - started
    return t_one / rounds, t_chunk / rounds


if __name__ == "__main__":
    raise SystemExit(main())
