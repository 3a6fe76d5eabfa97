"""A tar sample's other members (``KEY.cls``, ``KEY.npy``, masks) go into its kept and
quarantine shard byte for byte; they were dropped, so a cleaned WebDataset lost its
labels and precomputed arrays. A second caption member, which no filter read, is
never copied."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from PIL import Image

from conftest import quarantine_run
from mitigate.config import load_config
from mitigate.pipeline.run import redecide
from mitigate.samples import CHUNK_BYTES, SampleReader, extra_members, shard_sample
from mitigate.sources import index_tar

BIG = 2 * CHUNK_BYTES + 12_345  # copied in three chunks


def _jpeg(seed: int, side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side * 3 // 4), (seed * 37 % 256, seed * 91 % 256, 120)).save(
        buf, "JPEG"
    )
    return buf.getvalue()


def _mask(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (16, 12), seed).save(buf, "PNG")
    return buf.getvalue()


def _input(path: Path) -> dict[str, dict[str, bytes]]:
    """A tar written by webdataset's own writer: samples with a class label, a numpy
    array, a segmentation mask, a member of several MiB, and a second caption. The
    sample ``small`` is dropped by ``image_quality``. Returns the members as written."""
    rng = np.random.default_rng(5)
    samples = {
        "a": {"jpg": _jpeg(1, 80), "txt": b"a cat", "cls": b"3", "npy": rng.random(7)},
        "b": {
            "jpg": _jpeg(2, 96),
            "txt": b"a dog",
            "caption": b"unfiltered words",
            "seg.png": _mask(2),
            "bin": rng.integers(0, 256, BIG, dtype=np.uint8).tobytes(),
            "json": {"url": "https://example.com/b", "license": "CC-BY"},
        },
        "c": {"jpg": _jpeg(3, 88), "txt": b"a plain sample"},
        "small": {"jpg": _jpeg(4, 20), "txt": b"too small", "cls": b"9"},
    }
    with wds.TarWriter(str(path)) as sink:
        for key, members in samples.items():
            sink.write({"__key__": key, **members})
    written: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            written.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return written


def _members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


@pytest.fixture(scope="module")
def copied(tmp_path_factory):
    root = tmp_path_factory.mktemp("extras")
    written = _input(root / "wds.tar")
    quarantine_run(root / "wds.tar", root / "out")
    return root, written


def test_kept_shards_hold_the_other_members_byte_for_byte(copied):
    root, written = copied
    rows = {r["key"]: r for r in pq.read_table(root / "out" / "manifest").to_pylist()}
    assert {k for k, r in rows.items() if r["state"] == "kept"} == {"a", "b", "c"}
    names = [n for n, _ in _members(root / "out" / "shards" / "shard-000000.tar")]
    # image, caption, sidecar, then the others by extension; never the second caption
    assert names == [
        *("a.jpg", "a.txt", "a.json", "a.cls", "a.npy"),
        *("b.jpg", "b.txt", "b.json", "b.bin", "b.seg.png"),
        *("c.jpg", "c.txt", "c.json"),
    ]
    data = dict(_members(root / "out" / "shards" / "shard-000000.tar"))
    for key, ext in [("a", "cls"), ("a", "npy"), ("b", "bin"), ("b", "seg.png"), ("a", "jpg")]:
        assert data[f"{key}.{ext}"] == written[key][ext], (key, ext)
    assert len(data["b.bin"]) == BIG
    sidecar = json.loads(data["b.json"])
    assert sidecar["license"] == "CC-BY"  # the input's own fields stay
    assert sidecar["mitigate"]["members_not_copied"] == ["caption"]
    assert "members_not_copied" not in json.loads(data["a.json"])["mitigate"]


def test_webdataset_reads_the_copied_members_back_as_it_wrote_them(copied):
    root, written = copied
    shard = str(root / "out" / "shards" / "shard-000000.tar")
    samples = {s["__key__"]: s for s in wds.WebDataset(shard, shardshuffle=False).decode()}
    assert samples["a"]["cls"] == 3
    expected = np.load(io.BytesIO(written["a"]["npy"]))
    assert np.array_equal(samples["a"]["npy"], expected)
    assert Image.open(io.BytesIO(samples["b"]["seg.png"])).size == (16, 12)
    assert "caption" not in samples["b"]


def test_quarantine_shards_hold_them_too(copied):
    root, written = copied
    (shard,) = (root / "out" / "quarantine").rglob("*.tar")
    data = dict(_members(shard))
    assert sorted(data) == ["small.cls", "small.jpg", "small.json", "small.txt"]
    assert data["small.cls"] == written["small"]["cls"] == b"9"
    assert json.loads(data["small.json"])["mitigate"]["manifest"]["reason"] == "image_too_small"


def test_a_redecide_writes_the_same_shards_from_the_manifest(copied, tmp_path):
    root, _ = copied
    config, _ = load_config(root / "out" / "config.yaml", [f"output.path={tmp_path / 're'}"])
    redecide(config, str(root / "out"))
    for shard in [
        "shards/shard-000000.tar",
        *(str(p.relative_to(root / "out")) for p in (root / "out" / "quarantine").rglob("*.tar")),
    ]:
        assert (tmp_path / "re" / shard).read_bytes() == (root / "out" / shard).read_bytes(), shard


def test_extra_members_false_writes_image_caption_and_sidecar_only(copied, tmp_path):
    root, _ = copied
    quarantine_run(root / "wds.tar", tmp_path / "out", "output.extra_members=false")
    names = [n for n, _ in _members(tmp_path / "out" / "shards" / "shard-000000.tar")]
    assert names == [f"{k}.{e}" for k in "abc" for e in ("jpg", "txt", "json")]


def test_a_member_is_read_a_chunk_at_a_time_and_a_shorter_shard_is_an_error(copied, tmp_path):
    root, written = copied
    with open(root / "wds.tar", "rb") as f:
        records = {r.key: r for r in index_tar(f, str(root / "wds.tar"))}
    copied_members, not_copied = extra_members(records["b"])
    assert [m.ext for m in copied_members] == ["bin", "seg.png"] and not_copied == ("caption",)
    (big,) = [m for m in copied_members if m.ext == "bin"]
    with SampleReader(lambda p: open(p, "rb")) as reader:
        chunks = list(reader.chunks(records["b"], big))
    assert [len(c) for c in chunks] == [CHUNK_BYTES, CHUNK_BYTES, 12_345]
    assert b"".join(chunks) == written["b"]["bin"]
    # the shard was cut inside the member after it was indexed
    cut = tmp_path / "cut.tar"
    cut.write_bytes((root / "wds.tar").read_bytes()[: big.offset + CHUNK_BYTES + 10])
    record = records["b"].__class__(**{**records["b"].__dict__, "source": str(cut)})
    with SampleReader(lambda p: open(p, "rb")) as reader:
        with pytest.raises(
            EOFError, match=r"cut.tar: b\.bin: expected \d+ bytes, got \d+: the input changed"
        ):
            list(reader.chunks(record, big))


def test_names_a_shard_must_not_hold_are_not_copied(tmp_path):
    """Keys are refused with a backslash or a control character (a path escape, a
    terminal escape where the shard is unpacked); extensions were copied with them, and
    ``__key__`` made webdataset's reader refuse the cleaned shard."""
    members = {"jpg": _jpeg(1, 80), "txt": b"a cat", "cls": b"1"}
    members |= {"x\\..\\evil.bat": b"x", "a\x1b[31mb": b"y", "__key__": b"z", "__url__": b"u"}
    path = tmp_path / "odd.tar"
    with tarfile.open(path, "w") as tar:
        for ext, data in members.items():
            info = tarfile.TarInfo(f"k.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open(path, "rb") as f:
        (record,) = index_tar(f, str(path))
    copied, not_copied = extra_members(record)
    assert [m.ext for m in copied] == ["cls"]
    assert not_copied == ("__key__", "__url__", "a\x1b[31mb", "x\\..\\evil.bat")
    quarantine_run(path, tmp_path / "out")
    shard = str(tmp_path / "out" / "shards" / "shard-000000.tar")
    names = [n for n, _ in _members(Path(shard))]
    assert names == ["k.jpg", "k.txt", "k.json", "k.cls"]
    (sample,) = wds.WebDataset(shard, shardshuffle=False)
    assert sample["cls"] == b"1"
    sidecar = json.loads(dict(_members(Path(shard)))["k.json"])
    assert sidecar["mitigate"]["members_not_copied"] == list(not_copied)


def test_an_input_cut_after_its_index_names_the_sample(copied, tmp_path):
    root, _ = copied
    with open(root / "wds.tar", "rb") as f:
        records = {r.key: r for r in index_tar(f, str(root / "wds.tar"))}
    image = next(m for m in records["a"].members if m.ext == "jpg")
    cut = tmp_path / "cut.tar"
    cut.write_bytes((root / "wds.tar").read_bytes()[: image.offset + 10])
    record = records["a"].__class__(**{**records["a"].__dict__, "source": str(cut)})
    with SampleReader(lambda p: open(p, "rb")) as reader:
        with pytest.raises(RuntimeError, match=r"cut.tar: a: input changed during the run \(jpg"):
            shard_sample(reader, record)


def test_an_image_rewritten_at_its_size_after_it_was_hashed_is_refused(copied, tmp_path):
    """A kept shard's KEY.json names the image's sha256: bytes changed since the run
    hashed them (same size, so the tar still parses) were written under it."""
    import dataclasses
    import hashlib

    root, written = copied
    changed = tmp_path / "changed.tar"
    data = bytearray((root / "wds.tar").read_bytes())
    with open(root / "wds.tar", "rb") as f:
        records = {r.key: r for r in index_tar(f, str(changed))}
    image = next(m for m in records["c"].members if m.ext == "jpg")
    sha = hashlib.sha256(written["c"]["jpg"]).hexdigest()
    record = dataclasses.replace(records["c"], sha256=sha)
    changed.write_bytes(bytes(data))
    with SampleReader(lambda p: open(p, "rb")) as reader:
        assert shard_sample(reader, record).image == written["c"]["jpg"]
    data[image.offset + image.size - 3] ^= 0xFF
    changed.write_bytes(bytes(data))
    with SampleReader(lambda p: open(p, "rb")) as reader:
        with pytest.raises(
            RuntimeError,
            match=r"changed.tar: c: input changed during the run \(the image's sha256 is no longer",
        ):
            shard_sample(reader, record)


def test_an_extra_member_that_is_no_regular_file_is_listed_not_copied(tmp_path):
    """GNU tar --sparse (bsdtar by default) stores a file with holes as sparse; a sample
    with such an extra member (or a link) was an unsupported_member error whole, though
    its image and caption were fine (helper-41). An image that is a link still is."""
    import subprocess

    src = tmp_path / "src"
    src.mkdir()
    for key in ("s0", "s1", "s2"):
        (src / f"{key}.jpg").write_bytes(_jpeg(int(key[1]) + 1, 80))
        (src / f"{key}.txt").write_text(f"a sample {key}")
    with open(src / "s0.npy", "wb") as f:  # a hole, then data: stored sparse
        f.seek(2 * 1024 * 1024)
        f.write(b"END")
    (src / "s1.mask").symlink_to("s1.txt")
    (src / "s2.jpg").unlink()
    (src / "s2.jpg").symlink_to("s0.jpg")
    subprocess.run(
        ["tar", "--sort=name", "--sparse", "--format=posix", "-cf", str(tmp_path / "s.tar"), "."],
        cwd=src,
        check=True,
    )
    rows = quarantine_run(tmp_path / "s.tar", tmp_path / "out")
    by_key = {k.removeprefix("./"): r for k, r in rows.items()}
    assert (by_key["s0"]["state"], by_key["s1"]["state"]) == ("kept", "kept")
    assert by_key["s2"]["reason"] == "unsupported_member"  # its image: needed, not read
    data = dict(_members(tmp_path / "out" / "shards" / "shard-000000.tar"))
    names = {n.removeprefix("./") for n in data}
    assert {"s0.jpg", "s0.txt", "s1.jpg"} <= names and not {"s0.npy", "s1.mask"} & names
    sidecars = {n.removeprefix("./"): json.loads(b) for n, b in data.items() if n.endswith(".json")}
    assert sidecars["s0.json"]["mitigate"]["members_not_copied"] == ["npy"]
    assert sidecars["s1.json"]["mitigate"]["members_not_copied"] == ["mask"]


def test_a_link_named_as_a_mask_or_a_translation_is_an_extra_member_too(tmp_path):
    """A link KEY.seg.png (a mask) or KEY.de.txt (a translation) was read by its last
    extension as the sample's image or caption: the whole sample an unsupported_member
    error, where a link KEY.mask beside it was listed and the sample kept."""
    src = tmp_path / "src"
    src.mkdir()
    for key in ("s1", "s2"):
        (src / f"{key}.jpg").write_bytes(_jpeg(int(key[1]) + 1, 80))
        (src / f"{key}.txt").write_text(f"a sample {key}")
    (src / "s1.seg.png").symlink_to("s1.jpg")
    (src / "s2.de.txt").symlink_to("s2.txt")
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for path in sorted(src.iterdir()):
            tar.add(path, arcname=path.name)
    rows = quarantine_run(tmp_path / "s.tar", tmp_path / "out")
    assert (rows["s1"]["state"], rows["s2"]["state"]) == ("kept", "kept"), rows
    data = dict(_members(tmp_path / "out" / "shards" / "shard-000000.tar"))
    assert {"s1.jpg", "s1.txt", "s2.jpg", "s2.txt"} <= set(data)
    assert not {"s1.seg.png", "s2.de.txt"} & set(data)
    sidecars = {n: json.loads(b) for n, b in data.items() if n.endswith(".json")}
    assert sidecars["s1.json"]["mitigate"]["members_not_copied"] == ["seg.png"]
    assert sidecars["s2.json"]["mitigate"]["members_not_copied"] == ["de.txt"]
