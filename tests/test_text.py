from mitigate.text import normalize_text, words


def test_nfkc_casefold_and_zero_width_are_folded():
    assert normalize_text("ＧＯＲＥ") == "gore"
    assert normalize_text("go\u200bre") == "gore"
    assert normalize_text("Stra\u00dfe") == "strasse"  # casefold, not lower
    assert normalize_text("  a\t\nb  ") == "a b"


def test_words_keep_inner_apostrophes_and_hyphens_and_any_script():
    assert words("don't x-ray, naïve café 東京!") == ["don't", "x-ray", "naïve", "café", "東京"]
    assert words("snake_case") == ["snake", "case"]


def test_combining_marks_stay_inside_words_and_apostrophes_are_unified():
    assert words(normalize_text("हिन्दी भाषा")) == ["हिन्दी", "भाषा"]
    assert words(normalize_text("e\u0301te\u0301")) == ["été"]  # NFKC composes
    assert words(normalize_text("woman’s hat")) == words(normalize_text("woman's hat"))
