"""Folder sources: a folder of image files with captions beside them (kohya-style
training folders, img2dataset's ``files`` output, camera dumps), read as a tar is."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mitigate.cli import main
from mitigate.folders import index_folder
from mitigate.pipeline import fs
from mitigate.records import SampleRecord
from mitigate.samples import SampleReader
from mitigate.sources import SourceIssue

CHEAP = ["--set", "filters=[]", "--set", "rebalance.enabled=false"]


def _photos(sample_dir: Path, n: int) -> list[bytes]:
    """``n`` real JPEG photos from the bundled sample shards."""
    out = []
    with tarfile.open(sample_dir / "shard-00000.tar") as tar:
        for member in tar.getmembers():
            if member.name.endswith(".jpg") and len(out) < n:
                out.append(tar.extractfile(member).read())
    assert len(out) == n
    return out


def _tree(root: Path, sample_dir: Path) -> dict[str, bytes]:
    """A folder as users hold them: every kind of sample and of stray file. Returns
    the image bytes by file name."""
    photos = _photos(sample_dir, 6)
    files = {
        "b.jpg": photos[0],
        "b.txt": b"a dog on a beach",
        "a.jpg": photos[1],  # listed before b: the order is by name, not by creation
        "a.json": json.dumps({"caption": "a red car", "url": "http://x/a.jpg"}).encode(),
        "a.seg.png": b"not looked at, carried",  # an extra member, as in a tar
        "IMG_1.JPG": photos[2],  # a camera's upper-case extension
        "IMG_1.txt": b"a cat",
        "sub/c.jpg": photos[3],
        "sub/c.txt": b"a house",
        "sub/deeper/d.jpg": photos[4],
        "sub/deeper/d.txt": b"a tree",
        "orphan.txt": b"a caption without its image",
        "two.jpg": photos[5],
        "two.png": photos[5],
        "two.txt": b"two images",
        "tiff.tif": b"II*\x00",
        "tiff.txt": b"refused format",
        ".hidden.jpg": photos[0],
        ".git/objects/x.jpg": photos[0],
        ".DS_Store": b"\x00",
        "sub/Thumbs.db": b"\x00",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return {n: d for n, d in files.items() if n.lower().endswith((".jpg", ".png"))}


def _index(root: Path) -> list[SampleRecord | SourceIssue]:
    source = fs.join(str(root), "")
    return list(index_folder(fs.walk(source), source))


def test_a_folders_files_are_grouped_into_samples_as_a_tars_members(tmp_path, sample_dir):
    _tree(tmp_path, sample_dir)
    os.symlink(tmp_path / "sub", tmp_path / "link")  # a link to a folder: not followed
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / "outlink")  # out of it too: was a phantom sample (helper-38)
    os.symlink(tmp_path / "gone.jpg", tmp_path / "broken.jpg")
    os.mkfifo(tmp_path / "fifo.jpg")
    with open(os.fsencode(tmp_path) + b"/caf\xe9.jpg", "wb") as f:  # a latin-1 name
        f.write(b"not read")
    items = _index(tmp_path)
    records = [i for i in items if isinstance(i, SampleRecord)]
    issues = [i for i in items if isinstance(i, SourceIssue)]
    got = [(r.key, r.index, r.state, r.reason) for r in records]
    assert got == [
        ("IMG_1", 0, "pending", None),
        ("a", 1, "pending", None),
        ("b", 2, "pending", None),
        ("broken", 3, "error", "unsupported_member"),
        ("caf\\xe9", 4, "error", "invalid_key"),  # escaped: a manifest holds no such byte
        ("fifo", 5, "error", "unsupported_member"),
        ("orphan", 6, "error", "missing_image"),
        ("tiff", 7, "error", "unsupported_format"),
        ("two", 8, "error", "multiple_images"),
        ("sub/c", 9, "pending", None),
        ("sub/deeper/d", 10, "pending", None),
    ]
    by_key = {r.key: r for r in records}
    assert [(m.ext, m.name, m.offset) for m in by_key["IMG_1"].members] == [
        ("jpg", "IMG_1.JPG", 0),
        ("txt", "IMG_1.txt", 0),
    ]
    assert {m.ext: m.name for m in by_key["a"].members} == {
        "jpg": "a.jpg",
        "json": "a.json",
        "seg.png": "a.seg.png",
    }
    assert by_key["sub/deeper/d"].members[0].name == "sub/deeper/d.jpg"
    assert "'fifo.jpg' is a FIFO" in by_key["fifo"].detail
    assert "broken link" in by_key["broken"].detail
    assert by_key["caf\\xe9"].detail.startswith("'caf\\xe9.jpg': the file's name is not UTF-8")
    assert [(i.reason, i.count) for i in issues] == [("os_metadata", 2), ("skipped_files", 4)]
    skipped = issues[1].detail
    assert "1 hidden file(s)" in skipped and "1 hidden folder(s)" in skipped
    assert "2 link to a folder(s)" in skipped


def test_a_folder_is_listed_alike_by_the_local_walk_and_beams_match(tmp_path, sample_dir):
    # Remote folders (gs://...) are listed through Beam's match of root/**: the same
    # entries in the same order, so a run reads a folder alike wherever it lies.
    _tree(tmp_path, sample_dir)
    for name in ("a-b/x.jpg", "a.b/y.jpg", "a/z.jpg", "a/.cache/w.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    local = list(fs.walk(str(tmp_path)))
    matched = list(fs.walk(str(tmp_path), remote=True))
    assert [e for e in local if e] == matched
    folders = [e[0][0].rstrip("/").rpartition("/")[0] for e in matched]
    assert folders == ["", "a", "a-b", "a.b", "sub", "sub/deeper"]  # depth first, by name


def test_a_file_that_changed_since_it_was_indexed_is_never_read_as_another(tmp_path, sample_dir):
    _tree(tmp_path, sample_dir)
    record = next(r for r in _index(tmp_path) if isinstance(r, SampleRecord) and r.key == "b")
    with SampleReader(fs.open_read) as reader:
        assert reader.members(record, {"txt"}) == {"txt": b"a dog on a beach"}
        (tmp_path / "b.txt").write_bytes(b"a dog on a beach, longer now")
        with pytest.raises(EOFError, match="changed during the run"):
            reader.members(record, {"txt"})
        (tmp_path / "b.txt").write_bytes(b"short")
        with pytest.raises(EOFError, match="changed during the run"):
            reader.members(record, {"txt"})


def test_a_run_on_a_folder_keeps_the_files_bytes_and_accounts_for_every_sample(
    tmp_path, sample_dir
):
    images = _tree(tmp_path / "photos", sample_dir)
    with open(os.fsencode(tmp_path / "photos") + b"/caf\xe9.jpg", "wb") as f:
        f.write(images["b.jpg"])  # a name not UTF-8: the run ended in an encoding error
    out = tmp_path / "out"
    assert main(["run", "--input", str(tmp_path / "photos"), "--output", str(out), *CHEAP]) == 0
    rows = pq.read_table(out / "manifest").to_pylist()
    assert sorted(r["key"] for r in rows) == sorted(
        ["IMG_1", "a", "b", "caf\\xe9", "orphan", "tiff", "two", "sub/c", "sub/deeper/d"]
    )
    assert {r["source"] for r in rows} == {f"{tmp_path / 'photos'}/"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["conservation"]["ok"]
    assert summary["input_count"] == len(rows) == 9
    assert [(i["reason"], i["count"]) for i in summary["source_issues"]] == [
        ("os_metadata", 2),
        ("skipped_files", 2),
    ]
    kept = {r["key"] for r in rows if r["state"] == "kept"}
    assert kept == {"IMG_1", "a", "b", "sub/c", "sub/deeper/d"}
    shard = {}
    for path in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(path) as tar:
            shard.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
    for key, name in (("IMG_1", "IMG_1.JPG"), ("a", "a.jpg"), ("sub/deeper/d", "sub/deeper/d.jpg")):
        assert shard[f"{key}.jpg"] == images[name]  # the file's bytes, unchanged
    assert shard["IMG_1.txt"] == b"a cat"
    assert shard["a.txt"] == b"a red car"  # the sidecar's caption
    assert json.loads(shard["a.json"])["url"] == "http://x/a.jpg"
    assert shard["a.seg.png"] == b"not looked at, carried"
    # a redecide reads the files again through the manifest's member names
    again = tmp_path / "again"
    assert main(["redecide", "--from", str(out), "--output", str(again), *CHEAP]) == 0
    for path in sorted((out / "shards").glob("*.tar")):
        assert (again / "shards" / path.name).read_bytes() == path.read_bytes()


def test_a_folder_input_is_checked_before_any_work(tmp_path, sample_dir, capsys):
    def validate(*args: str) -> str:
        capsys.readouterr()
        code = main(["validate", *args])
        err = capsys.readouterr().err
        assert code == (0 if not err.strip() else 2), err
        return err

    photos = tmp_path / "photos"
    _tree(photos, sample_dir)
    assert validate("--input", str(photos), "--output", str(tmp_path / "o")) == ""
    inside = validate("--input", str(photos), "--output", str(photos / "out"))
    assert f"output.path: {photos / 'out'} lies in the input folder {photos}" in inside
    bare = tmp_path / "bare"
    bare.mkdir()
    for i, photo in enumerate(_photos(sample_dir, 2)):
        (bare / f"p{i}.jpg").write_bytes(photo)
    err = validate("--input", str(bare), "--output", str(tmp_path / "o"))
    assert "none of its first 2 samples has a caption (members: .jpg)" in err
    empty = tmp_path / "empty"
    (empty / ".git").mkdir(parents=True)
    assert "no sample in it" in validate("--input", str(empty), "--output", str(tmp_path / "o"))
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "s-0.tar").write_bytes(b"")
    err = validate("--input", str(shards), "--output", str(tmp_path / "o"))
    assert f"{shards} is a folder: it holds 's-0.tar': give its files" in err
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "metadata.jsonl").write_text('{"file_name": "p.jpg", "text": "a dog"}\n')
    err = validate("--input", str(hf), "--output", str(tmp_path / "o"))
    assert "a Hugging Face imagefolder? give its table" in err and "metadata.jsonl" in err
    (hf / "p.jpg").write_bytes(_photos(sample_dir, 1)[0])
    assert validate("--input", str(hf / "metadata.jsonl"), "--output", str(tmp_path / "o")) == ""
    err = validate(
        "--input", str(shards / "s-0.tar"), "--output", str(tmp_path / "o"), "--set",
        "input.format=folder",
    )  # fmt: skip
    assert "s-0.tar: not a folder (input.format: auto reads a file by its name)" in err
    # and only that: "unknown table format 'folder'" followed (helper-35)
    assert err.count("input.paths[") == 1, err


def test_a_hugging_face_imagefolder_table_names_its_images_by_file_name(tmp_path, sample_dir):
    photos = _photos(sample_dir, 2)
    rows = []
    for i, photo in enumerate(photos):
        (tmp_path / "train" / f"{i}.jpg").parent.mkdir(exist_ok=True)
        (tmp_path / "train" / f"{i}.jpg").write_bytes(photo)
        rows.append(json.dumps({"file_name": f"{i}.jpg", "text": f"photo {i}"}))
    (tmp_path / "train" / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    table = str(tmp_path / "train" / "metadata.jsonl")
    assert main(["run", "--input", table, "--output", str(out), *CHEAP]) == 0
    got = pq.read_table(out / "manifest", columns=["state", "caption"]).to_pylist()
    assert got == [{"state": "kept", "caption": "photo 0"}, {"state": "kept", "caption": "photo 1"}]


def test_a_sub_folder_that_cannot_be_listed_is_a_source_issue_not_the_end(
    tmp_path, sample_dir, monkeypatch
):
    _tree(tmp_path, sample_dir)
    real = os.scandir

    def scandir(path):  # as a folder of another user's without read permission (not root)
        if str(path).endswith("/sub/"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    items = _index(tmp_path)
    keys = [i.key for i in items if isinstance(i, SampleRecord)]
    assert "b" in keys and not any(k.startswith("sub/") for k in keys)
    (issue,) = [i for i in items if isinstance(i, SourceIssue) and i.reason == "read_error"]
    assert issue.detail == "sub/: unreadable folder (Permission denied): its samples are not read"
    assert issue.count is None
    monkeypatch.setattr(os, "scandir", lambda path: scandir(path + "sub/"))
    with pytest.raises(PermissionError):  # the folder itself: the whole source's read_error
        _index(tmp_path)


def test_helper_35s_folders(tmp_path, sample_dir, capsys, monkeypatch):
    photo = _photos(sample_dir, 1)[0]

    def files(root: Path, names: dict[str, bytes]) -> Path:
        for name, data in names.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        return root

    def validate(*args: str) -> str:
        capsys.readouterr()
        main(["validate", *args, "--output", str(tmp_path / "o")])
        return capsys.readouterr().err

    # a link to a file outside the folder is never read (its bytes were published);
    # one inside is read as the file
    secret = files(tmp_path, {"secret.txt": b"SECRET-TOKEN"}) / "secret.txt"
    root = files(tmp_path / "links", {"a.jpg": photo, "b.jpg": photo, "b.txt": b"a cat"})
    os.symlink(secret, root / "a.txt")
    os.symlink(root / "b.txt", root / "c.txt")
    os.symlink(root / "b.jpg", root / "c.jpg")
    got = {r.key: r for r in _index(root) if isinstance(r, SampleRecord)}
    assert got["a"].reason == "unsupported_member"
    assert "'a.txt' is a link to a file outside the folder" in got["a"].detail
    assert got["c"].reason is None
    # img2dataset's output_format=files: its tables and statistics beside the folders
    dl = files(tmp_path / "dl", {"00000/000000000.jpg": photo, "00000/000000000.txt": b"x"})
    files(dl, {"00000.parquet": b"PAR1", "00000_stats.json": b"{}"})
    items = _index(dl)
    assert [r.key for r in items if isinstance(r, SampleRecord)] == ["00000/000000000"]
    assert "2 img2dataset table or statistics(s)" in items[-1].detail
    assert validate("--input", str(dl)) == ""
    # macOS' zip folder is the operating system's
    mac = files(tmp_path / "mac", {"a.jpg": photo, "a.txt": b"x", "__MACOSX/._a.jpg": b"x"})
    assert [(i.reason, i.count) for i in _index(mac) if isinstance(i, SourceIssue)] == [
        ("os_metadata", 1)
    ]
    # a camera's SD card formatted on Windows: its volume and recycle-bin folders and
    # Explorer's thumbnail caches are the operating system's, not missing_image samples
    card = {"DCIM/a.jpg": photo, "DCIM/a.txt": b"x", "DCIM/ehthumbs.db": b"x"}
    card |= {"System Volume Information/IndexerVolumeGuid": b"x", "$RECYCLE.BIN/d.ini": b"x"}
    sd = _index(files(tmp_path / "sd", card))
    assert [r.key for r in sd if isinstance(r, SampleRecord)] == ["DCIM/a"]
    assert [(i.reason, i.count) for i in sd if isinstance(i, SourceIssue)] == [("os_metadata", 3)]
    # a folder's name is no glob
    holiday = files(tmp_path / "Holiday [2023]", {"a.jpg": photo, "a.txt": b"x"})
    assert validate("--input", str(holiday)) == ""
    # ~ quoted, as a config file writes it
    monkeypatch.setenv("HOME", str(tmp_path))
    assert validate("--input", "~/Holiday [2023]") == ""
    # tars in sub-folders, a Hugging Face imagefolder with splits, a glob of images
    shards = files(tmp_path / "shards", {"train/a.tar": b"", "val/b.tar": b""})
    assert "its first files are tar files in sub-folders, not images" in validate(
        "--input", str(shards)
    )
    splits = files(tmp_path / "hf", {"train/metadata.jsonl": b"{}\n", "train/p.jpg": photo})
    err = validate("--input", str(splits))
    assert "its train/metadata.* looks like a Hugging Face imagefolder's table" in err
    many = files(tmp_path / "many", {f"p{i}.jpg": photo for i in range(20)})
    err = validate("--input", str(many / "*.jpg"))
    assert err.count("is an image, not a dataset") == 3
    assert (
        "matches 20 image(s); to read a folder of image files and captions, give the "
        f"folder (--input {str(many)!r})" in err
    )


def test_a_caption_rewritten_at_its_size_since_it_was_filtered_stops_the_shard_writer(
    tmp_path, sample_dir, capsys
):
    # helper-35: a captioning tool's edit in place (same size) went into a kept shard
    # unfiltered, its KEY.json still saying caption_terms 0
    root = tmp_path / "photos"
    root.mkdir()
    (root / "a.jpg").write_bytes(_photos(sample_dir, 1)[0])
    (root / "a.txt").write_bytes(b"a quiet street at dawn")
    (root / "a.de.txt").write_bytes(b"gore und ein massaker")  # a translation: not copied
    out = tmp_path / "out"
    assert main(["run", "--input", str(root), "--output", str(out), *CHEAP]) == 0
    with tarfile.open(next((out / "shards").glob("*.tar"))) as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile("a.json").read())
    assert "a.de.txt" not in names and meta["mitigate"]["members_not_copied"] == ["de.txt"]
    (root / "a.txt").write_bytes(b"gore massacre bloodshe")  # the same 22 bytes
    capsys.readouterr()
    assert main(["redecide", "--from", str(out), "--output", str(tmp_path / "re"), *CHEAP]) != 0
    assert "its caption is no longer the one the filters read" in capsys.readouterr().err


def test_a_folder_input_inside_another_is_refused(tmp_path, sample_dir, capsys):
    # helper-35: photos and photos/sub were both read, sub's samples twice
    photo = _photos(sample_dir, 1)[0]
    for name in ("a", "sub/b"):
        (tmp_path / "photos" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "photos" / f"{name}.jpg").write_bytes(photo)
        (tmp_path / "photos" / f"{name}.txt").write_text("x")
    outer, inner = tmp_path / "photos", tmp_path / "photos" / "sub"
    argv = ["validate", "--input", str(outer), "--input", str(inner)]
    assert main([*argv, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"input.paths[1]: {inner} lies in the input folder {outer} (input.paths[0])" in err


def test_two_folders_that_name_their_samples_alike_stop_validate(tmp_path, sample_dir, capsys):
    # two img2dataset downloads as folders: every sample of the second was duplicate_key
    # with no word (two tars stopped validate already)
    photo = _photos(sample_dir, 1)[0]
    for dl in ("dl1", "dl2"):
        (tmp_path / dl / "00000").mkdir(parents=True)
        (tmp_path / dl / "00000" / "000000000.jpg").write_bytes(photo)
        (tmp_path / dl / "00000" / "000000000.txt").write_text(dl)
    argv = ["validate", "--input", str(tmp_path / "dl1"), "--input", str(tmp_path / "dl2")]
    assert main([*argv, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'dl2'}/ starts with the key '00000/000000000', as" in err
    assert main([*argv, "--output", str(tmp_path / "o"), "--set", "input.key_prefix=source"]) == 0


def test_a_folder_of_no_accepted_image_stops_validate_and_unicode_forms_are_one_key(
    tmp_path, sample_dir, capsys
):
    # helper-35: an iPhone's HEIC dump passed validate, then every sample was an error;
    # an NFD café.jpg (as macOS writes it) beside an NFC café.txt was two error samples
    heic = tmp_path / "heic"
    heic.mkdir()
    for i in range(3):
        (heic / f"IMG_{i}.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
        (heic / f"IMG_{i}.txt").write_text("x")
    assert main(["validate", "--input", str(heic), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "none of its first 3 samples has an image of an accepted format" in err
    assert "found: heic, txt" in err
    forms = tmp_path / "forms"
    forms.mkdir()
    (forms / "cafe\u0301.jpg").write_bytes(_photos(sample_dir, 1)[0])  # NFD
    (forms / "caf\u00e9.txt").write_text("a cafe")  # NFC
    (record,) = [r for r in _index(forms) if isinstance(r, SampleRecord)]
    assert (record.key, record.reason) == ("caf\u00e9", None)
    assert sorted(m.name for m in record.members) == ["cafe\u0301.jpg", "caf\u00e9.txt"]
    # both forms of both names: two samples on Linux, one key here. The error lists
    # every file, so the second sample is not lost unsaid (helper-41)
    (forms / "caf\u00e9.jpg").write_bytes(_photos(sample_dir, 2)[1])  # NFC
    (forms / "cafe\u0301.txt").write_text("a second cafe")  # NFD
    (forms / "a.JPG").write_bytes(_photos(sample_dir, 1)[0])
    (forms / "a.jpg").write_bytes(_photos(sample_dir, 2)[1])
    records = {r.key: r for r in _index(forms) if isinstance(r, SampleRecord)}
    cafe = records["caf\u00e9"]
    assert cafe.reason == "duplicate_member" and "Unicode forms (NFC, NFD)" in cafe.detail
    assert len(cafe.members) == 4
    assert "cases of its extension" in records["a"].detail


def test_no_tool_writes_into_the_folder_its_run_read(tmp_path, sample_dir, capsys):
    """run refused an output inside its input folder; redecide, select and train did
    not, and the folder's next run read their files as samples (helper-40: five
    missing_image samples from a redecide's config.yaml, summary.json, ...)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, photo in enumerate(_photos(sample_dir, 3)):
        (photos / f"p{i}.jpg").write_bytes(photo)
        (photos / f"p{i}.txt").write_text("a photo")
    out = tmp_path / "out"
    assert main(["run", "--input", str(photos), "--output", str(out)]) == 0
    capsys.readouterr()
    inside = str(photos / "tools")
    labels = tmp_path / "labels.csv"
    labels.write_text("key,label\np0,1\np1,0\n")
    for argv in (
        ["redecide", "--from", str(out), "--output", inside],
        ["select", "--from", str(out), "--filter", "nsfw", "--output", inside],
        [
            "train",
            "--from",
            str(out),
            "--embeddings",
            "nsfw",
            "--labels",
            str(labels),
            "--name",
            "x",
            "--output",
            inside,
        ],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"lies in the input folder {photos}/" in err, (argv, err)
    assert not (photos / "tools").exists()
