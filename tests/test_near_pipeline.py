"""Near-duplicate removal end to end: real photos with planted copies, decontamination
against an evaluation set, and a hash blocklist."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from mitigate import verify
from mitigate.config import ConfigError, validate_config
from mitigate.output import manifest_schema
from mitigate.pipeline.run import redecide, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from eval_near_k import EDITS


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _shard(path: Path, samples: list[tuple[str, bytes, str]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for key, image, caption in samples:
            for name, data in ((f"{key}.jpg", image), (f"{key}.txt", caption.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory, photos):
    """Every bundled photo plus its six edited copies; keys g<group>_<edit>."""
    folder = tmp_path_factory.mktemp("planted")
    samples = []
    for g, data in enumerate(sorted(photos.values(), key=len)):
        image = Image.open(io.BytesIO(data)).convert("RGB")
        samples.append((f"g{g:02d}_original", _jpeg(image), f"photo {g}"))
        for name, edit in EDITS.items():
            quality = 50 if name == "jpeg_q50" else 90
            key = f"g{g:02d}_{name.replace('.', 'p')}"  # no dots: WebDataset keys end there
            samples.append((key, _jpeg(edit(image), quality), f"photo {g}"))
    return _shard(folder / "planted.tar", samples), len(photos)


def _config(data: Path, out: Path, filters: list | None = None, **dedup) -> object:
    return validate_config(
        {
            "input": {"paths": [str(data)]},
            "output": {"path": str(out)},
            "dedup": dedup,
            "filters": filters or [],
        }
    )


@pytest.mark.slow
def test_planted_copies_are_found_with_high_precision(planted, tmp_path):
    data, n_groups = planted
    summary = run(_config(data, tmp_path / "out", k=10))
    rows = pq.read_table(tmp_path / "out" / "manifest").to_pylist()
    dropped = [r for r in rows if r["state"] == "duplicate"]
    kept = [r for r in rows if r["state"] == "kept"]
    group = {r["key"]: r["key"].split("_")[0] for r in rows}
    correct = [r for r in dropped if group[r["duplicate_of"]] == group[r["key"]]]
    precision = len(correct) / len(dropped)
    recall = len(correct) / (len(rows) - n_groups)
    assert precision >= 0.95, precision
    assert recall >= 0.85, recall
    kept_keys = {r["key"] for r in kept}
    assert all(r["duplicate_of"] in kept_keys for r in dropped)  # always a kept sample
    assert all(0 <= r["distance"] <= 10 for r in dropped)
    # per-pair evidence: the verification score of every merge, the signature of every
    # decoded sample (verify.SIG_BYTES bytes, from the single decode)
    assert all(0 <= r["verify_score"] <= 1.0 for r in dropped)
    assert all(len(r["signature"]) == verify.SIG_BYTES for r in rows if r["state"] != "error")
    assert all("verification score" in r["detail"] for r in dropped)
    # keep rule: every group keeps one sample
    assert {group[k] for k in kept_keys} == {f"g{g:02d}" for g in range(n_groups)}
    report = summary["dedup"]
    assert report["k"] == 10 and report["near_duplicates"] == len(dropped)
    assert report["keep"] == "medoid" and report["verify"]["merged_pairs"] >= len(dropped)
    assert all(len(p) == 3 for pairs in report["examples_by_distance"].values() for p in pairs)
    assert sum(int(s) * n for s, n in report["cluster_sizes"].items()) >= len(dropped)


@pytest.mark.slow
def test_decontamination_against_an_eval_set_and_a_hash_list(planted, tmp_path, photos):
    data, _ = planted
    # eval set: two of the originals, as shards; a third as a hash list entry
    originals = sorted(photos.values(), key=len)
    images = [Image.open(io.BytesIO(d)).convert("RGB") for d in originals[:3]]
    evalset = _shard(
        tmp_path / "eval.tar", [(f"eval{i}", _jpeg(im), "x") for i, im in enumerate(images[:2])]
    )
    from mitigate.decode import decode_image
    from mitigate.hashing import to_hex

    third = decode_image(_jpeg(images[2]), max_pixels=10**8)
    hashes = tmp_path / "eval_hashes.csv"
    hashes.write_text(f"eval_listed,{to_hex(third.phash)},{to_hex(third.phash_mirror)}\n")
    summary = run(
        _config(data, tmp_path / "out", k=10, near=False, against=[str(evalset), str(hashes)])
    )
    rows = pq.read_table(tmp_path / "out" / "manifest").to_pylist()
    # with near=false the report claims no near duplicates: none were removed
    assert summary["dedup"]["near_duplicates"] == 0
    assert not any(r["reason"] == "near_duplicate" for r in rows)
    overlap = {r["key"]: r["duplicate_of"] for r in rows if r["reason"] == "eval_overlap"}
    for g, ref in ((0, "eval0"), (1, "eval1"), (2, "eval_listed")):
        assert overlap.get(f"g{g:02d}_original") == ref
    assert all(r["state"] == "kept" for r in rows if r["key"].startswith("g05_"))


@pytest.mark.slow
def test_blocklist_by_sha256_before_decoding_and_by_phash(planted, tmp_path):
    data, _ = planted
    with tarfile.open(data) as tar:
        first = tar.extractfile("g00_original.jpg").read()
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text(f"# known bad\nsha256:{hashlib.sha256(first).hexdigest()}\n")
    flt = [{"name": "blocklist", "path": str(blocklist)}]
    run(_config(data, tmp_path / "a", filters=flt, near=False))
    rows_before = {r["key"]: r for r in pq.read_table(tmp_path / "a" / "manifest").to_pylist()}
    hit = rows_before["g00_original"]
    assert (hit["state"], hit["reason"], hit["phash"]) == ("filtered", "blocklist", None)
    assert (hit["filter"], hit["score_blocklist"]) == ("blocklist", 0.0)
    assert hit["detail"] == "sha256 is on the blocklist"
    assert rows_before["g01_original"]["state"] == "kept"
    # nothing in the list within reach of a pHash: a score that never drops
    assert rows_before["g01_original"]["score_blocklist"] == float("inf")
    # by pHash, configured the old way (dedup.blocklist*): translated into the filter;
    # list g01's hash; its near copies match within a few bits
    listed = rows_before["g01_original"]["phash"]
    blocklist.write_text(f"phash:{listed}\n")
    old_way = _config(
        data, tmp_path / "b", blocklist=str(blocklist), blocklist_max_distance=4, near=False
    )
    run(old_way)
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "b" / "manifest").to_pylist()}
    assert rows["g01_original"]["reason"] == "blocklist"
    assert rows["g01_original"]["score_blocklist"] == 0.0
    assert rows["g01_jpeg_q50"]["reason"] == "blocklist"
    near = [k for k, r in rows.items() if k.startswith("g01_") and 0 < r["score_blocklist"] <= 4]
    assert near, {k: r["score_blocklist"] for k, r in rows.items() if k.startswith("g01_")}
    assert {(rows[k]["reason"], rows[k]["threshold"]) for k in near} == {("blocklist", 4)}
    assert rows["g02_original"]["state"] == "kept"
    assert rows["g02_original"]["score_blocklist"] > 4
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["counts"]["filtered"]["reasons"]["blocklist"] >= 2

    # redecide with max_distance 0: the exact pHash stays dropped, its near copies kept
    strict = old_way.model_copy(
        update={
            "filters": [old_way.filters[0].model_copy(update={"max_distance": 0})],
            "output": old_way.output.model_copy(update={"path": str(tmp_path / "c")}),
        }
    )
    redecide(strict, str(tmp_path / "b"))
    again = {r["key"]: r for r in pq.read_table(tmp_path / "c" / "manifest").to_pylist()}
    assert again["g01_original"]["reason"] == "blocklist"
    assert {(again[k]["state"], again[k]["reason"]) for k in near} == {("kept", None)}

    # redecide run a against a changed list file: re-scored from the stored pHash,
    # while the sample filtered by sha256 before decoding has no pHash and stays as it was
    other = tmp_path / "other.txt"
    other.write_text(f"{rows_before['g02_original']['phash']}\n")
    changed = _config(
        data, tmp_path / "d", filters=[{"name": "blocklist", "path": str(other)}], near=False
    )
    redecide(changed, str(tmp_path / "a"))
    rescored = {r["key"]: r for r in pq.read_table(tmp_path / "d" / "manifest").to_pylist()}
    assert (rescored["g02_original"]["reason"], rescored["g02_original"]["score_blocklist"]) == (
        "blocklist",
        0.0,
    )
    assert rescored["g00_original"]["reason"] == "blocklist"
    assert rescored["g00_original"]["detail"] == "sha256 is on the blocklist"
    assert rescored["g01_original"]["state"] == "kept"


def test_bad_blocklist_and_missing_reference_files_are_config_errors(tmp_path):
    bad = tmp_path / "bl.txt"
    bad.write_text("not-a-hash\n")
    with pytest.raises(ConfigError, match=r"filters\[0\]\.path: .*bl.txt:1: not a sha256"):
        validate_config({"filters": [{"name": "blocklist", "path": str(bad)}]})
    with pytest.raises(ConfigError, match=r"dedup\.blocklist: .*bl.txt:1: not a sha256"):
        validate_config({"dedup": {"blocklist": str(bad)}})
    with pytest.raises(ConfigError, match=r"against\[0\]: file not found"):
        validate_config({"dedup": {"against": [str(tmp_path / "missing.txt")]}})


def _manifest_rows(out: Path) -> dict[str, tuple]:
    rows = pq.read_table(out / "manifest").to_pylist()
    return {r["key"]: (r["state"], r["reason"], r["duplicate_of"], r["distance"]) for r in rows}


@pytest.mark.slow
def test_partitioned_mode_decontaminates_and_blocks_as_the_single_worker_mode(planted, tmp_path):
    """Clusters forced tiny, eval-set hashes and a pHash blocklist: the same manifest as
    `partition: none` whenever the measured recall is 1."""
    data, _ = planted
    first = _manifest_rows_once(data, tmp_path)
    refs = tmp_path / "eval.csv"
    refs.write_text(f"eval0,{first['g00_original']},\n")
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text(f"phash:{first['g01_original']}\n")
    common = dict(
        k=10,
        against=[str(refs)],
        filters=[{"name": "blocklist", "path": str(blocklist), "max_distance": 4}],
        verify=False,  # the partitioned graph does not verify yet: compare like with like
        keep="resolution",
    )
    run(_config(data, tmp_path / "none", partition="none", **common))
    summary = run(
        _config(
            data,
            tmp_path / "clusters",
            partition="clusters",
            max_partition_size=40,
            clusterings=8,
            **common,
        )
    )
    dedup = summary["dedup"]
    assert dedup["pair_recall"]["estimate"] == 1.0, dedup["pair_recall"]
    assert dedup["partitions"] > 8 and dedup["largest_search"] <= 44
    none, clusters = _manifest_rows(tmp_path / "none"), _manifest_rows(tmp_path / "clusters")
    assert clusters == none
    assert clusters["g00_original"][:3] == ("duplicate", "eval_overlap", "eval0")
    assert clusters["g01_original"][:2] == ("filtered", "blocklist")
    assert sum(1 for v in clusters.values() if v[1] == "near_duplicate") > 100
    assert dedup["eval_overlap"] >= 1


def _manifest_rows_once(data: Path, tmp_path: Path) -> dict[str, str]:
    """pHash of every sample (a run without near-dup search)."""
    run(_config(data, tmp_path / "hashes", near=False, exact=False))
    rows = pq.read_table(tmp_path / "hashes" / "manifest").to_pylist()
    return {r["key"]: r["phash"] for r in rows}


@pytest.mark.slow
def test_a_run_below_min_recall_fails_before_writing_a_shard(planted, tmp_path):
    data, _ = planted
    config = _config(
        data,
        tmp_path / "out",
        k=10,
        partition="clusters",
        verify=False,
        keep="resolution",
        max_partition_size=4,
        clusterings=1,
        probes=1,
        min_recall=0.99,
    )
    with pytest.raises(Exception, match=r"dedup\.min_recall: measured pair recall 0\.\d+"):
        run(config)
    assert not list((tmp_path / "out").rglob("*.tar"))
    assert not (tmp_path / "out" / "summary.json").exists()


def test_partitioned_graph_runs_with_verification_and_the_medoid_rule():
    def dedup(**kw):
        return validate_config({"dedup": kw}).dedup

    # auto, with the default verify + medoid: partitioned on distributed runners; the
    # local runner holds every collection in one process, where one worker is faster
    for runner in ("dataflow", "flink", "spark", "portable"):
        assert dedup().partitioned_on(runner), runner
    assert not dedup().partitioned_on("direct")
    assert not dedup().partitioned_on("dask")  # it cannot run it: clusters is refused
    assert dedup(partition="clusters").partitioned_on("direct")
    assert dedup(verify=False, keep="resolution").partitioned_on("dataflow")
    assert not dedup(partition="none").partitioned_on("dataflow")


def _stored_run(folder: Path, signatures: list[bytes | None]) -> Path:
    """A finished run as redecide reads it: a summary and a manifest part whose
    samples carry ``signatures`` (None: a sample that was not decoded)."""
    import pyarrow as pa

    (folder / "manifest").mkdir(parents=True)
    (folder / "summary.json").write_text("{}")
    n = len(signatures)
    given = {
        "key": [f"s{i}" for i in range(n)],
        "source": ["data.tar"] * n,
        "signature": signatures,
    }
    schema = manifest_schema([])  # every column (the others null), as redecide asks
    table = pa.table(
        {f.name: pa.array(given.get(f.name, [None] * n), f.type) for f in schema}, schema=schema
    )
    pq.write_table(table, folder / "manifest" / "part-000000.parquet")
    return folder


@pytest.mark.parametrize("verify_on", [True, False])
def test_redecide_refuses_to_verify_with_signatures_of_another_version(tmp_path, verify_on):
    """A run stored before the signature changed (the fourth round's 2,314 bytes) can
    only be redecided on pHash alone: with dedup.verify on that is refused before any
    work, naming the field; with it off, this check passes (the run then fails later,
    on this fake run's missing columns, not on the signatures). A run with current
    signatures passes it: tests/test_pipeline.py redecides real runs with dedup.verify
    on, and the one with stale signatures set to off."""
    old = bytes(2314)
    stored = _stored_run(tmp_path / "run", [None, old, old])
    config = _config(tmp_path / "data.tar", tmp_path / "out", verify=verify_on)
    with pytest.raises(Exception) as err:
        redecide(config, str(stored))
    refused = isinstance(err.value, ConfigError) and "dedup.verify" in str(err.value)
    assert refused == verify_on, err.value
    if verify_on:
        assert "2314 bytes" in str(err.value) and not (tmp_path / "out").exists()


def test_redecide_verifies_with_version_2_signatures(tmp_path):
    """A run stored before version 3 (session 29) keeps verification: version 2 differs
    only for images with one side of 128 px or more and the other under it, which
    fall back to pHash alone (verify.is_signature)."""
    v2 = bytes(2314) + bytes([2])
    stored = _stored_run(tmp_path / "run", [None, v2, v2])
    config = _config(tmp_path / "data.tar", tmp_path / "out", verify=True)
    with pytest.raises(Exception) as err:
        redecide(config, str(stored))
    assert not (isinstance(err.value, ConfigError) and "dedup.verify" in str(err.value))


def _chain(photos: dict[str, bytes], folder: Path) -> tuple[Path, bytes]:
    """A photo, a half-size copy and a second file of that copy's very bytes (the exact
    duplicate keeps the half-size copy, which near-dedup then removes in favour of the
    original), and another photo; the half-size copy's bytes."""
    first, other = (Image.open(io.BytesIO(d)).convert("RGB") for d in sorted(photos.values())[:2])
    half = _jpeg(first.resize((first.width // 2, first.height // 2)))
    samples = [
        ("a_original", _jpeg(first), "a photo"),
        ("b_half", half, "a photo"),
        ("c_same_bytes", half, "a photo"),
        ("d_other", _jpeg(other), "another photo"),
    ]
    return _shard(folder / "chain.tar", samples), half


@pytest.mark.slow
@pytest.mark.parametrize("partition", ["none", "clusters"])
def test_an_exact_duplicate_of_a_sample_near_dedup_removes_names_the_kept_sample(
    photos, tmp_path, partition
):
    """Exact dedup keeps ``b_half`` over ``c_same_bytes``; near-dedup then removes
    ``b_half`` in favour of ``a_original``. The exact duplicate follows it: its
    ``duplicate_of`` names the kept sample (as every duplicate's does), with the pair's
    distance and verification score, and its detail both steps; in the one-worker and
    the partitioned graph alike. Against an evaluation set holding the copy, both are
    eval overlaps of the reference."""
    data, half = _chain(photos, tmp_path)
    run(_config(data, tmp_path / "out", k=10, partition=partition))
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "out" / "manifest").to_pylist()}
    assert {k: r["state"] for k, r in rows.items()} == {
        "a_original": "kept",
        "b_half": "duplicate",
        "c_same_bytes": "duplicate",
        "d_other": "kept",
    }
    removed, copy = rows["b_half"], rows["c_same_bytes"]
    assert (removed["reason"], removed["duplicate_of"]) == ("near_duplicate", "a_original")
    assert (copy["reason"], copy["duplicate_of"]) == ("near_duplicate", "a_original")
    assert (copy["distance"], copy["verify_score"]) == (
        removed["distance"],
        removed["verify_score"],
    )
    assert "same image bytes as 'b_half'" in copy["detail"]
    assert "'a_original'" in copy["detail"]
    kept = {k for k, r in rows.items() if r["state"] == "kept"}
    assert all(r["duplicate_of"] in kept for r in rows.values() if r["state"] == "duplicate")

    evalset = _shard(tmp_path / "eval.tar", [("eval0", half, "x")])
    run(_config(data, tmp_path / "eval", k=10, partition=partition, against=[str(evalset)]))
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "eval" / "manifest").to_pylist()}
    for key in ("b_half", "c_same_bytes"):
        assert (rows[key]["reason"], rows[key]["duplicate_of"]) == ("eval_overlap", "eval0")
    assert "same image bytes as 'b_half'" in rows["c_same_bytes"]["detail"]
