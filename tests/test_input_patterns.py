"""Input patterns as WebDataset and img2dataset users write them: brace sets
(``shard-{000000..000099}.tar``, ``{train,val}/*.tar``) were "no file matches"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq

from mitigate.cli import main
from mitigate.pipeline import fs


def _files(root: Path, names: list[str]) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


def test_braces_expand_before_globs(tmp_path):
    _files(tmp_path, ["s-00000.tar", "s-00001.tar", "s-00002.tar", "s-00010.tar"])
    _files(tmp_path, ["train/a.tar", "val/b.tar", "test/c.tar", "a{b}.tar", "a{b.tar"])
    got = fs.match(
        [
            f"{tmp_path}/s-{{00000..00002}}.tar",  # a range keeps its zero padding
            f"{tmp_path}/{{train,val}}/*.tar",  # a set, then a glob in each
            f"{tmp_path}/s-{{00000..00001}}.tar",
            f"{tmp_path}/a{{b}}.tar",  # no comma, no range: a name
            f"{tmp_path}/a{{b.tar",  # unbalanced: a name
        ]
    )
    assert [[Path(p).relative_to(tmp_path).as_posix() for p in v] for v in got.values()] == [
        ["s-00000.tar", "s-00001.tar", "s-00002.tar"],
        ["train/a.tar", "val/b.tar"],
        ["s-00000.tar", "s-00001.tar"],
        ["a{b}.tar"],
        ["a{b.tar"],
    ]
    assert fs.braces("x-{1..3}-{a,b}") == ["x-1-a", "x-1-b", "x-2-a", "x-2-b", "x-3-a", "x-3-b"]


def test_a_brace_range_runs_and_one_that_names_missing_shards_is_refused(
    tmp_path, sample_dir, capsys
):
    for i in range(3):
        shutil.copy(sample_dir / f"shard-0000{i}.tar", tmp_path / f"part-{i:06d}.tar")
    cheap = ["--set", "filters=[]", "--set", "rebalance.enabled=false"]
    good = str(tmp_path / "part-{000000..000002}.tar")
    assert main(["run", "--input", good, "--output", str(tmp_path / "o"), *cheap]) == 0
    sources = set(pq.read_table(tmp_path / "o" / "manifest").column("source").to_pylist())
    assert sources == {str(tmp_path / f"part-{i:06d}.tar") for i in range(3)}
    capsys.readouterr()
    wrong = str(tmp_path / "part-{000000..000004}.tar")
    assert main(["validate", "--input", wrong, "--output", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert f"2 of the 5 names in {wrong!r} match no file" in err
    assert "part-000003.tar, " in err and "a shard missing, or the range wrong?" in err
    assert "zero-padded" not in err  # the range is padded
    unpadded = str(tmp_path / "part-{0..2}.tar")
    assert main(["validate", "--input", unpadded, "--output", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert f"no file matches {unpadded!r}; a range's numbers are as written: {{0..3}} is 0" in err


def test_img2dataset_files_beside_its_tars_are_named_not_read_as_tables(
    tmp_path, sample_dir, capsys
):
    """img2dataset writes N.parquet (urls and statuses, no images) and N_stats.json
    beside each N.tar: `--input 'out/*'` read the table as samples (or said its url
    column wants downloading "e.g. with img2dataset") and could not tell the json's
    format."""
    import json

    import pyarrow as pa

    shutil.copy(sample_dir / "shard-00000.tar", tmp_path / "00000.tar")
    table = pa.table({"url": ["http://x/1.jpg"], "caption": ["c"], "key": ["000000000"]})
    pq.write_table(table, tmp_path / "00000.parquet")
    (tmp_path / "00000_stats.json").write_text(json.dumps({"count": 1}))
    # a table of no tar's name beside them is a table
    pq.write_table(
        pa.table({"key": ["k"], "image": ["x.jpg"], "caption": ["c"]}), tmp_path / "01.parquet"
    )
    args = ["validate", "--input", str(tmp_path / "0*"), "--output", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    shard = f"{tmp_path / '00000'}.tar"
    assert (
        f"00000.parquet: img2dataset's table of the download's urls and statuses beside "
        f"{shard}, not samples: give the tars alone"
    ) in err
    assert "00000_stats.json: img2dataset's download statistics, not samples" in err
    assert "01.parquet" not in err
    args[2] = str(tmp_path / "*.tar")
    assert main(args) == 0
    # a download of many shards: two named, then a count (500 shards printed 1,000 lines;
    # here 6 tables and a statistics file)
    for n in range(1, 6):
        shutil.copy(tmp_path / "00000.tar", tmp_path / f"0000{n}.tar")
        shutil.copy(tmp_path / "00000.parquet", tmp_path / f"0000{n}.parquet")
    args[2] = str(tmp_path / "0000*")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("img2dataset's") == 3 and "and 5 more of img2dataset's files" in err


def test_arrow_ipc_files_and_plain_json_are_named():
    import pytest

    from mitigate.formats import table_format

    with pytest.raises(ValueError, match=r"is an Arrow IPC file \(Hugging Face datasets' save_to"):
        table_format("/d/data-00000-of-00001.arrow", "auto")
    with pytest.raises(ValueError, match=r"is a TFRecord file, not read here"):
        table_format("/d/00000.tfrecord", "auto")
    with pytest.raises(ValueError, match=r"is an image, not a dataset: give WebDataset tars"):
        table_format("/d/00000/000000001.JPG", "auto")
    with pytest.raises(ValueError, match=r"tables are read as JSON Lines .* input.format=jsonl"):
        table_format("/d/rows.json", "auto")
    # a zip or 7z was "cannot tell the format ... set input.format", as if one read it
    for name, kind in (("s.zip", "zip"), ("s.7Z", "7z")):
        with pytest.raises(ValueError, match=rf"is a {kind} archive, not a tar: .* unpack it"):
            table_format(f"/d/{name}", "auto")
    with pytest.raises(ValueError, match=r"from its extension; set input.format$"):
        table_format("/d/rows.dat", "auto")
    assert table_format("/d/rows.json", "jsonl") == "jsonl"


def _download(path: Path, seed: int) -> None:
    """A tar as an img2dataset download names its samples: 000000000, 000000001, ..."""
    import io
    import tarfile

    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for i in range(4):
            buf = io.BytesIO()
            Image.new("RGB", (64, 48), (seed * 60 + i * 9, 200 - i * 40, seed * 90)).save(
                buf, "PNG"
            )
            for ext, data in (("png", buf.getvalue()), ("txt", f"photo {seed} {i}".encode())):
                info = tarfile.TarInfo(f"{i:09d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_key_prefix_source_keeps_two_downloads_that_name_their_samples_alike(tmp_path, capsys):
    _download(tmp_path / "train" / "00000.tar", 1)
    _download(tmp_path / "val" / "00000.tar", 2)
    pattern = str(tmp_path / "{train,val}" / "*.tar")
    # validate sees it from the tars' first keys; a run warns and goes on
    out = ["--output", str(tmp_path / "v")]
    assert main(["validate", "--input", pattern, *out]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'val' / '00000.tar'} starts with the key '000000000', as " in err
    assert "set input.key_prefix: source to keep both" in err
    assert main(["validate", "--input", pattern, *out, "--set", "input.key_prefix=source"]) == 0
    # tars that begin with a folder entry of the same name (`tar -cf a.tar src` of two
    # folders named src) are not taken for two downloads: the folder is no sample's
    import io
    import tarfile

    for name, key in (("a", "x"), ("b", "y")):
        with tarfile.open(tmp_path / f"{name}.tar", "w") as tar:
            folder = tarfile.TarInfo("src")
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
            for ext, data in (("png", b"\x89PNG"), ("txt", b"c")):
                info = tarfile.TarInfo(f"src/{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    ab = str(tmp_path / "{a,b}.tar")
    assert main(["validate", "--input", ab, "--output", str(tmp_path / "w")]) == 0
    # img2dataset skips a failed download: two downloads' first shards may start apart
    # and their second shards alike (read: the first tars of each folder, not the first)
    for name, first in (("c", "000000001"), ("d", "000000005")):
        (tmp_path / name).mkdir()
        members = [(f"{first}.png", b"\x89PNG"), (f"{first}.txt", b"c")]
        members += [("000000100.png", b"\x89PNG"), ("000000100.txt", b"c")]
        for shard, part in enumerate((members[:2], members[2:])):
            with tarfile.open(tmp_path / name / f"0000{shard}.tar", "w") as tar:
                for member, data in part:
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    cd = str(tmp_path / "{c,d}" / "*.tar")
    assert main(["validate", "--input", cd, "--output", str(tmp_path / "w")]) == 2
    assert "00001.tar starts with the key '000000100', as " in capsys.readouterr().err
    cheap = ["--set", "filters=[]", "--set", "rebalance.enabled=false", "--set", "dedup.near=false"]
    assert main(["run", "--input", pattern, "--output", str(tmp_path / "a"), *cheap]) == 0
    rows = pq.read_table(tmp_path / "a" / "manifest").to_pylist()
    dup = [r for r in rows if r["reason"] == "duplicate_key"]
    assert len(dup) == 4 and all(r["source"].endswith("val/00000.tar") for r in dup)
    assert dup[0]["detail"].endswith(
        "inputs that name their samples alike (two img2dataset downloads)? "
        "input.key_prefix: source keeps both"
    )
    args = ["--set", "input.key_prefix=source"]
    assert main(["run", "--input", pattern, "--output", str(tmp_path / "b"), *cheap, *args]) == 0
    rows = pq.read_table(tmp_path / "b" / "manifest").to_pylist()
    assert {r["state"] for r in rows} == {"kept"}
    assert sorted(r["key"] for r in rows)[:2] == ["train/00000/000000000", "train/00000/000000001"]
    import tarfile

    with tarfile.open(tmp_path / "b" / "shards" / "shard-000000.tar") as tar:
        assert "val/00000/000000003.png" in tar.getnames()


def test_a_double_star_folder_also_matches_no_folder(tmp_path):
    """Regression (helper-32): ``g/**/*.tar`` read ``g/sub/b.tar`` but not ``g/a.tar``
    (Beam's ``**`` needs a folder there; bash's and Python's match both), so top-level
    shards were left out without a word. Each ``/**/`` is also read as none."""
    _files(tmp_path, ["g/a.tar", "g/sub/b.tar", "g/sub/deep/c.tar", "g/sub/x.txt", "h/d.tar"])
    got = fs.match(
        [
            f"{tmp_path}/g/**/*.tar",
            f"{tmp_path}/**/sub/**/*.tar",  # two of them: every combination
            f"{tmp_path}/g/*.tar",  # no double star: as before
        ]
    )
    assert [[Path(p).relative_to(tmp_path).as_posix() for p in v] for v in got.values()] == [
        ["g/a.tar", "g/sub/b.tar", "g/sub/deep/c.tar"],
        ["g/sub/b.tar", "g/sub/deep/c.tar"],
        ["g/a.tar"],
    ]


def test_an_input_file_whose_name_is_not_utf8_stops_before_any_work(tmp_path, capsys):
    """validate said OK, then the run ended in Beam's coder (UnicodeEncodeError,
    surrogates not allowed; helper-44)."""
    import os
    import shutil
    from pathlib import Path

    from mitigate.cli import main

    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    shutil.copy(sample / "shard-00001.tar", tmp_path / "ok.tar")
    shutil.copy(sample / "shard-00000.tar", os.path.join(os.fsencode(tmp_path), b"caf\xe9.tar"))
    argv = ["--input", str(tmp_path / "*.tar"), "--output", str(tmp_path / "out")]
    for command in ("validate", "run"):
        assert main([command, *argv]) == 2
        err = capsys.readouterr().err
        assert "caf\\xe9.tar: the file's name is not UTF-8 (byte 0xe9): rename it" in err
    assert not (tmp_path / "out").exists()


def test_an_input_or_output_named_exactly_in_another_encoding_is_refused_naming_it(
    tmp_path, capsys
):
    """A path given as it is (no glob) reached YAML as an escape of a lone surrogate,
    which YAML refused as 'unable to parse raw data' (helper-47)."""
    import os
    import shutil
    from pathlib import Path

    from mitigate.cli import main

    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    bad = os.path.join(os.fsencode(tmp_path), b"caf\xe9.tar")
    shutil.copy(sample / "shard-00000.tar", bad)
    argv = ["validate", "--input", os.fsdecode(bad), "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "input.paths[0]: " in err and "caf\\xe9.tar: the name is not UTF-8: rename it" in err
    out = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"r\xe9sultats"))
    assert main(["validate", "--input", str(sample / "*.tar"), "--output", out]) == 2
    assert "output.path: " in capsys.readouterr().err
    assert not os.path.exists(out)
