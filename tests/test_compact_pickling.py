"""Records, hash items and decisions pickle as their field values, not a dict of names
(``mitigate.records.compact_pickling``): every field survives Beam's coder and pickle,
copies stay independent, and the bytes carry no field name."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import numpy as np
import pytest
from apache_beam.coders.typecoders import registry

from mitigate.near import Decision, HashItem
from mitigate.records import KEPT, Member, SampleRecord, compact_pickling


def _every_field_set() -> SampleRecord:
    """A record whose every field differs from its default (so a field dropped or
    swapped by the pickling shows as inequality)."""
    return SampleRecord(
        key="k-ü-0001",
        source="gs://bucket/shard-00007.tar",
        index=41,
        members=(Member("jpg", 512, 86511), Member("txt", 87552, 7)),
        image_path="images/ü.jpg",
        image_ext="jpg",
        image_column="image",
        caption="A frog on a léaf.",
        other_captions=(("text", "a frog"),),
        row_fields='{"url": "https://example.com/f.jpg"}',
        n_bytes=86511,
        width=876,
        height=1024,
        format="JPEG",
        quality=87,
        sha256="71" * 32,
        phash="be9f8148c8e4c6b3",
        phash_mirror="ebcac01d9d3192e6",
        signature=bytes(range(256)) * 9,
        phash_centre="bf93b049b86db02ceac6e40cad38e578",
        scores={"nsfw": 0.25, "caption_terms": 0.0},
        score_info={"caption_terms": "matched: none"},
        embeddings={"nsfw": np.arange(8, dtype=np.float32)},
        state=KEPT,
        reason="some_reason",
        detail="some detail",
        filter="nsfw",
        threshold=0.3,
        duplicate_of="k-0002",
        distance=3,
        verify_score=0.125,
        weight=1.5,
        copies=2,
    )


def _same(a: SampleRecord, b: SampleRecord) -> None:
    for f in dataclasses.fields(SampleRecord):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "embeddings":
            assert x.keys() == y.keys()
            for name in x:
                np.testing.assert_array_equal(x[name], y[name])
                assert x[name].dtype == y[name].dtype
        else:
            assert x == y, f.name
            assert type(x) is type(y), f.name


def test_every_default_differs_in_the_test_record():
    record, plain = _every_field_set(), SampleRecord(key="", source="", index=0)
    for f in dataclasses.fields(SampleRecord):
        if f.name not in ("key", "source", "index"):
            assert getattr(record, f.name) != getattr(plain, f.name) or f.name == "embeddings"


@pytest.mark.parametrize("protocol", [2, 4, pickle.HIGHEST_PROTOCOL])
def test_a_record_with_every_field_set_round_trips_through_pickle(protocol):
    record = _every_field_set()
    _same(pickle.loads(pickle.dumps(record, protocol)), record)


def test_records_items_and_decisions_round_trip_through_beams_coder():
    record = _every_field_set()
    item = HashItem("k", "be9f8148c8e4c6b3", "ebcac01d9d3192e6", 876 * 1024, b"\x01\x02", "ab" * 16)
    decision = Decision("k", "near_duplicate", "j", 4, 0.0625)
    for value in (
        record,
        item,
        decision,
        Member("jpg", 1, 2),
        HashItem("k", "0" * 16, "1" * 16, 0),
    ):
        coder = registry.get_coder(type(value))
        back = coder.decode(coder.encode(value))
        assert type(back) is type(value)
        if isinstance(value, SampleRecord):
            _same(back, value)
        else:
            assert back == value


def test_the_pickle_carries_no_field_name_and_is_smaller_than_the_default():
    record = dataclasses.replace(_every_field_set(), signature=None, embeddings={})
    compact = pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
    for name in ("phash_mirror", "score_info", "duplicate_of", "verify_score", "offset"):
        assert name.encode() not in compact
    # what pickle's default for a dataclass holds: the class and a dict of names and values
    default = pickle.dumps((SampleRecord, vars(record)), pickle.HIGHEST_PROTOCOL)
    assert b"phash_mirror" in default
    assert len(compact) < 0.75 * len(default)


def test_copies_stay_independent():
    record = _every_field_set()
    deep = copy.deepcopy(record)
    _same(deep, record)
    deep.scores["nsfw"] = 0.9
    deep.embeddings["nsfw"][0] = 100.0
    assert record.scores["nsfw"] == 0.25 and record.embeddings["nsfw"][0] == 0.0
    shallow = copy.copy(record)
    assert shallow is not record
    _same(shallow, record)


def test_a_dataclass_with_a_field_outside_init_is_refused():
    @dataclasses.dataclass
    class Derived:
        a: int
        b: int = dataclasses.field(init=False, default=0)

    with pytest.raises(TypeError, match="every field in __init__"):
        compact_pickling(Derived)
