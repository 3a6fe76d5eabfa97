"""Tests for mitigate.calibrate (high-recall threshold calibration)."""

from __future__ import annotations

import dataclasses
import logging
import math
import subprocess
import sys

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from mitigate.calibrate import (
    CalibrationResult,
    binomial_ci,
    calibrate,
    evaluate_threshold,
    threshold_for_recall,
    threshold_snippet,
    yaml_float,
)

# --------------------------------------------------------------------------------------
# Strategies and brute force
# --------------------------------------------------------------------------------------

# Few distinct values -> many ties; arbitrary finite floats -> extreme magnitudes.
tied_scores = st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]), min_size=1)
any_scores = st.lists(
    st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=60
)
targets = st.one_of(
    st.floats(min_value=0.0, max_value=1.0, exclude_min=True),
    st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.999, 1.0, 0.7, 0.3, 0.1]),
)


def brute_force_threshold(scores: list[float], target: float) -> float:
    """Sweep every positive score as a threshold; keep the highest that reaches target."""
    arr = np.asarray(scores, dtype=np.float64)
    ok = [t for t in np.unique(arr) if np.count_nonzero(arr >= t) / arr.size >= target]
    return float(max(ok))


def recall_at(scores: list[float], t: float) -> float:
    arr = np.asarray(scores, dtype=np.float64)
    return np.count_nonzero(arr >= t) / arr.size


# --------------------------------------------------------------------------------------
# threshold_for_recall
# --------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(scores=st.one_of(tied_scores, any_scores), target=targets)
def test_threshold_matches_brute_force_sweep(scores, target):
    t = threshold_for_recall(np.asarray(scores), target)
    assert t == brute_force_threshold(scores, target)
    assert t in scores
    assert recall_at(scores, t) >= target
    # Highest: any larger threshold, even the next float up, misses the target.
    with np.errstate(over="ignore"):  # the float after the largest finite one is inf
        above = float(np.nextafter(t, np.inf))
    assert recall_at(scores, above) < target


@settings(max_examples=100, deadline=None)
@given(scores=tied_scores, target=targets, seed=st.integers(0, 2**32 - 1))
def test_threshold_independent_of_order(scores, target, seed):
    shuffled = np.random.default_rng(seed).permutation(np.asarray(scores))
    assert threshold_for_recall(shuffled, target) == threshold_for_recall(scores, target)


def test_ties_are_never_split():
    scores = [0.1, 0.5, 0.5, 0.5, 0.9]
    # 2 of 5 would reach 0.4, but the 2nd highest score is shared by three samples:
    # all of them are dropped together and recall is 4/5.
    t = threshold_for_recall(scores, 0.4)
    assert t == 0.5
    assert recall_at(scores, t) == 0.8
    assert threshold_for_recall(scores, 0.2) == 0.9
    assert threshold_for_recall(scores, 0.8) == 0.5
    assert threshold_for_recall(scores, 0.81) == 0.1
    assert threshold_for_recall([0.3] * 7, 0.01) == 0.3


def test_decimal_targets_are_met_exactly():
    # 0.9 as a binary float is slightly above 9/10; recall 9/10 still counts as 0.9.
    scores = np.arange(10, dtype=float)  # 0..9
    assert threshold_for_recall(scores, 0.9) == 1.0
    assert threshold_for_recall(scores, 0.7) == 3.0
    assert threshold_for_recall(scores, 0.3) == 7.0
    assert threshold_for_recall(scores, 1.0) == 0.0
    assert threshold_for_recall(scores, 1e-9) == 9.0


def test_high_recall_on_many_positives():
    rng = np.random.default_rng(0)
    scores = rng.random(100_000)
    t = threshold_for_recall(scores, 0.99)
    assert np.count_nonzero(scores >= t) == 99_000
    assert t == np.sort(scores)[1000]


def test_no_positives_is_an_error():
    with pytest.raises(ValueError, match="no labelled positives"):
        threshold_for_recall([], 0.9)
    with pytest.raises(ValueError, match="no labelled positives"):
        calibrate([0.1, 0.2], [0, 0], [0.1, 0.2, 0.3], 0.9)
    with pytest.raises(ValueError, match="no labelled positives"):
        evaluate_threshold([0.1], [False], [0.1], 0.5)


@pytest.mark.parametrize("target", [0.0, -0.1, 1.0000001, 2.0, math.nan, -math.inf])
def test_target_recall_must_be_in_0_1(target):
    with pytest.raises(ValueError, match="target_recall"):
        threshold_for_recall([0.5], target)
    with pytest.raises(ValueError, match="target_recall"):
        calibrate([0.5], [1], [0.5], target)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scores_rejected(bad):
    with pytest.raises(ValueError, match="non-finite"):
        threshold_for_recall([0.1, bad], 0.5)
    with pytest.raises(ValueError, match="all_scores"):
        calibrate([0.1, 0.9], [1, 0], [0.3, bad], 0.5)


# --------------------------------------------------------------------------------------
# Binomial intervals
# --------------------------------------------------------------------------------------

# Published values (e.g. Brown, Cai & DasGupta 2001; any stats text): n = 10, 95%.
PUBLISHED = {
    ("clopper_pearson", 0): (0.0, 0.3085),
    ("clopper_pearson", 5): (0.1871, 0.8129),
    ("clopper_pearson", 10): (0.6915, 1.0),
    ("wilson", 0): (0.0, 0.2775),
    ("wilson", 5): (0.2366, 0.7634),
    ("wilson", 10): (0.7225, 1.0),
}


@pytest.mark.parametrize(("method", "k"), sorted(PUBLISHED))
def test_ci_published_values(method, k):
    lo, hi = binomial_ci(k, 10, 0.95, method)
    assert lo == pytest.approx(PUBLISHED[method, k][0], abs=5e-5)
    assert hi == pytest.approx(PUBLISHED[method, k][1], abs=5e-5)


def test_clopper_pearson_closed_forms_at_extremes():
    # k = 0: upper = 1 - (alpha/2)**(1/n); k = n: lower = (alpha/2)**(1/n); exact ends.
    for n in (1, 10, 100, 3000):
        assert binomial_ci(0, n) == (0.0, pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9))
        assert binomial_ci(n, n) == (pytest.approx(0.025 ** (1 / n), rel=1e-9), 1.0)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 2000),
    confidence=st.sampled_from([0.8, 0.9, 0.95, 0.99]),
    method=st.sampled_from(["clopper_pearson", "wilson"]),
)
def test_ci_matches_scipy_binomtest(data, n, confidence, method):
    k = data.draw(st.integers(0, n))
    lo, hi = binomial_ci(k, n, confidence, method)
    ref = binomtest(k, n).proportion_ci(
        confidence_level=confidence, method="exact" if method == "clopper_pearson" else method
    )
    assert lo == pytest.approx(float(ref.low), abs=1e-9)
    assert hi == pytest.approx(float(ref.high), abs=1e-9)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_ci_edge_cases():
    assert binomial_ci(0, 0) == (0.0, 1.0)
    for k, n in [(-1, 5), (6, 5), (0, -1)]:
        with pytest.raises(ValueError, match="0 <= k <= n"):
            binomial_ci(k, n)
    with pytest.raises(ValueError, match="confidence"):
        binomial_ci(1, 2, confidence=1.0)
    with pytest.raises(ValueError, match="method"):
        binomial_ci(1, 2, method="agresti")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# calibrate / evaluate_threshold
# --------------------------------------------------------------------------------------


def test_calibrate_known_case():
    # 10 positives 0.55..1.0, 10 negatives 0.0..0.45 plus one negative at 0.8.
    pos = [0.55 + 0.05 * i for i in range(10)]
    neg = [0.05 * i for i in range(10)] + [0.8]
    labelled = np.array(pos + neg)
    labels = np.array([1] * 10 + [0] * 11)
    unlabelled = np.linspace(0.0, 1.0, 101)  # 0.00, 0.01, ..., 1.00
    all_scores = np.concatenate([labelled, unlabelled])

    r = calibrate(labelled, labels, all_scores, 0.8)
    assert r.threshold == pos[2]  # 8 of 10 positives at or above the 3rd lowest
    assert (r.n_pos, r.n_neg, r.tp, r.fp, r.n_total) == (10, 11, 8, 1, 122)
    assert r.recall == 0.8 and r.fn == 2 and r.tn == 10
    assert r.precision == 8 / 9
    expected_dropped = int(np.count_nonzero(all_scores >= pos[2]))
    assert r.n_dropped == expected_dropped
    assert r.drop_fraction == expected_dropped / 122
    assert r.recall_ci == binomial_ci(8, 10)
    assert r.precision_ci == binomial_ci(8, 9)
    assert r.drop_fraction_ci == binomial_ci(expected_dropped, 122)
    assert r.target_recall == 0.8 and r.confidence == 0.95
    assert r.ci_method == "clopper_pearson"


@settings(max_examples=100, deadline=None)
@given(
    labelled=st.lists(
        st.tuples(st.sampled_from([0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), st.booleans()), min_size=1
    ).filter(lambda rows: any(lab for _, lab in rows)),
    extra=st.lists(st.floats(0, 1), max_size=30),
    target=targets,
)
def test_calibrate_consistent_with_brute_force(labelled, extra, target):
    scores = np.array([s for s, _ in labelled])
    labels = np.array([lab for _, lab in labelled])
    all_scores = np.concatenate([scores, np.asarray(extra, dtype=float)])
    r = calibrate(scores, labels, all_scores, target, method="wilson")
    assert r.threshold == brute_force_threshold(scores[labels].tolist(), target)
    assert r.recall >= target
    assert r.tp == np.count_nonzero(labels & (scores >= r.threshold))
    assert r.fp == np.count_nonzero(~labels & (scores >= r.threshold))
    assert r.n_dropped == np.count_nonzero(all_scores >= r.threshold)
    for value, (lo, hi) in [
        (r.recall, r.recall_ci),
        (r.precision, r.precision_ci),
        (r.drop_fraction, r.drop_fraction_ci),
    ]:
        assert 0.0 <= lo <= value <= hi <= 1.0
    # Deterministic and independent of row order.
    perm = np.random.default_rng(len(labelled)).permutation(len(labelled))
    assert calibrate(scores[perm], labels[perm], all_scores, target, method="wilson") == r


def test_evaluate_threshold_on_held_out_labels():
    r = evaluate_threshold([0.2, 0.7, 0.9, 0.1], [True, True, False, False], [0.0, 1.0], 0.5)
    assert r.target_recall is None
    assert (r.tp, r.fp, r.recall, r.precision, r.drop_fraction) == (1, 1, 0.5, 0.5, 0.5)
    # Nothing dropped: precision undefined (NaN), its interval uninformative.
    r = evaluate_threshold([0.2], [1], [0.3], 0.9)
    assert math.isnan(r.precision) and r.precision_ci == (0.0, 1.0)
    assert r.recall == 0.0 and r.recall_ci[0] == 0.0


def test_input_validation():
    with pytest.raises(ValueError, match="labels must be one-dimensional"):
        calibrate([0.1, 0.2], [1], [0.1], 0.5)
    with pytest.raises(ValueError, match="0/1"):
        calibrate([0.1, 0.2], [1, 2], [0.1], 0.5)
    with pytest.raises(ValueError, match="all_scores is empty"):
        calibrate([0.1], [1], [], 0.5)
    with pytest.raises(ValueError, match="one-dimensional"):
        threshold_for_recall(np.zeros((2, 2)), 0.5)
    with pytest.raises(ValueError, match="threshold must be finite"):
        evaluate_threshold([0.1], [1], [0.1], math.nan)


def test_calibrate_logs_summary(caplog):
    with caplog.at_level(logging.INFO, logger="mitigate.calibrate"):
        calibrate([0.1, 0.9], [1, 1], [0.5], 0.5)
    assert "calibrated threshold 0.9" in caplog.text


# --------------------------------------------------------------------------------------
# YAML snippet
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.5, "0.5"),
        (5.0, "5.0"),
        (1e-05, "1.0e-05"),
        (1.5e-07, "1.5e-07"),
        (1e16, "1.0e+16"),
        (-2.5e-300, "-2.5e-300"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_yaml_float_literals(value, text):
    assert yaml_float(value) == text
    assert yaml.safe_load(f"x: {text}")["x"] == value


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_yaml_float_round_trips_exactly(value):
    loaded = yaml.safe_load(f"x: {yaml_float(value)}")["x"]
    assert isinstance(loaded, float) and loaded == value


def test_yaml_float_non_finite():
    assert yaml.safe_load(f"x: {yaml_float(math.inf)}")["x"] == math.inf
    assert math.isnan(yaml.safe_load(f"x: {yaml_float(math.nan)}")["x"])


def _result() -> CalibrationResult:
    rng = np.random.default_rng(1)
    pos = rng.beta(5, 1, 200)
    neg = rng.beta(1, 5, 800)
    labelled = np.concatenate([pos, neg])
    labels = np.r_[np.ones(200, bool), np.zeros(800, bool)]
    return calibrate(labelled, labels, np.concatenate([labelled, rng.random(5000)]), 0.99)


def test_threshold_snippet_is_valid_yaml():
    r = _result()
    text = threshold_snippet("nsfw", r.threshold, r)
    assert yaml.safe_load(text) == {"filters": [{"id": "nsfw", "threshold": r.threshold}]}
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert any("recall" in c and f"{r.recall:.4f}" in c for c in comments)
    assert any("precision" in c and f"{r.precision_ci[0]:.4f}" in c for c in comments)
    assert any("drop fraction" in c and f"{r.n_dropped} of {r.n_total}" in c for c in comments)
    assert any("optimistic" in c for c in comments)
    assert "95% Clopper-Pearson" in text and "Target recall 0.99" in text
    assert text.endswith("\n")


def test_a_snippet_quotes_a_name_yaml_reads_as_another_value():
    """`train --name no` wrote `id: no`, read back as False (helper-47)."""
    from mitigate.config import load_yaml

    for name in ("no", "on", "null", "true", "off", "yes"):
        assert load_yaml(threshold_snippet(name, 0.5))["filters"][0]["id"] == name
        entry = load_yaml(threshold_snippet(name, 0.5, name="linear_probe"))["filters"][0]
        assert (entry["name"], entry["id"]) == ("linear_probe", name)
    assert "- id: nsfw\n" in threshold_snippet("nsfw", 0.5)  # plain names stay bare
    from pathlib import Path

    from mitigate.train_output import snippet

    text = snippet(
        "no",
        "off",
        "yes",
        Path("/p/no.onnx"),
        _result(),
        {"roc_auc": 0.9, "average_precision": 0.8},
    )
    entry = load_yaml(text)["filters"][0]
    assert (entry["id"], entry["category"], entry["backbone"]) == ("no", "off", "yes")


def test_threshold_snippet_variants(caplog):
    assert yaml.safe_load(threshold_snippet("nsfw", 1e-05)) == {
        "filters": [{"id": "nsfw", "threshold": 1e-05}]
    }
    named = yaml.safe_load(threshold_snippet("nsfw_v2", 0.25, name="clip_nsfw"))
    assert named == {"filters": [{"name": "clip_nsfw", "id": "nsfw_v2", "threshold": 0.25}]}
    same = yaml.safe_load(threshold_snippet("nsfw", 0.25, name="nsfw"))
    assert same == {"filters": [{"name": "nsfw", "threshold": 0.25}]}

    r = _result()
    with caplog.at_level(logging.WARNING, logger="mitigate.calibrate"):
        text = threshold_snippet("nsfw", 0.5, r)
    assert "measured at" in caplog.text
    assert f"measured at threshold {r.threshold!r}" in text
    assert yaml.safe_load(text)["filters"][0]["threshold"] == 0.5

    evaluated = dataclasses.replace(r, target_recall=None)
    assert "optimistic" not in threshold_snippet("nsfw", r.threshold, evaluated)


@pytest.mark.parametrize("bad", ["NSFW", "nsfw\n  evil: 1", "1abc", "", "a b"])
def test_threshold_snippet_rejects_unsafe_ids(bad):
    with pytest.raises(ValueError, match="filter_id"):
        threshold_snippet(bad, 0.5)
    with pytest.raises(ValueError, match="name"):
        threshold_snippet("ok", 0.5, name=bad)


def test_threshold_snippet_rejects_non_finite_threshold():
    with pytest.raises(ValueError, match="finite"):
        threshold_snippet("nsfw", math.inf)


def test_no_beam_import():
    code = (
        "import sys, mitigate.calibrate, mitigate.select\n"
        "assert 'apache_beam' not in sys.modules, 'apache_beam imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_calibration_data_reads_a_run_a_part_at_a_time(tmp_path, monkeypatch):
    """`mitigate calibrate` made a dict of every key of the run (~0.15 KB a row); now
    each part is read in turn and only labelled keys are kept. Labelled keys in several
    parts, a key on two scored rows (the later a duplicate_key error: not the run's
    sample, helper-34: calibrate took its score), a key whose row has no score and a key
    not in the run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mitigate import review

    parts = [
        {"key": ["a", "b", "c"], "score_nsfw": [0.1, None, 0.5], "state": ["kept"] * 3},
        {
            "key": ["d", "a", "e"],
            "score_nsfw": [0.7, 0.9, float("nan")],
            "state": ["filtered", "error", "kept"],
        },
        {"key": ["f"], "score_nsfw": [0.3], "state": ["kept"]},
    ]
    (tmp_path / "manifest").mkdir()
    for i, cols in enumerate(parts):
        pq.write_table(pa.table(cols), tmp_path / "manifest" / f"part-{i:06d}.parquet")
    read = []
    read_table = pq.read_table
    monkeypatch.setattr(pq, "read_table", lambda p, **kw: read.append(kw) or read_table(p, **kw))
    labels = {"f": False, "a": True, "b": True, "e": False, "zz": True, "c": False}
    scored, truth, every, missing = review.calibration_data(tmp_path, "nsfw", labels)
    assert scored.tolist() == [0.3, 0.1, 0.5]  # f, a (not its error row), c: label order
    assert truth.tolist() == [False, True, False]
    assert every.tolist() == [0.1, 0.5, 0.7, 0.3]  # every finite score but errors', in order
    assert missing == ["b", "e", "zz"]
    assert read == [{"columns": ["key", "score_nsfw", "state"]}] * 3  # a part at a time
