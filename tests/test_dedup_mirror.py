"""``dedup.mirror``: with the default a horizontally mirrored copy is a near duplicate;
with ``mirror: false`` it is another image (b/d, signs) in every search mode, while its
re-saved and half-size copies are still dropped. Real photos (the bundled sample data,
data/near_eval): the verification marker, hot groups and a reference list through
NearDedup in both graphs, and whole runs (one worker, partitions forced tiny,
redecide of a default run)."""

from __future__ import annotations

import functools
import io
import tarfile
from pathlib import Path

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from PIL import Image, ImageOps

from mitigate import hashing, verify
from mitigate.config import DecodeConfig, validate_config
from mitigate.near import HashItem, without_mirror
from mitigate.pipeline.near import NearDedup
from mitigate.pipeline.run import redecide, run
from mitigate.records import SampleRecord

REPO = Path(__file__).resolve().parents[1]
DONKEY = REPO / "data" / "near_eval" / "animals-donkey.jpg"


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _open(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


@pytest.fixture(scope="module")
def donkey() -> Image.Image:
    im = Image.open(DONKEY).convert("RGB")
    im.thumbnail((160, 160))
    return im


def test_a_marked_signature_is_verified_without_mirroring(donkey):
    """The mirror image passes verification unmarked and fails marked (either side);
    a JPEG re-save and a half-size copy pass either way; marking is idempotent and the
    marked signature is still a signature of this version."""
    sig = verify.signature(donkey)
    flip = verify.signature(ImageOps.mirror(donkey))
    resave = verify.signature(_open(_jpeg(donkey, 50)))
    half = verify.signature(donkey.resize((donkey.width // 2, donkey.height // 2)))
    mark = verify.unmirrored
    assert verify.score(sig, flip) <= verify.DEFAULT_THRESHOLD
    assert verify.score(mark(sig), flip) > verify.DEFAULT_THRESHOLD
    assert verify.score(sig, mark(flip)) == verify.score(mark(sig), mark(flip))
    for copy in (resave, half):
        assert verify.score(mark(sig), mark(copy)) <= verify.DEFAULT_THRESHOLD
    assert mark(mark(sig)) == mark(sig) != sig and mark(sig)[:-1] == sig[:-1]
    assert verify.is_signature(mark(sig)) and mark(None) is None


def test_an_item_without_mirror_has_its_own_hashes_as_mirrors():
    item = HashItem("k", "0123456789abcdef", "fedcba9876543210", 1, None, "1" * 16 + "2" * 16)
    off = without_mirror(item)
    assert (off.phash, off.mirror, off.centre) == (item.phash, item.phash, "1" * 32)
    assert without_mirror(off) == off


# ------------------------------------------------ hot groups and references, both graphs


def _hashes(image: Image.Image) -> tuple[str, str]:
    p, m = hashing.phash_pair(image)
    return hashing.to_hex(p), hashing.to_hex(m)


def _records(donkey: Image.Image) -> tuple[list[SampleRecord], str]:
    """Two hot groups (70 samples each, one pHash a group, signatures of real re-saved
    copies): the photo and its mirror image; 3 copies of a third image, whose mirror
    image is on the reference list returned."""
    out = []

    def group(prefix: str, image: Image.Image, n: int) -> None:
        p, m = _hashes(image)
        sigs = [verify.signature(_open(_jpeg(image, q))) for q in range(50, 96, 5)]
        for t in range(n):
            out.append(
                SampleRecord(
                    f"{prefix}{t:03d}",
                    "mem://x",
                    len(out),
                    width=160 - t % 3,
                    height=120,
                    phash=p,
                    phash_mirror=m,
                    signature=sigs[t % len(sigs)],
                )
            )

    third = donkey.rotate(90, expand=True)
    group("a", donkey, 70)
    group("f", ImageOps.mirror(donkey), 70)
    group("e", third, 3)
    p3, m3 = _hashes(ImageOps.mirror(third))
    return out, f"eval-flip,{p3},{m3}\n"


_GOT: dict[str, list] = {}


def _keep(name: str, values) -> None:
    _GOT[name] = list(values)


def _near(records: list[SampleRecord], against: Path, partition: str, mirror: bool):
    config = validate_config(
        {
            "dedup": {
                "k": 10,
                "mirror": mirror,
                "against": [str(against)],
                "partition": partition,
                "max_partition_size": 64,
                "clusterings": 4,
            }
        }
    )
    _GOT.clear()
    with TestPipeline() as pl:
        out, report = pl | beam.Create(records) | NearDedup(config.dedup, DecodeConfig())
        rows = out | beam.Map(lambda r: (r.key, r.state, r.reason, r.duplicate_of))
        assert_that(rows, functools.partial(_keep, "rows"), label="Rows")
        assert_that(report, functools.partial(_keep, "report"), label="Report")
    return {r[0]: r[1:] for r in _GOT["rows"]}, _GOT["report"][0]


@pytest.mark.slow
@pytest.mark.parametrize("partition", ["none", "clusters"])
def test_hot_groups_and_references_match_mirror_images_only_with_mirror_on(
    donkey, tmp_path, partition
):
    records, listed = _records(donkey)
    against = tmp_path / "eval.txt"
    against.write_text(listed)
    rows, report = _near(records, against, partition, mirror=True)
    assert report["hot"]["groups"] == 2
    kept = sorted(k for k, r in rows.items() if r[0] == "pending")
    assert len(kept) == 1 and kept[0][0] in "af"  # the photo and its mirror: one group
    assert {rows[f"e{t:03d}"][1:] for t in range(3)} == {("eval_overlap", "eval-flip")}

    rows, report = _near(records, against, partition, mirror=False)
    assert report["hot"]["groups"] == 2 and report["eval_overlap"] == 0
    kept = sorted(k for k, r in rows.items() if r[0] == "pending")
    assert [k[0] for k in kept] == ["a", "e", "f"]  # each group keeps one of its own
    dropped = {k: r for k, r in rows.items() if r[0] == "duplicate"}
    assert len(dropped) == len(records) - 3
    assert all(r[1] == "near_duplicate" and r[2][0] == k[0] for k, r in dropped.items())
    if partition == "clusters":
        assert report["partition"] == "clusters" and report["partitions"] > 1


# --------------------------------------------------------------- whole runs, both graphs


@pytest.fixture(scope="module")
def shard(tmp_path_factory, photos) -> Path:
    """Three bundled photos, each with a mirrored, a JPEG q50 and a half-size copy."""
    path = tmp_path_factory.mktemp("mirror") / "mirror.tar"
    edits = {
        "original": lambda im: im,
        "flip": ImageOps.mirror,
        "q50": lambda im: im,
        "half": lambda im: im.resize((im.width // 2, im.height // 2)),
    }
    with tarfile.open(path, "w") as tar:
        for g, data in enumerate(sorted(photos.values(), key=len)[-3:]):
            image = _open(data)
            for name, edit in edits.items():
                jpeg = _jpeg(edit(image), 50 if name == "q50" else 90)
                for member, body in ((f"g{g}_{name}.jpg", jpeg), (f"g{g}_{name}.txt", b"x")):
                    info = tarfile.TarInfo(member)
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
    return path


def _config(data: Path, out: Path, **dedup):
    return validate_config(
        {
            "input": {"paths": [str(data)]},
            "output": {"path": str(out)},
            "dedup": {"k": 10, **dedup},
            "filters": [],
        }
    )


def _states(out: Path) -> dict[str, tuple]:
    rows = pq.read_table(out / "manifest").to_pylist()
    return {r["key"]: (r["state"], r["reason"], r["duplicate_of"]) for r in rows}


def _check(states: dict[str, tuple], mirror: bool) -> None:
    for g in range(3):
        group = {k: v for k, v in states.items() if k.startswith(f"g{g}_")}
        kept = {k for k, v in group.items() if v[0] == "kept"}
        for name in ("q50", "half"):  # a re-save and a half-size copy: always dropped
            assert group[f"g{g}_{name}"][:2] == ("duplicate", "near_duplicate"), group
            assert group[f"g{g}_{name}"][2] in kept
        if mirror:  # one group: the mirror image is a copy (or the copy kept: medoid)
            assert len(kept) == 1, group
        else:  # the mirror image is another image: kept, and no copy is its duplicate
            assert f"g{g}_flip" in kept and len(kept) == 2, group
            assert all(v[2] != f"g{g}_flip" for v in group.values()), group


TINY = {"partition": "clusters", "max_partition_size": 4, "clusterings": 8}


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["none", "clusters"])
def test_a_mirrored_photo_is_kept_with_mirror_off_and_dropped_by_default(shard, tmp_path, graph):
    settings = {"partition": "none"} if graph == "none" else TINY
    summary = run(_config(shard, tmp_path / "default", **settings))
    _check(_states(tmp_path / "default"), mirror=True)
    summary = run(_config(shard, tmp_path / "off", mirror=False, **settings))
    _check(_states(tmp_path / "off"), mirror=False)
    if graph == "clusters":
        assert summary["dedup"]["partition"] == "clusters" and summary["dedup"]["partitions"] > 1
    else:  # redecide of the default run (its stored hashes and signatures), mirror off
        again = _config(shard, tmp_path / "again", mirror=False, **settings)
        redecide(again, str(tmp_path / "default"))
        assert _states(tmp_path / "again") == _states(tmp_path / "off")
