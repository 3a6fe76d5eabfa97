"""Tar samples whose caption is not a ``.txt`` member: tars written by other tools hold
it as ``KEY.caption`` (kohya-style), ``.text`` or ``.cap``, or only in the ``.json``
sidecar (``caption``, ``text``, ``prompt``, ``txt``). Every such sample was a
``missing_caption`` error ("no .txt member"): a whole dataset in errors."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
from tar_samples import jpeg, write_tar

from mitigate.cli import main
from mitigate.config import load_config
from mitigate.pipeline.run import run
from mitigate.sources import SourceLimits, index_tar

REPO = Path(__file__).resolve().parents[1]


def _run(path: Path, tmp_path: Path, filters: str, max_caption_bytes: int) -> Path:
    """A run of the cheap filters on ``path``; its output folder."""
    out = tmp_path / "out"
    config, _ = load_config(
        REPO / "configs" / "default.yaml",
        [
            f"input.paths=[{str(path)!r}]",
            f"output.path={str(out)!r}",
            filters,
            "rebalance.enabled=false",
            "dedup.near=false",
            f"decode.max_caption_bytes={max_caption_bytes}",
        ],
    )
    run(config)
    return out


def _js(value: object) -> bytes:
    return json.dumps(value).encode()


SAMPLES = {
    "txt": {"txt": b"from txt", "caption": b"not this", "json": _js({"caption": "nor this"})},
    "caption": {"caption": b"from caption member"},
    "text": {"text": b"from text member"},
    "cap": {"cap": b"from cap member", "json": _js({"caption": "not this"})},
    "json_caption": {"json": _js({"url": "u", "caption": "from json caption"})},
    "json_prompt": {"json": _js({"prompt": "from json prompt", "seed": 3})},
    "json_list": {"json": _js({"caption": ["a", "b"], "text": "from json text"})},
    "json_none": {"json": _js({"url": "only a url", "caption": 7})},
    "json_empty": {"json": _js({"caption": "   "})},
    "nothing": {"cls": b"3"},
    "bad_caption": {"caption": b"caf\xe9"},
}


def test_the_caption_comes_from_the_first_member_then_the_sidecar(tmp_path):
    path = write_tar(tmp_path / "other-tool.tar", SAMPLES)
    out = _run(
        path, tmp_path, "filters=[{name: image_quality, min_side: 16, max_aspect_ratio: 4.0}]", 40
    )
    rows = {r["key"]: r for r in pq.read_table(out / "manifest").to_pylist()}
    kept = {k: r["caption"] for k, r in rows.items() if r["state"] == "kept"}
    assert kept == {
        "txt": "from txt",
        "caption": "from caption member",
        "text": "from text member",
        "cap": "from cap member",
        "json_caption": "from json caption",
        "json_prompt": "from json prompt",
        "json_list": "from json text",  # a field that is no string is passed over
    }
    errors = {k: (r["reason"], r["detail"]) for k, r in rows.items() if r["state"] == "error"}
    assert errors == {
        "json_none": (
            "missing_caption",
            "no caption member (.txt, .caption, .text, .cap) and the .json sidecar has no "
            "string field caption/text/prompt/txt",
        ),
        "json_empty": ("missing_caption", "caption is empty"),
        "nothing": (
            "missing_caption",
            "no caption member (.txt, .caption, .text, .cap) and no .json sidecar "
            "(members: jpg, cls)",
        ),
        "bad_caption": (
            "invalid_caption_encoding",
            "caption (.caption) is not UTF-8: 'utf-8' codec can't decode byte 0xe9 in "
            "position 3: unexpected end of data",
        ),
    }
    # kept shards hold the caption as KEY.txt, whatever member or field it came from
    with tarfile.open(out / "shards" / "shard-000000.tar") as tar:
        names = set(tar.getnames())
        assert {f"{k}.txt" for k in kept} <= names
        assert not any(n.endswith((".caption", ".text", ".cap")) for n in names)
        for key, caption in kept.items():
            assert tar.extractfile(f"{key}.txt").read().decode() == caption


def test_validate_names_inner_dots_where_no_sample_has_a_caption(tmp_path, capsys):
    path = tmp_path / "dots.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(3):
            for ext, data in (("v2.jpg", jpeg(i)), ("v2.txt", b"a caption")):
                info = tarfile.TarInfo(f"photo{i}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    assert main(["validate", "--input", str(path), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "none of its first 3 samples has a caption (members: .v2.jpg, .v2.txt)" in err
    assert "key 'photo0' has the extension(s) 'v2.jpg', 'v2.txt'; name the files" in err


def test_a_sidecar_caption_is_held_to_max_caption_bytes(tmp_path):
    long = "word " * 20  # 100 bytes
    path = write_tar(
        tmp_path / "s.tar",
        {"long": {"json": _js({"caption": long})}, "short": {"json": _js({"text": "ok"})}},
    )
    out = _run(path, tmp_path, "filters=[]", 50)
    rows = {r["key"]: r for r in pq.read_table(out / "manifest").to_pylist()}
    assert rows["short"]["state"] == "kept"
    assert (rows["long"]["reason"], rows["long"]["detail"]) == (
        "caption_too_large",
        "caption (.json 'caption') of 100 bytes > max_caption_bytes 50",
    )


def test_the_index_checks_the_size_of_the_member_it_takes(tmp_path):
    path = write_tar(tmp_path / "s.tar", {"big": {"caption": b"x" * 100, "json": _js({})}})
    with open(path, "rb") as f:
        (record,) = index_tar(f, str(path))
    assert record.state == "pending"  # the default limit is 64 KB
    with open(path, "rb") as f:
        (record,) = index_tar(f, str(path), limits=SourceLimits(max_caption_bytes=50))
    assert (record.reason, record.detail) == (
        "caption_too_large",
        "caption of 100 bytes > max_caption_bytes 50",
    )


def test_tars_without_any_caption_fail_validate_and_a_run_warns(tmp_path, capsys, caplog):
    members = {"cls": b"1", "json": _js({"url": "u"})}
    write_tar(tmp_path / "a.tar", {f"s{i}": members for i in range(3)})
    write_tar(tmp_path / "b.tar", {f"t{i}": members for i in range(3)})
    args = ["--input", str(tmp_path / "*.tar"), "--output", str(tmp_path / "o")]
    assert main(["validate", *args]) == 2
    err = capsys.readouterr().err
    # the pattern's first tar is read, once
    assert err.count("none of its first 3 samples has a caption") == 1, err
    assert "a.tar" in err and "(members: .jpg, .cls, .json)" in err
    assert ".txt, .caption, .text or .cap member, or a string field caption" in err
    # a run lists every sample (each missing_caption) and warns at its start
    assert main(["run", *args, "--set", "filters=[]", "--set", "rebalance.enabled=false"]) == 0
    assert "none of its first 3 samples has a caption" in caplog.text
    rows = pq.read_table(tmp_path / "o" / "manifest").to_pylist()
    assert len(rows) == 6 and {r["reason"] for r in rows} == {"missing_caption"}
    # one sample with a caption field among them is enough: the others say why one by one
    write_tar(tmp_path / "a.tar", {"s0": members, "s1": {"json": _js({"text": "a caption"})}})
    code = main(["validate", *args[:2], "--output", str(tmp_path / "o2")])
    assert code == 0, capsys.readouterr().err


def test_jpeg_files_named_as_windows_and_phones_name_them_are_images(tmp_path):
    """``.jfif`` (how Windows saves a web image), ``.jpe`` and a phone's ``.MPO`` were
    ``missing_image`` ("no image member")."""
    samples = {name: {"txt": b"a square"} for name in ("a", "b", "c", "d")}
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tar:
        for n, (key, ext) in enumerate(zip(samples, ("jfif", "jpe", "MPO", "jpg"), strict=True)):
            for name, data in ((f"{key}.{ext}", jpeg(n)), (f"{key}.txt", b"a square")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    out = _run(path, tmp_path, "filters=[{name: image_quality, min_side: 8}]", 1000)
    rows = {r["key"]: r for r in pq.read_table(out / "manifest").to_pylist()}
    assert {k: r["state"] for k, r in rows.items()} == dict.fromkeys("abcd", "kept")
    with tarfile.open(next((out / "shards").glob("*.tar"))) as tar:
        # written as .jpg, which WebDataset's decoders and to_tuple("jpg") know
        assert {"a.jpg", "b.jpg", "c.jpg", "d.jpg"} <= set(tar.getnames())
