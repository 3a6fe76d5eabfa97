"""Filters: registry, exact reason codes, thresholds, and score/decide separation."""

import pytest

from mitigate import filters
from mitigate.config import ConfigError, validate_config
from mitigate.filters import ScoringItem
from mitigate.records import SampleRecord


def _record(**kw) -> SampleRecord:
    base = {"key": "k", "source": "s.tar", "index": 0, "width": 640, "height": 480, "n_bytes": 5000}
    return SampleRecord(**{**base, **kw})


def _build(entry: dict, base_dir=".") -> filters.Filter:
    cfg = validate_config({"filters": [entry]}, base_dir)
    flt = filters.build_filter(cfg.filters[0])
    flt.setup()
    return flt


def _run(flt, record):
    (score,) = flt.score([ScoringItem(record, None)])
    record.scores[flt.filter_id] = score.value
    if score.info:
        record.score_info[flt.filter_id] = score.info
    return flt.decide(record)


def test_registry_lists_builtin_filters_and_rejects_unknown_names():
    assert {"image_quality", "caption_terms"} <= set(filters.names())
    with pytest.raises(KeyError, match=r"valid names: .*caption_terms"):
        filters.get("nope")


@pytest.mark.parametrize(
    ("size", "n_bytes", "reason"),
    [
        ((63, 640), 5000, "image_too_small"),
        ((640, 100), 5000, "aspect_ratio_out_of_range"),
        ((640, 480), 99, "file_too_small"),
        ((640, 480), 10_001, "file_too_large"),
        ((64, 256), 100, None),  # exactly on every limit: kept
    ],
)
def test_image_quality_reason_codes(size, n_bytes, reason):
    flt = _build(
        {
            "name": "image_quality",
            "min_side": 64,
            "max_aspect_ratio": 4.0,
            "min_bytes": 100,
            "max_bytes": 10_000,
        }
    )
    drop = _run(flt, _record(width=size[0], height=size[1], n_bytes=n_bytes))
    assert (drop.reason if drop else None) == reason


def test_image_quality_decision_reports_threshold_and_score():
    flt = _build({"name": "image_quality", "max_aspect_ratio": 3.0})
    drop = _run(flt, _record(width=1000, height=200))
    assert drop.score == pytest.approx(5.0)
    assert drop.threshold == 3.0


def test_caption_terms_match_whole_words_after_normalisation(tmp_path):
    terms = tmp_path / "t.txt"
    terms.write_text("# comment\ngore\ngraphic violence  # phrase\n\n", encoding="utf-8")
    flt = _build({"name": "caption_terms", "category": "violence", "terms_file": "t.txt"}, tmp_path)
    cases = {
        "A GORE scene": ['violence:"gore"'],
        "ＧＯＲＥ": ['violence:"gore"'],
        "go\u200bre": ['violence:"gore"'],
        "he gored the bull": [],
        "Algore speaks": [],
        "Graphic   Violence!": ['violence:"graphic violence"'],
        "graphic novel about violence": [],
    }
    for caption, expected in cases.items():
        drop = _run(flt, _record(caption=caption))
        if expected:
            assert drop is not None and drop.reason == "caption_term_match", caption
            assert drop.detail == "matched " + "; ".join(expected)
        else:
            assert drop is None, caption


def test_caption_terms_categories_and_min_matches():
    flt = _build(
        {
            "name": "caption_terms",
            "terms": ["knife"],
            "category": "weapons",
            "categories": {"violence": {"terms": ["blood"]}},
            "min_matches": 2,
        }
    )
    assert _run(flt, _record(caption="a knife")) is None
    drop = _run(flt, _record(caption="blood on a knife, knife"))
    assert drop.score == 2.0 and drop.threshold == 2.0
    assert drop.detail == 'matched violence:"blood"; weapons:"knife"'


def test_caption_terms_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError) as err:
        validate_config(
            {"filters": [{"name": "caption_terms", "terms_file": "missing.txt"}]}, tmp_path
        )
    assert err.value.errors[0].startswith("filters[0].terms_file: file not found")
    with pytest.raises(ConfigError, match=r"filters\[0\]: no terms given"):
        validate_config({"filters": [{"name": "caption_terms"}]})


def test_filters_pickle_with_their_terms(tmp_path):
    import pickle

    terms = tmp_path / "t.txt"
    terms.write_text("gore\n", encoding="utf-8")
    flt = _build({"name": "caption_terms", "terms_file": str(terms)})
    terms.unlink()  # workers never need the file
    clone = pickle.loads(pickle.dumps(flt))
    clone.setup()
    assert _run(clone, _record(caption="gore")).reason == "caption_term_match"
