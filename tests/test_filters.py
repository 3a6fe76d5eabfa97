"""Filters: registry, exact reason codes, thresholds, and score/decide separation."""

import pytest

from mitigate import filters
from mitigate.config import ConfigError, validate_config
from mitigate.filters import ScoringItem
from mitigate.filters.caption_terms import read_terms_file
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


# helper-33's evasions of a listed term: each must still match
EVASIONS = {
    "invisible": ["go\u034fre", "go\u202ere", "go\ufe0fre", "go\U000e0067re", "go\u3164re"],
    "look-alikes": ["g\u043er\u0435", "G\u041eR\u0415", "\u0261ore", "g\u03bfre"],
    "accents": ["g\u00f3re", "go\u0301re", "g\u0336o\u0336r\u0336e\u0336"],
    "enclosed": ["\U0001f156\U0001f15e\U0001f161\U0001f154"],
    "word forms": ["the gore's", "gore\u2019s", "gore-soaked", "blood-and-gore", "gores"],
    "spelled out": ["g o r e", "g-o-r-e", "g.o.r.e", "#GoreFest"],
}
INNOCENT = ["he gored the bull", "Algore", "Gor\u00e9e island", "at g\u00f8re", "a b c d"]


@pytest.mark.parametrize("caption", [c for v in EVASIONS.values() for c in v])
def test_caption_terms_see_through_invisible_letters_look_alikes_and_word_forms(caption):
    flt = _build({"name": "caption_terms", "terms": ["gore", "graphic violence"]})
    drop = _run(flt, _record(caption=caption))
    assert drop is not None and drop.detail == 'matched unsafe:"gore"', caption


@pytest.mark.parametrize("caption", INNOCENT)
def test_caption_terms_leave_other_words_alone(caption):
    flt = _build({"name": "caption_terms", "terms": ["gore", "graphic violence"]})
    assert _run(flt, _record(caption=caption)) is None


def test_caption_terms_phrases_plurals_and_scripts_without_spaces():
    terms = ["graphic violence", "massacre", "match", "\u6d41\u8840", "\ub300\ud559\uc0b4"]
    flt = _build({"name": "caption_terms", "terms": terms})
    found = {
        "graphic-violence": "graphic violence",
        "#GraphicViolence": "graphic violence",
        "two massacres": "massacre",
        "matches": "match",
        "\u8def\u4e0a\u306e\u6d41\u8840\u4e8b\u4ef6": "\u6d41\u8840",  # inside a run
        "\ub300\ud559\uc0b4\uc744 \ubcf4\ub2e4": "\ub300\ud559\uc0b4",  # with a particle
    }
    for caption, term in found.items():
        drop = _run(flt, _record(caption=caption))
        assert drop is not None and drop.detail == f'matched unsafe:"{term}"', caption
    for caption in ["graphic novel", "mass", "a glass", "\u6d41\u308c"]:
        assert _run(flt, _record(caption=caption)) is None, caption


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


def test_a_terms_files_comment_starts_at_a_hash_after_a_space_or_the_line_start(tmp_path):
    # helper-33: "c# programming" became the term "c" (and filtered "c sharp")
    (tmp_path / "t.txt").write_text("# a comment\nc# programming\ngore  # why\n  #nsfw\n")
    assert read_terms_file(tmp_path / "t.txt") == ["c# programming", "gore"]
