"""The centre view (mitigate.hashing centre hash, mitigate.centre candidate pairs): real
copies it proposes where pHash does not, the union search against brute force, the
frame gate, and samples without a centre hash (old manifests)."""

from __future__ import annotations

import dataclasses
import functools
import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hash_strategies import BASE, DERIVED
from hypothesis import given, settings
from hypothesis import strategies as st
from near_edits import EDITS, jpeg
from PIL import Image

from mitigate import centre, hashing, neardup, output, verify
from mitigate.decode import DecodedImage, decode_image
from mitigate.near import HashItem, decide_near_duplicates
from mitigate.records import SampleRecord

DATA = Path(__file__).resolve().parent.parent / "data" / "near_eval"
K = 10


def _decode(data: bytes) -> DecodedImage:
    out = decode_image(data, max_pixels=10**8)
    assert isinstance(out, DecodedImage)
    return out


def _views(image: Image.Image, quality: int = 92) -> DecodedImage:
    return _decode(jpeg(image, quality))


def _dist(a: tuple[int, int], b: tuple[int, int]) -> int:
    """The pair distance rule (pHash vs pHash and vs mirror) on one view."""
    return min(
        hashing.hamming(a[0], b[0]), hashing.hamming(a[0], b[1]), hashing.hamming(a[1], b[0])
    )


@pytest.mark.parametrize(
    ("file", "edit"),
    [
        ("photos-coffee.jpg", "watermark_10"),
        ("photos-coffee.jpg", "crop_3"),
        ("food-kiwi.jpg", "watermark_10"),
        ("letters-O_filled.jpg", "crop_3"),
    ],
)
def test_centre_view_proposes_edge_edited_copies_pHash_misses(file: str, edit: str) -> None:
    with Image.open(DATA / file) as im:
        image = im.convert("RGB")
    fn, quality = EDITS[edit]
    a, b = _views(image), _views(fn(image), quality)
    assert a.centre is not None and b.centre is not None
    assert _dist((a.phash, a.phash_mirror), (b.phash, b.phash_mirror)) > K
    assert _dist(a.centre, b.centre) <= K
    # and the pair passes verification (the copy is then removed)
    assert verify.score(a.signature, b.signature) <= verify.DEFAULT_THRESHOLD


def test_centre_hash_comes_from_phash_thumbnail_and_mirrors() -> None:
    """phash_views gives phash_pair's hashes plus the centre pair of the same thumbnail;
    the centre mirror hash is the centre hash of the mirrored thumbnail (bits equal on
    every bundled image), and it differs from pHash."""
    seen = set()
    for path in sorted(DATA.glob("*.jpg")):
        with Image.open(path) as im:
            image = im.convert("RGB")
        views = hashing.phash_views(image, exact=True)
        assert views[:2] == hashing.phash_pair(image, exact=True)
        thumb = hashing.gray_thumbnail(image)
        assert views[2:] == hashing.centre_pair_from_thumbnail(thumb)
        flipped = hashing.centre_pair_from_thumbnail(np.fliplr(thumb))
        assert flipped == (views[3], views[2]), path.name
        seen.add(views[2] == views[0])
        decoded = _decode(path.read_bytes())
        assert decoded.centre == hashing.phash_views(decoded.working, exact=False)[2:]
    assert seen == {False}


def test_hex_pair_round_trips_and_names_bad_input() -> None:
    text = hashing.to_hex_pair(1, 2**64 - 1)
    assert text == "0000000000000001" + "f" * 16
    assert hashing.from_hex_pair(text.upper()) == (1, 2**64 - 1)
    with pytest.raises(ValueError, match="32 hex digits"):
        hashing.from_hex_pair("00ff")
    c, cm, present = centre.centre_arrays([text, None])
    assert c.tolist() == [1, 0] and cm.tolist() == [2**64 - 1, 0]
    assert present.tolist() == [True, False]


def test_merge_views_keeps_smallest_distance_and_both_views() -> None:
    i, j, d, v = centre.merge_views(
        np.array([3, 1, 1, 5, 2]),
        np.array([1, 3, 4, 5, 9]),
        np.array([7, 4, 2, 0, 1]),
        np.array([centre.PHASH, centre.CENTRE, centre.PHASH, centre.CENTRE, centre.CENTRE]),
    )
    assert list(zip(i.tolist(), j.tolist(), d.tolist(), v.tolist(), strict=True)) == [
        (1, 3, 4, centre.PHASH | centre.CENTRE),
        (1, 4, 2, centre.PHASH),
        (2, 9, 1, centre.CENTRE),
    ]  # (5, 5) is a self pair: dropped


@functools.cache
def _sig(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return verify.signature(image.resize((width, height), Image.Resampling.NEAREST))


SIZES = [(64, 64), (66, 64), (64, 80), None]  # None: no signature


@settings(max_examples=60, deadline=None)
@given(
    base_p=BASE,
    derived_p=DERIVED,
    base_c=BASE,
    derived_c=DERIVED,
    extra=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=80, max_size=80),
)
def test_union_search_is_the_brute_force_union_of_both_views(
    base_p, derived_p, base_c, derived_c, extra
) -> None:
    """candidate_pairs = pairs within k on pHash, plus pairs within k on the centre view
    whose frames agree (both signatures, aspect within ASPECT_GATE); distance the
    smaller of the views'. Items without a centre hash join through pHash only."""
    p, m = neardup.clustered_hashes(base_p, derived_p)
    c, cm = neardup.clustered_hashes(base_c, derived_c)
    n = min(p.size, c.size)
    if n < 2:
        return
    p, m, c, cm = p[:n], m[:n], c[:n], cm[:n]
    sizes = [SIZES[extra[t][0]] for t in range(n)]
    sigs = [None if s is None else _sig(*s, seed=t % 5) for t, s in enumerate(sizes)]
    has_c = [not extra[t][1] or t % 2 == 0 for t in range(n)]
    hexes = [hashing.to_hex_pair(int(c[t]), int(cm[t])) if has_c[t] else None for t in range(n)]
    pairs, views = centre.candidate_pairs(p, m, hexes, sigs, K, mode="exact")

    want = {}
    aspect = [None if s is None else np.log(s[0] / s[1]) for s in sizes]
    for a in range(n):
        for b in range(a + 1, n):
            dp = int(
                neardup.pair_distance(p[a : a + 1], m[a : a + 1], p[b : b + 1], m[b : b + 1])[0]
            )
            dc = 99
            if has_c[a] and has_c[b]:
                dc = int(
                    neardup.pair_distance(c[a : a + 1], cm[a : a + 1], c[b : b + 1], cm[b : b + 1])[
                        0
                    ]
                )
            frames = (
                aspect[a] is not None
                and aspect[b] is not None
                and abs(aspect[a] - aspect[b]) <= centre.ASPECT_GATE
            )
            view = (centre.PHASH if dp <= K else 0) | (centre.CENTRE if dc <= K else 0)
            if dp <= K or (dc <= K and frames):
                want[(a, b)] = (min(dp, dc), view)
    got = {
        (a, b): (d, v)
        for a, b, d, v in zip(
            pairs.i.tolist(), pairs.j.tolist(), pairs.dist.tolist(), views.tolist(), strict=True
        )
    }
    assert got == want
    alone, _ = centre.candidate_pairs(p, m, None, sigs, K, mode="exact")
    assert alone.same_as(neardup.find_near_duplicates(p, m, K, mode="exact"))


def _items_from_images() -> list[HashItem]:
    """Originals of the bundled set and their watermark / crop copies, as the pipeline
    hashes them."""
    items = []
    for path in sorted(DATA.glob("*.jpg")):
        with Image.open(path) as im:
            image = im.convert("RGB")
        for name, (fn, quality) in [
            ("orig", (lambda x: x, 92)),
            *[(e, EDITS[e]) for e in ("watermark_10", "crop_3")],
        ]:
            d = _views(fn(image), quality)
            assert d.centre is not None
            items.append(
                HashItem(
                    f"{path.stem}~{name}",
                    hashing.to_hex(d.phash),
                    hashing.to_hex(d.phash_mirror),
                    d.width * d.height,
                    d.signature,
                    hashing.to_hex_pair(*d.centre),
                )
            )
    return items


def test_centre_view_removes_more_copies_and_old_items_fall_back_to_phash() -> None:
    items = _items_from_images()
    kw = {"verify_threshold": verify.DEFAULT_THRESHOLD, "keep_rule": "medoid", "mode": "exact"}
    with_c, report = decide_near_duplicates(items, K, **kw)
    without, report_off = decide_near_duplicates(items, K, centre_view=False, **kw)
    assert report["verify"]["centre_view"] and report["verify"]["centre_only_pairs"] > 0
    assert not report_off["verify"]["centre_view"]

    def removed(decisions) -> set[str]:
        return {d.key for d in decisions if d.reason == "near_duplicate"}

    # more copies removed, and only copies of the same original
    assert removed(without) < removed(with_c)
    for d in with_c:
        if d.reason == "near_duplicate":
            assert d.key.split("~")[0] == d.duplicate_of.split("~")[0], d
            assert d.distance <= K  # the smaller of the two views' distances
    # items without a centre hash (a manifest written before the column existed)
    # decide exactly as with the centre view off
    old = [dataclasses.replace(it, centre=None) for it in items]
    assert decide_near_duplicates(old, K, **kw)[0] == without
    # without verification the centre view is not used (it adds unverified merges)
    unverified, rep = decide_near_duplicates(items, K, mode="exact", keep_rule="medoid")
    assert unverified == decide_near_duplicates(old, K, mode="exact", keep_rule="medoid")[0]
    assert rep["verify"]["centre_view"] is False


def test_lsh_mode_measures_the_centre_views_recall_too() -> None:
    items = _items_from_images()
    kw = {"verify_threshold": verify.DEFAULT_THRESHOLD, "keep_rule": "medoid", "mode": "lsh"}
    _, report = decide_near_duplicates(items, K, **kw)
    est = report["pair_recall_centre"]
    assert est["queries"] > 0 and 0.5 <= est["estimate"] <= 1.0
    assert report["pair_recall"]["queries"] > 0
    _, off = decide_near_duplicates(items, K, centre_view=False, **kw)
    assert "pair_recall_centre" not in off


def test_manifest_without_the_column_reads_as_no_centre_hash() -> None:
    record = SampleRecord(key="a", source="s.tar", index=0, phash="0" * 16, phash_mirror="f" * 16)
    record.phash_centre = hashing.to_hex_pair(5, 6)
    buf = io.BytesIO()
    output.write_manifest([record], [], buf)
    table = pq.read_table(io.BytesIO(buf.getvalue()))
    assert table.column("phash_centre").to_pylist() == [hashing.to_hex_pair(5, 6)]
    old = table.drop_columns(["phash_centre"])
    assert isinstance(old, pa.Table)
    row = old.to_pylist()[0]
    assert output.record_from_row(row, []).phash_centre is None
    assert output.record_from_row(table.to_pylist()[0], []).phash_centre == record.phash_centre
