"""pHash's 32 x 32 thumbnail in the compiled kernel (``mitigate/thumbnail.py``): the
bytes of Pillow's Lanczos resize, whatever the size, the aspect and the content, and
the hashes through it unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from mitigate import hashing, thumbnail

DATA = Path(__file__).resolve().parents[1] / "data" / "near_eval"


def _pillow(gray: Image.Image) -> np.ndarray:
    return np.asarray(gray.resize((32, 32), Image.Resampling.LANCZOS))


def _content(width: int, height: int, seed: int, kind: int) -> Image.Image:
    """Noise (every tap counts), a smooth ramp, or hard 0/255 stripes (the sums that
    overshoot and get clipped)."""
    rng = np.random.default_rng(seed)
    if kind == 0:
        pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
    elif kind == 1:
        return Image.linear_gradient("L").resize((width, height))
    else:
        stripes = (np.arange(width)[None, :] // max(1, width // 7) + np.arange(height)[:, None]) % 2
        pixels = (stripes * 255).astype(np.uint8)
    return Image.fromarray(pixels)


@settings(max_examples=150, deadline=None)
@example(width=256, height=198, seed=0, kind=0)  # auto without a model filter, 1024 x 792
@example(width=32, height=700, seed=1, kind=2)  # no horizontal pass
@example(width=700, height=32, seed=2, kind=0)  # no vertical pass
@example(width=2, height=512, seed=3, kind=0)  # > 100x taller than wide: vertical first
@example(width=5, height=500, seed=4, kind=2)  # exactly 100x: horizontal first
@example(width=1, height=1, seed=5, kind=0)
@example(width=3, height=31, seed=6, kind=2)  # upsampled both ways (negative lobes)
@given(
    width=st.one_of(st.integers(1, 700), st.sampled_from([31, 32, 33, 255, 256, 512])),
    height=st.one_of(st.integers(1, 700), st.integers(1000, 3000)),
    seed=st.integers(0, 2**32 - 1),
    kind=st.integers(0, 2),
)
def test_the_kernel_gives_pillows_lanczos_bytes(width, height, seed, kind):
    gray = _content(width, height, seed, kind)
    got = thumbnail.thumbnail(gray)
    assert got.dtype == np.uint8 and got.shape == (32, 32)
    assert np.array_equal(got, _pillow(gray))


def _photos() -> list[Image.Image]:
    """The bundled labelled subset's photos, greyscale."""
    out = [Image.open(path).convert("L") for path in sorted(DATA.glob("*.jpg"))]
    assert len(out) >= 10
    return out


def test_real_photos_at_three_scales_give_pillows_bytes():
    for gray in _photos():
        for scale in (0.3, 1.0, 1.7):
            size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
            image = gray.resize(size)
            assert np.array_equal(thumbnail.thumbnail(image), _pillow(image)), size


def test_hashes_take_the_kernel_and_stay_imagehashs(monkeypatch):
    """pHash (exact mode, and fast mode under 256 px) reads the kernel's thumbnail; the
    hash is the one Pillow's thumbnail gives (imagehash's steps)."""
    calls = []
    kernel_thumbnail = thumbnail.thumbnail

    def spy(gray):
        calls.append(gray.size)
        return kernel_thumbnail(gray)

    for photo in _photos()[:5]:
        monkeypatch.setattr(thumbnail, "thumbnail", spy)
        got = hashing.phash_views(photo, exact=True)
        monkeypatch.setattr(thumbnail, "thumbnail", _pillow)
        assert got == hashing.phash_views(photo, exact=True)
    assert len(calls) == 5


def test_without_the_kernel_pillow_resizes(monkeypatch):
    monkeypatch.setattr(thumbnail, "_kernel", lambda: None)
    gray = _content(256, 198, 7, 0)
    assert np.array_equal(thumbnail.thumbnail(gray), _pillow(gray))


@pytest.mark.parametrize("n_in", [1, 31, 32, 33, 198, 256, 4000])
def test_taps_sum_to_one_in_fixed_point(n_in):
    bounds, weights = thumbnail.taps(n_in)
    assert bounds.shape == (32, 2) and (bounds[:, 1] >= 1).all()
    assert (bounds[:, 0] + bounds[:, 1] <= n_in).all()
    sums = weights.sum(axis=1)
    assert np.all(np.abs(sums - (1 << 22)) <= weights.shape[1])  # rounding only


def test_the_kernels_taps_are_the_python_references_for_every_side_to_3000():
    """The taps the kernel computes (numba's ``sin``, its float to int) equal the plain
    Python reference (the C library's ``sin``, Python's floats) bit for bit."""
    for n_in in [*range(1, 3001), 4093, 7919, 10007]:
        bounds, weights = thumbnail.taps(n_in)
        ref_bounds, ref_weights = thumbnail.taps_python(n_in)
        assert np.array_equal(bounds, ref_bounds), n_in
        assert np.array_equal(weights, ref_weights), n_in


def test_a_grey_array_hashes_as_its_pillow_image(monkeypatch):
    """The fused pass hands pHash its greyscale image as an array (``hashing.Grey``):
    the thumbnail and all four hashes are those of the Pillow image of the same bytes,
    under 256 px (the kernel reads the array) and above (Pillow's box-reduced path),
    with the kernel and without it."""
    sizes = [(60, 40), (127, 300), (256, 198), (512, 384)]
    for photo in _photos()[:3]:
        for size in sizes:
            image = photo.resize(size)
            grey = hashing.Grey(np.frombuffer(image.tobytes(), np.uint8), *size)
            for exact in (True, False):
                assert hashing.phash_views(grey, exact=exact) == hashing.phash_views(
                    image, exact=exact
                ), (size, exact)
            assert np.array_equal(hashing.gray_thumbnail(grey), _pillow(image))
            assert grey.image().tobytes() == image.tobytes()
    monkeypatch.setattr(thumbnail, "_kernel", lambda: None)
    image = _content(90, 70, 8, 1)
    got = thumbnail.of_pixels(np.frombuffer(image.tobytes(), np.uint8), 90, 70)
    assert np.array_equal(got, _pillow(image))
