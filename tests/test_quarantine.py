"""Quarantine shards: dropped samples as WebDataset shards, one folder per reason."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds

from mitigate.config import ConfigError, load_config
from mitigate.pipeline.run import run

REPO = Path(__file__).resolve().parents[1]


def _run(out: Path, sample_dir: Path, *extra: str) -> None:
    config, _ = load_config(
        REPO / "configs" / "default.yaml",
        [
            f"input.paths=[{str(sample_dir / 'shard-00000.tar')!r}, "
            f"{str(sample_dir / 'shard-00001.tar')!r}]",
            f"output.path={str(out)!r}",
            # the cheap filters only: the model is not what this test is about
            "filters=[{name: image_quality, min_side: 64, max_aspect_ratio: 4.0}, "
            "{name: caption_terms, category: violence, terms_file: terms/violence.txt}]",
            "rebalance.enabled=false",
            "output.samples_per_shard=1",
            *extra,
        ],
    )
    run(config)


@pytest.mark.slow
def test_quarantine_shards_hold_every_dropped_sample_deterministically(tmp_path, sample_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        _run(out, sample_dir, "output.quarantine=true", "output.quarantine_duplicates=true")
    rows = pq.read_table(a / "manifest").to_pylist()
    expected = Counter(r["reason"] for r in rows if r["state"] in ("filtered", "duplicate"))
    assert expected["caption_term_match"] == 2 and expected["exact_duplicate"] == 1
    by_key = {r["key"]: r for r in rows}
    found: Counter[str] = Counter()
    for folder in sorted((a / "quarantine").iterdir()):
        shards = sorted(str(p) for p in folder.glob("*.tar"))
        for sample in wds.WebDataset(shards, shardshuffle=False):
            meta = json.loads(sample["json"])["mitigate"]["manifest"]
            row = by_key[sample["__key__"]]
            assert meta["reason"] == row["reason"] == folder.name
            assert meta["state"] == row["state"]
            assert sample["txt"].decode() == row["caption"]
            assert len(sample[row["image_ext"]]) == row["n_bytes"]
            found[folder.name] += 1
    assert found == expected
    # byte-identical across runs, and nothing half-written left behind
    files_a = sorted(p.relative_to(a) for p in (a / "quarantine").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in (b / "quarantine").rglob("*") if p.is_file())
    assert files_a == files_b and all(p.suffix == ".tar" for p in files_a)
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    summary = json.loads((a / "summary.json").read_text())
    assert "quarantine" in summary["outputs"]


@pytest.mark.slow
def test_quarantine_of_filtered_only_leaves_duplicates_out(tmp_path, sample_dir):
    _run(tmp_path / "o", sample_dir, "output.quarantine=true")
    reasons = {p.name for p in (tmp_path / "o" / "quarantine").iterdir()}
    assert reasons == {"caption_term_match", "image_too_small", "aspect_ratio_out_of_range"}


def test_quarantine_is_off_by_default_and_a_typo_is_a_config_error():
    config, _ = load_config(REPO / "configs" / "default.yaml")
    assert not config.output.quarantine and not config.output.quarantine_duplicates
    with pytest.raises(ConfigError, match=r"output\.quarantine: Input should be a valid boolean"):
        load_config(REPO / "configs" / "default.yaml", ["output.quarantine=maybe"])
