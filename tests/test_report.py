"""The run report (mitigate.report): the numbers it is built from, its HTML, and the page
as a browser shows it (headless Chromium driven over the DevTools protocol)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from mitigate import report, review
from mitigate.config import load_config
from mitigate.pipeline.run import run

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("MITIGATE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NASTY = "<script>alert('x')</script> & <img src=x onerror=alert(1)> \"quoted\""

# --------------------------------------------------------------------------------------
# A synthetic finished run: real photos in a tar we write, a manifest, summary, config.
# --------------------------------------------------------------------------------------

FILTERS = [
    {"name": "nsfw", "id": None, "category": "sexual", "threshold": 0.3},
    {"name": "image_quality", "id": None, "category": "quality", "max_aspect_ratio": 4.0},
    {"name": "caption_terms", "id": None, "category": "violence", "min_matches": 1},
]


def _write_tar(path: Path, photos: dict[str, bytes], keys: list[str]) -> dict[str, list[dict]]:
    """A WebDataset tar of ``keys`` (photos reused round-robin); members per key."""
    images = list(photos.values())
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for i, key in enumerate(keys):
            for name, data in ((f"{key}.jpg", images[i % len(images)]), (f"{key}.txt", b"c")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    members: dict[str, list[dict]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, _, ext = m.name.partition(".")
            members.setdefault(key, []).append(
                {"ext": ext, "offset": m.offset_data, "size": m.size}
            )
    return members


def make_run(out: Path, photos: dict[str, bytes], n: int = 120, seed: int = 0) -> Path:
    """A finished run's output folder with ``n`` samples in every state."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keys = [f"{i:06d}" for i in range(n)]
    source = out / "input-000.tar"
    members = _write_tar(source, photos, keys)
    rows: list[dict[str, Any]] = []
    for i, key in enumerate(keys):
        nsfw = float(rng.beta(0.4, 4.0))
        aspect = float(1.0 + rng.exponential(0.4))
        terms = float(rng.random() < 0.05)
        row: dict[str, Any] = {
            "key": key,
            "source": str(source),
            "index": i,
            "state": "kept",
            "reason": None,
            "detail": None,
            "filter": None,
            "threshold": None,
            "duplicate_of": None,
            "caption": f"caption {i} <b>bold</b>",
            "image_ext": "jpg",
            "image_path": None,
            "members": members[key],
            "weight": float(rng.lognormal(0, 0.2)),
            "score_nsfw": nsfw,
            "score_image_quality": aspect,
            "score_caption_terms": terms,
        }
        if i % 17 == 3:
            row.update(state="error", reason="decode_error", detail=f"broken {i}: {NASTY}")
            row.update(score_nsfw=None, score_image_quality=None, score_caption_terms=None)
        elif i % 29 == 5:
            row.update(state="error", reason="missing_caption", detail="no .txt member")
            row.update(score_nsfw=None, score_image_quality=None, score_caption_terms=None)
        elif nsfw >= 0.3:
            row.update(state="filtered", reason="nsfw_image_above_threshold", filter="nsfw")
            row.update(threshold=0.3, detail=f"sexual score {nsfw:.4f} >= 0.3")
        elif aspect > 4.0:
            row.update(state="filtered", reason="aspect_ratio_out_of_range")
            row.update(filter="image_quality", threshold=4.0)
        elif i % 23 == 7:
            row.update(state="filtered", reason="image_too_small", filter="image_quality")
        elif terms >= 1:
            row.update(state="filtered", reason="caption_term_match", filter="caption_terms")
        elif i % 13 == 4:
            row.update(state="duplicate", reason="exact_duplicate", duplicate_of=keys[0])
        if row["state"] != "kept":
            row["weight"] = None
        rows.append(row)
    # the error key with HTML in it
    rows[3]["key"] = "<b>k3</b>"
    (out / "manifest").mkdir(exist_ok=True)
    half = n // 2
    for part, chunk in enumerate((rows[:half], rows[half:])):
        pq.write_table(pa.Table.from_pylist(chunk), out / "manifest" / f"part-{part:06d}.parquet")
    counts: dict[str, dict[str, Any]] = {}
    for state in ("duplicate", "error", "filtered", "kept"):
        reasons: dict[str, int] = {}
        for r in rows:
            if r["state"] == state and r["reason"]:
                reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        total = sum(1 for r in rows if r["state"] == state)
        counts[state] = {"reasons": dict(sorted(reasons.items())), "total": total}
    weights = np.array([r["weight"] for r in rows if r["state"] == "kept"])
    summary = {
        "config_sha256": "0" * 64,
        "conservation": {"ok": True, "problems": []},
        "counts": counts,
        "filters": [f["name"] for f in FILTERS],
        "input_count": n,
        "manifest_rows": n,
        "models": [
            {
                "category": "sexual",
                "filter": "nsfw",
                "model_file": "/models/open-nsfw.onnx",
                "model_sha256": "ab" * 32,
                "name": "nsfw",
            }
        ],
        "rebalance": {
            "embedding_filter": "nsfw",
            "filtered_by": ["caption_terms", "nsfw"],
            "fit": {"fit_sample": n, "fit_sample_kept": len(weights), "train_auc": 0.61},
            "masked_terms": 3,
            "mode": "weights",
            "probes": {
                "women": {
                    "change_filtered": -0.14,
                    "change_reweighted": -0.02,
                    "count_filtered": 10,
                    "count_unfiltered": 14,
                    "filtered": 0.086,
                    "reweighted": 0.098,
                    "unfiltered": 0.1,
                },
                "men": {
                    "change_filtered": -0.06,
                    "change_reweighted": 0.01,
                    "count_filtered": 9,
                    "count_unfiltered": 11,
                    "filtered": 0.094,
                    "reweighted": 0.101,
                    "unfiltered": 0.1,
                },
            },
            "scale": 1.01,
            "weights": {
                "clipped_at_max": 0,
                "clipped_at_min": 0,
                "effective_sample_size": float(weights.sum() ** 2 / (weights**2).sum()),
                "ess_fraction": float(weights.sum() ** 2 / (weights**2).sum() / len(weights)),
                "max": float(weights.max()),
                "mean": float(weights.mean()),
                "min": float(weights.min()),
                "n": len(weights),
                "quantiles": {
                    str(q): float(np.quantile(weights, q))
                    for q in (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
                },
            },
        },
        "run": {
            "runner": {"name": "direct", "direct_num_workers": 1},
            "samples_per_second": 123.4,
            "wall_seconds": n / 123.4,
        },
        "samples_written": counts["kept"]["total"],
        "shards": [{"samples": counts["kept"]["total"], "shard": "shard-000000.tar"}],
        "source_issues": [{"source": str(source), "reason": "truncated_shard", "detail": NASTY}],
        "sources": 1,
        "versions": {"mitigate": "0.1.0"},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    config = {"input": {"paths": [str(source)]}, "filters": FILTERS, "dedup": {"exact": True}}
    (out / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return out


def with_dedup(out: Path, keys: list[str]) -> dict[str, Any]:
    """Add a synthetic ``dedup`` object (as the near-dup stage will write) to a run."""
    summary = json.loads((out / "summary.json").read_text())
    summary["dedup"] = {
        "cluster_sizes": {"2": 7, "3": 2, "5": 1},
        "largest_clusters": [keys[:5], keys[5:8], [keys[8], "not-a-key"]],
        "largest_cluster_sizes": [78, 3, 2],  # a hot group's keys are its first few
        "examples_by_distance": {
            "0": [[keys[0], keys[1]]],
            "1": [[keys[2], keys[3]], [keys[4], keys[5]]],
            "4": [[keys[6], keys[7]]],
        },
        "pair_recall": {"estimate": 0.987, "ci": [0.962, 0.996]},
        "k": 4,
        "mode": "exact",
    }
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return summary["dedup"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, photos) -> Path:
    return make_run(tmp_path_factory.mktemp("report") / "out", photos)


@pytest.fixture(scope="module")
def synthetic_page(synthetic) -> str:
    return report.build_report(synthetic)


# --------------------------------------------------------------------------------------
# A small HTML reader: sections, tables, images.
# --------------------------------------------------------------------------------------


class _Doc(HTMLParser):
    """Collects each section's text, table rows and <img> attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, dict[str, Any]] = {}
        self._section: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.images: list[dict[str, str | None]] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self._section = a.get("id")
            self.sections[self._section] = {"text": [], "rows": [], "images": []}
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a)
            if self._section:
                self.sections[self._section]["images"].append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        elif tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._section:
                self.sections[self._section]["rows"].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._section:
            self.sections[self._section]["text"].append(data)


def parse(page: str) -> _Doc:
    doc = _Doc()
    doc.feed(page)
    doc.close()
    return doc


def section_text(doc: _Doc, sid: str) -> str:
    return " ".join(" ".join(doc.sections[sid]["text"]).split())


# --------------------------------------------------------------------------------------
# The data the report is built from
# --------------------------------------------------------------------------------------


def _check_funnel_matches(out: Path, page: str) -> None:
    summary = json.loads((out / "summary.json").read_text())
    table = review.load_manifest(out, ["state", "reason", "filter"])
    funnel = report.funnel_data(summary, table)
    counts = summary["counts"]
    assert funnel.consistent
    assert funnel.input_count == summary["input_count"]
    assert funnel.kept == counts["kept"]["total"]
    remaining = summary["input_count"]
    for step in funnel.steps:
        assert step.count == counts[step.state]["total"]
        remaining -= step.count
        assert step.remaining == remaining
        by_reason: dict[str, int] = {}
        for reason, _, n in step.breakdown:
            by_reason[reason] = by_reason.get(reason, 0) + n
        assert by_reason == counts[step.state]["reasons"]
        assert step.share == pytest.approx(step.count / summary["input_count"])
    assert remaining == funnel.kept
    # the filtered breakdown names the filter that decided, as the manifest says
    filtered = [r for r in table.to_pylist() if r["state"] == "filtered"]
    for reason, filt, n in funnel.steps[1].breakdown:
        assert n == sum(1 for r in filtered if r["reason"] == reason and r["filter"] == filt)
    # and the page shows exactly these numbers
    rows = parse(page).sections["funnel"]["rows"]
    shown = {(r[0], r[1], r[2]): int(r[3].replace(",", "")) for r in rows[1:]}
    assert shown[("input", "", "")] == summary["input_count"]
    assert shown[("= kept", "", "")] == counts["kept"]["total"]
    for step in funnel.steps:
        assert shown[(f"− {step.label}", "", "")] == counts[step.state]["total"]
        for reason, filt, n in step.breakdown:
            assert shown[("", filt or "", reason)] == n


def test_funnel_numbers_equal_summary_counts(synthetic, synthetic_page):
    _check_funnel_matches(synthetic, synthetic_page)


def test_funnel_falls_back_to_summary_when_manifest_disagrees(synthetic, caplog):
    summary = json.loads((synthetic / "summary.json").read_text())
    summary["counts"]["filtered"]["reasons"]["image_too_small"] += 1
    table = review.load_manifest(synthetic, ["state", "reason", "filter"])
    funnel = report.funnel_data(summary, table)
    assert not funnel.consistent
    assert "differ from summary.json" in caplog.text
    assert {r: n for r, _, n in funnel.steps[1].breakdown} == summary["counts"]["filtered"][
        "reasons"
    ]


def _check_histograms_match(out: Path) -> None:
    config = yaml.safe_load((out / "config.yaml").read_text())
    summary = json.loads((out / "summary.json").read_text())
    specs = report.filter_specs(config, summary)
    table = review.load_manifest(out)
    raw = pq.read_table(out / "manifest")
    for spec in specs:
        data = report.filter_data(table, spec, max_thumbs=12)
        col = np.array(
            [np.nan if v is None else v for v in raw.column(spec.column).to_pylist()], float
        )
        finite = col[np.isfinite(col)]
        hist = data.histogram
        assert hist.counts.sum() == finite.size == hist.n_scored
        assert hist.n_missing == col.size - finite.size
        expected, _ = np.histogram(finite, bins=hist.edges)
        np.testing.assert_array_equal(hist.counts, expected)
        if spec.threshold is not None:
            assert hist.edges[0] <= spec.threshold <= hist.edges[-1]
        states = raw.column("state").to_pylist()
        filters = raw.column("filter").to_pylist()
        assert data.dropped == sum(
            1
            for s, f in zip(states, filters, strict=True)
            if s == "filtered" and f == spec.filter_id
        )
        # the strips: highest-scored kept, lowest-scored dropped by this filter
        kept = sorted((col[i] for i in range(col.size) if states[i] == "kept"), reverse=True)
        assert [col[i] for i in data.top_kept] == kept[: len(data.top_kept)]
        assert len(data.top_kept) == min(12, len(kept))
        mine = sorted(
            col[i]
            for i in range(col.size)
            if states[i] == "filtered" and filters[i] == spec.filter_id
        )
        assert [col[i] for i in data.bottom_dropped] == mine[: len(data.bottom_dropped)]


def test_histogram_counts_equal_the_manifest_score_column(synthetic):
    _check_histograms_match(synthetic)


@pytest.mark.parametrize(
    ("scores", "threshold", "n_bins"),
    [
        ([0.01, 0.2, 0.5, 0.99, 1.0, 0.0], 0.3, report.HISTOGRAM_BINS),  # probability
        ([0, 0, 1, 2, 2, 2], 1.0, 3),  # integer counts: one bin per value
        ([1.0, 1.5, 10.0, 2.0], 4.0, report.HISTOGRAM_BINS),  # aspect ratios
        ([5.5, 5.5], None, report.HISTOGRAM_BINS),  # constant
    ],
)
def test_score_histogram_bins(scores, threshold, n_bins):
    values = np.array([*scores, np.nan, np.nan])
    hist = report.score_histogram(values, threshold)
    assert len(hist.counts) == n_bins == len(hist.edges) - 1
    assert hist.counts.sum() == len(scores)
    assert hist.n_missing == 2
    assert np.all(np.diff(hist.edges) > 0)


def test_score_histogram_without_scores():
    hist = report.score_histogram(np.array([np.nan, np.nan]), 0.5)
    assert hist.n_scored == 0 and hist.counts.sum() == 0 and hist.n_missing == 2


def test_errors_table_escapes_html(synthetic, synthetic_page):
    assert "<script>" not in synthetic_page
    assert "onerror=alert" not in synthetic_page.replace("onerror=alert(1)&gt;", "")
    doc = parse(synthetic_page)
    assert "script" not in doc.tags
    # the text survives escaping intact, in the errors table and the source issues
    rows = doc.sections["errors"]["rows"]
    details = [r[3] for r in rows if len(r) == 4 and r[0] == "decode_error"]
    assert details and all(d.endswith(NASTY) for d in details)
    assert ["<b>k3</b>"] == [r[1] for r in rows if len(r) == 4 and r[1].startswith("<b>")]
    assert any(r[-1] == NASTY for r in rows if len(r) == 3)
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in synthetic_page
    # captions in the strips too
    assert "caption 0 &lt;b&gt;bold&lt;/b&gt;" in synthetic_page
    # counts per reason equal the summary
    summary = json.loads((synthetic / "summary.json").read_text())
    per_reason = {r[0]: int(r[1]) for r in rows if len(r) == 3 and r[1].isdigit()}
    assert per_reason == summary["counts"]["error"]["reasons"]


def test_error_examples_are_bounded_and_in_input_order(synthetic):
    table = review.load_manifest(synthetic)
    examples = report.error_examples(table, per_reason=2)
    assert set(examples) == {"decode_error", "missing_caption"}
    assert all(len(v) <= 2 for v in examples.values())
    errs = [r for r in table.to_pylist() if r["reason"] == "decode_error"]
    assert [e.key for e in examples["decode_error"]] == [r["key"] for r in errs[:2]]


def test_every_section_is_present_and_self_contained(synthetic_page):
    doc = parse(synthetic_page)
    assert list(doc.sections) == list(report.SECTION_IDS)
    assert all(section_text(doc, s) for s in report.SECTION_IDS)
    assert doc.images and all(img["src"].startswith("data:image/") for img in doc.images)
    assert not re.search(r"(src|href)=[\"']?(https?:|//)", synthetic_page)
    assert "Content-Security-Policy" in synthetic_page
    # sections with no data say so
    assert "not run" in section_text(doc, "dedup")
    assert "0.987" not in section_text(doc, "dedup")


def test_filter_strips_blur_sexual_filters_unless_switched_off(synthetic, synthetic_page):
    doc = parse(synthetic_page)
    table = review.load_manifest(synthetic)
    spec = report.filter_specs(yaml.safe_load((synthetic / "config.yaml").read_text()), {})[0]
    assert spec.category == "sexual"
    data = report.filter_data(table, spec, 12)
    row = table.slice(data.top_kept[0], 1).to_pylist()[0]
    image = review.read_image_bytes(row, report.local_open)
    blurred = review.thumbnail(image, report.THUMB_SIZE, blur=True)
    sharp = review.thumbnail(image, report.THUMB_SIZE, blur=False)
    srcs = [img["src"] for img in doc.sections["filters"]["images"]]
    assert blurred in srcs and sharp not in srcs[: 2 * 12 + 1]
    unblurred = report.build_report(synthetic, blur_sexual=False, max_thumbs=3)
    assert sharp in unblurred and blurred not in unblurred
    # max_thumbs bounds each strip: 3 filters x (kept + dropped) strips of <= 3
    n_thumbs = sum(
        1 for img in parse(unblurred).sections["filters"]["images"] if "plot" != img.get("class")
    )
    assert 0 < n_thumbs <= 3 * 2 * 3


def test_dedup_section_renders_from_a_synthetic_summary(synthetic, tmp_path):
    out = shutil.copytree(synthetic, tmp_path / "out")
    keys = review.load_manifest(out, ["key", "state"]).to_pylist()
    kept = [r["key"] for r in keys if r["state"] == "kept"]
    dedup = with_dedup(out, kept)
    doc = parse(report.build_report(out))
    text = section_text(doc, "dedup")
    assert "not run" not in text
    assert "0.987" in text and "0.962" in text and "0.996" in text
    assert "k = 4" in text and "exact" in text
    assert "10 clusters holding 25 samples" in text
    # a cluster's size, not the count of the keys listed (helper-40: "12 samples" for 78)
    assert "78 samples" in text and "… and 73 more" in text
    for d in dedup["examples_by_distance"]:
        assert f"distance {d}" in text
    images = doc.sections["dedup"]["images"]
    plots = [i for i in images if i.get("class") == "plot"]
    thumbs = [i for i in images if i.get("class") != "plot"]
    assert len(plots) == 1  # the cluster-size histogram
    # every listed key but the unknown one has a thumbnail
    shown_keys = [k for c in dedup["largest_clusters"] for k in c]
    shown_keys += [k for p in dedup["examples_by_distance"].values() for pair in p for k in pair]
    assert len(thumbs) == len(shown_keys) - 1
    assert "not in manifest" in text
    assert {t["alt"] for t in thumbs} <= set(kept)


def test_dedup_section_shows_the_partitions_of_a_partitioned_search(synthetic, tmp_path):
    out = shutil.copytree(synthetic, tmp_path / "out")
    keys = review.load_manifest(out, ["key", "state"]).to_pylist()
    with_dedup(out, [r["key"] for r in keys if r["state"] == "kept"])
    summary = json.loads((out / "summary.json").read_text())
    assert "Search partitions" not in section_text(parse(report.build_report(out)), "dedup")
    summary["dedup"].update(
        partition="clusters", partitions=4012, clusterings=5, largest_partition=1234567
    )
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    text = section_text(parse(report.build_report(out)), "dedup")
    assert "Search partitions: clusters" in text
    assert "4,012 partitions (5 clusterings)" in text
    assert "largest holding 1,234,567 hashes" in text
    assert "searched in blocks" not in text
    summary["dedup"].update(search_tasks=4040, largest_search=900000)
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    text = section_text(parse(report.build_report(out)), "dedup")
    assert "searched in blocks: 4,040 search tasks, the largest holding 900,000" in text


def test_cluster_size_bars_keep_every_cluster():
    few = {2: 7, 3: 2, 5: 1}
    assert report.cluster_size_bars(few) == [("2", 7), ("3", 2), ("5", 1)]
    many = {2: 100, 3: 50, 4: 10, 5: 3, 9: 1, 300: 1, 1000: 2}
    bars = report.cluster_size_bars(many)
    assert [b[0] for b in bars] == ["2", "3-4", "5-8", "9-16", "257-512", "513-1024"]
    assert sum(n for _, n in bars) == sum(many.values())
    assert report.cluster_size_bars({}) == []


def test_dedup_without_recall_and_rebalancing_not_enabled(synthetic, tmp_path):
    out = shutil.copytree(synthetic, tmp_path / "out")
    summary = json.loads((out / "summary.json").read_text())
    summary["dedup"] = {
        "cluster_sizes": {},
        "largest_clusters": [],
        "examples_by_distance": {},
        "pair_recall": None,
        "k": 2,
        "mode": "lsh",
    }
    del summary["rebalance"]
    (out / "summary.json").write_text(json.dumps(summary))
    doc = parse(report.build_report(out))
    assert "pair recall not measured" in section_text(doc, "dedup")
    assert "No near-duplicate clusters" in section_text(doc, "dedup")
    assert "not enabled" in section_text(doc, "rebalancing")


def test_rebalancing_section_shows_weights_and_bias_table(synthetic, synthetic_page):
    doc = parse(synthetic_page)
    text = section_text(doc, "rebalancing")
    summary = json.loads((synthetic / "summary.json").read_text())
    w = summary["rebalance"]["weights"]
    assert f"{w['effective_sample_size']:,.1f}" in text
    rows = doc.sections["rebalancing"]["rows"]
    assert ["women", "10.0% (n=14)", "8.6% (−14.0%) (n=10)".replace("−", "-"), "9.8% (-2.0%)"] in (
        rows
    )
    plots = [i for i in doc.sections["rebalancing"]["images"] if i.get("class") == "plot"]
    assert len(plots) == 2  # weight distribution, grouped bar chart


def test_config_section_shows_provenance(synthetic_page):
    doc = parse(synthetic_page)
    text = section_text(doc, "config")
    assert "ab" * 32 in text and "/models/open-nsfw.onnx" in text
    assert "max_aspect_ratio: 4.0" in text


def test_write_report_is_atomic(synthetic, tmp_path, monkeypatch):
    out = shutil.copytree(synthetic, tmp_path / "out")
    path = report.write_report(out, max_thumbs=2)
    assert path == out / "report.html"
    assert path.read_text(encoding="utf-8").startswith("<!doctype html>")
    assert not list(out.glob(".report.html.tmp-*"))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    before = path.read_bytes()
    monkeypatch.setattr(report.page.os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        report.write_report(out)
    assert path.read_bytes() == before  # the old report is untouched
    assert not list(out.glob(".report.html.tmp-*"))


def test_unreadable_images_are_noted_not_fatal(synthetic, caplog):
    opened = []

    def truncated(path: str) -> io.BytesIO:
        opened.append(path)
        return io.BytesIO(b"")  # every member read comes up short

    page = report.build_report(synthetic, opener=truncated, max_thumbs=2)
    assert opened and set(opened) == {str(synthetic / "input-000.tar")}
    assert "image unreadable" in page
    assert "image unreadable for the report" in caplog.text
    assert list(parse(page).sections) == list(report.SECTION_IDS)


# --------------------------------------------------------------------------------------
# The real pipeline's output
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(default_run: Path) -> Path:
    return default_run  # tests/conftest.py


@pytest.mark.slow
def test_report_of_the_sample_run_matches_its_summary_and_manifest(run_dir):
    page = report.build_report(run_dir)
    _check_funnel_matches(run_dir, page)
    _check_histograms_match(run_dir)
    doc = parse(page)
    assert list(doc.sections) == list(report.SECTION_IDS)
    # the three planted near duplicates form three clusters of two
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["dedup"]["cluster_sizes"] == {"2": 3}
    assert "3 clusters holding 6 samples" in section_text(doc, "dedup")
    # the run wrote its page in a staging folder; the page names the output folder
    written = (run_dir / "report.html").read_text(encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", written).group(1)
    assert title == html.escape(f"mitigate report: {run_dir}"), title
    assert "mitigate-staging" not in written.split("</header>")[0]


# --------------------------------------------------------------------------------------
# The page in a browser
# --------------------------------------------------------------------------------------


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe
    (``--remote-debugging-pipe``: commands on fd 3, replies on fd 4, NUL-separated JSON),
    so nothing but the standard library and the browser binary is needed."""

    def __init__(self, binary: str, user_data_dir: str) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def remap() -> None:  # in the child: put the pipe ends on fds 3 and 4
            import fcntl

            a = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
            b = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(a, 3)  # dup2 clears close-on-exec on 3 and 4 only
            os.dup2(b, 4)

        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={user_data_dir}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            preexec_fn=remap,
            close_fds=False,  # our other fds are close-on-exec (PEP 446)
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-3000:]

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"chromium did not answer; stderr:\n{self._stderr_tail()}")
            if select.select([self._from_chrome], [], [], left)[0]:
                chunk = os.read(self._from_chrome, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"chromium exited; stderr:\n{self._stderr_tail()}")
                self._buf += chunk
        message, _, self._buf = self._buf.partition(b"\0")
        return json.loads(message)

    def send(
        self, method: str, params: dict | None = None, session: str | None = None, timeout=60
    ) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        try:
            os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:
            raise RuntimeError(f"chromium exited; stderr:\n{self._stderr_tail()}") from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for i, e in enumerate(self.events):
            if e.get("method") == method and e.get("sessionId") == session:
                return self.events.pop(i)
        while True:
            e = self._read(deadline)
            if e.get("method") == method and e.get("sessionId") == session:
                return e
            self.events.append(e)

    def open(self, url: str, width: int = 1280, height: int = 900) -> str:
        """A new tab showing ``url`` (loaded); returns its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=session,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, session: str, height: int | None = None) -> bytes:
        """PNG of the page's top ``height`` CSS px (the whole page if None)."""
        size = self.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
        clip = {
            "x": 0,
            "y": 0,
            "width": size["width"],
            "height": min(size["height"], height or size["height"]),
            "scale": 1,
        }
        shot = self.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
            session=session,
        )
        return base64.b64decode(shot["data"])

    def problems(self, session: str) -> list[str]:
        """Console errors, uncaught exceptions, failed loads and any request that is not
        to the page itself or a data: URI, seen in ``session`` so far."""
        out = []
        for e in self.events:
            if e.get("sessionId") != session:
                continue
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails']}")
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {p.get('args')}")
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                out.append(f"load failed: {p.get('errorText')}")
            elif method == "Network.requestWillBeSent":
                url = p["request"]["url"]
                if not url.startswith(("file:", "data:")):
                    out.append(f"external request: {url[:200]}")
        return out

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self.stderr.close()


def require_chromium() -> str:
    """The browser, or a skip saying how to get it. CI installs Chromium and sets
    MITIGATE_REQUIRE_BROWSER=1, so that there a missing browser fails instead."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        message = (
            f"the report's browser test needs Chromium at {CHROMIUM} (or set "
            "MITIGATE_CHROMIUM); install it with: "
            "apt-get update && apt-get install -y chromium"
        )
        if os.environ.get("MITIGATE_REQUIRE_BROWSER") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return CHROMIUM


_PAGE_CHECK = """
(async () => {
  const images = [...document.images];
  const widths = await Promise.all(images.map(
      i => i.decode().then(() => i.naturalWidth, () => 0)));
  return {
    sections: [...document.querySelectorAll('section[id]')].map(
        s => [s.id, s.innerText.trim().length, s.getBoundingClientRect().height]),
    images: images.map((img, k) => [img.alt, widths[k], img.naturalWidth]),
  };
})()
"""


def check_in_browser(browser: Chromium, page: Path, shot: Path) -> dict[str, Any]:
    session = browser.open(page.resolve().as_uri())
    result = browser.evaluate(session, _PAGE_CHECK)
    shot.write_bytes(browser.screenshot(session))
    sections = {sid: (chars, height) for sid, chars, height in result["sections"]}
    missing = [s for s in report.SECTION_IDS if s not in sections]
    assert not missing, f"{page}: sections missing: {missing}"
    empty = [s for s, (chars, height) in sections.items() if chars == 0 or height <= 0]
    assert not empty, f"{page}: sections empty or not displayed: {empty}"
    assert result["images"], f"{page}: no images"
    broken = [(alt, w) for alt, w, natural in result["images"] if w <= 0 or natural <= 0]
    assert not broken, f"{page}: images that do not decode: {broken}"
    problems = browser.problems(session)
    assert not problems, f"{page}: {problems}"
    with Image.open(shot) as im:
        im.load()
        assert im.width >= 1000 and im.height >= 2000
        assert len(im.convert("RGB").resize((200, 200)).getcolors(1 << 16) or []) > 50
    return result


@pytest.mark.slow
def test_report_in_a_browser(request, tmp_path):
    binary = require_chromium()  # before the pipeline run, so a missing browser fails fast
    run_dir = request.getfixturevalue("run_dir")
    synthetic = request.getfixturevalue("synthetic")
    real = report.write_report(run_dir)
    out = shutil.copytree(synthetic, tmp_path / "synthetic")
    kept = [r["key"] for r in review.load_manifest(out, ["key", "state"]).to_pylist()]
    with_dedup(out, kept[10:30])
    synthetic_page = report.write_report(out)
    browser = Chromium(binary, str(tmp_path / "profile"))
    try:
        result = check_in_browser(browser, real, tmp_path / "sample.png")
        # the sample run: every thumbnail of 3 filters x 2 strips, 6 plots at least
        assert len(result["images"]) >= 20
        check_in_browser(browser, synthetic_page, tmp_path / "synthetic.png")
    finally:
        browser.close()
    assert browser.proc.returncode is not None


def test_dedup_section_shows_verification_evidence(synthetic, tmp_path):
    """Merged example pairs carry their verification score; refused pairs are shown
    with their pHash distance and score, and the keep rule is named."""
    out = shutil.copytree(synthetic, tmp_path / "out")
    keys = review.load_manifest(out, ["key", "state"]).to_pylist()
    kept = [r["key"] for r in keys if r["state"] == "kept"]
    summary = json.loads((out / "summary.json").read_text())
    summary["dedup"] = {
        "cluster_sizes": {"2": 1},
        "largest_clusters": [],
        "examples_by_distance": {"3": [[kept[0], kept[1], 0.4321]]},
        "pair_recall": None,
        "k": 10,
        "mode": "exact",
        "keep": "medoid",
        "verify": {
            "threshold": 1.0,
            "merged_pairs": 5,
            "refused_pairs": 2,
            "examples_refused": [[kept[2], kept[3], 2, 2.3456]],
        },
    }
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    doc = parse(report.build_report(out))
    text = section_text(doc, "dedup")
    assert "verification score 0.432" in text
    assert "5 merged" in text and "2 refused" in text and "medoid" in text
    assert "pHash distance 2, verification score 2.346" in text
    alts = {i["alt"] for i in doc.sections["dedup"]["images"] if i.get("class") != "plot"}
    assert set(kept[:4]) <= alts


# --------------------------------------------------------------------------------------
# Report details: count axes, image_quality's two checks, names that say what they show
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [None, 1.0])
def test_a_count_histogram_starts_at_zero_and_spans_one_match(threshold):
    # No caption matched: the axis still shows 0 and 1 matches, one bin per integer.
    hist = report.score_histogram(np.zeros(40), threshold)
    assert hist.edges.tolist() == [-0.5, 0.5, 1.5]
    assert hist.counts.tolist() == [40, 0]
    hist = report.score_histogram(np.array([3.0, 5.0]), None)
    assert hist.edges[0] == -0.5 and hist.counts.sum() == 2 and len(hist.counts) == 6


def test_image_quality_shows_the_shorter_side_against_min_side(synthetic, tmp_path):
    out = shutil.copytree(synthetic, tmp_path / "out")
    config = yaml.safe_load((out / "config.yaml").read_text())
    for f in config["filters"]:
        if f["name"] == "image_quality":
            f["min_side"] = 64
    (out / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    all_sides = []
    for part in sorted((out / "manifest").glob("*.parquet")):
        table = pq.read_table(part)
        sides = (np.arange(table.num_rows) + len(all_sides)) % 100 + 10  # 10..109 px
        table = table.append_column("width", pa.array(sides + 5, pa.int64()))
        table = table.append_column("height", pa.array(sides, pa.int64()))
        pq.write_table(table, part)
        all_sides.extend(sides.tolist())
    sides = np.array(all_sides)
    specs = report.filter_specs(config, {})
    spec = next(s for s in specs if s.name == "image_quality")
    assert spec.min_side == 64.0
    assert {"width", "height"} <= set(report.manifest_columns(table.column_names, specs))
    data = report.filter_data(review.load_manifest(out, None), spec, 4)
    assert data.side_histogram is not None
    side = data.side_histogram
    assert side.counts.sum() == sides.size
    below = side.counts[(side.edges[:-1] + side.edges[1:]) / 2 < 64].sum()
    assert below == int(np.count_nonzero(sides < 64))
    doc = parse(report.build_report(out))
    text = section_text(doc, "filters")
    assert "reads the shorter side" in text and "min side 64 px" in text
    alts = [i.get("alt") for i in doc.sections["filters"]["images"]]
    assert "histogram of the shorter side" in alts
    # without min_side in the config there is no second histogram
    assert "reads the shorter side" not in section_text(
        parse(report.build_report(synthetic)), "filters"
    )


def test_bias_table_names_the_kept_set_not_filtered(synthetic_page):
    text = section_text(parse(synthetic_page), "rebalancing")
    assert "kept (change)" in text and "kept, reweighted (change)" in text
    assert "filtered (change)" not in text


def test_dedup_mode_brute_is_shown_as_exact_all_pairs(synthetic, tmp_path):
    out = shutil.copytree(synthetic, tmp_path / "out")
    keys = review.load_manifest(out, ["key"]).column("key").to_pylist()
    with_dedup(out, keys)
    summary = json.loads((out / "summary.json").read_text())
    summary["dedup"]["mode"] = "brute"
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    text = section_text(parse(report.build_report(out)), "dedup")
    assert "mode exact (all pairs compared" in text
    assert "brute" not in text


def test_blocklist_threshold_is_a_maximum_distance(synthetic, tmp_path):
    """The blocklist drops scores at or below max_distance: the count on the drop side,
    the strips (kept samples nearest the list first) and the heading say so."""
    out = shutil.copytree(synthetic, tmp_path / "out")
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["filters"].append(
        {"name": "blocklist", "id": "blocklist", "path": "bl.txt", "max_distance": 6}
    )
    (out / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    all_scores: list[int] = []
    for part in sorted((out / "manifest").glob("*.parquet")):
        table = pq.read_table(part)
        scores = (np.arange(table.num_rows) * 7 + len(all_scores)) % 33  # 0..32 bits
        table = table.append_column("score_blocklist", pa.array(scores, pa.float64()))
        pq.write_table(table, part)
        all_scores.extend(scores.tolist())
    scores = np.array(all_scores, dtype=float)
    spec = next(s for s in report.filter_specs(config, {}) if s.name == "blocklist")
    assert (spec.threshold, spec.drops_low) == (6.0, True)
    table = review.load_manifest(out, None)
    data = report.filter_data(table, spec, 5)
    assert data.at_or_above == int(np.count_nonzero(scores <= 6))
    kept = np.flatnonzero(np.array(table.column("state").to_pylist()) == "kept")
    nearest = sorted(kept, key=lambda i: (scores[i], i))[:5]
    assert [scores[i] for i in data.top_kept] == [scores[i] for i in nearest]
    text = section_text(parse(report.build_report(out)), "filters")
    assert "drops a score at or below 6" in text
    assert "Lowest-scored kept samples" in text


def test_the_report_is_built_without_matplotlib(synthetic, tmp_path):
    """The charts are written as SVG directly (mitigate.report.svgplot): a fresh process
    where matplotlib cannot be imported builds the whole page, every chart in it."""
    out = shutil.copytree(synthetic, tmp_path / "run")
    code = (
        "import sys\n"
        "sys.modules['matplotlib'] = None  # any import of it raises ImportError\n"
        "from mitigate import report\n"
        "page = report.build_report(sys.argv[1])\n"
        "print(page.count('class=\"plot\"'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.strip().splitlines()[-1]) >= 5  # funnel, filters, weights, probes


def test_a_filters_drop_reasons_are_ordered_by_count_then_name_whatever_the_row_order():
    """Reasons with the same count were listed in the order their rows came, which the
    runner's bundling can change between runs: the report must not."""
    spec = report.FilterSpec("image_quality", "image_quality", "quality", 0.5)
    rows = [
        ("a", "filtered", "image_quality", "image_too_small", 0.9),
        ("b", "filtered", "image_quality", "aspect_ratio_out_of_range", 0.9),
        ("c", "filtered", "image_quality", "too_blurry", 0.9),
        ("d", "filtered", "image_quality", "too_blurry", 0.8),
        ("e", "kept", None, None, 0.1),
    ]
    orders = {}
    for name, order in (("as is", rows), ("reversed", rows[::-1])):
        keys, states, filters, reasons, scores = zip(*order, strict=True)
        table = pa.table(
            {
                "key": list(keys),
                "state": list(states),
                "filter": list(filters),
                "reason": list(reasons),
                spec.column: pa.array(scores, type=pa.float64()),
            }
        )
        orders[name] = list(report.filter_data(table, spec, 2).dropped_by_reason.items())
    assert (
        orders["as is"]
        == orders["reversed"]
        == [
            ("too_blurry", 2),
            ("aspect_ratio_out_of_range", 1),
            ("image_too_small", 1),
        ]
    )


def test_a_report_that_fails_costs_the_report_not_the_run(tmp_path, monkeypatch, caplog):
    """Regression: the report is written inside the run's staging folder before the swap,
    so an exception in it (a bug on unusual data, memory on a huge run) discarded the
    whole finished output. Now the output is swapped in without report.html, the
    summary says why, `mitigate report` writes it later, and a later run may replace
    that folder (report.html is still among the run's outputs)."""
    from mitigate.cli import main
    from mitigate.pipeline import run as run_module

    def broken(*args, **kwargs):
        raise MemoryError("a report of too many rows")

    monkeypatch.setattr(run_module, "write_html_report", broken)
    out = tmp_path / "out"
    config, _ = load_config(
        Path(__file__).resolve().parents[1] / "configs" / "default.yaml",
        [f"output.path={out}", "filters=[{name: image_quality}]", "rebalance.enabled=false"],
    )
    with caplog.at_level("WARNING"):
        summary = run(config)
    assert "report.html not written (MemoryError: a report of too many rows)" in caplog.text
    assert f"mitigate report {out}" in caplog.text
    stored = json.loads((out / "summary.json").read_text())
    assert stored == summary and "report.html" in stored["outputs"]
    assert stored["report_error"] == "MemoryError: a report of too many rows"
    assert (out / "manifest").is_dir() and not (out / "report.html").exists()
    assert stored["input_count"] > 0
    monkeypatch.undo()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").is_file()
    again = run(
        config.model_copy(update={"output": config.output.model_copy(update={"overwrite": True})})
    )
    assert "report_error" not in again and (out / "report.html").is_file()


@pytest.mark.slow
def test_the_report_reads_shown_columns_for_the_shown_rows_only(run_dir, monkeypatch):
    """Regression (scale): the report read caption, detail, source, members and image
    paths of every row of the run (0.68 KB a row at 640,000 rows), then keys too; they
    are read for the thumbnails, captions and error examples it shows. (The page was compared byte
    for byte with the old code's on two runs when this changed: BENCHMARKS.md.)"""
    from mitigate import runtable
    from mitigate.report import stats
    from mitigate.report.data import SHOWN_ONLY

    whole: list[list[str]] = []
    fetched: list[int] = []
    read_table, rows, batches = pq.read_table, runtable.RunTable.rows, stats.manifest_batches

    def spy_table(source, *args, columns=None, **kwargs):
        whole.append(list(columns or []))
        return read_table(source, *args, columns=columns, **kwargs)

    def spy_rows(self, indices):
        fetched.extend(indices)
        return rows(self, indices)

    def spy_batches(parts, columns):
        whole.append(list(columns))
        return batches(parts, columns)

    before = report.build_report(run_dir)  # the page as the report builds it
    full = review.load_manifest(run_dir)
    monkeypatch.setattr(pq, "read_table", spy_table)
    monkeypatch.setattr(runtable.RunTable, "rows", spy_rows)
    monkeypatch.setattr(stats, "manifest_batches", spy_batches)
    page = report.build_report(run_dir)
    assert page == before
    # every row's columns: no shown-only one, keys neither (read a part at a time to
    # find the dedup examples' rows, with their state, and not kept)
    every_row = [cols for cols in whole if cols != ["key", "state"]]
    assert every_row and not any(SHOWN_ONLY & set(cols) for cols in every_row)
    assert "state" in every_row[0] and "key" in SHOWN_ONLY
    # the rows read in full: those shown (thumbnails, examples), each once, a fraction
    assert fetched and len(fetched) == len(set(fetched)) < full.num_rows
    errors = [i for i, s in enumerate(full.column("state").to_pylist()) if s == "error"]
    assert errors and set(errors[:1]) <= set(fetched)  # the first error is an example


def test_control_characters_in_text_reach_the_page_as_their_codes():
    # a caption's terminal escapes (ESC, BEL, C1) were written into the page as they were
    from mitigate.report.common import _esc

    assert _esc("a\x1b[31mred\x07 <b>\x85\tok\n") == "a\\x1b[31mred\\x07 &lt;b&gt;\\x85\tok\n"


def test_the_contact_sheets_labels_csv_quotes_its_keys_in_a_browser(tmp_path):
    # helper-34: key "x,1" was written x,1,0 and read back as key "x" labelled 1
    binary = require_chromium()
    keys = ["x,1", 'say "hi"', "line\nbreak", " padded", "plain", "img,036"]
    # helper-44: "__proto__" was lost (an object's prototype, not an entry); keys a
    # spreadsheet takes for formulas are written with a leading ' and read back without
    keys += ["__proto__", "=cmd|' /C calc'!A0", "+SUM(1,2)", "-2+3", "@x"]
    keys += ["'-5", "''=x", "'plain"]  # a key's own ' before a formula's start: kept
    entries = [review.SheetEntry(k, 0.5, "a caption", "", "") for k in keys]
    page = tmp_path / "sheet.html"
    page.write_text(review.contact_sheet("t", "i", entries, blurred=False), encoding="utf-8")
    browser = Chromium(binary, str(tmp_path / "profile"))
    try:
        session = browser.open(page.as_uri())
        text = browser.evaluate(
            session,
            "document.querySelectorAll('.card').forEach((c, i) => "
            "c.querySelectorAll('button')[i % 2].click()); labelsCsv()",
        )
    finally:
        browser.close()
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8", newline="")
    want = {k: i % 2 == 0 for i, k in enumerate(keys)}  # harmful, benign, ...
    assert review.read_labels(path) == want
    cells = [line.split(",")[0].strip('"') for line in text.splitlines()[1:]]
    assert not [c for c in cells if c[:1] in "=+-@"]  # no cell a spreadsheet computes
    assert review.csv_safe("=A1") == "'=A1" and review.csv_safe("a=b") == "a=b"


def test_a_key_that_starts_with_a_quote_reads_back_as_itself(tmp_path):
    """csv_safe wrote key '-5 as it is, and read_labels took its ' for the mark before a
    formula: the label named sample -5 (another sample, or none)."""
    keys = ["'-5", "-5", "'=x", "''-x", "'", "'plain", "=A1", "plain"]
    path = tmp_path / "labels.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "label"])
        writer.writerows([review.csv_safe(k), i % 2] for i, k in enumerate(keys))
    assert review.read_labels(path) == {k: i % 2 == 1 for i, k in enumerate(keys)}
    assert [review.csv_safe(k)[:1] for k in ("'-5", "'plain", "plain")] == ["'", "'", "p"]
    assert review.csv_safe("'plain") == "'plain"  # no mark: nothing a spreadsheet computes
