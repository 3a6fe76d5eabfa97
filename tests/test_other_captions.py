"""A sample's other captions: a ``KEY.json`` sidecar (or a table row's carried columns)
whose ``caption``/``text``/``prompt``/``txt`` differs from the ``KEY.txt`` the filters
read. A kept shard's ``KEY.json`` keeps the sidecar's fields, so a harmful alt text
beside a clean recaption shipped unfiltered to any trainer that reads it (session 27's
notes). The caption filters read them too; the manifest keeps them, so redecide does."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tar_samples import jpeg, write_tar

from mitigate.config import load_config
from mitigate.pipeline.run import run
from mitigate.sidecar import other_captions

REPO = Path(__file__).resolve().parents[1]
TERMS = "filters=[{name: caption_terms, terms: [gore]}]"


def _run(paths: list[Path], out: Path, *extra: str) -> dict[str, dict]:
    config, _ = load_config(
        REPO / "configs" / "default.yaml",
        [
            f"input.paths={[str(p) for p in paths]!r}",
            f"output.path={str(out)!r}",
            TERMS,
            "rebalance.enabled=false",
            "dedup.near=false",
            *extra,
        ],
    )
    run(config)
    return {r["key"]: r for r in pq.read_table(out / "manifest").to_pylist()}


def _js(value: object) -> bytes:
    return json.dumps(value).encode()


def _samples() -> dict[str, dict[str, bytes]]:
    return {
        # the recaption is clean, the alt text in the sidecar is not
        "alt": {"txt": b"a red square on a wall", "json": _js({"caption": "GORE everywhere"})},
        "prompt": {"txt": b"a blue square", "json": _js({"prompt": "gore", "url": "x"})},
        "same": {"txt": b"a green square", "json": _js({"caption": "A green  square"})},
        "clean": {"txt": b"a grey square", "json": _js({"caption": "a square, grey"})},
        "nested": {"txt": b"a white square", "json": _js({"meta": {"caption": "gore"}})},
        "both": {"txt": b"gore", "json": _js({"caption": "more gore"})},
        "own": {"json": _js({"caption": "a black square", "text": "gore"})},
    }


def test_the_sidecars_other_captions_are_read_by_the_caption_filters(tmp_path):
    rows = _run([write_tar(tmp_path / "a.tar", _samples())], tmp_path / "out")
    assert rows["alt"]["reason"] == "caption_term_match"
    assert "(.json 'caption')" in rows["alt"]["info_caption_terms"]
    assert rows["alt"]["other_captions"] == [{"field": "caption", "text": "GORE everywhere"}]
    assert rows["prompt"]["reason"] == "caption_term_match"
    # the caption from the sidecar itself (no .txt): its other fields are the others
    assert rows["own"]["reason"] == "caption_term_match"
    assert rows["own"]["other_captions"] == [{"field": "text", "text": "gore"}]
    # the same text once normalised is no other caption; a nested field is not read
    assert rows["same"]["other_captions"] == []
    assert rows["same"]["state"] == rows["nested"]["state"] == "kept"
    assert rows["clean"]["state"] == "kept"
    assert rows["clean"]["other_captions"] == [{"field": "caption", "text": "a square, grey"}]
    # a match in the caption itself names no field, even where the other has it too
    assert rows["both"]["reason"] == "caption_term_match"
    assert rows["both"]["info_caption_terms"].endswith('"gore"')


def test_redecide_reads_the_other_captions_from_the_manifest(tmp_path):
    from mitigate.cli import main

    source = write_tar(tmp_path / "a.tar", _samples())
    config, _ = load_config(
        REPO / "configs" / "default.yaml",
        [
            f"input.paths=[{str(source)!r}]",
            f"output.path={str(tmp_path / 'run')!r}",
            "filters=[{name: caption_terms, terms: [nothing]}]",
            "rebalance.enabled=false",
            "dedup.near=false",
        ],
    )
    run(config)
    code = main(
        [
            "redecide",
            "--from",
            str(tmp_path / "run"),
            "--output",
            str(tmp_path / "re"),
            "--set",
            "filters=[{name: caption_terms, terms: [gore]}]",
        ]
    )
    assert code == 0
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "re" / "manifest").to_pylist()}
    assert rows["alt"]["reason"] == rows["prompt"]["reason"] == "caption_term_match"
    assert rows["same"]["state"] == "kept"


def test_a_table_rows_carried_caption_columns_are_read_too(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    for n in range(3):
        (images / f"{n}.jpg").write_bytes(jpeg(n))
    table = pa.table(
        {
            "image": ["img/0.jpg", "img/1.jpg", "img/2.jpg"],
            "caption": ["a cat", "a dog", "a bird"],
            "text": ["a cat", "gore", None],
            "url": ["u0", "u1", "u2"],
        }
    )
    pq.write_table(table, tmp_path / "t.parquet")
    rows = _run([tmp_path / "t.parquet"], tmp_path / "out", "output.table_fields=true")
    # a table run of an earlier version: the carried columns are read from row_fields
    from mitigate.cli import main

    for part in (tmp_path / "out" / "manifest").glob("*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["other_captions"]), part)
    assert (
        main(["redecide", "--from", str(tmp_path / "out"), "--output", str(tmp_path / "re")]) == 0
    )
    again = {r["key"]: r["reason"] for r in pq.read_table(tmp_path / "re" / "manifest").to_pylist()}
    assert again == {k: r["reason"] for k, r in rows.items()}
    by_image = {r["image_path"].rsplit("/", 1)[-1]: r for r in rows.values()}
    assert by_image["1.jpg"]["reason"] == "caption_term_match"
    assert "(.json 'text')" in by_image["1.jpg"]["info_caption_terms"]
    assert by_image["0.jpg"]["state"] == by_image["2.jpg"]["state"] == "kept"
    # not carried into KEY.json (table_fields off): not read, and nothing ships
    rows = _run([tmp_path / "t.parquet"], tmp_path / "off", "output.table_fields=false")
    assert {r["state"] for r in rows.values()} == {"kept"}


def test_an_other_caption_over_max_caption_bytes_is_refused(tmp_path):
    samples = {"big": {"txt": b"a square", "json": _js({"text": "x" * 300})}}
    rows = _run(
        [write_tar(tmp_path / "a.tar", samples)], tmp_path / "out", "decode.max_caption_bytes=200"
    )
    assert rows["big"]["reason"] == "caption_too_large"
    assert "'text'" in rows["big"]["detail"]


def test_a_tables_carried_caption_over_max_caption_bytes_is_refused_as_a_sidecars(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "0.jpg").write_bytes(jpeg(0))
    (tmp_path / "img" / "1.jpg").write_bytes(jpeg(1))
    table = pa.table(
        {"image": ["img/0.jpg", "img/1.jpg"], "caption": ["a", "b"], "text": ["x" * 300, "y"]}
    )
    pq.write_table(table, tmp_path / "t.parquet")
    rows = _run([tmp_path / "t.parquet"], tmp_path / "out", "decode.max_caption_bytes=200")
    by_row = {r["index"]: r for r in rows.values()}
    assert by_row[0]["reason"] == "caption_too_large"  # helper-44: kept, unchecked
    assert "'text'" in by_row[0]["detail"]
    assert by_row[1]["state"] == "kept"


def test_an_other_caption_holding_a_nul_is_refused_as_the_caption_would_be(tmp_path):
    """``g\\u0000ore`` beside a clean KEY.txt passed the caption filters and was kept
    (helper-47); a NUL in KEY.txt itself is invalid_caption_encoding."""
    samples = {
        "nul": {"txt": b"a square", "json": _js({"caption": "g\x00ore"})},
        "ok": {"txt": b"a circle", "json": _js({"caption": "a red circle"})},
    }
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "0.jpg").write_bytes(jpeg(0))
    table = pa.table({"image": ["img/0.jpg"], "caption": ["a"], "text": ["g\x00ore"]})
    pq.write_table(table, tmp_path / "t.parquet")
    rows = _run([write_tar(tmp_path / "a.tar", samples), tmp_path / "t.parquet"], tmp_path / "out")
    assert rows["nul"]["reason"] == "invalid_caption_encoding"
    assert "'caption'" in rows["nul"]["detail"] and "NUL" in rows["nul"]["detail"]
    assert rows["ok"]["state"] == "kept"
    row = next(r for r in rows.values() if r["source"].endswith("t.parquet"))
    assert row["reason"] == "invalid_caption_encoding"


def test_other_captions_in_field_order_without_repeats():
    meta = {"txt": "B", "prompt": "b ", "text": "C", "caption": "a", "other": "D"}
    assert other_captions(meta, "A") == (("text", "C"), ("prompt", "b "))
    assert other_captions({"caption": 5, "text": ""}, "A") == ()
    assert other_captions(None, "A") == ()


def test_redecide_of_a_manifest_without_the_column_writes_its_shards(tmp_path):
    """A run of an earlier version has no ``other_captions`` column: its samples'
    sidecars are not taken for changed inputs (every kept shard refused)."""
    from mitigate.cli import main

    source = write_tar(tmp_path / "a.tar", _samples())
    _run([source], tmp_path / "run")
    for part in (tmp_path / "run" / "manifest").glob("*.parquet"):
        table = pq.read_table(part)
        pq.write_table(table.drop_columns(["other_captions"]), part)
    code = main(["redecide", "--from", str(tmp_path / "run"), "--output", str(tmp_path / "re")])
    assert code == 0
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "re" / "manifest").to_pylist()}
    assert rows["clean"]["state"] == "kept"
    with tarfile.open(next((tmp_path / "re" / "shards").glob("*.tar"))) as tar:
        assert "clean.json" in tar.getnames()
    # the sidecars are read again: their other captions filtered, as a fresh run does
    # (helper-44: the redecide of an older run kept the harmful alt texts)
    assert rows["alt"]["reason"] == rows["prompt"]["reason"] == "caption_term_match"
    assert rows["clean"]["other_captions"] == [{"field": "caption", "text": "a square, grey"}]
    # held to max_caption_bytes as a fresh run holds them (helper-45: kept, 100 KB)
    big = write_tar(tmp_path / "big.tar", {"big": {"txt": b"a", "json": _js({"text": "x" * 300})}})
    _run([big], tmp_path / "run2", "decode.max_caption_bytes=200")
    (part,) = (tmp_path / "run2" / "manifest").glob("*.parquet")
    table = pq.read_table(part)
    assert table.column("reason").to_pylist() == ["caption_too_large"]
    # as the older version wrote it: kept, no such column
    table = table.drop_columns(["other_captions"])
    for name, value in (("state", "kept"), ("reason", None), ("detail", None)):
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pa.array([value], table.schema.field(name).type))
    pq.write_table(table, part)
    assert (
        main(["redecide", "--from", str(tmp_path / "run2"), "--output", str(tmp_path / "r2")]) == 0
    )
    (row,) = pq.read_table(tmp_path / "r2" / "manifest").to_pylist()
    assert row["reason"] == "caption_too_large" and "'text'" in row["detail"]
