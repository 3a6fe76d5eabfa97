"""Labels name a run's samples in either Unicode normal form: a labels CSV saved on
macOS (``café`` decomposed, NFD) matched no key of a run whose keys are composed (NFC,
as Linux and Windows write names), and the reverse (helper-40)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mitigate import review

NFC = unicodedata.normalize("NFC", "café-1")
NFD = unicodedata.normalize("NFD", "café-2")


def _run(tmp_path: Path) -> Path:
    (tmp_path / "manifest").mkdir(parents=True)
    keys = [NFC, NFD, "plain", "other"]
    table = pa.table(
        {
            "key": keys,
            "state": ["kept"] * 4,
            "score_nsfw": [0.9, 0.8, 0.1, 0.2],
        }
    )
    pq.write_table(table, tmp_path / "manifest" / "part-000000.parquet")
    return tmp_path


def test_key_forms():
    assert review.key_forms("plain") == ["plain"]
    assert review.key_forms(NFC) == [NFC, unicodedata.normalize("NFD", NFC)]
    assert review.key_forms(NFD) == [NFD, unicodedata.normalize("NFC", NFD)]
    assert review.run_key(unicodedata.normalize("NFD", NFC), {NFC}) == NFC
    assert review.run_key("x", {NFC}) is None


def test_calibration_reads_labels_in_the_other_normal_form(tmp_path):
    run = _run(tmp_path)
    labels = {
        unicodedata.normalize("NFD", NFC): True,  # the run's key is NFC
        unicodedata.normalize("NFC", NFD): True,  # the run's key is NFD
        "plain": False,
        "gone": False,
    }
    scored, truth, _, missing = review.calibration_data(run, "nsfw", labels)
    assert missing == ["gone"]
    assert scored.tolist() == [0.9, 0.8, 0.1]
    assert truth.tolist() == [True, True, False]


def test_a_label_in_its_own_form_is_taken_before_another(tmp_path):
    """Two run keys that differ only by normal form are two samples: each label names
    the one written as it is."""
    (tmp_path / "manifest").mkdir()
    composed, decomposed = NFC, unicodedata.normalize("NFD", NFC)
    table = pa.table(
        {"key": [composed, decomposed], "state": ["kept"] * 2, "score_nsfw": [0.3, 0.7]}
    )
    pq.write_table(table, tmp_path / "manifest" / "part-000000.parquet")
    scored, truth, _, missing = review.calibration_data(
        tmp_path, "nsfw", {decomposed: True, composed: False}
    )
    assert missing == [] and np.array_equal(scored, [0.7, 0.3]) and truth.tolist() == [True, False]


def test_train_finds_the_rows_of_labels_in_the_other_normal_form():
    from mitigate.runtable import ArrowKeys
    from mitigate.train import RunEmbeddings, TrainError, labelled_rows

    keys = [NFC, NFD, *(f"k{i}" for i in range(20))]
    run = RunEmbeddings(ArrowKeys(pa.array(keys)), None, np.ones(len(keys), dtype=bool))  # type: ignore[arg-type]
    labels = {unicodedata.normalize("NFD", NFC): True, unicodedata.normalize("NFC", NFD): True}
    labels |= {f"k{i}": i < 8 for i in range(20)}
    rows, _ = labelled_rows(run, labels, "nsfw")
    assert rows[:2].tolist() == [0, 1]
    try:
        labelled_rows(run, {**labels, "gone": False}, "nsfw")
    except TrainError as exc:
        assert "1 labelled key(s) are not in the run (e.g. 'gone')" in str(exc)
    else:
        raise AssertionError("a key not in the run was taken")


def test_one_sample_labelled_in_both_forms_is_one_label_or_an_error():
    """helper-44: café in NFC labelled 1 and in NFD labelled 0 counted as a positive and
    a negative; alike, as two labels of one sample."""
    composed, decomposed = NFC, unicodedata.normalize("NFD", NFC)
    found, missing = review.resolve_labels({composed: True, decomposed: True}, {composed})
    assert found == {composed: composed} and missing == []
    with pytest.raises(ValueError, match=r"name one sample, .* and disagree"):
        review.resolve_labels({composed: True, decomposed: False}, {composed})
    # a run holding both forms as two samples: each label names its own
    found, _ = review.resolve_labels({composed: True, decomposed: False}, {composed, decomposed})
    assert found == {composed: composed, decomposed: decomposed}


def test_rows_of_labels_take_the_key_as_written_before_its_other_form():
    from mitigate.runtable import ArrowKeys

    composed, decomposed = NFC, unicodedata.normalize("NFD", NFC)
    both = ArrowKeys(pa.array([composed, decomposed, "x"]))
    assert review.rows_of_labels(both, [composed]).tolist() == [0]  # not the NFD sample
    one = ArrowKeys(pa.array(["x", composed]))
    assert review.rows_of_labels(one, [decomposed, "x", "gone"]).tolist() == [0, 1]


def test_the_missing_manifest_parts_are_named():
    names = ["part-000000", "part-000002", "part-000002_000003"]
    assert review._missing_parts(names, 3) == [
        "part-000001",
        "part-000002_000001",
        "part-000002_000002",
    ]
    assert review._missing_parts(names, None) == ["part-000002_000001", "part-000002_000002"]
