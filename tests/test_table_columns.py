"""Table inputs: the key/image/caption columns are found from the table's schema or
header before any work, common names are accepted, and a missing column is named; an
input or image path that is no regular file (a FIFO) is an error, not a hang."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mitigate.cli import main
from mitigate.config import validate_config
from mitigate.sources import SourceIssue
from mitigate.tables import iter_table, resolve_columns, table_problems

DEFAULTS = {"key_column": "key", "image_column": "image", "caption_column": "caption"}


def _write(path: Path, rows: list[dict]) -> Path:
    fmt = path.suffix.lstrip(".")
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        cols = list(rows[0])
        path.write_text(
            "\n".join([",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in rows]) + "\n"
        )
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("name", ["s.tar.gz", "s.TGZ", "s.tar.zst"])
def test_a_compressed_tar_is_named_as_such_before_any_work(tmp_path, capsys, name):
    (tmp_path / name).write_bytes(b"\x1f\x8b\x08\x00")
    assert main(["validate", "--input", str(tmp_path / name), "--output", str(tmp_path)]) != 0
    assert "is a compressed tar: shards are read by offset, so decompress it" in (
        capsys.readouterr().err
    )


def test_a_compressed_tar_named_tar_stops_validate(tmp_path, capsys):
    import gzip

    (tmp_path / "s.tar").write_bytes(gzip.compress(b"\x00" * 4096, mtime=0))
    assert main(["validate", "--input", str(tmp_path / "s.tar"), "--output", str(tmp_path)])
    assert "s.tar: gzip-compressed, not a plain tar: shards are read by offset, so " in (
        capsys.readouterr().err
    )
    (tmp_path / "s.tar").write_bytes(b"PK\x03\x04" + bytes(4096))  # a zip named .tar
    assert main(["validate", "--input", str(tmp_path / "s.tar"), "--output", str(tmp_path)])
    assert "s.tar: a zip archive, not a tar: write the samples to a tar first" in (
        capsys.readouterr().err
    )


def test_common_names_stand_in_for_the_default_columns():
    used, problems = resolve_columns(["id", "image_path", "text"], DEFAULTS)
    assert used == {"key_column": "id", "image_column": "image_path", "caption_column": "text"}
    assert problems == {}
    # the configured column wins when present, even beside a common name
    used, _ = resolve_columns(["key", "image", "path", "caption", "txt"], DEFAULTS)
    assert used == DEFAULTS


def test_a_missing_column_lists_the_table_s_columns_and_the_setting():
    _, problems = resolve_columns(["key", "url", "caption"], DEFAULTS)
    assert problems == {
        "image_column": "no column 'image' (nor 'image_path', 'path', 'file', 'filename', "
        "'file_name', 'jpg', 'png', 'webp'); "
        "the table's columns are 'key', 'url', 'caption': set input.image_column; a 'url' "
        "column holds addresses to download, which mitigate does not do (download first, "
        "e.g. with img2dataset)"
    }
    # a column the user named is not replaced by a guess
    _, problems = resolve_columns(
        ["key", "image_path", "caption"], {**DEFAULTS, "image_column": "pic"}
    )
    assert problems["image_column"] == (
        "no column 'pic'; the table's columns are 'key', 'image_path', 'caption': "
        "set input.image_column"
    )


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_rows_read_through_a_common_name(tmp_path, fmt):
    path = _write(tmp_path / f"t.{fmt}", [{"key": "a", "image_path": "a.jpg", "text": "cap a"}])
    with open(path, "rb") as f:
        items = list(iter_table(f, str(path), fmt, **DEFAULTS))
    assert [(r.key, r.state, r.image_path, r.caption) for r in items] == [
        ("a", "pending", str(tmp_path / "a.jpg"), "cap a")
    ]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_missing_column_at_run_time_is_a_source_issue_and_every_row_says_why(tmp_path, fmt):
    rows = [
        {"key": "a", "picture": "a.jpg", "caption": "x"},
        {"key": "b", "picture": "b.jpg", "caption": "y"},
    ]
    path = _write(tmp_path / f"t.{fmt}", rows)
    with open(path, "rb") as f:
        items = list(iter_table(f, str(path), fmt, **DEFAULTS))
    issues = [i for i in items if isinstance(i, SourceIssue)]
    records = [i for i in items if not isinstance(i, SourceIssue)]
    why = (
        "no column 'image' (nor 'image_path', 'path', 'file', 'filename', 'file_name', 'jpg', "
        "'png', 'webp'); the table's "
        "columns are 'key', 'picture', 'caption': set input.image_column"
    )
    assert [(i.reason, i.detail, i.count) for i in issues] == [("missing_image", why, 0)]
    assert [(r.key, r.state, r.reason, r.detail) for r in records] == [
        ("a", "error", "missing_image", why),
        ("b", "error", "missing_image", why),
    ]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_validate_names_a_missing_column_before_any_work(tmp_path, fmt, capsys):
    path = _write(tmp_path / f"t.{fmt}", [{"id": "a", "picture": "a.jpg", "caption": "x"}])
    argv = ["validate", "--input", str(path), "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        f"input.paths[0]: {path}: no column 'image' (nor 'image_path', 'path', 'file', "
        "'filename', 'file_name', 'jpg', 'png', 'webp'); the table's columns are 'id', 'picture', "
        "'caption': set input.image_column"
    ) in err
    assert main([*argv, "--set", "input.image_column=picture"]) == 0


def test_validate_accepts_a_common_name_and_says_which(tmp_path, capsys, caplog):
    path = _write(tmp_path / "t.parquet", [{"key": "a", "image_path": "a.jpg", "caption": "x"}])
    assert main(["validate", "--input", str(path), "--output", str(tmp_path / "out")]) == 0
    assert "config OK: 1 input file(s)" in capsys.readouterr().out
    assert f"{path}: no column 'image', using 'image_path' (set input.image_column to choose)" in (
        caplog.text
    )


@pytest.mark.slow
def test_a_run_on_a_table_without_its_image_column_finishes_with_a_report(tmp_path):
    from mitigate.pipeline.run import run

    path = _write(tmp_path / "t.parquet", [{"key": "a", "picture": "a.jpg", "caption": "x"}])
    config = validate_config(
        {
            "input": {"paths": [str(path)]},
            "output": {"path": str(tmp_path / "out")},
            "filters": [{"name": "image_quality"}],
            "rebalance": {"enabled": False},
        }
    )
    # sources given: past validate (the table changed after it, or a remote table)
    summary = run(config, [str(path)])
    assert summary["counts"]["error"]["reasons"] == {"missing_image": 1}
    assert [i["reason"] for i in summary["source_issues"]] == ["missing_image"]
    assert "set input.image_column" in summary["source_issues"][0]["detail"]
    assert (tmp_path / "out" / "report.html").stat().st_size > 0


def _unblock(fifo: Path) -> None:
    """Open ``fifo``'s write end without blocking, so that a reader the code under test
    left blocked in ``open`` (the bug) wakes up instead of hanging the suite."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader waiting: nothing to wake
        pass


def test_only_regular_files_are_opened_for_reading(tmp_path):
    """``fs.open_read`` refuses a FIFO (whose open would block until a writer came) and
    a character device (which streams forever) with an OSError naming the kind, at
    once; a directory is the usual IsADirectoryError; a regular file reads as ever."""
    from mitigate.pipeline import fs

    fifo = tmp_path / "image.jpg"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            fs.open_read(str(fifo)).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout=5)
    if thread.is_alive():
        _unblock(fifo)
    assert outcome and isinstance(outcome[0], OSError), "the open blocked or succeeded"
    assert "not a regular file but a FIFO" in str(outcome[0])
    with pytest.raises(OSError, match="not a regular file but a character device"):
        fs.open_read("/dev/zero")
    with pytest.raises(IsADirectoryError):
        fs.open_read(str(tmp_path))
    (tmp_path / "a.bin").write_bytes(b"abc")
    with fs.open_read(str(tmp_path / "a.bin")) as f:
        assert f.read() == b"abc" and f.seek(1) == 1 and f.read() == b"bc"


def test_a_run_whose_table_names_a_fifo_and_whose_inputs_include_one_goes_on(tmp_path, photos):
    """An image path that is a FIFO is the sample's ``read_error``, and an input shard
    that is one a source issue; the run finishes and lists every other sample."""
    from mitigate.pipeline.run import run

    image = next(iter(photos.values()))
    (tmp_path / "good.jpg").write_bytes(image)
    os.mkfifo(tmp_path / "fifo.jpg")
    os.mkfifo(tmp_path / "fifo.jsonl")
    rows = [
        {"key": "good", "image": "good.jpg", "caption": "a photo"},
        {"key": "fifo", "image": "fifo.jpg", "caption": "a pipe"},
    ]
    table = _write(tmp_path / "t.jsonl", rows)
    config = validate_config(
        {
            "input": {"paths": [str(table)]},
            "output": {"path": str(tmp_path / "out")},
            "filters": [],
            "rebalance": {"enabled": False},
        }
    )
    done: list[dict] = []
    inputs = [str(table), str(tmp_path / "fifo.jsonl")]
    thread = threading.Thread(target=lambda: done.append(run(config, inputs)), daemon=True)
    thread.start()
    thread.join(timeout=120)
    if thread.is_alive():
        _unblock(tmp_path / "fifo.jpg")
        _unblock(tmp_path / "fifo.jsonl")
        thread.join(timeout=60)
    assert done, "the run hung on a FIFO"
    summary = done[0]
    assert summary["counts"]["kept"]["total"] == 1
    assert summary["counts"]["error"]["reasons"] == {"read_error": 1}
    issues = summary["source_issues"]
    assert [(i["source"], i["reason"]) for i in issues] == [
        (str(tmp_path / "fifo.jsonl"), "read_error")
    ]
    assert "not a regular file but a FIFO" in issues[0]["detail"]
    manifest = pq.read_table(tmp_path / "out" / "manifest").to_pylist()
    fifo_row = next(r for r in manifest if r["key"] == "fifo")
    assert "not a regular file but a FIFO" in fifo_row["detail"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_byte_order_mark_is_no_part_of_the_first_column(tmp_path, fmt):
    """CSV and JSONL written by Windows tools start with a UTF-8 byte-order mark: the
    first column is still found by its name and every row read."""
    rows = [
        {"key": "a", "image": "a.jpg", "caption": "x"},
        {"key": "b", "image": "b.jpg", "caption": "y"},
    ]
    path = _write(tmp_path / f"t.{fmt}", rows)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    with open(path, "rb") as f:
        assert table_problems(f, fmt, DEFAULTS) == (DEFAULTS, [])
    with open(path, "rb") as f:
        records = list(iter_table(f, str(path), fmt, **DEFAULTS))
    assert [(r.key, r.state, r.caption) for r in records] == [
        ("a", "pending", "x"),
        ("b", "pending", "y"),
    ]


def test_a_cell_of_another_type_says_so_not_that_it_is_empty(tmp_path):
    rows = [
        {"key": "a", "image": 5, "caption": "x"},
        {"key": "b", "image": "b.jpg", "caption": {"text": "y"}},
        {"key": "c", "image": "c.jpg", "caption": None},
    ]
    path = _write(tmp_path / "t.jsonl", rows)
    with open(path, "rb") as f:
        details = [r.detail for r in iter_table(f, str(path), "jsonl", **DEFAULTS)]
    assert details == [
        "column 'image' holds an int, not text",
        "column 'caption' holds a dict, not text",
        "column 'caption' is empty",
    ]


@pytest.mark.parametrize(
    "name, delimiter",
    [("t.csv", ","), ("t.csv", ";"), ("t.tsv", "\t"), ("t.csv", "|"), ("t.csv", "\t")],
)
def test_a_csv_table_is_read_with_the_delimiter_its_header_uses(tmp_path, name, delimiter):
    """Regression: a spreadsheet's semicolon CSV (locales with a decimal comma) was one
    column 'key;image;caption', and a .tsv file had no format. A quoted cell holding
    another delimiter, or a line break, stays one cell."""
    import csv

    path = tmp_path / name
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(["key", "image", "caption"])
        writer.writerow(["a", "a.jpg", "one, two; three\tfour | five"])
        writer.writerow(["b", "b.jpg", "first line\nsecond line"])
    from mitigate.formats import table_format

    fmt = table_format(str(path), "auto")
    assert fmt == "csv"
    with open(path, "rb") as f:
        assert table_problems(f, fmt, DEFAULTS) == (DEFAULTS, [])
    with open(path, "rb") as f:
        records = list(iter_table(f, str(path), fmt, **DEFAULTS))
    assert [(r.key, r.state, r.caption, Path(r.image_path).name) for r in records] == [
        ("a", "pending", "one, two; three\tfour | five", "a.jpg"),
        ("b", "pending", "first line\nsecond line", "b.jpg"),
    ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_table_of_web_addresses_says_nothing_is_downloaded(tmp_path, fmt):
    """A LAION-style table names images by URL: each such row is an image_url error
    saying what to do (it said 'outside the table's folder, set input.image_root',
    which cannot help); local rows beside them are read."""
    rows = [
        {"key": "u1", "image": "http://example.com/x.jpg", "caption": "a cat"},
        {"key": "u2", "image": "HTTPS://example.com/y.jpg", "caption": "a dog"},
        {"key": "l1", "image": "a.jpg", "caption": "a square"},
    ]
    path = _write(tmp_path / f"t.{fmt}", rows)
    with open(path, "rb") as f:
        records = list(iter_table(f, str(path), fmt, **DEFAULTS))
    assert [(r.key, r.state, r.reason) for r in records] == [
        ("u1", "error", "image_url"),
        ("u2", "error", "image_url"),
        ("l1", "pending", None),
    ]
    assert "is a web address: images are not downloaded here" in records[0].detail
    assert "img2dataset" in records[0].detail


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_table_whose_images_are_all_web_addresses_stops_before_any_work(tmp_path, fmt, capsys):
    """Every sample of a table of URLs would be an image_url error: validate (and run)
    say so before any work, from the first rows; one local path among them lets it run
    (the URL rows then say it one by one)."""
    rows = [
        {"key": f"u{i}", "url": f"https://example.com/{i}.jpg", "caption": "x"} for i in range(150)
    ]
    path = _write(tmp_path / f"t.{fmt}", rows)
    argv = ["validate", "--input", str(path), "--output", str(tmp_path / "out")]
    argv += ["--set", "input.image_column=url"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        f"input.paths[0]: {path}: column 'url' holds web addresses (100 of the first 100 "
        "rows, e.g. 'https://example.com/0.jpg'): images are not downloaded here"
    ) in err
    assert "holds images: input.image_column" not in err
    if fmt == "parquet":  # img2dataset's table: the url beside the jpg's bytes (helper-41)
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(path).append_column("jpg", pa.array([b"\xff\xd8"] * 150))
        pq.write_table(table, path)
        assert main(argv) == 2
        assert "(the table's 'jpg' holds images: input.image_column)" in capsys.readouterr().err
        pq.write_table(table.drop_columns(["jpg"]), path)
    rows[40]["url"] = "local/a.jpg"
    _write(path, rows)
    assert main(argv) == 0


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_table_without_a_key_column_names_rows_by_their_number(tmp_path, fmt):
    rows = [{"image": f"{n}.jpg", "caption": f"cap {n}"} for n in ("a", "b")]
    path = _write(tmp_path / f"train-part.{fmt}", rows)
    with open(path, "rb") as f:
        records = list(iter_table(f, str(path), fmt, **DEFAULTS))
    assert [(r.key, r.state) for r in records] == [
        ("train-part-000000000", "pending"),
        ("train-part-000000001", "pending"),
    ]
    # asked for by name, even where a key column exists
    path = _write(tmp_path / f"k.{fmt}", [{"key": "x", **rows[0]}])
    with open(path, "rb") as f:
        (record,) = iter_table(f, str(path), fmt, **{**DEFAULTS, "key_column": "#row"})
    assert record.key == "k-000000000"
    # a key column the config names and the table lacks is still an error
    with open(path, "rb") as f:
        _, problems = table_problems(f, fmt, {**DEFAULTS, "key_column": "uid"})
    assert problems and "no column 'uid'" in problems[0]


def _datasets_parquet(path: Path, images: list[dict]) -> Path:
    """A Parquet file as Hugging Face ``datasets`` writes an ``Image`` column."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "image": pa.array(images, type=image_type),
            "text": [f"caption {i}" for i in range(len(images))],
        }
    )
    pq.write_table(table, path)
    return path


def test_a_datasets_image_column_is_read_by_its_path_or_at_its_row(tmp_path):
    path = _datasets_parquet(
        tmp_path / "d.parquet",
        [{"bytes": None, "path": "a.jpg"}, {"bytes": b"\xff\xd8 jpeg", "path": "b.jpg"}],
    )
    with open(path, "rb") as f:
        first, second = iter_table(f, str(path), "parquet", **DEFAULTS)
    assert (first.state, first.image_path, first.image_column, first.caption) == (
        "pending",
        str(tmp_path / "a.jpg"),
        None,
        "caption 0",
    )
    # the bytes are read at decode time (tests/test_embedded_images.py)
    assert (second.state, second.image_path, second.image_column) == ("pending", None, "image")
    with open(path, "rb") as f:
        assert table_problems(f, "parquet", DEFAULTS) == (
            {**DEFAULTS, "caption_column": "text", "key_column": "#row"},
            [],
        )


def test_image_bytes_in_a_jsonl_table_are_its_rows_error(tmp_path):
    rows = [{"key": "a", "image": {"bytes": "/9j/4AAQ", "path": "a.jpg"}, "caption": "c"}]
    path = _write(tmp_path / "t.jsonl", rows)
    with open(path, "rb") as f:
        (record,) = iter_table(f, str(path), "jsonl", **DEFAULTS)
    assert (record.reason, record.detail) == (
        "missing_image",
        "column 'image' holds the image's bytes in a jsonl table, which are read from "
        "Parquet tables only: write the table as Parquet",
    )


def test_only_the_columns_in_use_are_read_from_a_parquet_table(tmp_path, monkeypatch):
    rows = [{"key": "k", "image": "a.jpg", "caption": "c", "embedding": [0.5] * 512, "extra": "x"}]
    path = _write(tmp_path / "t.parquet", rows)
    asked = []
    original = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        asked.append(kwargs.get("columns"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    with open(path, "rb") as f:
        (record,) = iter_table(f, str(path), "parquet", **DEFAULTS)
    assert record.state == "pending" and record.caption == "c"
    assert asked == [["key", "image", "caption"]]


def test_key_cells_of_other_types(tmp_path):
    """Integers are keys; pandas' float for an integer column with a gap is its
    integer, and its NaN an empty key; a bool or a list is the wrong column."""
    rows = [
        {"key": 7.0, "image": "a.jpg", "caption": "c"},
        {"key": float("nan"), "image": "a.jpg", "caption": "c"},
        {"key": 2.5, "image": "a.jpg", "caption": "c"},
    ]
    path = _write(tmp_path / "t.parquet", rows)
    with open(path, "rb") as f:
        records = list(iter_table(f, str(path), "parquet", **DEFAULTS))
    assert [(r.key, r.reason) for r in records] == [
        ("7", None),
        ("", "invalid_key"),
        ("2.5", "invalid_key"),  # a dot: its shard's 2.5.jpg would be sample "2"
    ]
    jsonl = tmp_path / "t.jsonl"
    jsonl.write_text(
        '{"key": true, "image": "a.jpg", "caption": "c"}\n'
        '{"key": [1], "image": "a.jpg", "caption": "c"}\n'
        '{"key": 12, "image": "a.jpg", "caption": "c"}\n'
        '{"key": 1e400, "image": "a.jpg", "caption": "c"}\n'
    )
    with open(jsonl, "rb") as f:
        records = list(iter_table(f, str(jsonl), "jsonl", **DEFAULTS))
    assert [(r.key, r.reason, r.detail) for r in records] == [
        ("True", "invalid_key", "column 'key': key True is a bool, not text or an integer"),
        ("[1]", "invalid_key", "column 'key': key [1] is a list, not text or an integer"),
        ("12", None, None),
        ("inf", "invalid_key", "column 'key': key inf is no number a key can be"),
    ]


def test_validate_names_columns_no_row_can_be_read_from(tmp_path):
    """A list of captions a row (COCO style) or timestamp keys made every row the same
    error after validate said the config was fine; a column named twice was taken
    last-wins without a word."""
    import datetime

    lists = tmp_path / "l.parquet"
    pq.write_table(
        pa.table({"key": ["a"], "image": ["a.jpg"], "caption": pa.array([["one", "two"]])}), lists
    )
    stamps = tmp_path / "s.parquet"
    when = datetime.datetime(2024, 1, 1)
    pq.write_table(pa.table({"key": [when], "image": ["a.jpg"], "caption": ["c"]}), stamps)
    twice = tmp_path / "d.csv"
    twice.write_text("key,image,caption,caption\na,a.jpg,one,two\n")
    found = {}
    for path, fmt in ((lists, "parquet"), (stamps, "parquet"), (twice, "csv")):
        with open(path, "rb") as f:
            found[path.name] = table_problems(f, fmt, DEFAULTS)[1]
    assert found == {
        "l.parquet": [
            "column 'caption' holds list<element: string> values, not text, one caption a "
            "row: set input.caption_column (or keep one caption of each list)"
        ],
        "s.parquet": [
            "column 'key' holds timestamp[us] values, not text or integers: set input.key_column"
        ],
        "d.csv": [
            "column 'caption' appears 2 times: which one is input.caption_column cannot be "
            "told; rename the others"
        ],
    }


def test_uuid_and_decimal_keys_are_keys(tmp_path):
    import decimal
    import uuid

    ids = [uuid.UUID(int=7), uuid.UUID(int=8)]
    path = tmp_path / "t.parquet"
    table = pa.table(
        {
            "key": pa.array([i.bytes for i in ids], pa.uuid()),
            "id2": pa.array([decimal.Decimal(12), decimal.Decimal("1.5")], pa.decimal128(18, 1)),
            "image": ["a.jpg", "a.jpg"],
            "caption": ["c", "c"],
        }
    )
    pq.write_table(table, path)
    with open(path, "rb") as f:
        assert table_problems(f, "parquet", DEFAULTS)[1] == []
    with open(path, "rb") as f:
        assert [r.key for r in iter_table(f, str(path), "parquet", **DEFAULTS)] == [
            str(i) for i in ids
        ]
    with open(path, "rb") as f:
        records = iter_table(f, str(path), "parquet", **{**DEFAULTS, "key_column": "id2"})
        assert [r.key for r in records] == ["12", "1.5"]


def test_partitioned_tables_without_a_key_column_get_keys_that_tell_them_apart(tmp_path, photos):
    """duckdb's PARTITION_BY and Spark's partitionBy write key=a/data_0.parquet,
    key=b/data_0.parquet: their row keys were all data_0-000000000, ... and every table
    but the first was duplicate_key."""
    from mitigate.pipeline.run import run
    from mitigate.table_rows import row_names

    images = iter(photos.values())
    paths = []
    for part in ("a", "b"):
        folder = tmp_path / f"key={part}"
        folder.mkdir()
        for i in range(2):
            (folder / f"{i}.jpg").write_bytes(next(images))
        paths.append(
            _write(
                folder / "data_0.parquet",
                [{"image": f"{i}.jpg", "caption": f"photo {part}{i}"} for i in range(2)],
            )
        )
    assert row_names([str(p) for p in paths]) == {
        str(paths[0]): "key=a/data_0",
        str(paths[1]): "key=b/data_0",
    }
    assert row_names([str(paths[0])]) == {str(paths[0]): "data_0"}  # a lone table's as before
    # a folder input's name has no extension: data.v2/ was prefixed "data"
    folders = ["/d/data.v2/", "/e/data.v1/"]
    assert row_names(folders) == {"/d/data.v2/": "data.v2", "/e/data.v1/": "data.v1"}
    assert row_names(["/d/photos.2024/"]) == {"/d/photos.2024/": "photos.2024"}
    config = validate_config(
        {
            "input": {"paths": [str(tmp_path / "*" / "data_0.parquet")]},
            "output": {"path": str(tmp_path / "out")},
            "filters": [{"name": "image_quality"}],
            "rebalance": {"enabled": False},
            "dedup": {"exact": False, "near": False},
        }
    )
    run(config)
    rows = pq.read_table(tmp_path / "out" / "manifest").to_pylist()
    assert sorted((r["key"], r["reason"]) for r in rows) == [
        ("key=a/data_0-000000000", None),
        ("key=a/data_0-000000001", None),
        ("key=b/data_0-000000000", None),
        ("key=b/data_0-000000001", None),
    ]


def test_column_names_as_a_spreadsheet_user_types_them(tmp_path):
    """`Key, Image, Caption` (capitals, a space after each comma) named no column."""
    used, problems = resolve_columns(["Key", " Image", " Caption "], DEFAULTS)
    assert problems == {}
    assert used == {"key_column": "Key", "image_column": " Image", "caption_column": " Caption "}
    _, problems = resolve_columns(["id", "URL", "text"], DEFAULTS)
    assert "a 'url' column holds addresses to download" in problems["image_column"]


def test_a_windows_path_that_names_no_file_says_so(tmp_path):
    from mitigate.stages import load_payloads

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8")
    path = _write(tmp_path / "t.jsonl", [{"key": "k", "image": "images\\a.jpg", "caption": "c"}])
    with open(path, "rb") as f:
        (record,) = iter_table(f, str(path), "jsonl", **DEFAULTS)
    ((out, _),) = load_payloads([record], lambda p: open(p, "rb"), max_image_bytes=10**6)
    windows = str(tmp_path) + "/images\\a.jpg"
    assert (out.reason, out.detail) == (
        "missing_image",
        f"image file not found: {windows!r} (a Windows path? write / between folders)",
    )


def test_a_csv_typed_with_a_space_after_each_comma_is_read(tmp_path, photos):
    (tmp_path / "a.jpg").write_bytes(next(iter(photos.values())))
    path = tmp_path / "t.csv"
    path.write_text('Key, Image, Caption\nk0, a.jpg, "a photo, with a comma"\n')
    with open(path, "rb") as f:
        assert table_problems(f, "csv", DEFAULTS)[1] == []
    with open(path, "rb") as f:
        (record,) = iter_table(f, str(path), "csv", **DEFAULTS)
    assert (record.key, record.image_path, record.caption) == (
        "k0",
        str(tmp_path / "a.jpg"),
        "a photo, with a comma",
    )


def test_an_image_written_inline_in_a_path_column_is_named_so(tmp_path):
    """A base64 image or a data URI in a path column was taken for a path (outside the
    root; "File name too long"), each row's detail holding all of it (~100 KB a row)."""
    blob = "A" * 100_000
    rows = [
        {"key": "a", "image": "/9j/" + blob, "caption": "c"},
        {"key": "b", "image": "data:image/jpeg;base64," + blob, "caption": "c"},
    ]
    path = _write(tmp_path / "t.jsonl", rows)
    with open(path, "rb") as f:
        first, second = iter_table(f, str(path), "jsonl", **DEFAULTS)
    # each row says what it holds, in a line, and validate before any work
    assert [r.reason for r in (first, second)] == ["invalid_image_path"] * 2
    assert first.detail == (
        "column 'image' holds an image written inline ('/9j/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        "AAAAAA'...: base64 or a data: URI), not a path"
    )
    with open(path, "rb") as f:
        (problem,) = table_problems(f, "jsonl", DEFAULTS)[1]
    assert problem.startswith("column 'image' holds images written inline (2 of the first 2")
    # a long path is no inline image: cut in its detail
    rows = [{"key": "c", "image": "/" + "d/" * 600 + "a.jpg", "caption": "c"}]
    path = _write(tmp_path / "u.jsonl", rows)
    with open(path, "rb") as f:
        (third,) = iter_table(f, str(path), "jsonl", **DEFAULTS)
    assert third.reason == "image_path_outside_root" and len(third.detail) < 400
    assert "... (1,206 characters)" in third.detail
    # and an OS error's file name too
    from mitigate.stages import load_payloads

    rows = [{"key": "d", "image": "a" * 3000 + ".jpg", "caption": "c"}]
    path = _write(tmp_path / "v.jsonl", rows)
    with open(path, "rb") as f:
        (fourth,) = iter_table(f, str(path), "jsonl", **DEFAULTS)
    ((fourth, _),) = load_payloads([fourth], lambda p: open(p, "rb"), max_image_bytes=10**6)
    assert fourth.reason == "read_error" and len(fourth.detail) < 400
    assert fourth.detail.startswith("cannot read: File name too long: ")


def test_a_row_cut_by_an_unquoted_line_break_says_so_and_ragged_rows_are_read(tmp_path):
    """A caption with a line break written unquoted (pandas with ``lineterminator="\\r"``
    quotes only that character) splits its row: the rest is a row of its own, whose
    error said only "column 'image' is empty". It now names the line and the row it
    belongs to. Rows that leave trailing cells out, but have the ones in use, are read
    as before and say nothing."""
    path = tmp_path / "t.csv"
    path.write_text(
        "sep=,\nkey,image,caption,url\n"
        "a,a.jpg,a dog\non the beach,http://x\n"  # the caption cut: 4 cells, then 2
        "b,b.jpg,a cat\n"  # ragged: url left out
        "c,c.jpg,a cow,http://y\n",
        encoding="utf-8",
    )
    with open(path, "rb") as f:
        records = list(iter_table(f, str(path), "csv", **DEFAULTS))
    got = [(r.key, r.state, r.reason, r.detail or "") for r in records]
    assert [g[:3] for g in got] == [
        ("a", "pending", None),
        ("on the beach", "error", "missing_caption"),
        ("b", "pending", None),
        ("c", "pending", None),
    ]
    assert got[1][3] == (
        "column 'caption' is empty (line 4 holds 2 of the header's 4 cells: the rest of the "
        "row on line 3, cut by a line break in a cell that is not quoted? Quote cells that "
        "hold line breaks)"
    )
    assert all("line break" not in d for *_, d in got[:1] + got[2:])


def test_a_key_with_a_dot_is_refused_as_no_shard_could_name_it(tmp_path, capsys):
    # helper-33: keys that are file names gave kept shards of cat.jpg.jpg, read by
    # WebDataset (and this tool) as sample "cat" with members jpg.jpg and jpg.txt
    from mitigate.cli import main

    rows = [
        {"key": "cat.jpg", "image": "a.jpg", "caption": "c"},
        {"key": "sub/img.001", "image": "a.jpg", "caption": "c"},
        {"key": "v1.2/plain", "image": "a.jpg", "caption": "c"},  # a dot in a folder: fine
    ]
    path = _write(tmp_path / "t.jsonl", rows)
    with open(path, "rb") as f:
        records = list(iter_table(f, str(path), "jsonl", **DEFAULTS))
    assert [(r.key, r.reason) for r in records] == [
        ("cat.jpg", "invalid_key"),
        ("sub/img.001", "invalid_key"),
        ("v1.2/plain", None),
    ]
    assert "would be read as sample 'cat'" in records[0].detail
    assert "would be read as sample 'sub/img'" in records[1].detail
    # a table whose first keys all hold one stops validate; one with some does not
    dotted = _write(tmp_path / "d.jsonl", rows[:2])
    assert main(["validate", "--input", str(dotted), "--output", str(tmp_path / "o")]) == 2
    assert "column 'key' holds keys with a dot (2 of the first 2 rows" in capsys.readouterr().err
    assert main(["validate", "--input", str(path), "--output", str(tmp_path / "o")]) == 0
    # a table named with dots names its rows without them
    named = _write(tmp_path / "train.v2.jsonl", [{"image": "a.jpg", "caption": "c"}])
    with open(named, "rb") as f:
        (record,) = iter_table(f, str(named), "jsonl", **{**DEFAULTS, "key_column": "#row"})
    assert record.key == "train_v2-000000000" and record.reason is None
