"""The one sample reader (mitigate.samples) and the one run-folder Layout (mitigate.layout)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems

from mitigate.layout import OUTPUT_NAMES, SUMMARY, Layout, join
from mitigate.pipeline import outdir
from mitigate.records import Member, SampleRecord
from mitigate.samples import SampleReader, shard_sample


def _shard(path: Path, members: dict[str, bytes]) -> dict[str, Member]:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            out[m.name] = Member(m.name.rsplit(".", 1)[1], m.offset_data, m.size)
    return out


class CountingOpener:
    def __init__(self) -> None:
        self.opened: list[str] = []

    def __call__(self, path: str):
        self.opened.append(path)
        return open(path, "rb")


def test_reader_reads_members_and_files_with_one_handle_per_source(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    ma = _shard(a, {"x.jpg": b"JPEG-x", "x.txt": b"cap x", "y.jpg": b"JPEG-y", "y.txt": b"y"})
    mb = _shard(b, {"z.png": b"PNG-z", "z.txt": b"cap z"})
    (tmp_path / "t.webp").write_bytes(b"WEBP" * 10)
    x = SampleRecord("x", str(a), 0, members=(ma["x.jpg"], ma["x.txt"]), image_ext="jpg")
    y = SampleRecord("y", str(a), 1, members=(ma["y.jpg"], ma["y.txt"]), image_ext="jpg")
    z = SampleRecord("z", str(b), 0, members=(mb["z.png"], mb["z.txt"]), image_ext="png")
    t = SampleRecord("t", "table.parquet", 0, image_path=str(tmp_path / "t.webp"))
    opener = CountingOpener()
    with SampleReader(opener) as reader:
        assert reader.members(x, {"jpg", "txt"}) == {"jpg": b"JPEG-x", "txt": b"cap x"}
        assert reader.image(y) == b"JPEG-y"
        assert reader.image(z) == b"PNG-z"
        assert reader.image(t) == b"WEBP" * 10
        assert reader.file(str(tmp_path / "t.webp"), limit=5) == b"WEBPWE"  # limit + 1 bytes
    # a.tar opened once for x and y; b.tar once; the table image once per read
    assert opener.opened == [str(a), str(b), str(tmp_path / "t.webp"), str(tmp_path / "t.webp")]


def test_reader_reports_a_shard_shorter_than_indexed(tmp_path):
    a = tmp_path / "a.tar"
    ma = _shard(a, {"x.jpg": b"JPEG-x"})
    record = SampleRecord(
        "x", str(a), 0, members=(Member("jpg", ma["x.jpg"].offset, 10**6),), image_ext="jpg"
    )
    with SampleReader(CountingOpener()) as reader, pytest.raises(EOFError, match="expected"):
        reader.image(record)


@pytest.mark.parametrize("root", ["out", "out/", "/abs/out", "gs://bucket/out", "gs://b/out/"])
def test_layout_joins_like_beam(root):
    layout = Layout(root)
    assert layout.shard(3) == FileSystems.join(root, "shards", "shard-000003.tar")
    assert layout.manifest_part(0) == FileSystems.join(root, "manifest", "part-000000.parquet")
    assert layout.embeddings_part("nsfw", 2) == FileSystems.join(
        root, "embeddings", "nsfw", "part-000002.npy"
    )
    assert layout.summary == FileSystems.join(root, "summary.json")
    assert layout.config == FileSystems.join(root, "config.yaml")
    assert layout.embeddings_beside("nsfw", layout.manifest_part(7)) == layout.embeddings_part(
        "nsfw", 7
    )
    assert join(root) == FileSystems.join(root)


def test_the_output_folder_guard_uses_the_layout_names():
    assert outdir.OUTPUT_NAMES == OUTPUT_NAMES and outdir.SUMMARY == SUMMARY
    assert {"shards", "manifest", "embeddings", "config.yaml", "report.html"} <= set(OUTPUT_NAMES)


def test_shard_sample_gives_what_a_shard_holds_and_refuses_a_changed_input(tmp_path):
    a = tmp_path / "a.tar"
    ma = _shard(
        a, {"x.jpg": b"JPEG-x", "x.txt": b"cap x", "y.jpg": b"JPEG-y", "y.txt": b"\xff\xfe"}
    )
    (tmp_path / "t.webp").write_bytes(b"WEBP")
    x = SampleRecord("x", str(a), 0, members=(ma["x.jpg"], ma["x.txt"]), image_ext="jpg")
    # y's caption was valid when it was scored; its bytes now are not UTF-8
    y = SampleRecord("y", str(a), 1, members=(ma["y.jpg"], ma["y.txt"]), image_ext="jpg")
    t = SampleRecord("t", "table.parquet", 0, image_path=str(tmp_path / "t.webp"), caption="c t")
    with SampleReader(CountingOpener()) as reader:
        got = shard_sample(reader, x)
        assert (got.image, got.caption, got.members) == (b"JPEG-x", b"cap x", ())
        got = shard_sample(reader, t)
        assert (got.image, got.caption, got.meta, got.members) == (b"WEBP", b"c t", None, ())
        with pytest.raises(RuntimeError, match="y: input changed during the run"):
            shard_sample(reader, y)
