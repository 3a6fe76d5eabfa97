"""The local part of the verification score (mitigate.localscore): the compiled kernel
gives the numpy reference's bits, the window sums are the band-matrix means they
replaced, and the edge rule forgives a band at one edge, not at both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from near_edits import EDITS, jpeg
from PIL import Image

from mitigate import localscore, verify
from mitigate.decode import DecodedImage, decode_image

DATA = Path(__file__).resolve().parent.parent / "data" / "near_eval"


def _tables(rng: np.random.Generator, n: int, images: int) -> tuple[np.ndarray, np.ndarray]:
    y = rng.standard_normal((images, n, n)).astype(np.float32)
    y *= rng.choice([0.01, 1.0, 30.0], size=(images, 1, 1)).astype(np.float32)
    c = (rng.random((images, 2, verify.CHROMA_GRID, verify.CHROMA_GRID)) * 255).astype(np.float32)
    return y, c


@pytest.mark.parametrize("level", verify.LEVELS)
def test_the_kernel_gives_the_numpy_references_bits_at_every_level(level: int) -> None:
    rng = np.random.default_rng(level)
    window = verify._WINDOWS[level]
    ya, ca = _tables(rng, level, 40)
    yb, cb = _tables(rng, level, 30)
    ia = rng.integers(0, 40, 700)
    ib = rng.integers(0, 30, 700)
    ia[:5] = ib[:5] = 3  # pairs of one image with itself: a score of exactly 0
    yb[3], cb[3] = ya[3], ca[3]
    compiled = localscore.local_at(ya, ca, ia, yb, cb, ib, window, verify.CHROMA_UNIT)
    numpy = localscore.local_at(ya, ca, ia, yb, cb, ib, window, verify.CHROMA_UNIT, compiled=False)
    assert compiled.dtype == numpy.dtype == np.float32
    assert np.array_equal(compiled, numpy)
    same = (ia == 3) & (ib == 3)
    assert (compiled[same] == 0).all() and (compiled[~same] > 0).all()
    # the numpy path is the reference on gathered planes
    ref = localscore.local(ya[ia], ca[ia], yb[ib], cb[ib], window, verify.CHROMA_UNIT)
    assert np.array_equal(numpy, ref)


def _band_matrix_score(d: np.ndarray, window: localscore.Window) -> np.ndarray:
    """The definition before the kernel: window means as products with a band matrix."""
    ring, side, edge = window
    n = d.shape[-1]
    m = n - 2 * ring - side + 1
    band = np.zeros((m, n), dtype=np.float32)
    for t in range(m):
        band[t, ring + t : ring + t + side] = 1.0 / side
    row_max = (band @ d @ band.T).max(axis=2)
    full = row_max.max(axis=1)
    return np.minimum(
        full, np.minimum(row_max[:, edge:].max(axis=1), row_max[:, :-edge].max(axis=1))
    )


@pytest.mark.parametrize("level", verify.LEVELS)
def test_window_sums_are_the_band_matrix_means(level: int) -> None:
    rng = np.random.default_rng(10 + level)
    d = np.abs(_tables(rng, level, 200)[0])
    window = verify._WINDOWS[level]
    ours = localscore.most_changed(d, window)
    # the matrix product's order of summation is the BLAS library's: equal up to
    # rounding everywhere (bit for bit with the OpenBLAS numpy ships, BENCHMARKS.md)
    np.testing.assert_allclose(ours, _band_matrix_score(d, window), rtol=2e-6, atol=0)


@pytest.mark.parametrize("compiled", [True, False])
def test_a_band_at_one_edge_is_forgiven_not_one_at_each(compiled: bool) -> None:
    level = 64
    ring, _, edge = window = verify._WINDOWS[level]
    base = np.zeros((1, level, level), dtype=np.float32)
    chroma = np.zeros((1, 2, verify.CHROMA_GRID, verify.CHROMA_GRID), dtype=np.float32)
    top, both, middle = base.copy(), base.copy(), base.copy()
    top[0, ring : ring + edge, :] = 3.0  # within the top edge rows
    both[0] = top[0]
    both[0, level - ring - edge : level - ring, :] = 5.0  # and the bottom edge rows
    middle[0, 30:34, 30:34] = 2.0  # one 4 x 4 place inside
    idx = np.zeros(1, dtype=np.int64)

    def score(plane: np.ndarray) -> float:
        got = localscore.local_at(plane, chroma, idx, base, chroma, idx, window, 40.0, compiled)
        return float(got[0])

    assert score(top) == 0.0  # forgiven: the rest matches
    assert score(both) == 3.0  # not forgiven: the smaller band counts
    assert score(middle) == 2.0  # a small place that changed a lot
    # chroma: a difference of 40 (Cb + Cr) weighs as one unit of luma everywhere
    shifted = chroma.copy()
    shifted[0, 0, 4:12, 4:12] = 20.0
    shifted[0, 1, 4:12, 4:12] = 20.0
    got = localscore.local_at(base, shifted, idx, base, chroma, idx, window, 40.0, compiled)
    assert float(got[0]) == 1.0


def test_bad_windows_and_indices_are_refused() -> None:
    y, c = _tables(np.random.default_rng(0), 16, 3)
    idx = np.array([0, 2])
    with pytest.raises(ValueError, match="window rows"):
        localscore.local_at(y, c, idx, y, c, idx, (1, 2, 7), 40.0)
    with pytest.raises(IndexError, match="out of range"):
        localscore.local_at(y, c, np.array([0, 3]), y, c, idx, verify._WINDOWS[16], 40.0)
    with pytest.raises(IndexError, match="out of range"):
        localscore.local_at(y, c, idx, y, c, np.array([-1, 0]), verify._WINDOWS[16], 40.0)


def test_real_pair_scores_are_the_same_compiled_or_in_numpy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bundled photos, their planted copies, at sizes that use every level."""
    sigs = []
    for path in sorted(DATA.glob("*.jpg"))[:12]:
        image = Image.open(path).convert("RGB")
        for side in (30, 60, 400):  # levels 16, 32 (40 px short side), 64
            small = image.copy()
            small.thumbnail((side, side))
            for name in ("jpeg_q40", "bright+15", "crop_3", "watermark_10"):
                edit, quality = EDITS[name]
                out = decode_image(jpeg(edit(small), quality), max_pixels=10**8)
                assert isinstance(out, DecodedImage)
                sigs.append(out.signature)
    n = len(sigs)
    rng = np.random.default_rng(5)
    i, j = rng.integers(0, n, 3000), rng.integers(0, n, 3000)
    i[:n], j[:n] = np.arange(n), np.roll(np.arange(n), 1)  # neighbours: copies of one photo
    monkeypatch.setattr(localscore, "MIN_COMPILED_PAIRS", 0)  # compiled, whatever is imported
    compiled = verify.pair_scores(i, j, sigs)
    monkeypatch.setattr(localscore, "_kernels", lambda: None)
    numpy = verify.pair_scores(i, j, sigs)
    assert np.array_equal(compiled, numpy)
    assert (compiled[:n] <= verify.DEFAULT_THRESHOLD).sum() > n // 4  # copies verify


@pytest.mark.parametrize("level", verify.LEVELS)
def test_normalise_compiled_gives_numpys_mean_and_std_bits(level: int) -> None:
    rng = np.random.default_rng(20 + level)
    y = (rng.random((60, level, level)) * 255).astype(np.float32)
    y[:10] = np.round(y[:10] / 17) * 17  # the 4-bit levels a signature holds
    y[10:15] = 7.0  # flat: contrast below the floor
    y[15:20] *= np.float32(0.01)  # faint: std under the floor
    y[20:25] = verify._down(y[20:25], level) if level == 64 else y[20:25]
    compiled = localscore.normalise(y, 4.0)
    numpy = localscore.normalise(y, 4.0, compiled=False)
    assert np.array_equal(compiled, numpy)
    assert (compiled[10:15] == 0).all()  # flat planes: zero after the mean
    np.testing.assert_allclose(compiled[30:].std(axis=(1, 2)), 1.0, rtol=1e-4)


def test_normalise_follows_numpys_sum_order_at_other_sizes_too() -> None:
    """Blocks under 8, a tail after the blocks of 8, halves not at a power of two."""
    rng = np.random.default_rng(7)
    for shape in ((3, 2, 3), (3, 3, 3), (2, 50, 50), (2, 100, 90), (1, 200, 200)):
        y = (rng.random(shape) * 255).astype(np.float32)
        assert np.array_equal(localscore.normalise(y, 4.0), localscore.normalise(y, 4.0, False))


def _planes(rng: np.random.Generator, n: int) -> np.ndarray:
    y = (rng.random((40, n, n)) * 255).astype(np.float32)
    y[:10] = np.round(y[:10] / 17) * 17  # the 4-bit levels a signature holds
    y[10:20] = (y[10:20] - 128) / 37  # normalised planes
    return y


@pytest.mark.parametrize("n", verify.LEVELS)
def test_resample_compiled_gives_the_numpy_references_bits(n: int) -> None:
    """Every alignment's taps and the halving, compiled and in numpy: the same bits (the
    kernel must not fuse a product into its sum)."""
    rng = np.random.default_rng(40 + n)
    y = _planes(rng, n)
    taps = [localscore.zoom_taps(n, zoom, m) for m in (False, True) for zoom in verify.ZOOMS]
    taps.append(localscore.half_taps(n))
    for rows in taps:
        for cols in taps:
            if rows[0].shape != cols[0].shape:
                continue
            got = localscore.resample(y, rows, cols)
            numpy = localscore.resample_numpy(y, rows, cols)
            assert np.array_equal(got, numpy) and numpy.flags.c_contiguous
            assert np.array_equal(
                localscore.normalise(got, 4.0), localscore.normalise(numpy, 4.0, False)
            )


def test_alignments_zoom_bilinearly_mirror_exactly_and_levels_average() -> None:
    """What the taps mean: the mirror alone reverses the columns bit for bit; a zoom is
    the bilinear zoom about the centre (in float64 here); a coarser level is the mean of
    its 2 x 2 or 4 x 4 cells."""
    rng = np.random.default_rng(5)
    for n in verify.LEVELS:
        y = _planes(rng, n)
        mirror = localscore.resample(y, *verify._ALIGN_TAPS[n, (True, 0)])
        assert np.array_equal(mirror, y[:, :, ::-1])
        for mirrored in (False, True):
            for z, zoom in enumerate(verify.ZOOMS):
                centres = (np.arange(n) + 0.5 - n / 2) / zoom + n / 2 - 0.5
                pos = np.clip(centres, 0, n - 1)
                m = np.zeros((n, n))  # the bilinear zoom as a matrix, in float64
                for t, p in enumerate(pos):
                    lo = int(np.floor(p))
                    m[t, lo] += 1 - (p - lo)
                    m[t, min(lo + 1, n - 1)] += p - lo
                src = y[:, :, ::-1] if mirrored else y
                want = m @ src.astype(np.float64) @ m.T
                got = localscore.resample(y, *verify._ALIGN_TAPS[n, (mirrored, z)])
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    y = _planes(rng, 64)
    for level in (32, 16):
        f = 64 // level
        want = y.astype(np.float64).reshape(-1, level, f, level, f).mean(axis=(2, 4))
        np.testing.assert_allclose(verify._down(y, level), want, rtol=1e-5, atol=1e-4)
        assert np.array_equal(verify._down(y, level), verify._down(y, level, compiled=False))


def test_numba_is_imported_for_many_pairs_only() -> None:
    """A process that has not imported numba scores a few pairs in numpy (importing it
    costs more than it saves); from MIN_COMPILED_PAIRS pairs, compiled."""
    script = (
        "import sys, numpy as np\n"
        "from mitigate import localscore, verify\n"
        "sigs = [bytes(verify.SIG_BYTES - 1) + bytes([verify.SIG_VERSION])] * 3\n"
        "localscore.MIN_COMPILED_PAIRS = int(sys.argv[1])\n"
        "verify.pair_scores([0, 1, 2] * 10, [1, 2, 0] * 10, sigs)\n"
        "print('numba' in sys.modules)\n"
    )
    for minimum, imported in ((31, "False"), (30, "True")):
        out = subprocess.run(
            [sys.executable, "-c", script, str(minimum)], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == imported
