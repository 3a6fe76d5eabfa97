"""A SampleRecord pickles as its field values in order (``records.SampleRecord.__reduce__``):
every field comes back exactly, through pickle and through Beam's FastPrimitivesCoder,
which falls back to pickle for records on every runner, and in fewer bytes."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle

import numpy as np
from apache_beam.coders import coders
from hypothesis import given, settings
from hypothesis import strategies as st

from mitigate.records import FINAL_STATES, PENDING, Member, SampleRecord

text = st.text(max_size=30)
maybe_text = st.none() | text
maybe_int = st.none() | st.integers(-(2**62), 2**62)
maybe_float = st.none() | st.floats(allow_nan=True, allow_infinity=True)
embedding = st.lists(st.floats(width=16, allow_nan=False), min_size=0, max_size=8).map(
    lambda v: np.asarray(v, dtype=np.float16)
)

records = st.builds(
    SampleRecord,
    key=text,
    source=text,
    index=st.integers(0, 2**40),
    members=st.lists(
        st.builds(Member, ext=text, offset=st.integers(0, 2**50), size=st.integers(0, 2**40)),
        max_size=4,
    ).map(tuple),
    image_path=maybe_text,
    image_ext=maybe_text,
    caption=maybe_text,
    n_bytes=maybe_int,
    width=maybe_int,
    height=maybe_int,
    format=maybe_text,
    sha256=maybe_text,
    phash=maybe_text,
    phash_mirror=maybe_text,
    signature=st.none() | st.binary(max_size=64),
    phash_centre=maybe_text,
    scores=st.dictionaries(text, st.floats(allow_nan=True), max_size=4),
    score_info=st.dictionaries(text, text, max_size=3),
    embeddings=st.dictionaries(text, embedding, max_size=2),
    state=st.sampled_from((PENDING, *FINAL_STATES)),
    reason=maybe_text,
    detail=maybe_text,
    filter=maybe_text,
    threshold=maybe_float,
    duplicate_of=maybe_text,
    distance=maybe_int,
    verify_score=maybe_float,
    weight=maybe_float,
    copies=maybe_int,
)


def _same(a: object, b: object) -> bool:
    """Equal, NaN equal to NaN, arrays equal in dtype and values."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _assert_same_record(got: SampleRecord, want: SampleRecord) -> None:
    assert type(got) is SampleRecord
    assert list(vars(got)) == [f.name for f in dataclasses.fields(SampleRecord)]
    for f in dataclasses.fields(SampleRecord):
        assert _same(getattr(got, f.name), getattr(want, f.name)), f.name


@settings(max_examples=300, deadline=None)
@given(records)
def test_every_field_round_trips_through_pickle_and_beams_coder(record: SampleRecord) -> None:
    coder = coders.FastPrimitivesCoder()
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        _assert_same_record(pickle.loads(pickle.dumps(record, protocol)), record)
    _assert_same_record(coder.decode(coder.encode(record)), record)
    # inside the containers Beam wraps records in (keyed, grouped, chunks)
    key, (again,) = coder.decode(coder.encode((record.key, [record])))
    assert key == record.key
    _assert_same_record(again, record)
    # copies are as shallow / deep as before
    shallow = copy.copy(record)
    _assert_same_record(shallow, record)
    assert shallow.scores is record.scores
    deep = copy.deepcopy(record)
    _assert_same_record(deep, record)
    assert deep.scores is not record.scores


def test_a_record_pickles_without_its_field_names() -> None:
    record = SampleRecord(
        key="000123",
        source="/data/shard-00001.tar",
        index=17,
        members=(Member("jpg", 1536, 84000), Member("txt", 86016, 40)),
        image_ext="jpg",
        caption="a red apple",
        sha256="ab" * 32,
        phash="0123456789abcdef",
        phash_mirror="fedcba9876543210",
        scores={"image_quality": 1.33},
        state="kept",
        weight=1.0,
    )
    data = pickle.dumps(record, pickle.HIGHEST_PROTOCOL)
    assert b"duplicate_of" not in data and b"verify_score" not in data
    # the default pickle of the same fields, by name (copyreg's state dict)
    by_name = pickle.dumps((SampleRecord, vars(record)), pickle.HIGHEST_PROTOCOL)
    assert len(data) < 0.75 * len(by_name)
