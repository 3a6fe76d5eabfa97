"""Beam glue: the transforms under TestPipeline, and whole runs on the sample data."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from mitigate import decode_pool
from mitigate.config import ConfigError, load_config, validate_config
from mitigate.pipeline.build import IndexSource, _exact_dedup, split
from mitigate.pipeline.process import ProcessChunk
from mitigate.pipeline.run import preflight, run
from mitigate.records import PENDING, SampleRecord

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"


def _config(tmp_path: Path, *overrides: str):
    config, _ = load_config(DEFAULT, [f"output.path={tmp_path / 'out'}", *overrides])
    return config


# --- transforms under TestPipeline ---------------------------------------------------


def test_index_source_chunks_a_shard(tmp_path, sample_dir):
    config = _config(tmp_path, "input.chunk_size=5")
    shard = str(sample_dir / "shard-00000.tar")
    with TestPipeline() as p:
        tagged = p | beam.Create([(7, shard)]) | beam.ParDo(IndexSource.of(config))
        chunks = split(tagged, "Route", ["chunks", "issues"])["chunks"]
        sizes = chunks | beam.Map(lambda c: (c[0], len(c[1])))
        assert_that(sizes, equal_to([(7, 5)] * 4 + [(7, 4)]))


def test_index_source_reports_truncation_as_an_issue(tmp_path, sample_dir):
    config = _config(tmp_path)
    shard = str(sample_dir / "shard-00002.tar")
    with TestPipeline() as p:
        tagged = p | beam.Create([(0, shard)]) | beam.ParDo(IndexSource.of(config))
        out = split(tagged, "Route", ["chunks", "issues"])
        assert_that(
            out["issues"] | beam.Map(lambda i: i.reason),
            equal_to(["truncated_shard"]),
            label="issues",
        )
        states = out["chunks"] | beam.FlatMap(lambda c: [(r.key, r.state) for r in c[1]])
        assert_that(
            states | beam.Map(lambda kv: kv[1]),
            equal_to([PENDING, PENDING, PENDING, "error"]),
            label="states",
        )


def test_process_chunk_decides_every_record(tmp_path, sample_dir):
    config = _config(tmp_path)
    from mitigate.sources import index_tar

    shard = str(sample_dir / "shard-00000.tar")
    with open(shard, "rb") as f:
        records = [
            r for r in index_tar(f, shard, max_image_bytes=10**8) if isinstance(r, SampleRecord)
        ]
    with TestPipeline() as p:
        out = p | beam.Create([(0, records)]) | ProcessChunk(config)
        assert_that(out | beam.combiners.Count.Globally(), equal_to([len(records)]), label="n")
        decoded = (
            out
            | beam.Filter(lambda r: r.phash is not None)
            | beam.Map(lambda r: set(r.scores) == {"nsfw", "image_quality", "caption_terms"})
        )
        assert_that(decoded | beam.combiners.ToSet(), equal_to([{True}]), label="scores")


def test_exact_dedup_transform(tmp_path):
    recs = [
        SampleRecord(key=k, source="s", index=i, sha256=h, width=4, height=4)
        for i, (k, h) in enumerate([("b", "x"), ("a", "x"), ("c", "y")])
    ]
    with TestPipeline() as p:
        out = _exact_dedup(p | beam.Create(recs), enabled=True)
        assert_that(
            out | beam.Map(lambda r: (r.key, r.state, r.duplicate_of)),
            equal_to([("a", PENDING, None), ("b", "duplicate", "a"), ("c", PENDING, None)]),
        )


# --- whole runs -------------------------------------------------------------------------


def _manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest").to_pylist()


def _files(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        # summary.json and report.html hold timings; config.yaml the output path
        if p.is_file() and p.name not in ("summary.json", "report.html")
    }


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    config, _ = load_config(DEFAULT, [f"output.path={out}", "output.samples_per_shard=10"])
    summary = run(config)
    return out, summary


@pytest.mark.slow
def test_sample_run_reaches_the_expected_state_of_every_sample(sample_run, expected_states):
    out, _ = sample_run
    got = {
        (r["key"], Path(r["source"]).name): (r["state"], r["reason"] or "") for r in _manifest(out)
    }
    want = {(e["key"], e["shard"]): (e["state"], e["reason"]) for e in expected_states}
    assert got == want


@pytest.mark.slow
def test_counts_are_conserved(sample_run, expected_states):
    out, summary = sample_run
    assert summary["input_count"] == len(expected_states) == summary["manifest_rows"]
    assert sum(v["total"] for v in summary["counts"].values()) == summary["input_count"]
    for state, entry in summary["counts"].items():
        if state != "kept":
            assert sum(entry["reasons"].values()) == entry["total"], state
    cons = summary["conservation"]
    assert (cons["ok"], cons["problems"]) == (True, [])
    # the truncated shard: how many samples followed the cut cannot be known
    assert (cons["members_lost_in_source_issues"], cons["source_issues_of_unknown_size"]) == (0, 1)
    assert [i["reason"] for i in summary["source_issues"]] == ["truncated_shard"]
    saved = json.loads((out / "summary.json").read_text())
    assert saved["counts"] == summary["counts"] and saved["run"]["wall_seconds"] > 0


@pytest.mark.slow
def test_shards_hold_exactly_the_kept_samples_unchanged(sample_run, sample_dir):
    out, _ = sample_run
    manifest = {r["key"]: r for r in _manifest(out) if r["state"] == "kept"}
    shards = sorted((out / "shards").glob("*.tar"))
    assert [p.name for p in shards] == [f"shard-{i:06d}.tar" for i in range(4)]
    samples = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False))
    assert [len(list(wds.WebDataset(str(p), shardshuffle=False))) for p in shards] == [
        10,
        10,
        10,
        3,
    ]
    assert sorted(s["__key__"] for s in samples) == sorted(manifest)
    # input order is kept: by source shard, then position in it
    order = [(manifest[s["__key__"]]["source"], manifest[s["__key__"]]["index"]) for s in samples]
    assert order == sorted(order)
    originals = {}
    for shard in sample_dir.glob("shard-*.tar"):
        with tarfile.open(shard, ignore_zeros=True) as tar:
            try:
                for m in tar:
                    if m.isfile() and m.name.endswith(".txt"):
                        originals[(shard.name, m.name[:-4])] = tar.extractfile(m).read()
            except tarfile.ReadError:
                pass  # the truncated shard
    for s in samples:
        row = manifest[s["__key__"]]
        image = s[row["image_ext"]]
        assert hashlib.sha256(image).hexdigest() == row["sha256"]  # image bytes unchanged
        assert s["txt"] == originals[(Path(row["source"]).name, s["__key__"])]  # caption intact
        meta = json.loads(s["json"])
        assert meta["mitigate"]["phash"] == row["phash"]
        assert set(meta["mitigate"]["scores"]) == {"nsfw", "image_quality", "caption_terms"}
    assert not [p for p in out.rglob(".*tmp-*")]  # no temporary files left behind


@pytest.mark.slow
def test_second_run_is_byte_identical(sample_run, tmp_path):
    out, _ = sample_run
    config, _ = load_config(
        DEFAULT, [f"output.path={tmp_path / 'again'}", "output.samples_per_shard=10"]
    )
    run(config)
    assert _files(tmp_path / "again").keys() == _files(out).keys()
    for name, data in _files(out).items():
        if name != "config.yaml":  # holds the output path, which differs
            assert _files(tmp_path / "again")[name] == data, name


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "mode"), [("2", "multi_processing"), ("auto", "multi_threading")]
)
def test_multi_processing_gives_the_same_output(sample_run, tmp_path, workers, mode):
    # Shard, manifest and embedding bytes of 1 worker, whatever the workers and mode
    # (auto: one Beam worker, decoding on every core) and however the input is chunked.
    out, _ = sample_run
    config, _ = load_config(
        DEFAULT,
        [
            f"output.path={tmp_path / 'mp'}",
            "output.samples_per_shard=10",
            f"runner.direct_num_workers={workers}",
            f"runner.direct_running_mode={mode}",
            "input.chunk_size=4",
        ],
    )
    summary = run(config)
    assert summary["run"]["runner"]["direct_num_workers"] == config.runner.local_workers()
    # auto: one Beam worker whose decode step may use every core
    assert summary["run"]["runner"]["decode_processes"] == (
        1 if workers == "2" else min(decode_pool.usable_cores(), decode_pool.MAX_AUTO_PROCESSES)
    )
    assert summary["runner_options"]["runner"] == "mitigate.runners.local.LocalRunner"
    mine, theirs = _files(out), _files(tmp_path / "mp")
    assert mine.keys() == theirs.keys()
    for name in mine:
        if name != "config.yaml":
            assert mine[name] == theirs[name], name


@pytest.mark.slow
def test_table_input_runs_end_to_end(tmp_path, photos):
    (tmp_path / "img").mkdir()
    rows = []
    for i, (key, data) in enumerate(sorted(photos.items())[:6]):
        (tmp_path / "img" / f"{key}.jpg").write_bytes(data)
        rows.append({"key": f"t{i}", "image": f"img/{key}.jpg", "caption": f"photo {i}"})
    rows.append({"key": "t6", "image": "img/missing.jpg", "caption": "gone"})
    rows.append({"key": "t7", "image": rows[0]["image"], "caption": "same bytes as t0"})
    table = tmp_path / "table.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = validate_config(
        {"input": {"paths": [str(table)]}, "output": {"path": str(tmp_path / "out")}}
    )
    summary = run(config)
    states = {r["key"]: (r["state"], r["reason"]) for r in _manifest(tmp_path / "out")}
    assert states["t6"] == ("error", "missing_image")
    assert states["t7"] == ("duplicate", "exact_duplicate")
    assert summary["counts"]["kept"]["total"] == 6
    kept = list(wds.WebDataset(str(tmp_path / "out/shards/shard-000000.tar"), shardshuffle=False))
    assert {s["txt"].decode() for s in kept} == {f"photo {i}" for i in range(6)}


def test_preflight_refuses_missing_inputs_and_a_previous_output(tmp_path):
    config = validate_config({"input": {"paths": [str(tmp_path / "none*.tar")]}})
    with pytest.raises(ConfigError, match=r"input.paths\[0\]: no file matches"):
        preflight(config)
    (tmp_path / "out").mkdir()
    run_summary = {"input_count": 0, "counts": {}, "conservation": {"ok": True}}
    (tmp_path / "out" / "summary.json").write_text(json.dumps(run_summary))
    config = _config(tmp_path)
    with pytest.raises(ConfigError, match=r"holds a previous run.*--overwrite"):
        preflight(config)
    preflight(_config(tmp_path, "output.overwrite=true"))


def test_unreadable_shard_is_reported_and_the_run_goes_on(tmp_path, sample_dir):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"not a tar" * 100)
    config = _config(tmp_path, f"input.paths=['{bad}', '{sample_dir / 'shard-00000.tar'}']")
    summary = run(config)
    assert summary["input_count"] == 24
    assert [(Path(i["source"]).name, i["reason"]) for i in summary["source_issues"]] == [
        ("bad.tar", "read_error")
    ]


def test_no_partial_shard_under_a_final_name(tmp_path, monkeypatch):
    from mitigate.pipeline import fs

    target = str(tmp_path / "x" / "final.tar")
    with pytest.raises(RuntimeError), fs.atomic_write(target) as f:
        f.write(b"partial")
        raise RuntimeError("worker died")
    assert not Path(target).exists()
    assert list((tmp_path / "x").iterdir()) == []
    with fs.atomic_write(target) as f:
        f.write(b"whole")
    assert Path(target).read_bytes() == b"whole"


@pytest.mark.slow
def test_every_decoded_sample_has_model_scores_and_embeddings(sample_run):
    out, summary = sample_run
    import numpy as np

    for part in sorted((out / "manifest").glob("part-*.parquet")):
        rows = pq.read_table(part).to_pylist()
        emb = np.load(out / "embeddings" / "nsfw" / part.name.replace(".parquet", ".npy"))
        assert emb.shape == (len(rows), 1024)
        for row, vector in zip(rows, emb, strict=True):
            decoded = row["phash"] is not None
            assert (row["score_nsfw"] is not None) == decoded, row["key"]
            assert bool(np.isfinite(vector).all()) == decoded, row["key"]
    (model,) = summary["models"]
    assert model["name"] == "nsfw" and len(model["model_sha256"]) == 64


@pytest.mark.slow
def test_redecide_drops_exactly_what_a_fresh_run_would(sample_run, tmp_path):
    from mitigate.pipeline.run import redecide

    out, _ = sample_run
    # a lower threshold, and a term added to caption_terms (matched again on the
    # manifest's captions: a redecide kept the run's matches before)
    lower = ["output.samples_per_shard=10", "filters.0.threshold=0.1", "filters.2.terms=[coffee]"]
    fresh, _ = load_config(DEFAULT, [f"output.path={tmp_path / 'fresh'}", *lower])
    run(fresh)
    again, _ = load_config(out / "config.yaml", [f"output.path={tmp_path / 're'}", *lower])
    summary = redecide(again, str(out))
    assert summary["redecided_from"] == str(out)
    assert summary["counts"]["filtered"]["reasons"]["nsfw_image_above_threshold"] == 2
    matched = {r["key"]: r["detail"] for r in _manifest(tmp_path / "re")}
    assert sum('violence:"coffee"' in (d or "") for d in matched.values()) == 1
    fresh_files, re_files = _files(tmp_path / "fresh"), _files(tmp_path / "re")
    assert fresh_files.keys() == re_files.keys()
    for name in fresh_files:
        if name != "config.yaml":
            assert fresh_files[name] == re_files[name], name
    assert summary["source_issues"] == run_summary_issues(out)


@pytest.mark.slow
def test_redecide_reads_a_manifest_written_before_the_centre_view(sample_run, tmp_path):
    """A run's manifest without the phash_centre column (as written before it existed):
    redecide still decides near duplicates, on pHash only, to the same states."""
    import shutil

    from mitigate.pipeline.run import redecide

    out, _ = sample_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for part in sorted((old / "manifest").glob("*.parquet")):
        table = pq.read_table(part)
        assert table.column("phash_centre").null_count < table.num_rows
        pq.write_table(table.drop_columns(["phash_centre"]), part, compression="zstd")
    config, _ = load_config(old / "config.yaml", [f"output.path={tmp_path / 're'}"])
    summary = redecide(config, str(old))
    assert summary["dedup"]["verify"]["centre_view"] is True
    assert summary["dedup"]["verify"]["centre_only_pairs"] == 0
    rows = pq.read_table(tmp_path / "re" / "manifest").to_pylist()
    before = pq.read_table(out / "manifest").to_pylist()
    assert all(r["phash_centre"] is None for r in rows)
    assert sum(r["reason"] == "near_duplicate" for r in rows) > 0
    states = {(r["key"], r["source"]): (r["state"], r["reason"], r["duplicate_of"]) for r in rows}
    assert states == {
        (r["key"], r["source"]): (r["state"], r["reason"], r["duplicate_of"]) for r in before
    }


@pytest.mark.slow
def test_redecide_of_a_run_with_stale_signatures_runs_on_phash_once_told(sample_run, tmp_path):
    """A run stored before the signature changed (2,314-byte signatures): refused with
    dedup.verify on (tests/test_near_pipeline.py), redecided on pHash alone with it off,
    and the near duplicates it finds then are the pHash candidates."""
    import shutil

    from mitigate.config import ConfigError
    from mitigate.pipeline.run import redecide

    out, _ = sample_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for part in sorted((old / "manifest").glob("*.parquet")):
        table = pq.read_table(part)
        sigs = [None if s is None else s[:2314] for s in table.column("signature").to_pylist()]
        i = table.schema.get_field_index("signature")
        table = table.set_column(i, "signature", pa.array(sigs, pa.binary()))
        pq.write_table(table, part, compression="zstd")
    config, _ = load_config(old / "config.yaml", [f"output.path={tmp_path / 're'}"])
    with pytest.raises(ConfigError, match=r"dedup\.verify"):
        redecide(config, str(old))
    config, _ = load_config(
        old / "config.yaml", [f"output.path={tmp_path / 're'}", "dedup.verify=false"]
    )
    summary = redecide(config, str(old))
    assert summary["dedup"]["verify"]["threshold"] is None  # nothing was verified
    rows = pq.read_table(tmp_path / "re" / "manifest").to_pylist()
    assert sum(r["reason"] == "near_duplicate" for r in rows) > 0


def run_summary_issues(out: Path) -> list:
    return json.loads((out / "summary.json").read_text())["source_issues"]


def test_redecide_refuses_filters_without_stored_scores(sample_run, tmp_path):
    from mitigate.pipeline.run import redecide

    out, _ = sample_run
    config, _ = load_config(
        out / "config.yaml",
        [f"output.path={tmp_path / 'x'}", "filters.2.id=terms_v2"],
    )
    with pytest.raises(ConfigError, match=r"filters\[2\]: no stored scores for 'terms_v2'"):
        redecide(config, str(out))
    same, _ = load_config(out / "config.yaml", [f"output.path={out}"])
    with pytest.raises(ConfigError, match="must differ from --from"):
        redecide(same, str(out))
