"""A large source's manifest in parts of ``output.samples_per_manifest_part`` samples.

One huge input file (a table of millions of rows, a tar written as one file) would
otherwise be one group of every record it holds, listed and sorted by one worker to
write its one part; in blocks, no worker holds more than a block. The rows, the kept
shards and the quarantine's samples are those of one part per source, in the same order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from mitigate import review, runtable
from mitigate.config import ConfigError, load_config
from mitigate.pipeline.run import redecide, run

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
PER_PART = 7


def _run(out: Path, *extra: str) -> dict:
    config, _ = load_config(
        DEFAULT,
        [
            f"output.path={str(out)!r}",
            "output.samples_per_shard=10",
            "output.quarantine=true",
            "output.quarantine_duplicates=true",
            *extra,
        ],
    )
    return run(config)


def _rows(out: Path) -> list[dict]:
    return review.load_manifest(out).to_pylist()


def _quarantined(out: Path) -> list[tuple[str, str, bytes]]:
    """(reason, key, image bytes) of every quarantined sample, in shard-name order."""
    found = []
    for folder in sorted((out / "quarantine").iterdir()):
        shards = sorted(str(p) for p in folder.glob("*.tar"))
        for sample in wds.WebDataset(shards, shardshuffle=False):
            image = next(v for k, v in sample.items() if k in ("jpg", "png", "jpeg", "webp"))
            found.append((folder.name, sample["__key__"], image))
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("blocks")
    whole = root / "whole"
    _run(whole)
    blocks = root / "blocks"
    summary = _run(blocks, f"output.samples_per_manifest_part={PER_PART}")
    return whole, blocks, summary


@pytest.mark.slow
def test_a_source_larger_than_a_part_is_written_in_blocks_of_input_order(runs):
    whole, blocks, summary = runs
    assert summary["manifest_rows"] == summary["input_count"]
    assert summary["conservation"]["ok"] and summary["conservation"]["problems"] == []
    names = sorted(p.name for p in (blocks / "manifest").glob("part-*.parquet"))
    assert len(names) > len(list((whole / "manifest").glob("part-*.parquet")))
    for name in names:
        rows = pq.read_table(blocks / "manifest" / name).to_pylist()
        _, _, block = name.removeprefix("part-").removesuffix(".parquet").partition("_")
        block_number = int(block) if block else 0
        assert 0 < len(rows) <= PER_PART or (block_number == 0 and not rows), name
        assert len({r["source"] for r in rows}) <= 1, name
        # block B holds indices B * PER_PART .. (B + 1) * PER_PART - 1, sorted
        indices = [r["index"] for r in rows]
        assert indices == sorted(indices)
        assert all(i // PER_PART == block_number for i in indices), (name, indices)
    # every block of a source, the first one named as before
    assert "part-000000.parquet" in names and "part-000000_000001.parquet" in names
    # the same rows in the same order (signatures, scores, states) as one part a source
    assert _rows(blocks) == _rows(whole)


@pytest.mark.slow
def test_blocks_keep_shards_embeddings_and_quarantine_as_one_part_would(runs):
    whole, blocks, _ = runs
    shards = sorted(p.name for p in (whole / "shards").iterdir())
    assert shards == sorted(p.name for p in (blocks / "shards").iterdir())
    for name in shards:
        assert (whole / "shards" / name).read_bytes() == (blocks / "shards" / name).read_bytes()
    # embeddings: each part's file has its part's rows; in part order, one part's rows
    table = runtable.RunTable(blocks, ["key"])
    assert table.parts == review.manifest_parts(blocks)
    for part, rows in zip(table.parts, table.counts.tolist(), strict=True):
        npy = blocks / "embeddings" / "nsfw" / part.name.replace(".parquet", ".npy")
        assert np.load(npy).shape[0] == rows
    ours = runtable.PartedEmbeddings(table, "nsfw")[0 : len(table)]
    theirs = runtable.PartedEmbeddings(runtable.RunTable(whole, ["key"]), "nsfw")[0 : len(table)]
    np.testing.assert_array_equal(ours, theirs)
    # quarantine: the same samples in the same order, a block's shards named for it
    assert _quarantined(blocks) == _quarantined(whole)
    names = [p.name for p in (blocks / "quarantine").rglob("*.tar")]
    assert any("_" in n for n in names) and not any("_" in n for n in _names(whole))


def _names(out: Path) -> list[str]:
    return [p.name for p in (out / "quarantine").rglob("*.tar")]


@pytest.mark.slow
def test_blocks_without_the_signature_store_and_a_redecide_from_blocks(runs, tmp_path):
    whole, blocks, _ = runs
    # signatures travelling beside the records (no store) are grouped by block too
    plain = tmp_path / "plain"
    _run(plain, f"output.samples_per_manifest_part={PER_PART}", "runner.spill_signatures=false")
    assert _rows(plain) == _rows(whole)
    # a redecide reads every part of the blocked run, whatever its part size
    config, _ = load_config(blocks / "config.yaml", [f"output.path={tmp_path / 're'}"])
    config = config.model_copy(
        update={"output": config.output.model_copy(update={"samples_per_manifest_part": 100})}
    )
    summary = redecide(config, str(blocks))
    assert summary["manifest_rows"] == summary["input_count"]
    assert _rows(tmp_path / "re") == _rows(whole)
    assert json.loads((tmp_path / "re" / "summary.json").read_text())["conservation"]["ok"]


def test_a_part_size_below_one_is_a_config_error():
    with pytest.raises(ConfigError, match=r"output\.samples_per_manifest_part"):
        load_config(DEFAULT, ["output.samples_per_manifest_part=0"])
