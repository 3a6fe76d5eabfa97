#!/usr/bin/env python3
"""Near-duplicate precision with verification: pHash candidates (k) checked by
:mod:`mitigate.verify`, on real images with planted copies and real look-alikes.

The labelled set (built here, deterministic):

* sources: every Tux Paint stamp (Debian ``tuxpaint-stamps-default``, composited on
  white, longer side at most ``--max-side``) and the photos shipped in the scikit-image
  and scikit-learn wheels. Sources with identical pixels (the same letter stamp in the
  English, German and Spanish alphabets) form one group;
* redundant copies: every source gets each edit of ``tests/near_edits.EDITS`` (JPEG
  q40, half size, brightness +-15%, watermark band over 10% of the height, 3% border
  crop, horizontal flip); a copy belongs to its source's group;
* look-alikes, each its own group: the stamps themselves (letter, digit, coin and flag
  families share outlines), the stereo pair of scikit-image (``motorcycle_left/right``)
  and the grey/colour chessboards, and planted variants on every ``--variant-every``-th
  source (``tests/near_edits.VARIANTS``: another letter or digit printed on the image,
  a recoloured copy).

Every image goes through the pipeline's decoder (``mitigate.decode.decode_image``,
fast mode) exactly as a sample would. Candidate pairs are all pairs within ``k``
(exact search); each method is then a filter over these pairs. Reported per method and
threshold: pair precision (verified pairs joining one group / verified pairs; and
``precflip``, counting mirror-equivalent pairs as duplicates), recall of redundant
copies (planted copies joined to their source by a verified pair), and per edit kind;
and the cost of the signature per image against the decode in the same run. With
``--previous-verify`` an earlier ``verify.py`` is scored on the same images and pairs,
timed in the same run.

    python benchmarks/eval_near_verify.py --ks 10 16 --sweep  # full set
    python benchmarks/eval_near_verify.py --limit 200        # quicker
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from near_edits import EDITS, VARIANTS, jpeg

from mitigate import _sigkernel, centre, hashing, neardup, sigdef, sigmake, sigsample, verify
from mitigate.decode import DecodedImage, decode_image

LOG = logging.getLogger("eval_near_verify")
STAMPS = Path("/usr/share/tuxpaint/stamps")
MAX_PIXELS = 50_000_000  # decode.max_pixels default


def _package_dir(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{name} not installed: pip install -e '.[sample-data]'")
    return Path(spec.origin).parent


def _flatten(image: Image.Image, max_side: int) -> Image.Image:
    image.load()
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(bg, rgba)
    image = image.convert("RGB")
    scale = max_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image


def load_sources(stamps: Path, max_side: int, limit: int | None) -> list[tuple[str, Image.Image]]:
    """(name, RGB image) of every source, in a fixed order."""
    out = []
    if not stamps.is_dir():
        raise SystemExit(f"{stamps} missing: apt-get install tuxpaint-stamps-default")
    for path in sorted(stamps.rglob("*.png")):
        with Image.open(path) as im:
            out.append((f"stamp:{path.relative_to(stamps)}", _flatten(im, max_side)))
    out += package_photos(max_side)
    if limit is not None:
        out = out[:limit]
    return out


def package_photos(max_side: int) -> list[tuple[str, Image.Image]]:
    """(name, RGB image) of the real photos scikit-image and scikit-learn ship."""
    out = []
    sk = _package_dir("skimage") / "data"
    for name in sorted(p.name for p in sk.iterdir() if p.suffix in (".png", ".jpg")):
        with Image.open(sk / name) as im:
            if min(im.size) >= 64:
                out.append((f"skimage:{name}", _flatten(im, max_side)))
    sl = _package_dir("sklearn") / "datasets" / "images"
    for name in ("china.jpg", "flower.jpg"):
        with Image.open(sl / name) as im:
            out.append((f"sklearn:{name}", _flatten(im, max_side)))
    return out


@dataclass
class EvalSet:
    names: list[str] = field(default_factory=list)
    group: list[int] = field(default_factory=list)  # same group = near duplicates
    kind: list[str] = field(default_factory=list)  # original | edit name | variant name
    source: list[int] = field(default_factory=list)  # index of the source's original
    phash: list[int] = field(default_factory=list)
    mirror: list[int] = field(default_factory=list)
    centre: list[str] = field(default_factory=list)  # phash_centre (32 hex digits)
    thumbs: list[np.ndarray] = field(default_factory=list)  # pHash's 32x32 grey thumbnail
    sigs: list[bytes] = field(default_factory=list)
    dct256: list[bytes] = field(default_factory=list)
    prev_sigs: list[bytes] = field(default_factory=list)  # --previous-verify's signatures
    t_prev_sig: float = 0.0
    t_decode: float = 0.0  # CPU time of the decode path as the pipeline runs it
    t_bare: float = 0.0  # CPU time of the same decode without the signature


class SignatureTimer:
    """Times :func:`mitigate.verify.signature` where the decode path calls it (with
    pHash's grey image), by wrapping it for the duration of a ``with`` block."""

    def __init__(self, signature: Callable[[Image.Image], bytes] | None = None) -> None:
        """``signature``: what the decode path calls meanwhile (default: its own)."""
        self.seconds = 0.0
        self._saved = verify.signature
        self._real = signature or verify.signature

    def __enter__(self) -> SignatureTimer:
        real = self._real

        def timed(image: Image.Image) -> bytes:
            t0 = time.thread_time()
            try:
                return real(image)
            finally:
                self.seconds += time.thread_time() - t0

        verify.signature = timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        verify.signature = self._saved  # type: ignore[assignment]


def dct256(image: Image.Image) -> bytes:
    """A 256-bit pHash (16x16 low DCT block of a 64x64 grey thumbnail), a candidate."""
    import scipy.fftpack

    thumb = np.asarray(image.convert("L").resize((64, 64), Image.Resampling.LANCZOS), float)
    d = scipy.fftpack.dct(scipy.fftpack.dct(thumb, axis=0), axis=1)[:16, :16]
    return np.packbits(d > np.median(d)).tobytes()


def _digest(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes() + str(image.size).encode()).hexdigest()


def colourful(image: Image.Image) -> bool:
    """At least 5% of the pixels saturated (HSV saturation >= 0.35, value >= 0.25)."""
    hsv = np.asarray(image.convert("HSV"))
    return float(((hsv[..., 1] >= 90) & (hsv[..., 2] >= 64)).mean()) >= 0.05


def _timed_decode(data: bytes, ev: EvalSet, *, signature: bool) -> None:
    t0 = time.thread_time()
    dec = decode_image(data, max_pixels=10**9, signature=signature)
    dt = time.thread_time() - t0
    if signature:
        ev.t_decode += dt
    else:
        ev.t_bare += dt
    assert isinstance(dec, DecodedImage)


def warm(data: bytes) -> None:
    """Decode one real image both ways, untimed: the decode path's first call pays
    one-time set-up (Pillow's JPEG plugin, hashing tables, ...); timed, it landed on
    whichever decode came first (measured: ~0.1 ms an image over 600 decodes, all on the
    signature's side, before this warm-up)."""
    for signature in (True, False):
        decode_image(data, max_pixels=MAX_PIXELS, signature=signature)


def build(
    sources: list[tuple[str, Image.Image]], variant_every: int, previous: ModuleType | None = None
) -> EvalSet:
    ev = EvalSet()
    if sources:
        warm(jpeg(sources[0][1], 90))
    pixel_group: dict[str, int] = {}

    def add(name: str, data: bytes, group: int, kind: str, source: int) -> None:
        # the decode as the pipeline runs it, and without the signature (signature=False),
        # in alternating order: the difference is what the signature costs
        # in alternating order, neither result kept (one kept while the other decodes
        # would hand that one colder memory: measured, ~40 us of bias); then the decode
        # whose results are used, untimed
        for signature in (False, True) if len(ev.names) % 2 else (True, False):
            _timed_decode(data, ev, signature=signature)
        dec = decode_image(data, max_pixels=10**9)
        assert isinstance(dec, DecodedImage), name
        sig = dec.signature  # as the pipeline stores it
        ev.names.append(name)
        ev.group.append(group)
        ev.kind.append(kind)
        ev.source.append(source)
        ev.phash.append(dec.phash)
        ev.mirror.append(dec.phash_mirror)
        assert dec.centre is not None
        ev.centre.append(hashing.to_hex_pair(*dec.centre))
        ev.thumbs.append(hashing.gray_thumbnail(dec.working, exact=False))
        ev.sigs.append(sig)
        ev.dct256.append(dct256(dec.working))
        if previous is not None:
            t3 = time.thread_time()
            ev.prev_sigs.append(previous.signature(dec.working))
            ev.t_prev_sig += time.thread_time() - t3

    n_groups = 0
    for s, (name, image) in enumerate(sources):
        # a stamp and its mirror-image stamp (bradley.png, bradley_mirror.png) are one
        # image under the flip-tolerant rule: one group
        digest = min(_digest(image), _digest(ImageOps.mirror(image)))
        if digest not in pixel_group:
            pixel_group[digest] = n_groups
            n_groups += 1
        group = pixel_group[digest]
        src = len(ev.names)
        add(name, jpeg(image, 90), group, "original", src)
        for edit, (fn, quality) in EDITS.items():
            add(f"{name}#{edit}", jpeg(fn(image), quality), group, edit, src)
        if s % variant_every == 0:
            for variant, fn in VARIANTS.items():
                if variant == "recolour" and not colourful(image):
                    continue  # turning the hue of a grey image changes nothing
                add(f"{name}#{variant}", jpeg(fn(image), 90), n_groups, variant, src)
                n_groups += 1
    return ev


def evaluate(
    ev: EvalSet, k: int, use_centre: bool = False
) -> tuple[neardup.PairSet, np.ndarray, np.ndarray]:
    """Candidate pairs (exact search; with ``use_centre`` both views, as the pipeline
    proposes them with verification on), whether each joins one group, and its views."""
    p = neardup.as_hashes(ev.phash)
    m = neardup.as_hashes(ev.mirror)
    pairs, views = centre.candidate_pairs(
        p, m, ev.centre if use_centre else None, ev.sigs, k, mode="exact"
    )
    group = np.asarray(ev.group)
    return pairs, group[pairs.i] == group[pairs.j], views


def centre_variant(thumb: np.ndarray, rows: tuple[int, int], cols: tuple[int, int]) -> str:
    """The centre hash pair (hex) of another thumbnail window: the alternatives the
    window was chosen among (``--windows``); the default window gives
    :func:`mitigate.hashing.centre_pair_from_thumbnail`'s bits."""
    window = np.asarray(thumb, np.float64)[rows[0] : rows[1], cols[0] : cols[1]]
    low = np.round(
        hashing._dct_rows(window.shape[0]) @ window @ hashing._dct_rows(window.shape[1]).T, 6
    )
    return hashing.to_hex_pair(*hashing._block_and_mirror_bits(low))


def variants(ev: EvalSet, k: int, windows: list[str], gates: list[str], threshold: float) -> None:
    """Recall and precision with the centre view from other thumbnail windows
    (``ROW0:ROW1:COL0:COL1``) and aspect gates (a number, or ``none``), verification
    at ``threshold``: the measurements the defaults were chosen by. Rows are named by
    the window and the number of candidate pairs (``c``)."""
    p, m = neardup.as_hashes(ev.phash), neardup.as_hashes(ev.mirror)
    group = np.asarray(ev.group)
    default_gate = centre.ASPECT_GATE
    print(f"k={k}: centre view variants (threshold {threshold})")
    for spec in windows:
        r0, r1, c0, c1 = (int(x) for x in spec.split(":"))
        hexes = [centre_variant(t, (r0, r1), (c0, c1)) for t in ev.thumbs]
        if (r0, r1) == hashing.CENTRE_ROWS and (c0, c1) == hashing.CENTRE_COLS:
            assert hexes == ev.centre  # the pipeline's own centre hashes
        for gate in gates:
            centre.ASPECT_GATE = np.inf if gate == "none" else float(gate)
            try:
                pairs, _ = centre.candidate_pairs(p, m, hexes, ev.sigs, k, mode="exact")
            finally:
                centre.ASPECT_GATE = default_gate
            same = group[pairs.i] == group[pairs.j]
            ok = verify.pair_scores(pairs.i, pairs.j, ev.sigs, stop_above=threshold) <= threshold
            name = f"{r0}:{r1}x{c0}:{c1} {len(pairs)}c"  # window, candidate pairs
            _print_row(name, gate, metrics(ev, pairs, same, ok))


def half_of(ev: EvalSet) -> np.ndarray:
    """0 or 1 per image: the half of its source (crc32 of the source's name), so every
    copy and variant of a source falls in the same half as the source."""
    return np.asarray([zlib.crc32(ev.names[s].encode()) % 2 for s in ev.source], dtype=np.int64)


def _stem(name: str) -> str:
    return name.split("#", 1)[0]


def mirror_equivalent(a: str, b: str) -> bool:
    """Two *different* sources that are mirror images of each other in all but details:
    Tux Paint's ``x_mirror.png`` stamps (mirrored, with their text kept readable) and
    the letters b/d, p/q of one alphabet. Under the flip-tolerant rule (a horizontal
    flip is a redundant copy) these pairs are duplicates by definition; they are
    counted as false merges and reported apart so the reader can judge them."""
    a, b = _stem(a), _stem(b)
    if a.replace("_mirror", "") == b.replace("_mirror", ""):
        return True
    da, fa = a.rsplit("/", 1) if "/" in a else ("", a)
    db, fb = b.rsplit("/", 1) if "/" in b else ("", b)
    pair = {fa[:1], fb[:1]}
    return da == db and fa[1:] == fb[1:] and pair in ({"b", "d"}, {"p", "q"})


def metrics(
    ev: EvalSet,
    pairs: neardup.PairSet,
    same: np.ndarray,
    ok: np.ndarray,
    use: np.ndarray | None = None,
) -> dict:
    """Pair precision, recall of planted copies and false merges by kind, over the
    images with ``use`` (default all).

    Two recalls: ``pair_recall`` counts a copy when the pair (copy, its source) is
    verified; ``recall`` (the one the targets are about) counts a copy when verified
    pairs *inside its group* connect it to its source -- the copy is then removed or
    the source removed in its favour, as the keep rule does with a group."""
    n = len(ev.names)
    if use is None:
        use = np.ones(n, dtype=bool)
    on = ok & use[pairs.i] & use[pairs.j]
    kept = {(int(a), int(b)) for a, b in zip(pairs.i[on], pairs.j[on], strict=True)}
    true = on & same
    component = neardup.connected_components(n, pairs.i[true], pairs.j[true])
    per_edit, per_edit_pair = {}, {}
    source = np.asarray(ev.source)
    kind = np.asarray(ev.kind)
    for edit in EDITS:
        idx = np.flatnonzero((kind == edit) & use)
        hit = sum(1 for i in idx if (min(i, ev.source[i]), max(i, ev.source[i])) in kept)
        per_edit_pair[edit] = hit / max(1, len(idx))
        per_edit[edit] = float(np.mean(component[idx] == component[source[idx]]))
    false_kinds = {"family": 0, "mirror-equivalent": 0, "variant-variant": 0, "variant-copy": 0}
    for t in np.flatnonzero(on & ~same):
        a, b = int(pairs.i[t]), int(pairs.j[t])
        if ev.source[a] != ev.source[b]:
            mirror = mirror_equivalent(ev.names[a], ev.names[b])
            false_kinds["mirror-equivalent" if mirror else "family"] += 1
        elif ev.kind[a] in VARIANTS and ev.kind[b] in VARIANTS:
            false_kinds["variant-variant"] += 1
        else:
            false_kinds["variant-copy"] += 1
    n_ok = int(on.sum())
    mirror_eq = false_kinds["mirror-equivalent"]
    return {
        "pairs": n_ok,
        "false": int((on & ~same).sum()),
        "precision": float(true.sum() / n_ok) if n_ok else 1.0,
        # the same, counting mirror-equivalent pairs as the duplicates the flip rule
        # makes them
        "precision_flip": float((true.sum() + mirror_eq) / n_ok) if n_ok else 1.0,
        "recall": float(np.mean(list(per_edit.values()))),
        "pair_recall": float(np.mean(list(per_edit_pair.values()))),
        "false_kinds": false_kinds,
        **per_edit,
    }


def cost(
    images: list[bytes],
    previous: ModuleType | None = None,
    repeat: int = 5,
    kernel: ModuleType | None = None,
) -> int:
    """What the signature costs the decode path, per image (the calling thread's CPU
    time: other processes on a shared machine do not count, nor do numpy's BLAS threads,
    which spin on after a matrix product and made process CPU time read ~4x the
    signature's cost on small images), measured as the pipeline runs it: the
    decode with the signature against the same decode without it
    (``decode_image(signature=False)``), in alternating order, same run. With the fused
    pass (:func:`mitigate.verify.grey_and_signature`) the signature has no call of its
    own to time. For comparison, in the same run: the decode with the fused pass turned
    off (Pillow's greyscale conversion and the signature's Pillow path, the fifth
    round), the signature timed where it is called (:class:`SignatureTimer`); and
    ``previous``'s (``--previous-verify``) likewise. ``kernel``, an earlier
    ``mitigate/_sigkernel.py`` (``--previous-kernel``): a third arm of the alternation,
    the decode with its fused kernels in place of this tree's, so that an exact kernel
    change is measured against its predecessor in the same run, image for image."""
    t = dict.fromkeys(("with", "bare", "pillow", "prev", "kernel"), 0.0)
    # the same two figures for images under 128 px a side (the signature's BOX path)
    small = {"with": 0.0, "bare": 0.0, "n": 0.0}
    # and of those, the ones under 128 px both ways (no pass reads a long side)
    tiny = {"with": 0.0, "bare": 0.0, "n": 0.0}
    t_centre = t_phash = 0.0
    fused = verify.grey_and_signature
    timer, prev_timer = SignatureTimer(), SignatureTimer(previous and previous.signature)
    warm(images[0])

    def run(name: str, data: bytes, signature: bool = True) -> DecodedImage:
        t0 = time.thread_time()
        dec = decode_image(data, max_pixels=MAX_PIXELS, signature=signature)
        t[name] += time.thread_time() - t0
        assert isinstance(dec, DecodedImage)
        return dec

    arms = ["with", "bare"] + (["kernel"] if kernel is not None else [])
    fused_kernels = ("grey_and_cells", "grey_and_box", "grey")
    ours = {name: getattr(_sigkernel, name) for name in fused_kernels}
    for r in range(repeat):
        for i, data in enumerate(images):
            # neither result is kept (one kept while the other decodes would hand that one
            # colder memory: measured, ~40 us of bias); the order turns image by image
            turn = (i + r) % len(arms)
            for arm in arms[turn:] + arms[:turn]:
                signature = arm != "bare"
                before = t["with"] + t["bare"]
                if arm == "kernel":
                    for name in fused_kernels:
                        setattr(_sigkernel, name, getattr(kernel, name))
                try:
                    dec = run(arm, data, signature=signature)
                finally:
                    for name, function in ours.items():
                        setattr(_sigkernel, name, function)
                is_small = min(dec.working.size) < 2 * verify.GRID
                is_tiny = max(dec.working.size) < 2 * verify.GRID
                del dec  # not kept while the other decodes
                for group, member in ((small, is_small), (tiny, is_tiny)):
                    if member and arm != "kernel":
                        group[arm] += t["with"] + t["bare"] - before
                        group["n"] += signature
            verify.grey_and_signature = lambda image, **kw: None  # type: ignore[assignment]
            try:
                with timer:
                    dec = run("pillow", data)
                if previous is not None:
                    with prev_timer:
                        run("prev", data)
            finally:
                verify.grey_and_signature = fused  # type: ignore[assignment]
            thumb = hashing.gray_thumbnail(dec.working, exact=False)
            t4 = time.thread_time()
            hashing.centre_pair_from_thumbnail(thumb)
            t5 = time.thread_time()
            hashing._phashes(np.stack((thumb, thumb[:, ::-1])))  # as phash_pair does
            t_phash += time.thread_time() - t5
            t_centre += t5 - t4
    n = len(images) * repeat
    marginal = t["with"] - t["bare"]
    print(
        f"{len(images)} images x {repeat}: decode path without the signature "
        f"{t['bare'] / n * 1e3:.3f} ms, with it {t['with'] / n * 1e3:.3f} ms: the signature "
        f"costs {marginal / n * 1e3:.3f} ms = {marginal / t['bare']:.1%} of the decode path"
    )
    if small["n"]:
        ns, ms = small["n"], small["with"] - small["bare"]
        print(
            f"  of which {ns / repeat:.0f} images under 128 px a side: decode path without the "
            f"signature {small['bare'] / ns * 1e3:.3f} ms, with it {small['with'] / ns * 1e3:.3f}"
            f" ms: {ms / ns * 1e3:.3f} ms = {ms / small['bare']:.1%}; the others "
            f"{(marginal - ms) / (n - ns) * 1e3:.3f} ms = "
            f"{(marginal - ms) / (t['bare'] - small['bare']):.1%}"
            if n > ns
            else "  all under 128 px a side"
        )
    if tiny["n"]:
        nt, mt = tiny["n"], tiny["with"] - tiny["bare"]
        ms = small["with"] - small["bare"]
        long_side = small["bare"] - tiny["bare"]
        print(
            f"    under 128 px both ways ({nt / repeat:.0f}): {mt / nt * 1e3:.3f} ms = "
            f"{mt / tiny['bare']:.1%}; one side 128 px or more ({(small['n'] - nt) / repeat:.0f})"
            f": {(ms - mt) / max(small['n'] - nt, 1) * 1e3:.3f} ms = "
            f"{(ms - mt) / long_side:.1%}"
            if small["n"] > nt
            else f"    all {nt / repeat:.0f} under 128 px both ways"
        )
    if kernel is not None:
        previous_marginal = t["kernel"] - t["bare"]
        print(
            f"previous kernels (--previous-kernel, in the same alternation): the signature "
            f"costs {previous_marginal / n * 1e3:.3f} ms = {previous_marginal / t['bare']:.1%}"
            f" of the decode path; this tree's / previous: {marginal / previous_marginal:.2f}"
        )
    t_sig = timer.seconds
    rest = t["pillow"] - t_sig
    print(
        f"fused pass off (Pillow's grey and the signature's Pillow path, fifth round): "
        f"decode path {t['pillow'] / n * 1e3:.3f} ms, of which signature {t_sig / n * 1e3:.3f} "
        f"ms = {t_sig / rest:.1%} of the rest; decode path with the fused pass / without it: "
        f"{t['with'] / t['pillow']:.2f}"
    )
    if previous is not None:
        t_prev = prev_timer.seconds
        print(
            f"previous signature (--previous-verify, Pillow's path, in the same place): "
            f"{t_prev / n * 1e3:.3f} ms = {t_prev / (t['prev'] - t_prev):.1%} of the rest of "
            f"the decode; fifth-round path / previous signature: {t_sig / t_prev:.2f}"
        )
    print(
        f"centre hash and its mirror (from pHash's thumbnail, inside the decode path): "
        f"{t_centre / n * 1e3:.3f} ms = {t_centre / (t['with'] - t_centre):.1%} of the decode "
        f"path without it; pHash and mirror from the same thumbnail "
        f"{t_phash / n * 1e3:.3f} ms (centre / pHash: {t_centre / t_phash:.2f})"
    )
    return 0


def search_cost(n: int, ks: list[int]) -> int:
    """Exact candidate search time and pairs at each k, on the same synthetic hashes."""
    p, m = neardup.synthetic_hashes(n, k=10, n_planted=n // 10, seed=0)
    for k in ks:
        t0 = time.process_time()
        pairs = neardup.find_near_duplicates(p, m, k, mode="exact")
        print(f"{len(p)} hashes, k={k}: {time.process_time() - t0:.1f} s CPU, {len(pairs)} pairs")
    return 0


def _load_module(path: Path, name: str = "previous_verify") -> ModuleType:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # importable by name: numba's cache reloads kernels so
    spec.loader.exec_module(module)
    return module


def _print_row(name: str, thr: str, r: dict) -> None:
    print(
        f"{name:<24} {thr:>5} {r['pairs']:>6} {r['false']:>5} {r['precision']:>7.4f} "
        f"{r['precision_flip']:>7.4f} {r['recall']:>7.4f} {r['pair_recall']:>7.4f} "
        + " ".join(f"{r[e]:>12.3f}" for e in EDITS)
        + "  "
        + " ".join(f"{kd}={c}" for kd, c in r["false_kinds"].items())
    )


def _split_halves(
    ev: EvalSet,
    pairs: neardup.PairSet,
    same: np.ndarray,
    scores: np.ndarray,
    half: np.ndarray,
    target_recall: float,
) -> None:
    """Pick the threshold on one half of the sources (the strictest one whose recall
    there is >= target_recall), report precision and recall on the other half."""
    grid = np.round(np.arange(0.5, 2.001, 0.05), 2)
    for tune in (0, 1):
        a, b = half == tune, half != tune
        chosen = grid[-1]
        for t in grid:
            if metrics(ev, pairs, same, scores <= t, a)["recall"] >= target_recall:
                chosen = t
                break
        r = metrics(ev, pairs, same, scores <= chosen, b)
        _print_row(f"tuned on half {tune}", f"{chosen:.2f}", r)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stamps", type=Path, default=STAMPS)
    parser.add_argument("--limit", type=int, default=None, help="use the first N sources")
    parser.add_argument("--max-side", type=int, default=384)
    parser.add_argument("--variant-every", type=int, default=2)
    parser.add_argument("--ks", type=int, nargs="+", default=[10], help="pHash radii")
    parser.add_argument(
        "--threshold", type=float, default=verify.DEFAULT_THRESHOLD, help="verification"
    )
    parser.add_argument("--sweep", action="store_true", help="thresholds of every method")
    parser.add_argument(
        "--split",
        action="store_true",
        help="pick the threshold on one half of the sources, report on the other",
    )
    parser.add_argument("--target-recall", type=float, default=0.97)
    parser.add_argument(
        "--centre-view",
        action="store_true",
        help="every k twice: pHash candidates only, and with the centre view's (the "
        "pipeline's default with verification; mitigate.centre); rows tagged +centre",
    )
    parser.add_argument(
        "--windows",
        nargs="+",
        default=[],
        metavar="R0:R1:C0:C1",
        help="also score the centre view from these 32x32 thumbnail windows (rows, "
        "columns; e.g. 4:28:4:28 4:28:2:30), at the first of --ks",
    )
    parser.add_argument(
        "--gates",
        nargs="+",
        default=[str(centre.ASPECT_GATE)],
        help="aspect gates for --windows (|log aspect ratio| or none)",
    )
    parser.add_argument("--show-false", type=int, default=0, help="list N false merges")
    parser.add_argument(
        "--cost-shards",
        type=Path,
        nargs="+",
        help="only measure the signature's cost against the decode on these shards' images",
    )
    parser.add_argument(
        "--cost-stamps",
        action="store_true",
        help="only measure the signature's cost against the decode on the labelled set's "
        "originals (every stamp source, or --limit, at --max-side, JPEG q90)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="--cost-shards/--cost-stamps: passes over the images (default 5)",
    )
    parser.add_argument(
        "--previous-verify",
        type=Path,
        help="an earlier mitigate/verify.py (e.g. git show be93ec0:mitigate/verify.py > "
        "/tmp/verify_r2.py): its signatures and scores on the same images and pairs, timed "
        "in the same run",
    )
    parser.add_argument(
        "--previous-kernel",
        type=Path,
        help="--cost-shards/--cost-stamps: an earlier mitigate/_sigkernel.py (e.g. git show "
        "6d8a210:mitigate/_sigkernel.py > /tmp/sigkernel_prev.py): the decode path with its "
        "fused kernels, a third arm of the same alternation",
    )
    parser.add_argument(
        "--search-cost",
        type=int,
        metavar="N",
        help="only time the exact candidate search at each of --ks on N synthetic hashes "
        "(neardup.synthetic_hashes, 10%% planted copies): the cost of a larger k",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    previous = _load_module(args.previous_verify) if args.previous_verify else None
    previous_kernel = None
    if args.previous_kernel:
        previous_kernel = _load_module(args.previous_kernel, "previous_sigkernel")
        words = sigsample.pixels(Image.new("RGB", (300, 300)))  # compiled before timing,
        small = sigsample.pixels(Image.new("RGB", (60, 40)))  # for read-only views
        assert words is not None and small is not None
        level, size = sigmake._LEVEL, sigdef.SIZE_AT
        previous_kernel.grey_and_cells(words.view(np.uint32), 300, 300, level, size)
        previous_kernel.grey_and_box(small.view(np.uint32), 60, 40, level, size)
    # numba's import and the kernels' load (once a process) are not a per-sample cost
    for side in (8, 300):  # the small images' path, Pillow's path and the fused pass
        verify.signature(Image.new("RGB", (side, side)))
        for with_signature in (True, False):
            verify.grey_and_signature(Image.new("RGB", (side, side)), with_signature=with_signature)
    if args.cost_shards:
        from bench_hashing import load  # benchmarks/: the images that decode, of every shard

        return cost(load(args.cost_shards), previous, args.repeat, previous_kernel)
    if args.cost_stamps:
        stamps = load_sources(args.stamps, args.max_side, args.limit)
        return cost(
            [jpeg(image, 90) for _, image in stamps], previous, args.repeat, previous_kernel
        )
    if args.search_cost:
        return search_cost(args.search_cost, args.ks)

    t0 = time.perf_counter()
    sources = load_sources(args.stamps, args.max_side, args.limit)
    ev = build(sources, args.variant_every, previous)
    n = len(ev.names)
    print(
        f"{len(sources)} sources, {n} images ({sum(k in EDITS for k in ev.kind)} planted "
        f"copies, {sum(k in VARIANTS for k in ev.kind)} planted look-alikes), "
        f"{len(set(ev.group))} groups; built in {time.perf_counter() - t0:.0f} s"
    )
    print(
        f"cost per image (CPU): decode path without the signature {ev.t_bare / n * 1e3:.3f} ms,"
        f" with it {ev.t_decode / n * 1e3:.3f} ms: the signature's marginal cost "
        f"{(ev.t_decode - ev.t_bare) / n * 1e3:.3f} ms = "
        f"{(ev.t_decode - ev.t_bare) / ev.t_bare:.1%}"
        + (
            f"; previous signature {ev.t_prev_sig / n * 1e3:.3f} ms = "
            f"{ev.t_prev_sig / ev.t_bare:.1%}"
            if previous is not None
            else ""
        )
    )
    if args.windows:
        variants(ev, args.ks[0], args.windows, args.gates, args.threshold)
    half = half_of(ev)
    print(f"halves by source: {int((half == 0).sum())} / {int((half == 1).sum())} images")
    runs = [(k, c) for k in args.ks for c in ((False, True) if args.centre_view else (False,))]
    for k, use_centre in runs:
        t1 = time.perf_counter()
        pairs, same, views = evaluate(ev, k, use_centre)
        tag = "+centre" if use_centre else ""
        print(
            f"k={k}{tag}: exact candidate search {time.perf_counter() - t1:.2f} s, "
            f"{len(pairs)} candidates, {int((views == centre.CENTRE).sum())} from the centre "
            f"view only ({int((same & (views == centre.CENTRE)).sum())} true)"
        )
        # CPU time of the process (other processes on a shared machine do not count)
        t1 = time.process_time()
        scores = verify.pair_scores(pairs.i, pairs.j, ev.sigs)
        t_full = time.process_time() - t1
        t1 = time.process_time()
        decided = verify.pair_scores(pairs.i, pairs.j, ev.sigs, stop_above=args.threshold)
        t_verify = time.process_time() - t1
        assert np.array_equal(decided <= args.threshold, scores <= args.threshold)
        print(
            f"k={k}: {len(pairs)} candidate pairs ({int(same.sum())} true); verification "
            f"as the pipeline runs it (stop_above=threshold) "
            f"{t_verify / max(1, len(pairs)) * 1e6:.1f} us/pair, "
            f"{t_verify / n * 1e3:.3f} ms per image; every score exact (for the sweep) "
            f"{t_full / max(1, len(pairs)) * 1e6:.1f} us/pair"
        )
        d256 = np.asarray(
            [
                np.unpackbits(
                    np.frombuffer(ev.dct256[a], np.uint8) ^ np.frombuffer(ev.dct256[b], np.uint8)
                ).sum()
                for a, b in zip(pairs.i, pairs.j, strict=True)
            ]
        )
        methods: dict[str, list[tuple[str, np.ndarray]]] = {
            f"phash only{tag}": [("-", np.ones(len(pairs), bool))],
            f"verify (default){tag}": [
                (f"{args.threshold}", verify.verified(scores, args.threshold))
            ],
        }
        if previous is not None:
            t1 = time.process_time()
            prev_scores = previous.pair_scores(pairs.i, pairs.j, ev.prev_sigs)
            t_prev = time.process_time() - t1
            print(
                f"k={k}: previous verification {t_prev / max(1, len(pairs)) * 1e6:.1f} us/pair "
                f"(this one as the pipeline runs it: {t_verify / max(t_prev, 1e-9):.2f}x)"
            )
            thr = previous.DEFAULT_THRESHOLD
            methods["previous verify"] = [(f"{thr}", prev_scores <= thr)]
        if args.sweep:
            methods[f"verify{tag}"] = [
                (f"{t:.2f}", scores <= t) for t in (0.6, 0.8, 0.9, 1.1, 1.2, 1.5)
            ]
            methods["dct256 (no mirror)"] = [(str(t), d256 <= t) for t in (20, 30, 40, 50, 60, 70)]
        header = (
            f"{'method':<24} {'thr':>5} {'pairs':>6} {'false':>5} {'prec':>7} {'precflip':>7} "
            f"{'recall':>7} {'pairrec':>7} "
        )
        print(header + " ".join(f"{e:>12}" for e in EDITS) + "  false merges by kind")
        for name, rows in methods.items():
            for thr, ok in rows:
                _print_row(name, thr, metrics(ev, pairs, same, ok))
        if args.split:
            _split_halves(ev, pairs, same, scores, half, args.target_recall)
    if args.show_false:
        ok = verify.verified(scores, args.threshold)
        bad = np.flatnonzero(ok & ~same)[: args.show_false]
        for t in bad:
            a, b = int(pairs.i[t]), int(pairs.j[t])
            print(f"  false: {ev.names[a]} ~ {ev.names[b]} d={pairs.dist[t]} s={scores[t]:.3f}")
        miss = np.flatnonzero(~ok & same)[: args.show_false]
        for t in miss:
            a, b = int(pairs.i[t]), int(pairs.j[t])
            print(f"  missed: {ev.names[a]} ~ {ev.names[b]} d={pairs.dist[t]} s={scores[t]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
