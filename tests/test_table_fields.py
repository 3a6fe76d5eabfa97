"""A table row's other columns (url, license, width, ...) go into its shard's KEY.json
and the manifest's ``row_fields``: a tar sample's sidecar always travelled with it, a
table row's metadata was dropped, so a cleaned set lost its licences and sources."""

from __future__ import annotations

import datetime
import decimal
import io
import json
import logging
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import quarantine_run
from mitigate.config import load_config
from mitigate.pipeline.run import redecide
from mitigate.sidecar import row_fields


def _images(folder: Path, n: int) -> list[str]:
    names = []
    for i in range(n):
        side = 20 if i == n - 1 else 80  # the last one is dropped by image_quality
        Image.new("RGB", (side, side * 3 // 4), (i * 50 % 256, 100, 200 - i * 30)).save(
            folder / f"img{i}.jpg"
        )
        names.append(f"img{i}.jpg")
    return names


def _csv(folder: Path) -> Path:
    names = _images(folder, 4)
    lines = ["key,image,caption,url,license"]
    lines += [f"c{i},{n},a photo {i},https://example.com/{i},CC-BY" for i, n in enumerate(names)]
    lines[2] += ",a cell past the header"  # c1: an invalid_row, its tail never read
    lines[3] += ",, "  # blank cells past it: nothing
    lines.insert(4, ",,,,,")  # a spreadsheet's empty row: no sample
    (folder / "t.csv").write_bytes(("\n".join(lines) + "\n").encode() + b"c9,img0.jpg,x,caf\xe9,\n")
    return folder / "t.csv"


def _jsonl(folder: Path) -> Path:
    names = _images(folder, 4)
    rows = [
        {"key": f"j{i}", "image": n, "caption": f"a photo {i}", "meta": {"w": i, "t": ["a"]}}
        for i, n in enumerate(names)
    ]
    rows[1]["score"] = float("nan")  # Python's json writes NaN: read, and written as null
    (folder / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder / "t.jsonl"


def _parquet(folder: Path) -> Path:
    names = _images(folder, 4)
    pq.write_table(
        pa.table(
            {
                "key": [f"p{i}" for i in range(4)],
                "image": names,
                "caption": [f"a photo {i}" for i in range(4)],
                "when": [datetime.datetime(2024, 1, i + 1, 12) for i in range(4)],
                "price": pa.array([decimal.Decimal("1.50")] * 4, pa.decimal128(5, 2)),
                "emb": [[0.5 * i, 0.25] for i in range(4)],
                "mask": [b"\x00\x01"] * 4,  # bytes: JSON holds none
                "digest": pa.array([bytes(32)] * 4, pa.binary(32)),  # nor these
                # pandas 2's nanoseconds (Python's datetime has none: pyarrow asked for
                # pandas and the table was lost), a date past Python's (the run ended)
                "ns": pa.array(
                    [1_700_000_000_123_456_780 + i for i in range(4)], pa.timestamp("ns")
                ),
                "far": pa.array([2**31 - 1, 0, None, 0], pa.int32()).cast(pa.date32()),
                "took": pa.array([1500 * i for i in range(4)], pa.duration("ms")),
                "gap": [float("nan"), 1.0, None, 2.0],
            }
        ),
        folder / "t.parquet",
    )
    return folder / "t.parquet"


EXPECTED = {
    "csv": {
        "c0": {"license": "CC-BY", "url": "https://example.com/0"},
        "c2": {"license": "CC-BY", "url": "https://example.com/2"},
    },
    "jsonl": {
        "j0": {"meta": {"w": 0, "t": ["a"]}},
        "j1": {"meta": {"w": 1, "t": ["a"]}, "score": None},
        "j2": {"meta": {"w": 2, "t": ["a"]}},
    },
    "parquet": {
        f"p{i}": {
            "when": f"2024-01-0{i + 1}T12:00:00.000000",
            "ns": f"2023-11-14T22:13:20.12345678{i}",
            "far": ["<value out of range: 2147483647>", "1970-01-01", None][i],
            "took": 1.5 * i,
            "price": "1.50",
            "emb": [0.5 * i, 0.25],
            "gap": [None, 1.0, None][i],
        }
        for i in range(3)
    },
}


def _sidecars(shard: Path) -> dict[str, dict]:
    with tarfile.open(shard) as tar:
        return {
            m.name[: -len(".json")]: json.loads(tar.extractfile(m).read())
            for m in tar.getmembers()
            if m.name.endswith(".json")
        }


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_kept_shards_and_the_manifest_carry_a_rows_other_columns(fmt, tmp_path, caplog):
    table = {"csv": _csv, "jsonl": _jsonl, "parquet": _parquet}[fmt](tmp_path)
    with caplog.at_level(logging.WARNING):
        rows = quarantine_run(table, tmp_path / "out")
    expected = EXPECTED[fmt]
    sidecars = _sidecars(tmp_path / "out" / "shards" / "shard-000000.tar")
    assert set(sidecars) == set(expected)
    for key, fields in expected.items():
        got = sidecars[key]
        assert got.pop("mitigate")["source"] == str(table)
        assert got == fields, key
        assert json.loads(rows[key]["row_fields"]) == fields
    # the dropped row's quarantine sidecar has them too
    (shard,) = (tmp_path / "out" / "quarantine").rglob("*.tar")
    ((key, sidecar),) = _sidecars(shard).items()
    assert sidecar["mitigate"]["manifest"]["reason"] == "image_too_small"
    assert json.loads(rows[key]["row_fields"]) == {
        k: v for k, v in sidecar.items() if k != "mitigate"
    }
    assert ("'mask', 'digest' hold bytes" in caplog.text) == (fmt == "parquet")
    if fmt == "csv":
        # a caption with an unquoted comma: refused, not cut with its tail in KEY.json
        # unfiltered (helper-41); the empty row is no sample
        assert rows["c1"]["reason"] == "invalid_row"
        assert rows["c1"]["detail"].startswith("6 cells, the header 5: a delimiter inside")
        assert len(rows) == 5
    if fmt == "csv":  # a cell that is not UTF-8 reaches the manifest escaped (c9 is c0's image)
        assert (rows["c9"]["state"], rows["c9"]["reason"]) == ("duplicate", "exact_duplicate")
        # as the keys have it: the byte escaped in text, which strict JSON readers take
        assert json.loads(rows["c9"]["row_fields"]) == {"license": "", "url": "caf\\xe9"}
    # a redecide writes the same shards: the fields come from the manifest
    config, _ = load_config(tmp_path / "out" / "config.yaml", [f"output.path={tmp_path / 're'}"])
    redecide(config, str(tmp_path / "out"))
    assert (tmp_path / "re" / "shards" / "shard-000000.tar").read_bytes() == (
        tmp_path / "out" / "shards" / "shard-000000.tar"
    ).read_bytes()


def test_table_fields_false_leaves_them_out(tmp_path):
    rows = quarantine_run(_parquet(tmp_path), tmp_path / "out", "output.table_fields=false")
    assert {r["row_fields"] for r in rows.values()} == {None}
    sidecars = _sidecars(tmp_path / "out" / "shards" / "shard-000000.tar")
    assert {tuple(s) for s in sidecars.values()} == {("mitigate",)}


def test_a_redecide_told_table_fields_false_leaves_them_out(tmp_path):
    quarantine_run(_jsonl(tmp_path), tmp_path / "out")
    overrides = [f"output.path={tmp_path / 're'}", "output.table_fields=false"]
    config, _ = load_config(tmp_path / "out" / "config.yaml", overrides)
    redecide(config, str(tmp_path / "out"))
    sidecars = _sidecars(tmp_path / "re" / "shards" / "shard-000000.tar")
    assert set(sidecars) == set(EXPECTED["jsonl"])
    assert {tuple(s) for s in sidecars.values()} == {("mitigate",)}
    (shard,) = (tmp_path / "re" / "quarantine").rglob("*.tar")
    assert [tuple(s) for s in _sidecars(shard).values()] == [("mitigate",)]


def test_a_row_over_max_table_fields_bytes_leaves_its_largest_columns_out(tmp_path):
    """The fields travel with the sample through the run: an embedding a row made a run
    2.3x slower and its memory grow with the data (BENCHMARKS.md). The sample is kept;
    the largest columns are left out and named."""
    names = _images(tmp_path, 3)
    embedding = [0.123456789] * 50  # ~650 bytes of JSON
    rows = [{"key": "small", "image": names[0], "caption": "c", "license": "CC0"}]
    rows += [{"key": "big", "image": names[1], "caption": "c", "license": "CC0", "emb": embedding}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = quarantine_run(
        tmp_path / "t.jsonl", tmp_path / "out", "output.max_table_fields_bytes=200"
    )
    assert {r["state"] for r in got.values()} == {"kept"}
    assert json.loads(got["small"]["row_fields"]) == {"license": "CC0"}
    assert json.loads(got["big"]["row_fields"]) == {"license": "CC0", "_not_carried": ["emb"]}
    sidecars = _sidecars(tmp_path / "out" / "shards" / "shard-000000.tar")
    assert sidecars["big"]["_not_carried"] == ["emb"] and sidecars["big"]["license"] == "CC0"


def test_a_column_named_twice_is_not_carried(tmp_path, caplog):
    names = _images(tmp_path, 2)
    table = pa.Table.from_arrays(
        [pa.array(["d0"]), pa.array([names[0]]), pa.array(["c"]), pa.array(["A"]), pa.array(["B"])],
        names=["key", "image", "caption", "x", "x"],
    )
    pq.write_table(table, tmp_path / "t.parquet")
    with caplog.at_level(logging.WARNING):
        rows = quarantine_run(tmp_path / "t.parquet", tmp_path / "out")
    assert rows["d0"]["state"] == "kept" and rows["d0"]["row_fields"] is None
    assert (
        "column(s) 'x' appear more than once: which value is which cannot be told: not carried"
        in caplog.text
    )


def test_a_csv_header_naming_a_column_twice_keeps_both_cells():
    """The csv module keeps the last cell of a name given twice: the first was lost
    without a word. As pandas reads such a table, the second is ``url.1``."""
    from mitigate.table_rows import csv_dicts

    rows = list(csv_dicts(io.BytesIO(b"key,image,caption,url,url,,\nk,a.jpg,c,u1,u2,e1,e2\n")))
    assert rows == [
        {
            "key": "k",
            "image": "a.jpg",
            "caption": "c",
            "url": "u1",
            "url.1": "u2",
            "": "e1",
            ".1": "e2",
        }
    ]


def test_row_fields_sorts_names_and_leaves_the_used_columns_out():
    row = {"key": "k", "image": "a.jpg", "caption": "c", "z": 1, "a": {"b": [float("inf")]}}
    assert row_fields(row, ("key", "image", "caption"), 1000) == '{"a": {"b": [null]}, "z": 1}'
    assert row_fields({"key": "k"}, ("key",), 10) is None
    assert row_fields({"key": "k", "note": "héé"}, ("key",), 1000) == '{"note": "héé"}'
    # a CSV header's byte that is not UTF-8 (read with surrogateescape), beside a NaN
    got = row_fields({"key": "k", "caf\udce9": "x", "n": float("nan")}, ("key",), 1000)
    assert got == '{"caf\\\\xe9": "x", "n": null}'
    # a CSV row's blank cells past its header are nothing
    assert json.loads(row_fields({"key": "k", "a": "1", None: ["", " "]}, ("key",), 99)) == {
        "a": "1"
    }
    # over the limit: the largest out first (ties by name), until the rest fits
    row = {"key": "k", "a": "x" * 30, "b": "y" * 30, "c": "z" * 5}
    assert json.loads(row_fields(row, ("key",), 60)) == {"c": "zzzzz", "_not_carried": ["a", "b"]}
    assert json.loads(row_fields(row, ("key",), 2)) == {"_not_carried": ["a", "b", "c"]}


def test_webdataset_reads_the_fields_from_the_kept_shard(tmp_path):
    import webdataset as wds

    quarantine_run(_csv(tmp_path), tmp_path / "out")
    shard = str(tmp_path / "out" / "shards" / "shard-000000.tar")
    samples = {s["__key__"]: s for s in wds.WebDataset(shard, shardshuffle=False).decode()}
    assert samples["c0"]["json"]["license"] == "CC-BY"
    assert Image.open(io.BytesIO(samples["c0"]["jpg"])).size == (80, 60)
