"""Reading sources: tar indexing without extraction, table rows, bad input reasons."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import sample_members, tar_bytes
from mitigate.formats import table_format
from mitigate.records import ERROR, PENDING, SampleRecord
from mitigate.sources import (
    SourceIssue,
    SourceLimits,
    index_tar,
    key_problem,
    parse_payload,
    parse_sidecar,
    read_members,
)
from mitigate.tables import iter_table, resolve_image_path

JPG = b"\xff\xd8fake-jpeg-bytes"


def _index(data: bytes, max_image_bytes: int = 10**6):
    items = list(index_tar(io.BytesIO(data), "mem://s.tar", max_image_bytes=max_image_bytes))
    records = [i for i in items if isinstance(i, SampleRecord)]
    issues = [i for i in items if isinstance(i, SourceIssue)]
    return records, issues


def test_index_groups_consecutive_members_and_keeps_dirs_in_keys():
    data = tar_bytes(
        sample_members("a/000", JPG, meta={"url": "x"}) + sample_members("a/001", JPG, ext="PNG")
    )
    records, issues = _index(data)
    assert [r.key for r in records] == ["a/000", "a/001"]
    assert [r.index for r in records] == [0, 1]
    assert [r.image_ext for r in records] == ["jpg", "png"]  # extensions lower-cased
    assert {m.ext for m in records[0].members} == {"jpg", "txt", "json"}
    assert all(r.state == PENDING for r in records) and not issues


def test_members_are_read_back_by_offset_not_by_name():
    data = tar_bytes(
        sample_members("k1", JPG, caption="one") + sample_members("k2", b"PNG", "two", "png")
    )
    records, _ = _index(data)
    got = read_members(io.BytesIO(data), records[1], {"png", "txt"})
    assert got == {"png": b"PNG", "txt": b"two"}


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([("k.txt", b"cap")], "missing_image"),
        ([("k.jpg", JPG)], "missing_caption"),
        ([("k.jpg", JPG), ("k.png", JPG), ("k.txt", b"c")], "multiple_images"),
        ([("../k.jpg", JPG), ("../k.txt", b"c")], "invalid_key"),
        ([("/abs.jpg", JPG), ("/abs.txt", b"c")], "invalid_key"),
        ([("k.jpg", JPG * 100), ("k.txt", b"c")], "image_too_large"),
    ],
)
def test_structural_problems_are_sample_errors(members, reason):
    records, _ = _index(tar_bytes(members), max_image_bytes=1000)
    assert [(r.state, r.reason) for r in records] == [(ERROR, reason)]


def test_truncated_shard_keeps_complete_samples_and_reports_the_rest():
    full = tar_bytes(
        sample_members("k1", JPG * 50)
        + sample_members("k2", JPG * 50)
        + sample_members("k3", JPG * 50)
    )
    records, _ = _index(full)
    cut = records[2].members[0].offset + 10  # inside k3's image data
    records, issues = _index(full[:cut])
    assert [(r.key, r.state) for r in records] == [("k1", PENDING), ("k2", PENDING), ("k3", ERROR)]
    assert records[2].reason == "truncated_shard"
    assert [i.reason for i in issues] == ["truncated_shard"]
    assert "after 2 complete samples" in issues[0].detail


def test_not_a_tar_is_a_source_issue_not_a_crash():
    records, issues = _index(b"definitely not a tar archive" * 40)
    assert records == []
    assert [i.reason for i in issues] == ["read_error"]


def test_non_file_members_and_extensionless_names_are_listed_as_errors():
    buf = io.BytesIO()
    import tarfile

    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("k.jpg")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
        plain = tarfile.TarInfo("README")
        plain.size = 1
        tar.addfile(plain, io.BytesIO(b"x"))
    records, issues = _index(buf.getvalue())
    assert [(r.key, r.state, r.reason) for r in records] == [
        ("k", ERROR, "unsupported_member"),
        ("README", ERROR, "missing_image"),
    ]
    assert "symbolic link" in records[0].detail
    assert not issues


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"jpg": JPG, "txt": b"caf\xe9"}, "invalid_caption_encoding"),
        ({"jpg": JPG, "txt": b"\xff\xfe bad!"}, "invalid_caption_encoding"),  # odd UTF-16
        ({"jpg": JPG, "txt": b"ok", "json": b"{not json"}, "invalid_json"),
        ({"jpg": JPG, "txt": b"ok", "json": b"[1, 2]"}, "invalid_json"),
        ({"jpg": JPG, "txt": b"  \n"}, "missing_caption"),
        # only characters that render as nothing: as blank as spaces (helper-33)
        ({"jpg": JPG, "txt": "\u200b\u200b\u2060".encode()}, "missing_caption"),
        ({"jpg": JPG, "json": b'{"caption": "\\u200b \\ufe0f"}'}, "missing_caption"),
    ],
)
def test_payload_problems(data, reason):
    record = SampleRecord(key="k", source="s", index=0, image_ext="jpg")
    out = parse_payload(record, data)
    assert isinstance(out, SampleRecord) and out.reason == reason


def test_payload_ok_keeps_caption_and_meta():
    record = SampleRecord(key="k", source="s", index=0, image_ext="jpg")
    out = parse_payload(record, {"jpg": JPG, "txt": "café".encode(), "json": b'{"a": 1}'})
    assert (out.image, out.caption, out.meta) == (JPG, "café", {"a": 1})


def test_key_rules():
    assert key_problem("000123") is None
    assert key_problem("dir/000123") is None
    for bad in ("", "a/../b", "/x", "a//b", "a\\b", "a\x00"):
        assert key_problem(bad), bad


ROWS = [
    {"key": "r1", "image": "img/a.jpg", "caption": "a cat"},
    {"key": "r2", "image": "", "caption": "no image"},
    {"key": "r3", "image": "img/c.jpg", "caption": ""},
    {"key": None, "image": "img/d.jpg", "caption": "no key"},
    {"key": "r5", "image": "gs://b/e.jpg", "caption": "absolute"},
    {"key": "r6", "image": "../../etc/passwd.jpg", "caption": "escape"},
    {"key": "r7", "image": "/data/img/../img/g.jpg", "caption": "absolute inside"},
]
EXPECTED = [
    ("r1", PENDING, None, "/data/img/a.jpg"),
    ("r2", ERROR, "missing_image", None),
    ("r3", ERROR, "missing_caption", None),
    ("", ERROR, "invalid_key", None),
    ("r5", ERROR, "image_path_outside_root", None),
    ("r6", ERROR, "image_path_outside_root", None),
    ("r7", PENDING, None, "/data/img/g.jpg"),
]


def _table_bytes(fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    if fmt == "csv":
        lines = ["key,image,caption"] + [
            ",".join("" if r[c] is None else r[c] for c in ("key", "image", "caption"))
            for r in ROWS
        ]
        return ("\n".join(lines) + "\n").encode()
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(ROWS), buf)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_table_rows(fmt):
    items = list(
        iter_table(
            io.BytesIO(_table_bytes(fmt)),
            f"/data/t.{fmt}",
            fmt,
            key_column="key",
            image_column="image",
            caption_column="caption",
        )
    )
    got = [(r.key, r.state, r.reason, r.image_path) for r in items]
    assert got == EXPECTED


def test_a_tables_image_paths_follow_links_out_of_its_folder(tmp_path):
    """Links are followed (unlike a folder input's listing, where a link out is
    refused): an image folder linked to another disk, a subset folder of links into a
    master store, are common layouts, and the table names each file (helper-39: every
    row of both was image_path_outside_root while links out were refused)."""
    store = tmp_path / "disk2"
    store.mkdir()
    (store / "a.png").write_bytes(b"png")
    data = tmp_path / "data"
    data.mkdir()
    (data / "images").symlink_to(store, target_is_directory=True)
    (data / "subset").mkdir()
    (data / "subset" / "b.png").symlink_to(store / "a.png")
    rows = [
        {"key": "a", "image": "images/a.png", "caption": "c"},
        {"key": "b", "image": "subset/b.png", "caption": "c"},
    ]
    table = "".join(json.dumps(r) + "\n" for r in rows).encode()
    columns = {"key_column": "key", "image_column": "image", "caption_column": "caption"}
    items = list(iter_table(io.BytesIO(table), str(data / "t.jsonl"), "jsonl", **columns))
    assert [(r.key, r.reason, r.image_path) for r in items] == [
        ("a", None, str(data / "images" / "a.png")),
        ("b", None, str(data / "subset" / "b.png")),
    ]


@pytest.mark.parametrize("bad_line", [b"{oops", b'{"key": "\xff"}'], ids=["json", "utf8"])
def test_bad_jsonl_line_is_an_error_row_and_the_rest_is_read(bad_line):
    data = (
        b'{"key": "a", "image": "a.jpg", "caption": "x"}\n' + bad_line + b"\n"
        b'{"key": "b", "image": "b.jpg", "caption": "y"}\n'
    )
    items = list(
        iter_table(
            io.BytesIO(data),
            "/d/t.jsonl",
            "jsonl",
            key_column="key",
            image_column="image",
            caption_column="caption",
        )
    )
    assert [(r.key, r.reason) for r in items] == [
        ("a", None),
        ("/d/t.jsonl#1", "invalid_json"),
        ("b", None),
    ]


def test_table_format_by_extension():
    assert table_format("x/a.tar", "auto") == "webdataset"
    assert table_format("a.PARQUET", "auto") == "parquet"
    assert table_format("a.ndjson", "auto") == "jsonl"
    assert table_format("a.bin", "csv") == "csv"
    with pytest.raises(ValueError, match=r"set input\.format"):
        table_format("a.bin", "auto")


@pytest.mark.parametrize(
    ("image", "root", "expected"),
    [
        ("a.jpg", "/d", "/d/a.jpg"),
        ("sub/../a.jpg", "/d", "/d/a.jpg"),
        ("../a.jpg", "/d", None),
        ("/etc/passwd", "/d", None),
        ("/d2/a.jpg", "/d", None),  # a sibling whose name starts like the root
        ("img/a.jpg", "gs://b/data", "gs://b/data/img/a.jpg"),
        ("gs://b/data/x.jpg", "gs://b/data", "gs://b/data/x.jpg"),
        ("gs://other/x.jpg", "gs://b/data", None),
        ("gs://b/data/../secret.jpg", "gs://b/data", None),
        ("a.jpg", ".", "a.jpg"),
        ("../a.jpg", ".", None),
        ("file:///d/sub/a.jpg", "/d", "/d/sub/a.jpg"),  # a local file as a URI
        ("FILE:///etc/passwd", "/d", None),
        ("file:///d/a.jpg", "gs://b/d", None),
    ],
)
def test_image_paths_stay_inside_their_root(image, root, expected):
    assert resolve_image_path(image, root) == expected


def test_image_root_allows_another_folder_and_captions_have_a_size_limit():
    rows = [
        {"key": "a", "image": "/imgs/a.jpg", "caption": "x"},
        {"key": "b", "image": "b.jpg", "caption": "y" * 100},
    ]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    items = list(
        iter_table(
            io.BytesIO(data),
            "/tables/t.jsonl",
            "jsonl",
            key_column="key",
            image_column="image",
            caption_column="caption",
            image_root="/imgs",
            limits=SourceLimits(max_caption_bytes=50),
        )
    )
    assert [(r.key, r.reason, r.image_path) for r in items] == [
        ("a", None, "/imgs/a.jpg"),
        ("b", "caption_too_large", None),
    ]


def test_a_sidecar_with_a_byte_order_mark_is_read():
    # Windows tools write one; every sample of such a dataset was invalid_json
    meta = {"caption": "a lake", "url": "http://x/1.jpg"}
    data = json.dumps(meta).encode()
    assert parse_sidecar(b"\xef\xbb\xbf" + data) == (meta, None)
    assert parse_sidecar(data) == (meta, None)
    assert parse_sidecar(b"\xef\xbb\xbf")[0] is None  # a mark alone is still no JSON
    # PowerShell 5's Out-File writes UTF-16 with a mark (helper-41: invalid_json)
    text = json.dumps({"caption": "un café", "n": 1}, ensure_ascii=False)
    for codec in ("utf-16", "utf-16-be", "utf-32"):
        raw = text.encode(codec)
        if codec == "utf-16-be":
            raw = b"\xfe\xff" + raw
        assert parse_sidecar(raw) == ({"caption": "un café", "n": 1}, None)
    assert parse_sidecar(b"\xff\xfe{\x00\x00")[1].startswith("sidecar .json is not UTF-16")


def test_a_utf16_caption_is_held_to_max_caption_bytes_as_the_utf8_it_becomes():
    # the index checks the member's bytes: 30,000 CJK characters are 60,002 bytes of
    # UTF-16 and 90,000 of UTF-8, which the kept shard writes
    record = SampleRecord(key="k", source="s", index=0, image_ext="jpg")
    caption = "\u6d41" * 30_000
    raw = "\ufeff".encode("utf-16-le") + caption.encode("utf-16-le")
    assert len(raw) == 60_002
    out = parse_payload(record, {"jpg": JPG, "txt": raw}, max_caption_bytes=65_536)
    assert isinstance(out, SampleRecord) and out.reason == "caption_too_large"
    assert "90000 bytes in UTF-8 > max_caption_bytes 65536" in out.detail
    short = "\ufeff".encode("utf-16-le") + ("\u6d41" * 100).encode("utf-16-le")
    assert parse_payload(record, {"jpg": JPG, "txt": short}, max_caption_bytes=65_536).caption
