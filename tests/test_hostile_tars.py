"""Shards written by other tools, damaged or hostile: every sample is listed exactly
once or counted by a source issue, and nothing stops the index."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import threading

import pytest

from conftest import sample_members, tar_bytes
from mitigate import tarscan
from mitigate.records import ERROR, PENDING, SampleRecord
from mitigate.sources import SourceIssue, SourceLimits, index_tar, parse_payload
from mitigate.tarscan import TarProblem, scan_tar

JPG = b"\xff\xd8fake-jpeg-bytes" * 8


def _index(data: bytes, **limits):
    items = list(index_tar(io.BytesIO(data), "mem://s.tar", limits=SourceLimits(**limits)))
    records = [i for i in items if isinstance(i, SampleRecord)]
    issues = [i for i in items if isinstance(i, SourceIssue)]
    return records, issues


def _five() -> bytes:
    return tar_bytes([m for i in range(5) for m in sample_members(f"k{i}", JPG, f"cap {i}")])


def _header_offset(data: bytes, name: str) -> int:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return next(m.offset for m in tar.getmembers() if m.name == name)


def test_corrupt_header_mid_shard_resynchronises_and_reports_the_damage():
    data = bytearray(_five())
    at = _header_offset(bytes(data), "k2.jpg")
    data[at + 3] ^= 0x5A  # one flipped byte in the name: the checksum no longer holds
    records, issues = _index(bytes(data))
    got = [(r.key, r.state, r.reason) for r in records]
    assert got == [
        ("k0", PENDING, None),
        ("k1", PENDING, None),
        ("k2", ERROR, "missing_image"),  # its caption survived, its image header did not
        ("k3", PENDING, None),
        ("k4", PENDING, None),
    ]
    assert f"damaged tar header precedes it at byte {at}" in records[2].detail
    (issue,) = issues
    assert issue.reason == "damaged_header" and issue.count == 1
    assert f"at byte {at}" in issue.detail


def test_a_damaged_first_header_of_a_ustar_tar_is_one_member():
    """Its count was null (as a v7 archive's): the ustar magic was taken from earlier
    headers only, and the first has none before it (helper-43)."""
    data = bytearray(_five())
    data[3] ^= 0x5A  # the first header's name: bad checksum
    records, issues = _index(bytes(data))
    assert [(i.reason, i.count) for i in issues] == [("damaged_header", 1)]
    assert [r.key for r in records][1:] == ["k1", "k2", "k3", "k4"]


def test_a_damaged_header_that_hides_a_whole_sample_is_counted():
    members = [("k0.jpg", JPG), ("k0.txt", b"a"), ("k1.jpg", JPG), ("k2.jpg", JPG)]
    members += [("k2.txt", b"c")]
    data = bytearray(tar_bytes(members))
    at = _header_offset(bytes(data), "k1.jpg")
    data[at + 140] ^= 0x01  # in the mtime field: the name stays readable
    records, issues = _index(bytes(data))
    assert [r.key for r in records] == ["k0", "k2"]
    assert [(i.reason, i.count) for i in issues] == [("damaged_header", 1)]
    assert "k1.jpg" in issues[0].detail  # the untrusted name of the damaged header


def test_shard_cut_at_a_member_boundary_is_reported():
    full = _five()
    end = _header_offset(full, "k3.jpg")  # cut exactly before k3's first header
    records, issues = _index(full[:end])
    assert [r.key for r in records] == ["k0", "k1", "k2"]
    assert all(r.state == PENDING for r in records)
    assert [i.reason for i in issues] == ["missing_end_marker"]
    assert issues[0].count is None  # how many samples followed cannot be known


def test_shard_cut_inside_a_header():
    full = _five()
    end = _header_offset(full, "k3.jpg") + 100
    records, issues = _index(full[:end])
    # k2 was complete: the cut in k3's header does not make it an error
    assert [(r.key, r.state) for r in records] == [
        ("k0", PENDING),
        ("k1", PENDING),
        ("k2", PENDING),
    ]
    assert [i.reason for i in issues] == ["truncated_shard"]
    assert "after 3 complete samples" in issues[0].detail
    # cut in k2's caption header: k2 has lost its caption, and says where the shard ends
    end = _header_offset(full, "k2.txt") + 100
    records, _ = _index(full[:end])
    assert (records[-1].key, records[-1].reason) == ("k2", "missing_caption")
    assert "cut off right after it" in records[-1].detail


def test_shard_cut_inside_the_padding_after_a_members_data_is_truncated():
    """No tar ends there (its size is no whole block): it was reported as a cut at a
    member boundary, "missing_end_marker" (helper-41: `head -c`, `split -b`)."""
    full = _five()
    with tarfile.open(fileobj=io.BytesIO(full)) as tar:
        member = tar.getmember("k2.jpg")
    end = member.offset_data + member.size + 7
    records, issues = _index(full[:end])
    assert [i.reason for i in issues] == ["truncated_shard"]
    assert "inside the padding after a member's data" in issues[0].detail
    assert [(r.key, r.state) for r in records[:2]] == [("k0", PENDING), ("k1", PENDING)]
    assert (records[2].key, records[2].reason) == ("k2", "truncated_shard")
    assert records[2].detail.startswith("shard ends inside this sample")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "empty file"),
        (gzip.compress(b"x" * 2000, mtime=0), "gzip-compressed"),
        (b"\x28\xb5\x2f\xfd" + b"x" * 2000, "zstd-compressed"),
        (b"PK\x03\x04" + b"x" * 2000, "a zip archive, not a tar"),
        (b"070701" + b"0" * 2000, "a cpio archive, not a tar"),
        (b"not a tar at all" * 100, "no valid tar header"),
        (bytes(0x8001) + b"CD001" + bytes(4096), "an ISO 9660 image, not a tar"),
        (bytes(4096) + b"garbage" * 100, "no tar header after zeros"),
    ],
    ids=[
        "empty",
        "gzip",
        "zstd",
        "zip",
        "cpio",
        "text",
        "iso",
        "zeros-then-garbage",
    ],  # stable ids: pytest-xdist workers must collect alike
)
def test_files_that_are_no_tar_are_one_issue(data, fragment):
    records, issues = _index(data)
    assert records == []
    assert [i.reason for i in issues] == ["read_error"]
    assert fragment in issues[0].detail


def test_empty_archive_is_no_sample_and_no_issue():
    records, issues = _index(tar_bytes([]))
    assert records == [] and issues == []


def test_concatenated_archives_are_read_to_the_end():
    first = tar_bytes(sample_members("a", JPG))
    second = tar_bytes(sample_members("b", JPG))
    records, issues = _index(first + second)
    assert [r.key for r in records] == ["a", "b"] and not issues


def test_garbage_after_the_end_marker_is_reported():
    records, issues = _index(tar_bytes(sample_members("a", JPG)) + b"\x01garbage" * 100)
    assert [r.key for r in records] == ["a"]
    assert [(i.reason, i.count) for i in issues] == [("trailing_data", 0)]  # nothing lost


def _raw_tar(names: list[bytes], encoding: str = "utf-8") -> bytes:
    """A GNU tar with names stored as given bytes (as GNU tar writes latin-1 names)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for raw in names:
            info = tarfile.TarInfo(raw.decode("latin-1"))
            data = JPG if raw.endswith(b".jpg") else b"caption"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_names_that_are_not_utf8_are_errors_or_decoded_with_the_fallback():
    data = _raw_tar([b"caf\xe9.jpg", b"caf\xe9.txt", b"ok.jpg", b"ok.txt"])
    records, issues = _index(data)
    assert not issues
    assert [(r.key, r.state, r.reason) for r in records] == [
        ("caf\\xe9", ERROR, "invalid_key"),
        ("ok", PENDING, None),
    ]
    assert "not UTF-8" in records[0].detail and "name_encoding" in records[0].detail
    records, _ = _index(data, name_encoding="latin-1")
    assert [(r.key, r.state) for r in records] == [("café", PENDING), ("ok", PENDING)]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["./k.jpg", "./k.txt"], [("k", PENDING, None)]),  # what `tar -C dir .` writes
        ([".k.jpg", ".k.txt"], [(".k", ERROR, "invalid_key")]),
        (["..\\..\\k.jpg", "..\\..\\k.txt"], [("..\\..\\k", ERROR, "invalid_key")]),
        (["d/.h/k.jpg", "d/.h/k.txt"], [("d/.h/k", ERROR, "invalid_key")]),
        (["k.jpg", "k.JPG", "k.txt"], [("k", ERROR, "duplicate_member")]),
        (["k.gif", "k.txt"], [("k", PENDING, None)]),
        (["k.tif", "k.txt"], [("k", ERROR, "unsupported_format")]),
        (["k\x07.jpg", "k\x07.txt"], [("k\x07", ERROR, "invalid_key")]),
    ],
)
def test_odd_member_names(names, expected):
    members = [(n, JPG if not n.endswith(".txt") else b"cap") for n in names]
    records, issues = _index(tar_bytes(members))
    assert [(r.key, r.state, r.reason) for r in records] == expected
    assert not issues


def test_a_name_with_inner_dots_says_where_its_key_ends():
    members = [("photo.v2.jpg", JPG), ("photo.v2.txt", b"cap"), ("x.y.npy", b"n")]
    members += [("q.jpg", JPG), ("q.en.txt", b"cap")]
    records, _ = _index(tar_bytes(members))
    assert [(r.key, r.reason) for r in records] == [
        ("photo", "missing_image"),
        ("x", "missing_image"),
        ("q", "missing_caption"),
    ]
    assert records[0].detail == (
        "no image member (members: 'v2.jpg', 'v2.txt'); a key ends at the first dot of a "
        "name: key 'photo' has the extension(s) 'v2.jpg', 'v2.txt'; name the files "
        "without inner dots"
    )
    assert records[1].detail == "no image member (members: 'y.npy')"
    assert records[2].detail.endswith(
        "key 'q' has the extension(s) 'en.txt'; name the files without inner dots"
    )


def test_long_and_pax_names_are_read():
    long_key = "d/" + "x" * 150
    members = sample_members(long_key, JPG) + sample_members("naïve", JPG)
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        records, issues = _index(buf.getvalue())
        assert [(r.key, r.state) for r in records] == [(long_key, PENDING), ("naïve", PENDING)]
        assert not issues


def test_size_limits_come_from_the_index_without_reading():
    members = sample_members("big", JPG, caption="c" * 5000)
    members += [("side.jpg", JPG), ("side.txt", b"c"), ("side.json", b"{}" + b" " * 5000)]
    records, _ = _index(tar_bytes(members), max_caption_bytes=1000, max_sidecar_bytes=1000)
    assert [(r.key, r.reason) for r in records] == [
        ("big", "caption_too_large"),
        ("side", "json_too_large"),
    ]


def test_oversized_long_name_header_is_skipped_not_loaded():
    # A GNU long-name header that declares 2 MiB of name: skipped (limit 1 MiB) and
    # reported; the member after it keeps its own short name.
    info = tarfile.TarInfo("././@LongLink")
    info.type = tarfile.GNUTYPE_LONGNAME
    info.size = 2 * 1024 * 1024
    header = info.tobuf(format=tarfile.GNU_FORMAT) + b"n" * info.size
    data = header + tar_bytes(sample_members("a", JPG))
    items = list(scan_tar(io.BytesIO(data), max_meta_bytes=1 << 20))
    assert isinstance(items[0], TarProblem) and items[0].kind == "oversized_header"
    assert [i.raw_name for i in items[1:]] == [b"a.jpg", b"a.txt"]
    # cut inside that header's data: a truncated header, nothing read past it
    items = list(scan_tar(io.BytesIO(data[:4096]), max_meta_bytes=1 << 20))
    assert [(type(i), i.kind) for i in items] == [(TarProblem, "truncated_header")]


@pytest.mark.parametrize("nesting", ["[", '{"a":'])
def test_deeply_nested_sidecar_is_invalid_json(nesting):
    closing = "]" if nesting == "[" else "}"
    deep = (nesting * 5000 + "1" + closing * 5000).encode()
    wrapped = b'{"x": ' + (nesting * 100 + "1" + closing * 100).encode() + b"}"
    record = SampleRecord(key="k", source="s", index=0, image_ext="jpg")
    for sidecar in (deep, wrapped):
        out = parse_payload(record, {"jpg": JPG, "txt": b"cap", "json": sidecar})
        assert isinstance(out, SampleRecord) and out.reason == "invalid_json", sidecar[:20]
    fine = json.dumps({"a": {"b": [1, 2, {"c": 3}]}}).encode()
    out = parse_payload(record, {"jpg": JPG, "txt": b"cap", "json": fine})
    assert not isinstance(out, SampleRecord)


def test_a_sidecar_integer_python_cannot_read_is_invalid_json():
    """5,000 digits: valid JSON, but Python refuses to convert it (a ValueError that
    is no JSONDecodeError): it ended the run (helper-38)."""
    record = SampleRecord(key="k", source="s", index=0, image_ext="jpg")
    sidecar = b'{"id": ' + b"7" * 5000 + b"}"
    out = parse_payload(record, {"jpg": JPG, "txt": b"cap", "json": sidecar})
    assert isinstance(out, SampleRecord) and out.reason == "invalid_json"
    assert "4300 digits" in out.detail and "set_int_max_str_digits" not in out.detail


@pytest.mark.parametrize(
    ("field", "value"),
    [
        (b"0000644\x00", 0o644),
        (b"   17 \x00", 0o17),  # space padded
        (b"\x00" * 8, 0),  # empty: 0
        (b"0000648\x00", None),  # 8 is no octal digit
        (b"00+0644\x00", None),  # neither a sign
        (b"0_644\x00\x00\x00", None),  # nor int()'s underscore
        (b"0x644\x00\x00\x00", None),
        (b"\x80" + b"\x00" * 6 + b"\x05", 5),  # GNU base-256
        (b"\xc0" + b"\x00" * 7, None),  # negative base-256
    ],
)
def test_numeric_header_fields(field, value):
    """A header's numbers are octal digits (NUL or space padded) or GNU base-256; any
    other byte makes the field, and so the header, invalid."""
    assert tarscan._octal(field) == value


def _pax(records: dict[bytes, bytes]) -> bytes:
    """A PAX extended header block for the next member, written by hand (tarfile
    refuses to write a size that is not a number)."""
    body = b""
    for key, value in records.items():
        record = b" " + key + b"=" + value + b"\n"
        n = len(record) + 1
        while len(str(n)) + len(record) != n:
            n += 1
        body += str(n).encode() + record
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, len(body)
    return info.tobuf(tarfile.USTAR_FORMAT) + body + bytes(-len(body) % 512)


def _member(name: str, data: bytes) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info.tobuf(tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512)


@pytest.mark.parametrize("size", [b"-1536", b"-1", b"+4", b"1_0", b"12abc"])
def test_a_pax_size_that_is_no_decimal_number_is_ignored_not_followed(size):
    """A negative PAX size took the scan back to its own header, for ever (a hang of
    validate and run); GNU tar refuses it and reads on with the header's size."""
    data = _member("ok.jpg", JPG) + _member("ok.txt", b"fine")
    data += _pax({b"size": size}) + _member("bad.jpg", JPG) + _member("bad.txt", b"b")
    data += _member("after.jpg", JPG) + _member("after.txt", b"after") + bytes(1024)
    done: list = []
    scan = threading.Thread(target=lambda: done.append(_index(data)), daemon=True)
    scan.start()
    scan.join(60)
    assert done, "the scan did not end"
    ((records, issues),) = done
    assert [(r.key, r.state, r.n_bytes) for r in records] == [
        ("ok", PENDING, len(JPG)),
        ("bad", PENDING, len(JPG)),
        ("after", PENDING, len(JPG)),
    ]
    assert [m.size for m in records[1].members] == [len(JPG), 1] and not issues


@pytest.mark.parametrize(
    "records",
    [
        {b"GNU.sparse.size": b"4096", b"GNU.sparse.numblocks": b"1", b"GNU.sparse.offset": b"0"},
        {b"GNU.sparse.major": b"1", b"GNU.sparse.minor": b"0", b"GNU.sparse.name": b"sp.jpg"},
    ],
    ids=["format-0.0", "format-1.0"],
)
def test_gnu_sparse_files_in_pax_form_are_unsupported_members_not_misread(records):
    """Sparse 0.0 was read as the file: its data chunks without their holes (other
    bytes, another sha256); 1.0 as a member named GNUSparseFile.N/sp.jpg."""
    name = "sp.jpg" if b"GNU.sparse.name" not in records else "GNUSparseFile.10222/sp.jpg"
    data = _pax(records) + _member(name, JPG) + _member("sp.txt", b"caption")
    data += _member("z.jpg", JPG) + _member("z.txt", b"z") + bytes(1024)
    found, issues = _index(data)
    assert [(r.key, r.reason) for r in found] == [("sp", "unsupported_member"), ("z", None)]
    assert "is a GNU sparse file" in found[0].detail and not issues


def _old_gnu_sparse(name: str, data: bytes, extensions: int) -> bytes:
    """A GNU sparse member in the old form (type 'S', as ``tar -S --format=gnu`` writes
    it) whose map runs on in ``extensions`` blocks after the header (a file with more
    than four holes), then its data."""
    header = bytearray(_member(name, b"")[:512])
    header[156:157] = b"S"
    header[124:136] = b"%011o\x00" % len(data)
    header[482] = 1  # isextended: a block of the map follows
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    blocks = [bytearray(512) for _ in range(extensions)]
    for block in blocks[:-1]:
        block[504] = 1
    return bytes(header) + b"".join(blocks) + data + bytes(-len(data) % 512)


@pytest.mark.parametrize("extensions", [1, 3])
def test_an_old_gnu_sparse_member_is_skipped_whole_with_its_maps_blocks(extensions):
    # its data was taken to start right after the header: the scan landed inside it
    # and reported a damaged header (a member lost) where none was (helper-33)
    data = _old_gnu_sparse("sp.jpg", JPG, extensions) + _member("sp.txt", b"caption")
    data += _member("z.jpg", JPG) + _member("z.txt", b"z") + bytes(1024)
    found, issues = _index(data)
    assert [(r.key, r.reason) for r in found] == [("sp", "unsupported_member"), ("z", None)]
    assert "is a GNU sparse file" in found[0].detail and not issues


def test_members_of_a_key_are_grouped_wherever_they_lie():
    """GNU tar and bsdtar write a folder in directory order: a sample's members need
    not be next to each other (each split into a missing_caption and a missing_image)."""
    members = [("a.jpg", JPG), ("b.txt", b"bee"), ("c.json", b"{}"), ("a.txt", b"ay")]
    members += [("b.jpg", JPG), ("c.jpg", JPG), ("c.txt", b"sea")]
    records, issues = _index(tar_bytes(members))
    assert [(r.key, r.index, r.state, sorted(m.ext for m in r.members)) for r in records] == [
        ("a", 0, PENDING, ["jpg", "txt"]),
        ("b", 1, PENDING, ["jpg", "txt"]),
        ("c", 2, PENDING, ["jpg", "json", "txt"]),
    ]
    assert not issues
    # read back by offset: each sample's own caption
    for record, caption in zip(records, [b"ay", b"bee", b"sea"], strict=True):
        data = {m.ext: m for m in record.members}
        assert (
            tar_bytes(members)[data["txt"].offset : data["txt"].offset + 3].rstrip(b"\x00")
            == caption
        )


def test_a_key_that_comes_back_past_the_window_is_a_second_sample(monkeypatch):
    from mitigate import sources

    monkeypatch.setattr(sources, "KEY_WINDOW", 2)
    members = [("a.jpg", JPG), ("b.jpg", JPG), ("b.txt", b"b"), ("c.jpg", JPG), ("c.txt", b"c")]
    members += [("a.txt", b"late")]
    records, _ = _index(tar_bytes(members))
    assert [(r.key, r.index, r.reason) for r in records] == [
        ("a", 0, "missing_caption"),  # left the window when c came
        ("b", 1, None),
        ("c", 2, None),
        ("a", 3, "missing_image"),  # the same key again: duplicate_key later
    ]
    assert records[0].detail.endswith(
        "(the tar's members of 2 other samples came before the rest of this one, if it "
        "has more: write the tar sorted by name, e.g. tar --sort=name)"
    )
    assert records[1].detail is None and records[3].detail.startswith("no image member")


@pytest.mark.parametrize("how", ["cat", "tar -r"])
def test_a_tar_appended_to_itself_keeps_the_first_copy(how, tmp_path):
    """``cat a.tar a.tar`` (GNU tar reads on past the first end marker with -i) and
    ``tar -r`` of files already in it: with members grouped by key, every sample had
    two .jpg members, and both copies were lost as duplicate_member. A member a sample
    has already, read after other samples' members, starts a second sample of the key
    (duplicate_key in a run); next to each other they stay one sample's duplicate_member."""
    members = sample_members("a", JPG) + sample_members("b", JPG)
    if how == "cat":
        data = tar_bytes(members) + tar_bytes(members)  # its end marker, then itself again
    else:
        path = tmp_path / "r.tar"
        path.write_bytes(tar_bytes(members))
        with tarfile.open(path, "a") as tar:  # what tar -r does: members after the last
            for name, body in sample_members("a", JPG + b"v2"):
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
        data = path.read_bytes()
    records, issues = _index(data)
    expected = [("a", 0, PENDING, ["jpg", "txt"]), ("b", 1, PENDING, ["jpg", "txt"])]
    expected += [("a", 2, PENDING, ["jpg", "txt"])]
    if how == "cat":
        expected += [("b", 3, PENDING, ["jpg", "txt"])]
    assert [(r.key, r.index, r.state, sorted(m.ext for m in r.members)) for r in records] == (
        expected
    )
    offsets = [r.members[0].offset for r in records]
    assert offsets == sorted(offsets) and not issues


@pytest.mark.parametrize(
    ("how", "second"),
    [
        ("cat of a one-sample tar", ["jpg", "txt"]),
        ("tar -r of the last sample", ["jpg", "txt"]),
        ("tar -u of the last caption", ["txt"]),
    ],
)
def test_the_last_samples_appended_copy_is_a_second_sample(how, second):
    """With nothing between the copies, the second was read as the first's duplicated
    members: the whole sample an error (duplicate_member), the first copy lost."""
    first = tar_bytes(sample_members("a", JPG) + sample_members("z", JPG))
    if how.startswith("cat"):
        first = tar_bytes(sample_members("z", JPG))
        data = first + first  # the end-of-archive marker between them
    else:  # tar -r/-u write over the end marker: the members follow the last sample's
        data = first[: first.rindex(b"z.txt") + 1024]  # z.txt's header and data
        data += tar_bytes([m for m in sample_members("z", JPG + b"v2") if m[0][2:] in second])
    records, issues = _index(data)
    zs = [
        (r.key, r.state, r.reason, sorted(m.ext for m in r.members))
        for r in records
        if r.key == "z"
    ]
    assert zs[0] == ("z", PENDING, None, ["jpg", "txt"])  # the first copy, whole
    assert zs[1][:2] == ("z", PENDING if second == ["jpg", "txt"] else ERROR)
    assert zs[1][3] == second and len(zs) == 2 and not issues


def test_an_end_of_archive_marker_parts_two_copies_of_a_sample_not_yet_whole():
    one = tar_bytes([("k.jpg", JPG)])  # a sample without its caption
    records, _ = _index(one + one)
    assert [(r.key, r.reason) for r in records] == [("k", "missing_caption")] * 2
    records, _ = _index(tar_bytes([("k.jpg", JPG), ("k.jpg", JPG)]))  # one archive
    assert [(r.key, r.reason) for r in records] == [("k", "duplicate_member")]


def test_a_member_repeated_after_another_keys_between_its_own_is_a_second_sample():
    # unsorted members (GNU tar's directory order) are still one sample each; only a
    # member the sample already has starts another
    members = [("a.jpg", JPG), ("b.jpg", JPG), ("a.txt", b"a"), ("b.txt", b"b")]
    members += [("a.jpg", JPG + b"2"), ("c.jpg", JPG), ("c.txt", b"c"), ("c.jpg", JPG)]
    members += [("d.jpg", JPG), ("d.jpg", JPG), ("d.txt", b"d")]
    records, _ = _index(tar_bytes(members))
    assert [(r.key, r.index, r.reason) for r in records] == [
        ("a", 0, None),
        ("b", 1, None),
        ("a", 2, "missing_caption"),  # a second a: duplicate_key in a run
        ("c", 3, None),  # whole when c.jpg came again (`tar -r` of it): a second c
        ("c", 4, "missing_caption"),
        ("d", 5, "duplicate_member"),  # d.jpg twice before its caption: one broken sample
    ]


def test_gnu_incremental_dump_dirs_and_volume_labels_are_no_samples():
    """`tar --listed-incremental` writes each folder as a 'D' member (its file list as
    data), `tar -V LABEL` a 'V' member first: each was an error row of its own."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data in [
            ("my label", b"V", b""),
            ("src", b"D", b"Yk0.jpg\x00Yk0.txt\x00\x00"),
            ("src/k0.jpg", tarfile.REGTYPE, JPG),
            ("src/k0.txt", tarfile.REGTYPE, b"a caption"),
        ]:
            info = tarfile.TarInfo(name)
            info.type, info.size = kind, len(data)
            tar.addfile(info, io.BytesIO(data))
    records, issues = _index(buf.getvalue())
    assert [(r.key, r.state, r.reason) for r in records] == [("src/k0", PENDING, None)]
    assert not issues


@pytest.mark.parametrize(
    ("fmt", "folder"),
    [
        (tarfile.USTAR_FORMAT, "src"),
        (tarfile.GNU_FORMAT, "src"),
        (tarfile.PAX_FORMAT, "src"),
        (tarfile.GNU_FORMAT, "d" * 120),  # a long link name: GNU 'K' member
        (tarfile.PAX_FORMAT, "d" * 120),  # PAX linkpath record
    ],
)
def test_a_hard_link_is_read_as_the_file_it_names(fmt, folder):
    """GNU tar writes a file's second name (a hard link on disk) as a link member to the
    first, without data: the sample was an unsupported_member error, its image lost."""
    other = b"\xff\xd8 other image"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data, link in [
            ("a.jpg", JPG, None),
            ("a.txt", b"first name", None),
            ("b.jpg", other, None),
            ("b.txt", b"second", None),
            ("c.jpg", b"", "a.jpg"),  # c's image is a's
            ("c.txt", b"c's own caption", None),
            ("d.jpg", b"", "gone.jpg"),  # names no member
            ("d.txt", b"d", None),
        ]:
            info = tarfile.TarInfo(f"{folder}/{name}")
            if link is None:
                info.size = len(data)
            else:
                info.type, info.linkname = tarfile.LNKTYPE, f"{folder}/{link}"
            tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    records, issues = _index(data)
    assert [(r.key[-1], r.state, r.reason) for r in records] == [
        ("a", PENDING, None),
        ("b", PENDING, None),
        ("c", PENDING, None),
        ("d", ERROR, "unsupported_member"),
    ]
    jpg = {r.key[-1]: next(m for m in r.members if m.ext == "jpg") for r in records[:3]}
    assert data[jpg["c"].offset : jpg["c"].offset + jpg["c"].size] == JPG
    assert (jpg["c"].offset, jpg["c"].size) == (jpg["a"].offset, jpg["a"].size)
    gone = f"{folder}/gone.jpg".encode()
    assert records[3].detail.endswith(
        f"is a hard link; only regular files are read (its target {gone!r} is no earlier file)"
    )
    assert not issues


def test_operating_system_files_are_skipped_and_counted():
    """macOS bsdtar writes an AppleDouble ._NAME before each file: every sample was
    split and every ._ file was an invalid_key sample."""
    members = [
        ("._a.jpg", b"\x00\x05\x16\x07"),
        ("a.jpg", JPG),
        ("._a.txt", b"x"),
        ("a.txt", b"ay"),
    ]
    members += [(".DS_Store", b"x"), ("__MACOSX/._b.jpg", b"x"), ("Thumbs.db", b"x")]
    members += [("sub/desktop.ini", b"x"), ("b.jpg", JPG), ("b.txt", b"bee")]
    members += [("card/System Volume Information/WPSettings.dat", b"x")]
    members += [("card/ehthumbs.db", b"x"), ("$RECYCLE.BIN/$IABC.jpg", b"x")]
    records, issues = _index(tar_bytes(members))
    assert [(r.key, r.state) for r in records] == [("a", PENDING), ("b", PENDING)]
    assert [(i.reason, i.count) for i in issues] == [("os_metadata", 9)]
    assert issues[0].detail.startswith("9 operating-system file(s) skipped (macOS ._ AppleDouble")


def _v7(name: str, data: bytes) -> bytes:
    """A member with a v7 header: no ustar magic (old tars, some embedded tools)."""
    header = bytearray(_member(name, data)[:512])
    header[257:265] = bytes(8)
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    return bytes(header) + data + bytes(-len(data) % 512)


def test_v7_archives_joined_with_cat_are_read_on():
    """Only a ustar header was looked for after an end-of-archive marker: the second
    archive's samples were lost, said to be trailing data that held no member."""
    first = _v7("a.jpg", JPG) + _v7("a.txt", b"ay") + bytes(1024)
    second = _v7("b.jpg", JPG) + _v7("b.txt", b"bee") + bytes(10240 - 1024)
    records, issues = _index(first + second)
    assert [(r.key, r.state) for r in records] == [("a", PENDING), ("b", PENDING)]
    assert not issues


def test_damage_in_a_v7_archive_counts_what_is_lost_as_unknown():
    """No magic to resynchronise on: the rest of the file is skipped, not one member."""
    members = _v7("a.jpg", JPG) + _v7("a.txt", b"ay")
    damaged = bytearray(_v7("b.jpg", JPG))
    damaged[0:4] = b"XXXX"  # the name changed, the checksum no longer holds
    data = members + bytes(damaged) + _v7("b.txt", b"bee") + _v7("c.jpg", JPG) + bytes(1024)
    records, issues = _index(data)
    assert [r.key for r in records] == ["a"]
    assert [(i.reason, i.count) for i in issues] == [("damaged_header", None)]
    assert "(none: the rest of the file)" in issues[0].detail
