"""Rebalancing end to end: a caption filter that removes "woman" captions about three
times as often as "man" captions, on real photos, and weights that undo it."""

from __future__ import annotations

import io
import json
import logging
import random
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from fit_samples import noise_fit_sample
from PIL import Image

from mitigate.config import ConfigError, validate_config
from mitigate.pipeline.run import run
from mitigate.rebalance import resample_counts

N = 2400
SUBJECTS = {
    "women": ["a woman", "a young woman", "a girl", "two women"],
    "men": ["a man", "a young man", "a boy", "two men"],
    "animals": ["a dog", "a cat", "a horse", "a bird"],
}
SCENES = [
    "in a park",
    "at the market",
    "on a street",
    "in a kitchen",
    "near a lake",
    "at a desk",
    "on a bus",
    "in a garden",
]
# P(caption carries the #swimsuit tag | group): the caption filter drops every such
# caption, so it removes "woman" captions three times as often as "man" captions. The
# rebalancing features mask the filter's own terms (rebalance.mask_filter_terms), so
# what the classifier can learn is how the rest of a caption predicts removal.
SWIMSUIT = {"women": 0.30, "men": 0.10, "animals": 0.0}


def _caption(rng: random.Random, group: str) -> str:
    tag = " #swimsuit" if rng.random() < SWIMSUIT[group] else ""
    return f"a photo of {rng.choice(SUBJECTS[group])} {rng.choice(SCENES)}{tag}"


@pytest.fixture(scope="module")
def biased_dataset(tmp_path_factory, photos) -> Path:
    folder = tmp_path_factory.mktemp("biased")
    rng = random.Random(7)
    bases = [Image.open(io.BytesIO(d)).convert("RGB").resize((72, 72)) for d in photos.values()]
    for shard in range(N // 600):
        with tarfile.open(folder / f"shard-{shard:05d}.tar", "w") as tar:
            for j in range(600):
                i = shard * 600 + j
                image = bases[i % len(bases)].copy()
                image.putpixel((0, 0), (i % 256, i // 256, 7))  # distinct bytes per sample
                buf = io.BytesIO()
                image.save(buf, "PNG")
                group = rng.choice(list(SUBJECTS))
                for name, data in (
                    (f"{i:06d}.png", buf.getvalue()),
                    (f"{i:06d}.txt", _caption(rng, group).encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return folder


def _config(data: Path, out: Path, **rebalance):
    return validate_config(
        {
            "input": {"paths": [str(data / "*.tar")], "chunk_size": 200},
            "output": {"path": str(out), "samples_per_shard": 5000},
            "filters": [{"name": "caption_terms", "category": "sexual", "terms": ["swimsuit"]}],
            # the images are 36 photos reused with one pixel changed: near duplicates
            # by design, so near-dedup is off here to keep the population whole
            "dedup": {"near": False},
            "rebalance": {
                "enabled": True,
                "C": 10.0,
                "w_min": 0.05,
                "w_max": 20.0,
                "probes": {k: [w.split()[-1] for w in v] for k, v in SUBJECTS.items()},
                **rebalance,
            },
        }
    )


@pytest.fixture(scope="module")
def weighted_run(biased_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("rb") / "out"
    return out, run(_config(biased_dataset, out))


@pytest.mark.slow
def test_filter_bias_is_visible_and_reweighting_undoes_it(weighted_run):
    _, summary = weighted_run
    probes = summary["rebalance"]["probes"]
    assert probes["women"]["change_filtered"] < -0.10  # the filter's bias
    assert probes["women"]["change_filtered"] < 2 * probes["men"]["change_filtered"]
    for group, row in probes.items():
        assert abs(row["change_reweighted"]) < 0.03, (group, row)


@pytest.mark.slow
def test_weights_are_clipped_normalised_and_written_everywhere(weighted_run):
    out, summary = weighted_run
    rows = pq.read_table(out / "manifest").to_pylist()
    kept = [r for r in rows if r["state"] == "kept"]
    weights = np.array([r["weight"] for r in kept])
    assert weights.mean() == pytest.approx(1.0, abs=1e-3)
    assert weights.min() >= 0.05 and weights.max() <= 20.0
    assert all(r["weight"] is None for r in rows if r["state"] != "kept")
    # the women who survived the filter carry more weight than the men
    women = [r["weight"] for r in kept if " woman " in r["caption"] or "women" in r["caption"]]
    men = [r["weight"] for r in kept if " man " in r["caption"] or " men " in r["caption"]]
    assert np.mean(women) > np.mean(men)
    by_key = {r["key"]: r["weight"] for r in kept}
    for sample in wds.WebDataset(str(out / "shards" / "shard-000000.tar"), shardshuffle=False):
        assert json.loads(sample["json"])["mitigate"]["weight"] == by_key[sample["__key__"]]
    stats = summary["rebalance"]["weights"]
    assert stats["n"] == len(kept)
    assert 0 < stats["effective_sample_size"] <= len(kept)


@pytest.mark.slow
def test_weights_are_deterministic_across_runners(weighted_run, biased_dataset, tmp_path):
    out, _ = weighted_run
    config = _config(biased_dataset, tmp_path / "mp")
    config = config.model_copy(
        update={
            "runner": config.runner.model_copy(
                update={"direct_num_workers": 2, "direct_running_mode": "multi_processing"}
            )
        }
    )
    run(config)
    for part in sorted((out / "manifest").glob("*.parquet")):
        assert (tmp_path / "mp" / "manifest" / part.name).read_bytes() == part.read_bytes()


@pytest.mark.slow
def test_resample_mode_writes_copies_with_expected_count_equal_to_weight(
    biased_dataset, weighted_run, tmp_path
):
    summary = run(_config(biased_dataset, tmp_path / "rs", mode="resample"))
    rows = [
        r for r in pq.read_table(tmp_path / "rs" / "manifest").to_pylist() if r["state"] == "kept"
    ]
    copies = np.array([r["copies"] for r in rows])
    weights = np.array([r["weight"] for r in rows])
    assert np.all((copies == np.floor(weights)) | (copies == np.floor(weights) + 1))
    assert abs(copies.sum() - weights.sum()) < 3 * np.sqrt(len(rows))
    samples = list(wds.WebDataset(str(tmp_path / "rs/shards/shard-000000.tar"), shardshuffle=False))
    assert len(samples) == copies.sum() == summary["samples_written"]
    keys = [s["__key__"] for s in samples]
    assert len(set(keys)) == len(keys)  # copies get distinct keys: KEY, KEY_r1, ...
    assert summary["conservation"]["ok"]


def test_rebalance_config_is_cross_checked():
    on = {"enabled": True}
    with pytest.raises(ConfigError, match=r"rebalance.filtered_by\[0\]: no filter 'nsfw'"):
        validate_config({"rebalance": {**on, "filtered_by": ["nsfw"]}})
    with pytest.raises(ConfigError, match="must have an embedding_output and store_embeddings"):
        validate_config(
            {"filters": [{"name": "nsfw"}], "rebalance": {**on, "embedding_filter": "nsfw"}}
        )
    with pytest.raises(ConfigError, match=r"rebalance.w_min: must be <= 1"):
        validate_config({"rebalance": {"w_min": 2}})
    with pytest.raises(ConfigError, match=r"rebalance.calibrate_groups\[1\]: no probe group"):
        validate_config({"rebalance": {**on, "calibrate_groups": ["women", "nurses"]}})
    with pytest.raises(ConfigError, match=r"rebalance.calibrate_groups.nurses: give at least"):
        validate_config({"rebalance": {**on, "calibrate_groups": {"nurses": []}}})
    with pytest.raises(ConfigError, match=r"rebalance.C_grid: .*every C must be a positive"):
        validate_config({"rebalance": {"C_grid": [1.0, 0]}})
    # a C the fit refuses stopped the run at its end, after all the work
    for bad in (-1.0, 0.0, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"rebalance.C: must be a positive finite number"):
            validate_config({"rebalance": {"C": bad}})
    with pytest.raises(ConfigError, match=r"rebalance.C"):
        validate_config({"rebalance": {"C": "best"}})
    with pytest.raises(ConfigError, match=r"rebalance.C_patience: must be >= 0, got -1"):
        validate_config({"rebalance": {"C_patience": -1}})


def test_the_runs_c_selection_stops_at_its_patience_and_the_report_says_so(caplog):
    """``rebalance.C_patience`` reaches the selection, which the summary and the report
    then show: the values fitted, and those left out with the reason."""
    from mitigate import rebalance as rb
    from mitigate.rebalance_select import select_for_run
    from mitigate.report.rebalancing import _c_selection_text

    sample = noise_fit_sample()  # removal independent of the caption: a weak C wins
    features, kept, hashes = sample.features, sample.kept, sample.hashes
    feature_config = sample.config
    info = {}
    for patience in (1, 0):
        cfg = validate_config({"rebalance": {"C_patience": patience}}).rebalance
        chosen, info[patience] = select_for_run(hashes, features, kept, cfg, feature_config)
        assert chosen == info[patience]["C"] == 0.1
    assert list(info[1]["held_out_log_loss"]) == ["0.01", "0.1", "1.0"]
    assert info[1]["not_tried"] == ["10.0", "100.0"] and info[1]["stopped_after_rises"] == 1
    assert len(info[0]["held_out_log_loss"]) == 5 and "not_tried" not in info[0]
    text = _c_selection_text(json.loads(json.dumps(info[1])))
    assert text.startswith("C=0.1 (3-fold held-out log loss: 0.01: 0.6786, 0.1: 0.6784")
    assert text.endswith("; not fitted: 10.0, 100.0, the loss having risen 1 step in a row)")
    assert "not fitted" not in _c_selection_text(info[0])
    # a sample too small for every fold to hold both classes: the default C, and why
    cfg = validate_config({"rebalance": {"cv_folds": 2}}).rebalance
    tiny = feature_config.featurize(["a b", "c d", "e f", "g h"])
    with caplog.at_level(logging.WARNING, logger="mitigate.rebalance_select"):
        chosen, note = select_for_run(
            [0, 2, 1, 3], tiny, np.array([1, 1, 0, 0], bool), cfg, feature_config
        )
    assert chosen == note["C"] == rb.DEFAULT_C
    assert "lacks a filtered or a kept sample" in note["note"]
    assert "using C=" in caplog.text


def test_disabled_rebalancing_is_not_cross_checked():
    # the references a disabled section would need are not demanded (they were before)
    config = validate_config(
        {
            "filters": [{"name": "nsfw"}],
            "rebalance": {
                "enabled": False,
                "embedding_filter": "nsfw",
                "filtered_by": ["gone"],
                "calibrate_groups": ["nobody"],
            },
            "runner": {"name": "dask", "dask_address": "tcp://127.0.0.1:8786"},
        }
    )
    assert config.rebalance.embedding_filter == "nsfw"
    assert config.rebalance.C == "auto"  # the default
    assert validate_config({"rebalance": {"C": 0.5}}).rebalance.C == 0.5
    groups = {"enabled": True, "calibrate_groups": {"nurses": ["nurse", "nurses"]}}
    rb = validate_config({"rebalance": groups}).rebalance
    assert rb.report_probes()["nurses"] == ["nurse", "nurses"]
    assert "women" in rb.report_probes()  # the probes stay, as held-out checks


def test_masked_filter_terms_leave_no_trace_in_the_features():
    from mitigate.rebalance import caption_terms

    masked = frozenset({("swimsuit",), ("graphic", "violence")})
    assert caption_terms("a woman in a park #swimsuit", masked) == caption_terms(
        "a woman in a park", masked
    )
    # a cut in the middle: no bigram joins the words on either side of it
    terms = caption_terms("a graphic violence scene", masked)
    assert terms == ["a", "scene"]
    assert "swimsuit" in caption_terms("a woman in a swimsuit")  # unmasked by default


def test_weight_scale_is_bit_identical_whatever_the_merge_order():
    from mitigate.rebalance import LogHistogram, finalize_weights, solve_scale

    raw = np.random.default_rng(3).lognormal(0.0, 2.0, 20_000)
    a = LogHistogram().add(raw[:7000]).merge(LogHistogram().add(raw[7000:]))
    b = LogHistogram().add(raw[15000:]).merge(LogHistogram().add(raw[:15000]))
    assert solve_scale(a, 0.1, 10.0) == solve_scale(b, 0.1, 10.0)
    weights = np.clip(solve_scale(a, 0.1, 10.0) * raw, 0.1, 10.0)
    np.testing.assert_allclose(weights, finalize_weights(raw, 0.1, 10.0), rtol=1e-5)


@pytest.mark.slow
def test_resampled_copies_skip_keys_that_input_samples_hold(
    biased_dataset, weighted_run, photos, tmp_path
):
    """A copy is keyed KEY_r1, KEY_r2, ...: an input sample already named KEY_r1 (a
    revision suffix) went into the shard beside the copy of that name, two samples of
    one key, and the manifest's row of that key described only one of them (helper-48).
    The copies skip the numbers input keys take."""
    out, _ = weighted_run
    kept = [r for r in pq.read_table(out / "manifest").to_pylist() if r["state"] == "kept"]
    # a sample resampling writes twice (the weights of a resample run are these)
    counts = resample_counts([r["weight"] for r in kept], [r["key"] for r in kept], seed=0)
    heavy = max(
        (r for r, n in zip(kept, counts, strict=True) if n >= 2),
        key=lambda r: (r["weight"], r["key"]),
    )
    data = tmp_path / "data"
    data.mkdir()
    for shard in biased_dataset.glob("*.tar"):
        (data / shard.name).write_bytes(shard.read_bytes())
    lamp = next(iter(photos.values()))  # a real photo, other bytes than every sample's
    with tarfile.open(data / "zz-revisions.tar", "w") as tar:
        for name, payload in (
            (f"{heavy['key']}_r1.jpg", lamp),
            (f"{heavy['key']}_r1.txt", b"a revised photo of a lamp"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    summary = run(_config(data, tmp_path / "rs", mode="resample"))
    assert summary["conservation"]["ok"]
    rows = {r["key"]: r for r in pq.read_table(tmp_path / "rs" / "manifest").to_pylist()}
    revision = rows[f"{heavy['key']}_r1"]
    assert revision["state"] == "kept" and revision["copies"] >= 1
    copies = rows[heavy["key"]]["copies"]
    assert copies >= 2  # the scenario: a copy that would be named KEY_r1
    names = [m.name for m in tarfile.open(tmp_path / "rs" / "shards" / "shard-000000.tar")]
    assert len(names) == len(set(names))  # no member twice
    samples = list(
        wds.WebDataset(str(tmp_path / "rs" / "shards" / "shard-000000.tar"), shardshuffle=False)
    )
    keys = [s["__key__"] for s in samples]
    assert len(keys) == len(set(keys)) == summary["samples_written"]
    by_key = {s["__key__"]: s for s in samples}
    assert by_key[f"{heavy['key']}_r1"]["txt"] == b"a revised photo of a lamp"
    own = [k for k, s in by_key.items() if s["txt"] == by_key[heavy["key"]]["txt"]]
    copy_keys = {heavy["key"]} | {f"{heavy['key']}_r{n}" for n in range(2, copies + 1)}
    assert copy_keys <= set(own)


@pytest.fixture(scope="module")
def copy_named_dataset(biased_dataset, tmp_path_factory) -> Path:
    """The biased dataset with every odd sample renamed to its even neighbour's key and
    ``_r1``: the name that neighbour's first resampled copy would take."""
    folder = tmp_path_factory.mktemp("copy-named")
    for shard in sorted(biased_dataset.glob("*.tar")):
        with tarfile.open(shard) as src, tarfile.open(folder / shard.name, "w") as dst:
            for member in src.getmembers():
                stem, ext = member.name.split(".", 1)
                data = src.extractfile(member).read()
                if int(stem) % 2:
                    member.name = f"{int(stem) - 1:06d}_r1.{ext}"
                dst.addfile(member, io.BytesIO(data))
    return folder


@pytest.mark.slow
def test_no_resampled_copy_takes_an_input_samples_key_where_many_would(
    copy_named_dataset, tmp_path
):
    """Half the samples are named as their neighbour's first copy would be: each copy
    skips KEY_r1, and the shards hold every written sample once, under its own key."""
    out = tmp_path / "rs"
    summary = run(_config(copy_named_dataset, out, mode="resample"))
    rows = pq.read_table(out / "manifest").to_pylist()
    keys_in = {r["key"] for r in rows}
    shards = [str(p) for p in sorted((out / "shards").glob("*.tar"))]
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    keys = [s["__key__"] for s in samples]
    written = [r for r in rows if r["state"] == "kept" and r["copies"]]
    assert len(keys) == summary["samples_written"] == sum(r["copies"] for r in written)
    assert len(set(keys)) == len(keys)
    by_key = {s["__key__"]: s for s in samples}
    resampled = [r for r in written if r["copies"] >= 2 and not r["key"].endswith("_r1")]
    assert len(resampled) > 50  # the data makes many would-be clashes
    for r in resampled:
        key, n = r["key"], r["copies"]
        copies = [f"{key}_r{c}" for c in range(2, n + 1)]  # KEY_r1 is another sample's
        assert all(by_key[c]["png"] == by_key[key]["png"] for c in copies)
        assert f"{key}_r{n + 1}" not in by_key
        if f"{key}_r1" in by_key:
            assert by_key[f"{key}_r1"]["png"] != by_key[key]["png"]
    # a copy's key is never a manifest key (of a sample written or not)
    copy_keys = set(keys) - {r["key"] for r in written}
    assert len(copy_keys) == len(keys) - len(written)
    assert not copy_keys & keys_in
