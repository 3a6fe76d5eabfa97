"""Text that is not text: bytes that are not UTF-8 in a CSV table, and lone surrogates,
which JSON can escape (half of an emoji's pair, where a string was cut) and Python uses
for undecodable bytes. Each is one sample's error or a caption with U+FFFD, never a run
that stops (a JSONL path or a sidecar with one aborted the whole run at the decode or
the shard writer) nor a table whose later rows are lost (a CSV's one bad byte ended it)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mitigate.config import load_config
from mitigate.pipeline.run import run
from mitigate.sources import SourceIssue, key_problem
from mitigate.tables import iter_table, table_problems
from mitigate.text import escape_surrogates

REPO = Path(__file__).resolve().parents[1]
DEFAULTS = {"key_column": "key", "image_column": "image", "caption_column": "caption"}
# the cheap filters only: the model is not what these tests are about
CHEAP = (
    "filters=[{name: image_quality, min_side: 16, max_aspect_ratio: 4.0}]",
    "rebalance.enabled=false",
    "dedup.near=false",
)


def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), (seed * 40 % 256, 90, 200 - seed * 30 % 200)).save(buf, "JPEG")
    return buf.getvalue()


def _run(tmp_path: Path, pattern: str) -> tuple[list[dict], dict]:
    out = tmp_path / "out"
    config, _ = load_config(
        REPO / "configs" / "default.yaml",
        [f"input.paths=[{pattern!r}]", f"output.path={str(out)!r}", *CHEAP],
    )
    summary = run(config)
    return pq.read_table(out / "manifest").to_pylist(), summary


def test_a_csv_byte_that_is_not_utf8_is_its_rows_error_and_the_rows_after_it_are_read(tmp_path):
    for i in range(1, 5):
        (tmp_path / f"x{i}.jpg").write_bytes(_jpeg(i))
    # the bad bytes lie in the first 8 KB, which the header's read used to decode too
    (tmp_path / "t.csv").write_bytes(
        b"key,image,caption\n"
        b"k1,x1.jpg,caf\xe9 au lait\n"
        b"k\xe92,x2.jpg,fine\n"
        b"k3,x\xe93.jpg,fine three\n"
        b"k4,x4.jpg,fine four\n"
    )
    rows, summary = _run(tmp_path, str(tmp_path / "t.csv"))
    got = [(r["key"], r["state"], r["reason"], r["detail"]) for r in rows]
    assert got == [
        (
            "k1",
            "error",
            "invalid_caption_encoding",
            "column 'caption': caption is not UTF-8 (byte 0xe9)",
        ),
        ("k\\xe92", "error", "invalid_key", "column 'key': key is not UTF-8 text (byte 0xe9)"),
        (
            "k3",
            "error",
            "invalid_image_path",
            "column 'image': the path is not UTF-8 text (byte 0xe9): no manifest can hold it; "
            "write the table's paths in UTF-8",
        ),
        ("k4", "kept", None, None),
    ]
    assert summary["source_issues"] == []


def test_lone_surrogates_in_a_jsonl_table(tmp_path):
    for i in range(1, 4):
        (tmp_path / f"x{i}.jpg").write_bytes(_jpeg(i))
    lines = [
        r'{"key": "a\ud800", "image": "x1.jpg", "caption": "one"}',
        r'{"key": "b", "image": "x2.jpg", "caption": "beach \ud83c"}',
        r'{"key": "c", "image": "x\udc00.jpg", "caption": "three"}',
        r'{"key": "d", "image": "x3.jpg", "caption": "four"}',
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    rows, _ = _run(tmp_path, str(tmp_path / "t.jsonl"))
    got = {r["key"]: (r["state"], r["reason"], r["caption"]) for r in rows}
    assert got == {
        "a\\ud800": ("error", "invalid_key", None),
        "b": ("kept", None, "beach \ufffd"),  # the caption stays, U+FFFD for the half pair
        "c": ("error", "invalid_image_path", None),
        "d": ("kept", None, "four"),
    }
    shard = tmp_path / "out" / "shards" / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        assert tar.extractfile("b.txt").read() == "beach \ufffd".encode()


def test_a_sidecar_with_a_lone_surrogate_is_written_escaped(tmp_path):
    members = [
        ("0.jpg", _jpeg(1)),
        ("0.txt", b"a photo"),
        ("0.json", rb'{"url": "x\ud800y", "note": "caf\u00e9"}'),
        ("1.jpg", _jpeg(2)),
        ("1.txt", b"another"),
        ("1.json", b'{"note": "caf\xc3\xa9"}'),
    ]
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    rows, _ = _run(tmp_path, str(tmp_path / "s.tar"))
    assert [(r["key"], r["state"]) for r in rows] == [("0", "kept"), ("1", "kept")]
    with tarfile.open(tmp_path / "out" / "shards" / "shard-000000.tar") as tar:
        first = tar.extractfile("0.json").read()
        second = tar.extractfile("1.json").read()
    # valid UTF-8 (ASCII, escaped) holding the same values as the input's
    assert json.loads(first.decode("utf-8"))["url"] == "x\ud800y"
    assert json.loads(first.decode("utf-8"))["note"] == "café"
    assert b"\\ud800" in first
    assert "café".encode() in second  # a sidecar without one stays unescaped


def test_captions_with_a_byte_order_mark_are_read_and_kept_in_utf8(tmp_path):
    """Windows tools write captions with a byte-order mark (Notepad's "Unicode" is
    UTF-16): the mark names the codec and is no part of the caption; kept shards hold
    the caption in UTF-8. Bytes the mark's codec cannot read are the sample's error."""
    caption = "Straße at night, 夜"
    texts = [
        b"\xef\xbb\xbf" + caption.encode(),
        caption.encode("utf-16"),  # Python writes the mark, little-endian here
        b"\xfe\xff" + caption.encode("utf-16-be"),
        caption.encode("utf-32"),
        caption.encode("utf-16")[:-1],  # cut inside a character
    ]
    with tarfile.open(tmp_path / "s.tar", "w") as tar:
        for i, text in enumerate(texts):
            for name, data in ((f"{i}.jpg", _jpeg(i)), (f"{i}.txt", text)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    rows, _ = _run(tmp_path, str(tmp_path / "s.tar"))
    assert [(r["state"], r["caption"]) for r in rows[:4]] == [("kept", caption)] * 4
    assert (rows[4]["reason"], rows[4]["detail"].split(":")[0]) == (
        "invalid_caption_encoding",
        "caption is not UTF-16",
    )
    with tarfile.open(tmp_path / "out" / "shards" / "shard-000000.tar") as tar:
        written = [tar.extractfile(f"{i}.txt").read() for i in range(4)]
    assert written == [caption.encode()] * 4


def test_a_utf16_tab_separated_table_is_read(tmp_path):
    """Excel's "Unicode Text": UTF-16 with a byte-order mark, tab-separated, CRLF."""
    (tmp_path / "a.jpg").write_bytes(_jpeg(1))
    text = "key\timage\tcaption\r\nk1\ta.jpg\tun café, 夜\r\nk2\tb.jpg\tsecond\r\n"
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode("utf-16"))
    with open(path, "rb") as f:
        used, problems = table_problems(f, "csv", DEFAULTS)
        # (the header read by a text reader that left the file open: the first rows
        # are read after it, and a closed file would be a problem here)
        assert (used, problems) == (DEFAULTS, [])
    with open(path, "rb") as f:
        first, second = iter_table(f, str(path), "csv", **DEFAULTS)
    assert (first.key, first.image_path, first.caption) == (
        "k1",
        str(tmp_path / "a.jpg"),
        "un café, 夜",
    )
    assert (second.key, second.caption) == ("k2", "second")


def test_the_helpers_name_what_they_found():
    assert escape_surrogates("caf\udce9 a\ud83cb ok") == "caf\\xe9 a\\ud83cb ok"
    assert key_problem("caf\udce9") == "key is not UTF-8 text (byte 0xe9)"
    assert key_problem("a\ud83c") == "key is not UTF-8 text (a lone surrogate U+D83C)"
    # C1 controls: latin-1 gives them for bytes 0x80-0x9F of a cp437 or cp1252 name
    # (helper-41: the hint said latin-1, which gives them; cp1252 reads € and “”)
    assert key_problem("\x80a").startswith("key contains a control character (U+0080-U+009F")
    assert "input.name_encoding: cp1252" in key_problem("\x93a\x94")
    assert key_problem("a\x1b[2J") == "key contains a control character"
    assert "\x80a".encode("latin-1").decode("cp1252") == "€a"
    assert key_problem("caf\xe9") is None
    assert key_problem("café") is None


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_iter_table_reads_on_past_a_bad_row(tmp_path, fmt):
    path = tmp_path / f"t.{fmt}"
    if fmt == "csv":
        path.write_bytes(
            b"key,image,caption\n" + b"k0,a.jpg,\xff\xfe\n" * 3000 + b"last,b.jpg,ok\n"
        )
    else:
        path.write_text(
            "\n".join(
                [r'{"key": "k0", "image": "a\udc80.jpg", "caption": "x"}'] * 3000
                + ['{"key": "last", "image": "b.jpg", "caption": "ok"}']
            )
            + "\n"
        )
    with open(path, "rb") as f:
        records = list(iter_table(f, str(path), fmt, **DEFAULTS))
    assert len(records) == 3001  # no source issue: every row is its own record
    assert records[-1].key == "last" and records[-1].state == "pending"
    assert {r.state for r in records[:-1]} == {"error"}


def test_a_caption_with_nul_characters_is_no_text(tmp_path):
    """UTF-16 without a byte-order mark reads as UTF-8 with a NUL after each ASCII
    letter: it was kept, and a caption-term filter matched nothing in it."""
    from mitigate.records import SampleRecord
    from mitigate.sources import parse_payload

    record = SampleRecord(key="k", source="s", index=0, image_ext="jpg")
    jpg = _jpeg(1)
    for data, where in [
        ({"jpg": jpg, "txt": "beheading".encode("utf-16-le")}, ""),
        ({"jpg": jpg, "caption": b"a\x00b"}, " (.caption)"),
        ({"jpg": jpg, "json": b'{"caption": "a\\u0000b"}'}, " (.json 'caption')"),
    ]:
        out = parse_payload(record, data)
        assert (out.reason, out.detail) == (
            "invalid_caption_encoding",
            f"caption{where} holds NUL characters: not text (UTF-16 without a byte-order mark?)",
        )
    table = tmp_path / "t.jsonl"
    (tmp_path / "a.jpg").write_bytes(jpg)
    table.write_text(json.dumps({"key": "k", "image": "a.jpg", "caption": "a\x00b"}) + "\n")
    with open(table, "rb") as f:
        (row,) = iter_table(f, str(table), "jsonl", **DEFAULTS)
    assert (row.reason, row.detail) == (
        "invalid_caption_encoding",
        "column 'caption': caption holds NUL characters: not text (UTF-16 without a "
        "byte-order mark?)",
    )


def test_a_csv_quote_left_open_is_named_with_the_rows_it_swallowed(tmp_path):
    """A caption starting with a stray quote made the reader take the lines up to the
    next quote as that cell: the rows in them vanished, with no word, and the row
    holding them was kept with their text as its caption."""
    (tmp_path / "a.jpg").write_bytes(_jpeg(1))
    lines = ["key,image,caption", "k0,a.jpg,plain", 'k1,a.jpg,"Best photo ever']
    lines += [f"k{i},a.jpg,caption {i}" for i in range(2, 6)]
    lines += [
        'k6,a.jpg,a 12" ruler',
        "k7,a.jpg,last",
        'k8,a.jpg,"two\nlines, fine"',
        "k9,a.jpg,end",
    ]
    table = tmp_path / "t.csv"
    table.write_text("\n".join(lines) + "\n")
    with open(table, "rb") as f:
        items = list(iter_table(f, str(table), "csv", **DEFAULTS))
    records = [i for i in items if not isinstance(i, SourceIssue)]
    issues = [i for i in items if isinstance(i, SourceIssue)]
    assert [(r.key, r.index, r.reason) for r in records] == [
        ("k0", 0, None),
        ("k1", 1, "invalid_row"),
        ("k7", 2, None),
        ("k8", 3, None),  # a quoted caption over two lines is CSV, not a lost row
        ("k9", 4, None),
    ]
    # k2-k5 and k6, whose quote closed the cell
    assert records[1].detail.startswith("lines 3-8: a quoted cell runs over 5 line(s) that look")
    assert [(i.reason, i.count) for i in issues] == [("swallowed_rows", 5)]
    assert issues[0].detail.startswith("lines 4-8: 5 row(s) read into one quoted cell of row 1")
    assert records[3].caption == "two\nlines, fine"


@pytest.mark.parametrize(
    ("start", "end", "codec"),
    [
        ("", "\r", "utf-8"),  # "CSV (Macintosh)": lines end in a lone CR
        ("sep=;\r\n", "\r\n", "utf-8"),  # Excel's line naming the delimiter
        ("\ufeffsep=;\n", "\n", "utf-8"),
        ("sep=;\r\n", "\r\n", "utf-16"),
        ("sep=;\r", "\r", "utf-8"),
        ("sep=;;;\r\n", "\r\n", "utf-8"),  # a sheet holding Excel's line, saved again
    ],
)
def test_csv_tables_with_cr_line_ends_or_an_excel_sep_line_are_read(start, end, codec, tmp_path):
    """A lone CR ended nothing (validate: "new-line character seen in unquoted field");
    Excel's ``sep=;`` line was taken for the header (columns 'sep=' and '')."""
    (tmp_path / "a.jpg").write_bytes(_jpeg(1))
    delimiter = ";" if "sep" in start else ","
    lines = ["key,image,caption", "k0,a.jpg,a cat, sitting", 'k1,a.jpg,"open', "k2,a.jpg,x"]
    lines += ['k3,a.jpg,shut"', "k4,a.jpg,end"]
    if delimiter == ";":
        lines = [line.replace(",", ";", 2) for line in lines]
    else:
        lines[1] = 'k0,a.jpg,"a cat, sitting"'
    table = tmp_path / "t.csv"
    table.write_bytes((start + end.join(lines) + end).encode(codec))
    with open(table, "rb") as f:
        used, problems = table_problems(f, "csv", DEFAULTS)
    assert problems == [] and used["caption_column"] == "caption"
    with open(table, "rb") as f:
        items = list(iter_table(f, str(table), "csv", **DEFAULTS))
    records = [i for i in items if not isinstance(i, SourceIssue)]
    assert [(r.key, r.reason) for r in records] == [
        ("k0", None),
        ("k1", "invalid_row"),  # its open quote holds k2 and k3
        ("k4", None),
    ]
    assert (records[0].caption, records[2].caption) == ("a cat, sitting", "end")
    shift = 1 if start else 0  # line numbers are the file's, the sep= line counted
    assert records[1].detail.startswith(f"lines {3 + shift}-{5 + shift}: a quoted cell")


@pytest.mark.parametrize(
    ("name", "data", "said"),
    [("t.jsonl", b"", "no row"), ("t.jsonl", b"\n \n", "no row"), ("t.csv", b"", "no header line")],
)
def test_an_empty_table_is_said_empty_not_missing_its_columns(name, data, said, tmp_path):
    (tmp_path / name).write_bytes(data)
    with open(tmp_path / name, "rb") as f:
        _, problems = table_problems(f, name.rsplit(".", 1)[1], DEFAULTS)
    assert problems == [f"the table is empty ({said}): nothing to read"]


def test_a_jsonl_integer_of_thousands_of_digits_is_its_rows_error_not_the_tables_end():
    """Python refuses to read an integer of over 4,300 digits (a ValueError, not a
    JSONDecodeError): the table ended there, its later rows lost."""
    row = b'{"key": "%s", "image": "a.jpg", "caption": "c"%s}\n'
    data = row % (b"a", b"") + row % (b"b", b', "n": ' + b"9" * 5000) + row % (b"c", b"")
    items = list(iter_table(io.BytesIO(data), "/t.jsonl", "jsonl", **DEFAULTS))
    assert [(r.key, r.reason) for r in items] == [
        ("a", None),
        ("/t.jsonl#1", "invalid_json"),
        ("c", None),
    ]
    assert items[1].detail.startswith("line 2: not valid JSON: Exceeds the limit (4300 digits)")


def test_a_long_csv_cell_is_its_rows_caption_too_large_not_the_tables_end(tmp_path):
    """The csv module stops at a 128 KiB cell: the rows after it were lost."""
    (tmp_path / "a.jpg").write_bytes(_jpeg(1))
    long = "word " * 40_000  # 200 KB
    table = tmp_path / "t.csv"
    table.write_text(f"key,image,caption\nk0,a.jpg,{long}\nk1,a.jpg,fine\n")
    with open(table, "rb") as f:
        records = list(iter_table(f, str(table), "csv", **DEFAULTS))
    assert [(r.key, r.reason) for r in records] == [("k0", "caption_too_large"), ("k1", None)]


def test_deep_json_on_a_tables_first_line_is_named_not_a_crash(tmp_path):
    table = tmp_path / "t.jsonl"
    table.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with open(table, "rb") as f:
        _, problems = table_problems(f, "jsonl", DEFAULTS)
    assert problems == ["cannot read the table's columns: the first line is JSON nested too deeply"]


def test_a_utf16_jsonl_table_is_read(tmp_path):
    """PowerShell's `>` writes UTF-16 with a byte-order mark."""
    (tmp_path / "a.jpg").write_bytes(_jpeg(1))
    table = tmp_path / "t.jsonl"
    rows = [{"key": "k0", "image": "a.jpg", "caption": "un café"}, {"key": "k1"}]
    table.write_bytes("\r\n".join(json.dumps(r) for r in rows).encode("utf-16") + b"")
    with open(table, "rb") as f:
        assert table_problems(f, "jsonl", DEFAULTS) == (DEFAULTS, [])
    with open(table, "rb") as f:
        first, second = iter_table(f, str(table), "jsonl", **DEFAULTS)
    assert (first.key, first.caption, first.reason) == ("k0", "un café", None)
    assert (second.key, second.reason) == ("k1", "missing_image")


@pytest.mark.parametrize("name", ["t.csv.gz", "t.JSONL.zst", "t.parquet.bz2"])
def test_a_compressed_table_is_named_as_such(tmp_path, name, capsys):
    from mitigate.cli import main

    (tmp_path / name).write_bytes(b"\x1f\x8b\x08\x00")
    assert main(["validate", "--input", str(tmp_path / name), "--output", str(tmp_path / "o")])
    assert "is a compressed table: decompress it first" in capsys.readouterr().err


def test_a_folder_given_as_input_is_named_as_such(tmp_path, capsys):
    from mitigate.cli import main

    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "a.tar").write_bytes(b"")
    assert main(["validate", "--input", str(tmp_path / "shards"), "--output", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert f"{tmp_path / 'shards'} is a folder: it holds 'a.tar': give its files (" in err


@pytest.mark.parametrize("folder", [False, True])
def test_validate_stops_where_no_caption_of_the_first_samples_is_text(tmp_path, capsys, folder):
    # helper-33: 30 cp1252 captions passed validate, then every sample was an error
    from mitigate.cli import main

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "JPEG")
    files = {}
    for i in range(3):
        files[f"s{i}.jpg"] = buf.getvalue()
        files[f"s{i}.txt"] = f"caf\u00e9 \u201cnumber\u201d {i}".encode("cp1252")
    if folder:
        given = tmp_path / "photos"
        given.mkdir()
        for name, data in files.items():
            (given / name).write_bytes(data)
    else:
        given = tmp_path / "a.tar"
        with tarfile.open(given, "w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    argv = ["validate", "--input", str(given), "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "none of its first 3 captions is UTF-8 text" in err and "s0.txt is not UTF-8" in err
    if folder:  # one caption of text is enough: the others are the run's errors to name
        (given / "s1.txt").write_text("a red square", encoding="utf-8")
        assert main(argv) == 0


def test_validate_reads_the_captions_of_a_cut_tar_without_failing(tmp_path, capsys):
    # the caption check reads the first samples' captions: a shard cut inside one is the
    # run's to report (truncated_shard), never an EOFError of validate's
    from mitigate.cli import main

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(2):
            for ext, data in (("jpg", _jpeg(i)), ("txt", f"caption {i}".encode())):
                info = tarfile.TarInfo(f"s{i}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    data = buf.getvalue()
    cut = data.rindex(b"caption 1") + 4  # inside the last caption
    (tmp_path / "cut.tar").write_bytes(data[:cut])
    argv = ["validate", "--input", str(tmp_path / "cut.tar"), "--output", str(tmp_path / "o")]
    assert main(argv) == 0, capsys.readouterr().err
    (tmp_path / "only.tar").write_bytes(data[: data.index(b"caption 0") + 4])  # the only one
    argv = ["validate", "--input", str(tmp_path / "only.tar"), "--output", str(tmp_path / "o")]
    assert main(argv) == 0, capsys.readouterr().err


def test_a_cp1252_csv_stops_validate_and_a_run_warns(tmp_path, capsys, caplog):
    """Excel's "CSV (Comma delimited)" is cp1252: validate said OK, then most rows were
    invalid_caption_encoding one by one (helper-41)."""
    import logging

    from mitigate.cli import main

    rows = ["key,image,caption"] + [f"k{i},img/{i}.jpg,caf\u00e9 n\u00b0{i}" for i in range(5)]
    rows.append("k9,img/9.jpg,plain ascii")
    path = tmp_path / "t.csv"
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode("cp1252"))
    argv = ["--input", str(path), "--output", str(tmp_path / "out")]
    assert main(["validate", *argv]) == 2
    assert "5 of its first 6 captions are not UTF-8 (e.g. 'caf\\\\xe9" in capsys.readouterr().err
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode("utf-8"))  # the same, in UTF-8
    assert main(["validate", *argv]) == 0
    capsys.readouterr()
    path.write_bytes(("\r\n".join(rows) + "\r\n").encode("cp1252"))
    with caplog.at_level(logging.WARNING):
        flags = ["--set", "filters=[{name: caption_terms, terms: [x]}]"]
        flags += ["--set", "rebalance.enabled=false", "--set", "rebalance.embedding_filter=null"]
        assert main(["run", *argv, *flags]) == 0
    assert "a cp1252 table" in caplog.text
