"""Issue 14's per-sample speed-up changed how pHash and the verification signature are
computed, not what they are: on real images of every mode and shape, the pHash pair
(exact and fast mode) equals the previous implementation (``tests/hashing_reference.py``)
and, for exact mode, imagehash bit for bit. (The signature was byte-for-byte the
reference's too until issue 12's fifth round changed its definition; the reference keeps
the fourth round's, which the current code recognises as another version.)"""

from __future__ import annotations

import io
from pathlib import Path

import hashing_reference as reference
import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from mitigate import decode, hashing, verify

NEAR_EVAL = Path(__file__).resolve().parent.parent / "data" / "near_eval"
SKLEARN_IMAGES = ("china.jpg", "flower.jpg")


def _sklearn_photos() -> list[Image.Image]:
    sklearn = pytest.importorskip("sklearn")
    folder = Path(sklearn.__file__).parent / "datasets" / "images"
    return [Image.open(folder / name) for name in SKLEARN_IMAGES]


def _variants(image: Image.Image) -> list[Image.Image]:
    """The image in the modes a decoder meets, plus tiny and very wide crops of it."""
    rgb = image.convert("RGB")
    grey = rgb.convert("L")
    w, h = rgb.size
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    i16 = Image.frombytes(
        "I;16", rgb.size, (np.asarray(grey, dtype=np.uint16) * 257).astype("<u2").tobytes()
    )
    return [
        rgb,
        rgba,
        rgb.convert("P"),
        rgb.quantize(16),
        grey,
        grey.convert("LA"),
        grey.convert("1"),
        i16,
        grey.convert("I"),
        rgb.convert("CMYK"),
        rgb.crop((0, 0, 1, 1)),
        rgb.crop((w // 2, h // 2, w // 2 + 2, h // 2 + 2)),
        grey.crop((0, 0, 3, 3)),
        rgb.crop((0, h // 2, w, h // 2 + 3)).resize((w * 4, 3)),  # a very wide strip
        rgb.crop((w // 3, 0, w // 3 + 2, h)),  # a very tall one
        rgb.resize((w * 3, h * 3)),  # large enough for fast mode's reducing_gap
    ]


@pytest.fixture(scope="module")
def images(photos) -> list[tuple[str, Image.Image]]:
    """Sample photos, the bundled near-dup evaluation images, scikit-learn's photos,
    and every mode and shape variant of every third of them."""
    base = [(k, Image.open(io.BytesIO(d))) for k, d in sorted(photos.items())]
    base += [(p.name, Image.open(p)) for p in sorted(NEAR_EVAL.glob("*.jpg"))]
    base += [(n, im) for n, im in zip(SKLEARN_IMAGES, _sklearn_photos(), strict=True)]
    for _, im in base:
        im.load()
    out = list(base)
    for key, im in base[::3]:
        out += [(f"{key} {v.mode} {v.size}", v) for v in _variants(im)]
    assert len(base) >= 60 and len(out) >= 300
    return out


def test_phash_pair_is_the_reference_and_imagehash_bit_for_bit(images):
    for key, image in images:
        for exact in (True, False):
            want = reference.phash_pair(image, exact=exact)
            assert hashing.phash_pair(image, exact=exact) == want, (key, exact)
    for key, image in images[::3]:  # imagehash itself is slower; a third of them
        exact = hashing.phash_pair(image, exact=True)
        assert hashing.to_hex(exact[0]) == str(imagehash.phash(image)), key
        assert hashing.to_hex(exact[1]) == str(imagehash.phash(ImageOps.mirror(image))), key


def test_the_fourth_rounds_signature_is_recognised_as_another_version(images):
    """Issue 12's fifth round changed what the signature is (fewer point samples, one
    compiled pass; tests/test_verify.py tests it on its own properties): the reference
    here stays the fourth round's, and a stored one of those is never taken for a
    current one (its pairs fall back to pHash)."""
    for key, image in images[::10]:
        old, new = reference.signature(image), verify.signature(image)
        assert len(old) == 2314 and len(new) == verify.SIG_BYTES, key
        assert verify.is_signature(new) and not verify.is_signature(old), key


def _thumbnails() -> list[np.ndarray]:
    """32x32 arrays where the median comparison is fragile: flat (every AC coefficient
    is rounding noise), two-level, blocky (many equal coefficients), ramps, random."""
    rng = np.random.default_rng(14)
    flat = [np.full((32, 32), v, dtype=np.uint8) for v in (0, 1, 127, 128, 255)]
    binary = [rng.integers(0, 2, (32, 32), dtype=np.uint8) * 255 for _ in range(200)]
    blocks = [
        np.kron(rng.integers(0, 256, (4, 4)), np.ones((8, 8))).astype(np.uint8) for _ in range(200)
    ]
    ramps = [
        (np.add.outer(np.arange(32), np.arange(32) * k) % 256).astype(np.uint8) for k in range(32)
    ]
    noise = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(300)]
    return flat + binary + blocks + ramps + noise


def test_phash_from_thumbnail_is_the_reference_on_fragile_thumbnails():
    for i, thumb in enumerate(_thumbnails()):
        want = reference.phash_from_thumbnail(thumb)
        mirror = reference.phash_from_thumbnail(np.fliplr(thumb))
        assert hashing.phash_from_thumbnail(thumb) == want, i
        assert hashing._phashes(np.stack((thumb, thumb[:, ::-1]))) == [want, mirror], i


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_phash_from_thumbnail_keeps_the_reference_dtype_rules(dtype):
    """fftpack transforms float32 in float32 and integers in float64: so does the batch."""
    for thumb in _thumbnails()[::25]:
        arr = thumb.astype(dtype)
        assert hashing.phash_from_thumbnail(arr) == reference.phash_from_thumbnail(arr)


def test_a_nan_median_sets_no_bit_like_imagehash():
    thumb = np.arange(32 * 32, dtype=np.float64).reshape(32, 32)
    thumb[5, 5] = np.nan
    assert reference.phash_from_thumbnail(thumb) == 0
    assert hashing.phash_from_thumbnail(thumb) == 0


def _jpeg(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def test_decode_image_gives_what_the_reference_path_gave(photos, monkeypatch):
    """The whole per-sample path, fast and exact mode, JPEGs drafted at 1/2..1/8 and
    EXIF-rotated ones: hashes and signature as with the previous functions."""
    payloads = list(photos.values())[::3]
    china = _sklearn_photos()[0].convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    payloads += [
        _jpeg(china.resize((china.width * 3, china.height * 3))),
        _jpeg(china.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes()),
    ]
    for mode in ("fast", "exact"):
        new = [decode.decode_image(d, max_pixels=50_000_000, hash_mode=mode) for d in payloads]
        with monkeypatch.context() as patched:
            patched.setattr(hashing, "phash_pair", reference.phash_pair)
            old = [decode.decode_image(d, max_pixels=50_000_000, hash_mode=mode) for d in payloads]
        for i, (a, b) in enumerate(zip(new, old, strict=True)):
            assert isinstance(a, decode.DecodedImage), (mode, i)
            assert (a.phash, a.phash_mirror) == (b.phash, b.phash_mirror)
            # the signature is the fifth round's (not the reference's), of the working image
            assert a.signature == verify.signature(a.working), (mode, i)


def test_a_stack_of_thumbnails_hashes_as_each_thumbnail_alone(images):
    """The decoder hashes a chunk's thumbnails in one call (``views_of_thumbnails``):
    every pHash, mirror pHash and centre pair is what the one-thumbnail functions give
    (``_phashes`` of the thumbnail and its mirror, ``centre_pair_from_thumbnail``), on
    fragile thumbnails and on real images' thumbnails, whatever the stack's size."""
    thumbs = _thumbnails() + [hashing.gray_thumbnail(image) for _, image in images[::4]]
    want = [
        (*hashing._phashes(np.stack((t, t[:, ::-1]))), *hashing.centre_pair_from_thumbnail(t))
        for t in thumbs
    ]
    for size in (1, 7, 64, len(thumbs)):
        got: list[tuple[int, int, int, int]] = []
        for start in range(0, len(thumbs), size):
            got += hashing.views_of_thumbnails(np.stack(thumbs[start : start + size]))
        assert got == want, size
    assert hashing.views_of_thumbnails(np.empty((0, 32, 32), np.uint8)) == []


def test_decode_images_is_decode_image_of_each_in_order(photos):
    """A chunk decoded together (its hashes in one call) gives each sample what it gives
    alone, failures in their places."""
    blobs = list(photos.values())[:8]
    blobs.insert(2, b"not an image at all")
    blobs.insert(5, blobs[0][: len(blobs[0]) // 3])  # a truncated JPEG
    for mode in ("fast", "exact"):
        got = decode.decode_images(blobs, max_pixels=50_000_000, hash_mode=mode)
        alone = [decode.decode_image(b, max_pixels=50_000_000, hash_mode=mode) for b in blobs]
        assert isinstance(got[2], decode.DecodeFailure) and len(got) == len(blobs)
        for a, b in zip(got, alone, strict=True):
            assert type(a) is type(b)
            if isinstance(a, decode.DecodedImage):
                assert (a.width, a.height, a.format, a.signature, a.centre) == (
                    b.width,
                    b.height,
                    b.format,
                    b.signature,
                    b.centre,
                )
                assert (a.phash, a.phash_mirror) == (b.phash, b.phash_mirror)
                assert a.working.tobytes() == b.working.tobytes()
                views = hashing.phash_views(a.working, exact=False)
                assert mode == "exact" or views == (a.phash, a.phash_mirror, *a.centre)
            else:
                assert a == b
    assert decode.decode_images([], max_pixels=50_000_000) == []
