"""Parquet tables that hold the images' bytes (Hugging Face datasets ``Image`` structs,
img2dataset's binary ``jpg`` column): read at decode time by row, a batch of rows at a
time, never at indexing; decided as the same samples in tars are."""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from mitigate.config import load_config
from mitigate.output import record_from_row
from mitigate.records import SampleRecord
from mitigate.samples import SampleReader
from mitigate.stages import load_payloads
from mitigate.table_rows import EmbeddedImages
from mitigate.tables import iter_table, table_problems

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = {"key_column": "key", "image_column": "image", "caption_column": "caption"}
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _open(path: str):
    return open(path, "rb")


def _tar_samples(tar_path: Path) -> list[tuple[str, bytes, str]]:
    """(key, image bytes, caption) of each sample of a tar with one image and a UTF-8
    caption (the others are errors of the tar's own making)."""
    members: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            data = tar.extractfile(member)
            if data is not None:
                key, _, ext = member.name.partition(".")
                members.setdefault(key, {})[ext] = data.read()
    out = []
    for key, found in members.items():
        images = [found[e] for e in ("jpg", "png", "webp") if e in found]
        try:
            caption = found.get("txt", b"").decode("utf-8")
        except UnicodeDecodeError:
            continue
        try:
            json.loads(found.get("json", b"{}"))
        except ValueError:
            continue
        others = set(found) - {"jpg", "png", "webp", "txt", "json"}
        if len(images) == 1 and caption.strip() and not others:
            out.append((key, images[0], caption))
    return out


def _config(out: Path, paths: list[str], *extra: str):
    config, _ = load_config(
        REPO / "configs" / "default.yaml",
        [
            f"input.paths={paths!r}",
            f"output.path={str(out)!r}",
            "filters=[{name: image_quality, min_side: 64, max_aspect_ratio: 4.0}, "
            "{name: caption_terms, category: violence, terms_file: terms/violence.txt}]",
            "rebalance.enabled=false",
            *extra,
        ],
    )
    return config


def _manifest(out: Path) -> dict[str, list[dict]]:
    """A run's manifest rows by key (a key the input repeats has several, in order)."""
    rows: dict[str, list[dict]] = {}
    for row in pq.read_table(out / "manifest").to_pylist():
        rows.setdefault(row["key"], []).append(row)
    return rows


@pytest.mark.slow
def test_a_datasets_parquet_of_the_sample_is_decided_as_its_tars_are(tmp_path, sample_dir):
    from mitigate.pipeline.run import run

    tars = [sample_dir / "shard-00000.tar", sample_dir / "shard-00001.tar"]
    samples = [s for t in tars for s in _tar_samples(t)]
    assert len(samples) >= 30
    table = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(
        pa.table(
            {
                "key": [k for k, _, _ in samples],
                # the file name a datasets Image keeps; the bytes decide the format
                "image": pa.array([{"bytes": d, "path": f"{k}.jpg"} for k, d, _ in samples], IMAGE),
                "caption": [c for _, _, c in samples],
            }
        ),
        table,
        row_group_size=7,  # several row groups, read in batches across their ends
    )
    with open(table, "rb") as f:
        assert table_problems(f, "parquet", DEFAULTS)[1] == []  # validate accepts it
    extra = ("output.quarantine=true", "output.quarantine_duplicates=true")
    run(_config(tmp_path / "tars", [str(t) for t in tars], *extra))
    run(_config(tmp_path / "table", [str(table)], *extra))
    by_tar, by_table = _manifest(tmp_path / "tars"), _manifest(tmp_path / "table")
    assert sum(map(len, by_table.values())) == len(samples)
    fields = ("state", "reason", "sha256", "phash", "signature", "duplicate_of")
    for key, rows in by_table.items():
        assert [[r[f] for f in fields] for r in rows] == [
            [r[f] for f in fields] for r in by_tar[key]
        ], key
        # named by the decoded format (none where it does not decode), not the path's
        assert [r["image_ext"] for r in rows] == [
            r["image_ext"] if r["format"] else None for r in by_tar[key]
        ]
        assert {(r["image_column"], r["image_path"]) for r in rows} == {("image", None)}
    states = Counter(r["state"] for rows in by_table.values() for r in rows)
    assert states["kept"] >= 25 and states["filtered"] >= 2 and states["duplicate"] >= 1
    # kept shards hold each kept sample's own bytes, named by their format
    images = {k: d for k, d, _ in reversed(samples)}  # a repeated key: its first
    shards = sorted(str(p) for p in (tmp_path / "table" / "shards").glob("*.tar"))
    written = 0
    for sample in wds.WebDataset(shards, shardshuffle=False):
        (row,) = [r for r in by_table[sample["__key__"]] if r["state"] == "kept"]
        assert sample[row["image_ext"]] == images[sample["__key__"]]
        assert sample["txt"].decode() == row["caption"]
        written += 1
    assert written == states["kept"]
    # quarantine shards too, and the report shows the table's images as the tars'
    quarantined = 0
    for folder in (tmp_path / "table" / "quarantine").iterdir():
        for sample in wds.WebDataset(sorted(map(str, folder.glob("*.tar"))), shardshuffle=False):
            meta = json.loads(sample["json"])["mitigate"]["manifest"]
            assert sample[meta["image_ext"]] == images[sample["__key__"]]
            quarantined += 1
    assert quarantined == states["filtered"] + states["duplicate"]
    # a redecide reads the images from the table again: the same kept shards
    from mitigate.pipeline.run import redecide

    config, _ = load_config(tmp_path / "table" / "config.yaml", [f"output.path={tmp_path / 're'}"])
    redecide(config, str(tmp_path / "table"))
    assert [p.read_bytes() for p in sorted((tmp_path / "re" / "shards").glob("*.tar"))] == [
        Path(p).read_bytes() for p in shards
    ]
    thumbs = [
        (out / "report.html").read_text().count("data:image/")
        for out in (tmp_path / "tars", tmp_path / "table")
    ]
    assert thumbs[1] == thumbs[0] > 0


def _img2dataset(path: Path, images: list[bytes | None], **write) -> Path:
    """A Parquet table as img2dataset writes one (``output_format=parquet``)."""
    n = len(images)
    pq.write_table(
        pa.table(
            {
                "key": [f"{i:09d}" for i in range(n)],
                "caption": [f"a photo, number {i}" for i in range(n)],
                "url": [f"https://example.com/{i}.jpg" for i in range(n)],
                "jpg": pa.array(images, pa.binary()),
            }
        ),
        path,
        **write,
    )
    return path


def test_an_img2dataset_jpg_column_is_read_and_a_bad_row_is_its_own_error(tmp_path, photos):
    from mitigate.pipeline.run import run

    jpegs = sorted((d for d in photos.values() if d[:2] == b"\xff\xd8"), key=len)
    small, large = jpegs[0], jpegs[-1]
    table = _img2dataset(
        tmp_path / "00000.parquet", [small, None, b"not an image", large, small[: len(small) // 3]]
    )
    with open(table, "rb") as f:
        used, problems = table_problems(f, "parquet", DEFAULTS)
    assert problems == [] and used["image_column"] == "jpg"  # a common name for it
    limit = (len(small) + len(large)) // 2
    summary = run(_config(tmp_path / "out", [str(table)], f"decode.max_image_bytes={limit}"))
    rows = pq.read_table(tmp_path / "out" / "manifest").to_pylist()
    assert [(r["state"], r["reason"]) for r in rows] == [
        ("kept", None),
        ("error", "missing_image"),
        ("error", "decode_error"),
        ("error", "image_too_large"),
        ("error", "decode_error"),
    ]
    assert rows[1]["detail"] == "column 'jpg', row 1 holds no image (null)"
    assert rows[3]["detail"] == f"column 'jpg', row 3: {len(large)} bytes > max_image_bytes {limit}"
    assert rows[0]["n_bytes"] == len(small) and rows[0]["image_ext"] == "jpg"
    assert summary["samples_written"] == 1


def _spy_batches(monkeypatch) -> list[list[str]]:
    asked: list[list[str]] = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        asked.append(list(kwargs.get("columns") or []))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    return asked


@pytest.mark.parametrize("statistics", [True, False])
def test_the_index_reads_no_image_bytes_where_statistics_tell(
    tmp_path, photos, monkeypatch, statistics
):
    image = next(iter(photos.values()))
    (tmp_path / "on-disk.jpg").write_bytes(image)
    rows = [{"bytes": image, "path": "a.jpg"}] * 3  # a row group of bytes only
    rows += [{"bytes": None, "path": "on-disk.jpg"}, {"bytes": image, "path": None}, None]
    path = tmp_path / "t.parquet"
    pq.write_table(
        pa.table({"key": list("abcdef"), "image": pa.array(rows, IMAGE), "caption": ["c"] * 6}),
        path,
        row_group_size=3,
        write_statistics=statistics,
    )
    asked = _spy_batches(monkeypatch)
    with open(path, "rb") as f:
        records = list(iter_table(f, str(path), "parquet", **DEFAULTS))
    assert [(r.key, r.image_column, r.image_path, r.reason) for r in records] == [
        ("a", "image", None, None),
        ("b", "image", None, None),
        ("c", "image", None, None),
        ("d", None, str(tmp_path / "on-disk.jpg"), None),  # a datasets Image naming a file
        ("e", "image", None, None),
        ("f", None, None, "missing_image"),  # a null struct: no image at all
    ]
    read_bytes = [c for c in asked if "image" in c or "image.bytes" in c]
    # the first row group's statistics say "bytes in every row"; the second's are mixed
    assert read_bytes == ([["image.bytes"]] if statistics else [["image.bytes"]] * 2)
    # and both image kinds are read back at decode time, the bytes from the table
    with SampleReader(_open) as reader:
        assert [reader.image(r) for r in records[:5]] == [image] * 5


def test_embedded_images_reads_rows_in_order_a_batch_at_a_time(tmp_path, monkeypatch):
    images = [bytes([i]) * (i + 1) if i % 10 else None for i in range(100)]
    path = _img2dataset(tmp_path / "t.parquet", images, row_group_size=40)
    asked = _spy_batches(monkeypatch)
    with open(path, "rb") as f:
        table = EmbeddedImages(f, "jpg")
        assert [table.get(i) for i in range(100)] == images
        assert len(asked) == 3  # one pass over each of the 3 row groups
        assert table.get(97) == images[97] and len(asked) == 3  # in the batch held
        assert table.get(5) == images[5] and len(asked) == 4  # behind: its group again
        with pytest.raises(KeyError, match=re.escape("no row 100 (it has 100)")):
            table.get(100)
    with open(path, "rb") as f, pytest.raises(KeyError, match="'caption' holds no image bytes"):
        EmbeddedImages(f, "caption")


def test_chunks_of_a_one_row_group_table_read_it_once(tmp_path, monkeypatch):
    """Parquet has no row offset: each chunk of a table of one row group (img2dataset's,
    pyarrow's default) read it from its first row, rows x chunks in all (helper-38: 2-3.6x
    the time of 500-row groups at 6,000 rows). A process keeps the table open between
    chunks and goes on from where the last chunk stopped; a file replaced at the path is
    read anew."""
    from mitigate import samples

    monkeypatch.setattr(samples, "_TABLES", samples._OpenTables(samples.OPEN_TABLES))
    images = [bytes([i % 251]) * (i % 7 + 1) for i in range(300)]
    path = _img2dataset(tmp_path / "t.parquet", images, row_group_size=300)
    with open(path, "rb") as f:
        records = list(iter_table(f, str(path), "parquet", **DEFAULTS))
    asked = _spy_batches(monkeypatch)
    got = []
    for start in range(0, 300, 30):  # ten chunks, as the decode step reads them
        got += [d for _, d in load_payloads(records[start : start + 30], _open, 10**8)]
    assert got == images
    assert len(asked) == 1  # one pass over the row group (ten before)
    # a chunk behind the table's place starts the row group again, and is right
    again = load_payloads(records[5:7], _open, 10**8)
    assert [d for _, d in again] == images[5:7] and len(asked) == 2
    # the file replaced at its path (another inode, size or time): read anew
    path.unlink()
    other = [b"new" + i for i in images]
    _img2dataset(path, other, row_group_size=300)
    assert [d for _, d in load_payloads(records[:2], _open, 10**8)] == other[:2]


def test_a_table_changed_since_it_was_indexed_is_a_read_error(tmp_path, photos):
    image = next(iter(photos.values()))
    path = _img2dataset(tmp_path / "t.parquet", [image, image])
    with open(path, "rb") as f:
        records = list(iter_table(f, str(path), "parquet", **DEFAULTS))
    gone = SampleRecord(key="x", source=str(path), index=7, image_column="jpg", caption="c")
    other = SampleRecord(key="y", source=str(path), index=0, image_column="url", caption="c")
    out = load_payloads([*records, gone, other], _open, max_image_bytes=10**8)
    assert [r.reason for r, _ in out] == [None, None, "read_error", "read_error"]
    assert out[0][1] == image and out[0][0].n_bytes == len(image)
    assert "no row 7 (it has 2)" in out[2][0].detail
    assert out[3][0].detail == "cannot read column 'url', row 0: column 'url' holds no image bytes"


def test_a_manifest_row_of_a_table_image_reads_its_bytes_back(tmp_path, photos):
    """What review, relabel exports and the report do with a finished run's row."""
    image = next(iter(photos.values()))
    path = _img2dataset(tmp_path / "t.parquet", [image])
    with open(path, "rb") as f:
        (record,) = iter_table(f, str(path), "parquet", **DEFAULTS)
    from mitigate.output import manifest_row

    row = manifest_row(record, [])
    assert row["image_column"] == "jpg"
    with SampleReader(_open) as reader:
        assert reader.image(record_from_row(row, [])) == image


def test_a_broken_parquet_table_is_a_source_issue_and_the_run_goes_on(tmp_path, photos):
    """Past validate (a table that changed after it, a remote table): a table that is
    no Parquet file is the source's read_error, another table's rows are read."""
    from mitigate.pipeline.run import run

    image = next(iter(photos.values()))
    good = _img2dataset(tmp_path / "good.parquet", [image])
    data = _img2dataset(tmp_path / "cut.parquet", [image] * 3).read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    paths = [str(good), str(tmp_path / "cut.parquet")]
    summary = run(_config(tmp_path / "out", paths), paths)
    assert summary["counts"]["kept"]["total"] == 1
    (issue,) = summary["source_issues"]
    assert (issue["reason"], issue["source"]) == ("read_error", paths[1])
    assert issue["detail"].startswith("not a readable Parquet table: ")


def test_any_arrow_error_is_the_tables_or_the_rows_not_the_runs(tmp_path, photos, monkeypatch):
    """pyarrow raises more than ValueError/OSError for a bad file (an encoding it
    lacks: ArrowNotImplementedError): while indexing, the rest of the table is a source
    issue; while reading a row's image, that row's read_error."""
    image = next(iter(photos.values()))
    path = _img2dataset(tmp_path / "t.parquet", [image] * 600)
    original = pq.ParquetFile.iter_batches

    def fails_later(self, *args, **kwargs):
        for i, batch in enumerate(original(self, *args, **kwargs)):
            if i == 1:
                raise pa.ArrowNotImplementedError("Unsupported encoding: BYTE_STREAM_SPLIT")
            yield batch

    with monkeypatch.context() as patch:
        patch.setattr(pq.ParquetFile, "iter_batches", fails_later)
        with open(path, "rb") as f:
            items = list(iter_table(f, str(path), "parquet", **DEFAULTS))
    *records, issue = items
    assert len(records) == 256 and issue.reason == "read_error"
    assert issue.detail == (
        "table unreadable after row 255: Unsupported encoding: BYTE_STREAM_SPLIT; the rows "
        "after it are lost"
    )

    def unsupported(self, row):
        raise pa.ArrowNotImplementedError("Unsupported encoding")

    monkeypatch.setattr(EmbeddedImages, "get", unsupported)
    ((record, data),) = load_payloads(records[:1], _open, max_image_bytes=10**8)
    assert (record.reason, data) == ("read_error", None)
    assert record.detail == "cannot read column 'jpg', row 0: Unsupported encoding"


@pytest.mark.parametrize(
    "image_type",
    [
        pa.large_binary(),
        pa.struct([("bytes", pa.binary())]),  # no path field
        pa.struct([("path", pa.string()), ("bytes", pa.large_binary())]),
        pa.dictionary(pa.int32(), pa.binary()),  # polars' and duckdb's categorical blobs
        pa.binary_view(),
    ],
    ids=["large_binary", "struct_without_path", "large_struct", "dictionary", "binary_view"],
)
def test_other_binary_layouts_are_read(tmp_path, photos, image_type):
    image = next(iter(photos.values()))
    value = {"bytes": image} if pa.types.is_struct(image_type) else image
    column = (
        pa.array([value], pa.binary()).dictionary_encode()
        if pa.types.is_dictionary(image_type)
        else pa.array([value], image_type)
    )
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": column, "caption": ["c"]}), path)
    with open(path, "rb") as f:
        (record,) = iter_table(f, str(path), "parquet", **DEFAULTS)
    assert (record.key, record.image_column, record.reason) == ("t-000000000", "image", None)
    with SampleReader(_open) as reader:
        assert reader.image(record) == image


def test_a_table_images_kept_member_is_named_by_its_format_not_its_file_name(tmp_path, photos):
    """A JPEG at ``a.txt`` was written as ``KEY.txt`` beside the caption's ``KEY.txt``
    (two members of one name); a PNG at ``b.jpg`` as ``KEY.jpg``; ``c`` as ``KEY.``."""
    from mitigate.pipeline.run import run

    jpeg = next(d for d in photos.values() if d[:2] == b"\xff\xd8")
    png = next(d for d in photos.values() if d[:4] == b"\x89PNG")
    names = {"a.txt": jpeg, "b.jpg": png, "c": jpeg, "d.tar.gz": png}
    for name, data in names.items():
        (tmp_path / name).write_bytes(data)
    table = tmp_path / "t.jsonl"
    table.write_text(
        "".join(
            json.dumps({"key": f"k{i}", "image": name, "caption": f"photo {i}"}) + "\n"
            for i, name in enumerate(names)
        )
    )
    run(_config(tmp_path / "out", [str(table)], "dedup.exact=false", "dedup.near=false"))
    with tarfile.open(tmp_path / "out" / "shards" / "shard-000000.tar") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    assert sorted(members) == sorted(
        f"k{i}.{ext}"
        for i, ext in enumerate(["jpg", "png", "jpg", "png"])
        for ext in (ext, "json", "txt")
    )
    assert [members[f"k{i}.{e}"] for i, e in enumerate(["jpg", "png", "jpg", "png"])] == list(
        names.values()
    )
    assert members["k0.txt"] == b"photo 0"


def test_string_columns_written_as_bytes_are_text(tmp_path, photos):
    """Old Hive, Impala and Spark write strings as binary without the UTF-8
    annotation: keys were "a bytes", captions missing."""
    image = next(iter(photos.values()))
    path = tmp_path / "t.parquet"
    table = pa.table(
        {
            "key": pa.array([b"k0", b"k\xe91", b"k2"], pa.binary()),
            "caption": pa.array([b"caf\xc3\xa9 au lait", b"x", b"caf\xe9"], pa.binary()),
            "jpg": pa.array([image] * 3, pa.binary()),
        }
    )
    pq.write_table(table, path)
    with open(path, "rb") as f:
        records = list(iter_table(f, str(path), "parquet", **DEFAULTS))
    assert [(r.key, r.reason, r.caption) for r in records] == [
        ("k0", None, "café au lait"),
        ("k\\xe91", "invalid_key", None),
        ("k2", "invalid_caption_encoding", None),
    ]


def test_a_struct_whose_bytes_field_is_text_says_so(tmp_path):
    """Its detail said the bytes are read "from Parquet tables only", of a Parquet table."""
    path = tmp_path / "t.parquet"
    text_bytes = pa.struct([("bytes", pa.string()), ("path", pa.string())])
    images = pa.array([{"bytes": "/9j/4AAQ", "path": "a.jpg"}], text_bytes)
    pq.write_table(pa.table({"image": images, "caption": ["c"]}), path)
    with open(path, "rb") as f:
        (record,) = iter_table(f, str(path), "parquet", **DEFAULTS)
    assert (record.reason, record.detail) == (
        "missing_image",
        "column 'image' holds the image's bytes as text (a string field 'bytes'), not "
        "binary: write them as a binary field",
    )
