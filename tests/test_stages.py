"""Per-group decisions: duplicate keys, exact duplicates, filter order, finalisation."""

from __future__ import annotations

import io
import tarfile

import pytest

from mitigate import stages
from mitigate.config import validate_config
from mitigate.filters import build_filter
from mitigate.output import check_conservation, count_states
from mitigate.records import DUPLICATE, ERROR, FILTERED, KEPT, PENDING, SampleRecord


def _rec(key, source="s.tar", index=0, **kw) -> SampleRecord:
    return SampleRecord(key=key, source=source, index=index, **kw)


def test_later_duplicate_keys_are_errors_naming_the_first():
    recs = [_rec("k", "b.tar", 0), _rec("k", "a.tar", 5), _rec("k", "a.tar", 2)]
    out = list(stages.resolve_duplicate_keys(recs))
    # in input order
    assert [(r.source, r.index, r.state) for r in out] == [
        ("b.tar", 0, ERROR),
        ("a.tar", 5, ERROR),
        ("a.tar", 2, PENDING),
    ]
    assert out[1].reason == "duplicate_key"
    assert out[1].detail == "key 'k' already used at a.tar (sample 2)"


def test_records_whose_key_is_invalid_keep_their_own_error_and_own_no_key():
    """Empty keys (a table's null or "" key) are each an ``invalid_key``, not a
    ``duplicate_key`` of one another, and a later valid record is not held against
    them; a valid key repeated is still a duplicate."""
    invalid = [
        _rec("", "t.jsonl", i).with_error("invalid_key", "column 'key': empty key") for i in (3, 1)
    ]
    out = stages.resolve_duplicate_keys([*invalid, _rec("", "t.jsonl", 7)])
    assert sorted((r.index, r.reason) for r in out) == [
        (1, "invalid_key"),
        (3, "invalid_key"),
        (7, None),
    ]
    out = stages.resolve_duplicate_keys([_rec("k", index=2), _rec("k", index=1)])
    assert sorted((r.index, r.reason) for r in out) == [(1, None), (2, "duplicate_key")]


def test_a_later_occurrence_that_is_an_error_keeps_its_reason_and_names_the_first():
    broken = _rec("k", index=4).with_error("decode_error", "truncated JPEG")
    out = list(stages.resolve_duplicate_keys([broken, _rec("k", index=1), _rec("k", index=6)]))
    assert [(r.index, r.state, r.reason, r.detail) for r in out] == [
        (4, ERROR, "decode_error", "truncated JPEG; its key is already used at s.tar (sample 1)"),
        (1, PENDING, None, None),
        (6, ERROR, "duplicate_key", "key 'k' already used at s.tar (sample 1)"),
    ]


def test_exact_duplicates_keep_highest_resolution_then_smallest_key():
    recs = [
        _rec("b", width=10, height=10, sha256="h"),
        _rec("c", width=20, height=10, sha256="h"),
        _rec("a", width=10, height=10, sha256="h"),
    ]
    out = {r.key: r for r in stages.resolve_exact_duplicates(recs)}
    assert out["c"].state == PENDING
    assert (out["a"].state, out["a"].duplicate_of, out["a"].distance) == (DUPLICATE, "c", 0)
    assert out["b"].reason == "exact_duplicate"
    assert out["b"].detail == "same image bytes (sha256 h) as 'c'"
    tie = stages.resolve_exact_duplicates([_rec("z", sha256="h"), _rec("y", sha256="h")])
    assert [(r.key, r.state) for r in tie] == [("z", DUPLICATE), ("y", PENDING)]
    # the same sample twice (one key, one resolution) in two files: the first file's stands
    twice = [_rec("k", "b.tar", 0, sha256="h"), _rec("k", "a.tar", 3, sha256="h")]
    assert [r.state for r in stages.resolve_exact_duplicates(twice)] == [DUPLICATE, PENDING]


def test_exact_dedup_result_does_not_depend_on_input_order():
    recs = [_rec(k, width=w, height=5, sha256="h") for k, w in [("q", 5), ("p", 5), ("r", 6)]]
    a = stages.resolve_exact_duplicates(recs)
    b = stages.resolve_exact_duplicates(list(reversed(recs)))
    assert sorted((r.key, r.state) for r in a) == sorted((r.key, r.state) for r in b)


class _Twice:
    """Values that can be read twice and are made anew each time (as a GroupByKey's
    values on a distributed runner: decoded again, never held), counting the reads."""

    def __init__(self, make):
        self.make, self.reads = make, 0

    def __iter__(self):
        self.reads += 1
        return iter(self.make())


def test_a_hot_group_is_read_twice_not_held():
    # a crawl's placeholder image shared by many samples, a key column that is constant:
    # the group is read twice and its records are not listed; a one-shot iterator works too
    group = _Twice(
        lambda: (_rec(f"k{i}", index=i, sha256="h", width=9, height=9) for i in range(50))
    )
    out = stages.resolve_exact_duplicates(group)
    first = next(out)
    assert group.reads == 2 and (first.key, first.state) == ("k0", PENDING)
    rest = list(out)
    assert len(rest) == 49 and {r.duplicate_of for r in rest} == {"k0"}
    keys = _Twice(lambda: (_rec("k", "t.csv", i) for i in range(50, 0, -1)))
    out = list(stages.resolve_duplicate_keys(keys))
    assert keys.reads == 2 and [r.index for r in out if r.state == PENDING] == [1]
    once = stages.resolve_exact_duplicates(iter([_rec("b", sha256="h"), _rec("a", sha256="h")]))
    assert [(r.key, r.state) for r in once] == [("b", DUPLICATE), ("a", PENDING)]


def _filters(entries):
    return [build_filter(c) for c in validate_config({"filters": entries}).filters]


def test_first_filter_in_config_order_names_the_state_and_all_scores_are_kept():
    flts = _filters(
        [
            {"name": "caption_terms", "terms": ["cat"]},
            {"name": "image_quality", "min_side": 100},
        ]
    )
    from mitigate.filters import ScoringItem

    rec = _rec("k", caption="a cat", width=50, height=50, n_bytes=10)
    (out,) = stages.score_and_decide([ScoringItem(rec, None)], flts)
    assert (out.state, out.reason, out.filter) == (FILTERED, "caption_term_match", "caption_terms")
    assert set(out.scores) == {"caption_terms", "image_quality"}
    flipped = stages.decide(out, list(reversed(flts)))  # re-decided from stored scores
    assert (flipped.reason, flipped.filter, flipped.threshold) == (
        "image_too_small",
        "image_quality",
        100,
    )


def test_errors_are_not_scored_or_overridden():
    flts = _filters([{"name": "caption_terms", "terms": ["cat"]}])
    from mitigate.filters import ScoringItem

    bad = _rec("k", caption="cat").with_error("decode_error", "x")
    (out,) = stages.score_and_decide([ScoringItem(bad, None)], flts)
    assert (out.state, out.reason, out.scores) == (ERROR, "decode_error", {})


def test_finalize_only_promotes_pending():
    assert stages.finalize(_rec("a")).state == KEPT
    err = _rec("b").with_error("decode_error", "x")
    assert stages.finalize(err).state == ERROR


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_load_payloads_reads_tar_and_table_samples_and_reports_missing_files(tmp_path, photos):
    from mitigate.sources import index_tar

    jpg = next(iter(photos.values()))
    shard = tmp_path / "s.tar"
    shard.write_bytes(_tar([("k.jpg", jpg), ("k.txt", b"cap")]))
    (tar_rec,) = index_tar(open(shard, "rb"), str(shard), max_image_bytes=10**7)
    (tmp_path / "i.jpg").write_bytes(jpg)
    table_ok = _rec("t1", image_path=str(tmp_path / "i.jpg"), caption="c")
    table_missing = _rec("t2", image_path=str(tmp_path / "nope.jpg"), caption="c")
    out = stages.load_payloads([tar_rec, table_ok, table_missing], lambda p: open(p, "rb"), 10**7)
    assert [(r.key, r.state, data == jpg) for r, data in out] == [
        ("k", PENDING, True),
        ("t1", PENDING, True),
        ("t2", ERROR, False),
    ]
    assert out[0][0].caption == "cap"
    assert out[2][0].reason == "missing_image"
    too_big = stages.load_payloads([table_ok], lambda p: open(p, "rb"), 100)
    assert too_big[0][0].reason == "image_too_large"


def test_conservation_check_catches_lost_and_double_counted_samples():
    recs = [_rec("a", state=KEPT), _rec("b", state=ERROR, reason="decode_error")]
    counts = count_states(recs)
    assert counts == {"kept": 1, "error": 1, "error/decode_error": 1}
    assert check_conservation(2, counts, 2) == []
    assert check_conservation(3, counts, 2)  # a sample lost
    assert check_conservation(2, counts, 3)  # a manifest row too many
    assert check_conservation(2, {**counts, "pending": 1}, 2)  # non-final state


@pytest.mark.parametrize("mode", ["fast", "exact"])
def test_compute_signals_fills_every_signal(photos, mode):
    from mitigate.config import DecodeConfig

    jpg = next(iter(photos.values()))
    (item,) = stages.compute_signals([(_rec("k", caption="c"), jpg)], DecodeConfig(hash_mode=mode))
    r = item.record
    assert r.n_bytes == len(jpg) and len(r.sha256) == 64
    assert len(r.phash) == 16 and len(r.phash_mirror) == 16 and r.width > 0 and r.height > 0
    assert item.image is not None and item.image.mode == "RGB"


def test_reopen_clears_every_decision_and_keeps_the_signals():
    done = SampleRecord(
        "k",
        "s",
        0,
        scores={"nsfw": 0.1},
        state="kept",
        verify_score=1.7,
        weight=2.0,
        copies=2,
    )
    again = stages.reopen(done)
    assert again.state == "pending" and again.scores == {"nsfw": 0.1}
    # near-dedup sets verify_score again among the new survivors; a stale one would
    # make redecide differ from a fresh run
    assert again.verify_score is None and again.weight is None and again.copies is None
    failed = SampleRecord("e", "s", 1, state="error", reason="decode_error")
    assert stages.reopen(failed) is failed
