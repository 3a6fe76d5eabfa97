"""A run's manifest and embeddings read for `mitigate select` without a Python object a
row (mitigate/runtable.py), on a real run with the nsfw model's stored embeddings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mitigate import runtable
from mitigate.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(default_run: Path) -> Path:
    return default_run  # tests/conftest.py


def _whole(run_dir: Path) -> pa.Table:
    parts = sorted((run_dir / "manifest").glob("part-*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in parts])


@pytest.mark.slow
def test_the_table_gives_keys_scores_and_rows_as_the_whole_manifest(run_dir):
    whole = _whole(run_dir)
    table = runtable.RunTable(run_dir, ["key", "score_nsfw"])
    assert len(table.parts) >= 2 and len(table) == whole.num_rows
    keys = table.keys()
    assert len(keys) == whole.num_rows
    assert list(keys) == whole.column("key").to_pylist()
    assert (
        keys[3] == whole.column("key")[3].as_py()
        and keys[1:4] == whole.column("key")[1:4].to_pylist()
    )
    expected = np.asarray(
        [np.nan if s is None else s for s in whole.column("score_nsfw").to_pylist()]
    )
    scores = table.numbers("score_nsfw")
    assert scores.dtype == np.float64
    np.testing.assert_array_equal(scores, expected)  # nulls as NaN
    assert np.isnan(scores).any()  # the sample has undecodable images: no score
    # rows across parts, in the order asked for, every column but the signature
    last = whole.num_rows - 1
    picked = [last, 0, table.counts[0], 5]
    rows = table.rows(picked)
    full = whole.to_pylist()
    assert [r["key"] for r in rows] == [full[i]["key"] for i in picked]
    for got, i in zip(rows, picked, strict=True):
        assert "signature" not in got
        assert got == {k: v for k, v in full[i].items() if k != "signature"}


@pytest.mark.slow
def test_rows_of_finds_keys_without_a_python_loop_over_rows(run_dir):
    keys = runtable.RunTable(run_dir, ["key"]).keys()
    every = list(keys)
    wanted = [every[7], every[2], "not-a-key"]
    assert keys.rows_of(wanted).tolist() == [2, 7]
    assert keys.rows_of([]).tolist() == []


@pytest.mark.slow
def test_embeddings_over_the_parts_read_as_one_matrix(run_dir):
    table = runtable.RunTable(run_dir, ["key"])
    files = [run_dir / "embeddings" / "nsfw" / f"{p.stem}.npy" for p in table.parts]
    whole = np.concatenate([np.load(f) for f in files]).astype(np.float32)
    emb = runtable.PartedEmbeddings(table, "nsfw")
    assert emb.shape == whole.shape and whole.shape[1] > 0
    np.testing.assert_array_equal(emb[:], whole)
    np.testing.assert_array_equal(emb[3:40], whole[3:40])
    rows = [len(whole) - 1, 0, int(table.counts[0]), 4]  # across parts, any order
    np.testing.assert_array_equal(emb[rows], whole[rows])
    np.testing.assert_array_equal(emb[np.asarray([], dtype=np.int64)], whole[:0])


@pytest.mark.slow
def test_embeddings_that_do_not_match_the_manifest_are_an_error(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    table = runtable.RunTable(copy, ["key"])
    with pytest.raises(FileNotFoundError, match="no embeddings for 'image_quality'"):
        runtable.PartedEmbeddings(table, "image_quality")
    first = copy / "embeddings" / "nsfw" / f"{table.parts[0].stem}.npy"
    np.save(first, np.load(first)[:-1])
    with pytest.raises(ValueError, match=f"{first.name}: {table.counts[0] - 1} rows for"):
        runtable.PartedEmbeddings(table, "nsfw")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["uncertain", "positives", "neighbours"])
def test_select_reads_only_the_key_and_score_columns_of_the_whole_run(
    run_dir, tmp_path, monkeypatch, strategy
):
    """Regression: select read every column of every part (signatures included) and
    made a dict of every row; now the whole run is read for two columns, and only the
    selected rows in full (BENCHMARKS.md, "select over a large run")."""
    whole_reads: list[list[str] | None] = []
    row_reads: list[list[str]] = []
    read_table, read = pq.read_table, pq.ParquetFile.read

    def spy_table(source, *args, columns=None, **kwargs):
        whole_reads.append(columns)
        return read_table(source, *args, columns=columns, **kwargs)

    def spy_read(self, columns=None, *args, **kwargs):
        row_reads.append(columns)
        return read(self, columns, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", spy_table)
    monkeypatch.setattr(pq.ParquetFile, "read", spy_read)
    shown: list[int] = []
    rows = runtable.RunTable.rows

    def spy_rows(self, indices):
        shown.append(len(indices))
        return rows(self, indices)

    monkeypatch.setattr(runtable.RunTable, "rows", spy_rows)
    labels = tmp_path / "pos.csv"
    labels.write_text("key,label\n000000000,1\n")
    out = tmp_path / "sel"
    args = ["select", "--from", str(run_dir), "--filter", "nsfw", "--n", "3"]
    args += ["--strategy", strategy, "--threshold", "0.05", "--positives", str(labels)]
    assert main([*args, "--output", str(out)]) == 0
    parts = len(list((run_dir / "manifest").glob("*.parquet")))
    # the sources, for the output folder's check (not inside a folder the run read)
    assert whole_reads[:parts] == [["source"]] * parts
    # and the state, dictionary-encoded (4 bytes a row): an error row is no sample to
    # label; and the sha256, so byte copies of one image are offered once (helper-48)
    assert whole_reads[parts:] == [["key", "score_nsfw", "state", "sha256"]] * parts
    assert row_reads and all("signature" not in cols for cols in row_reads)
    selected = len((out / "selection.csv").read_text().splitlines()) - 1
    assert 0 < selected <= 3 and shown == [selected]  # only the selected rows in full
