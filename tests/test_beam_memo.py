"""The memos of Beam's DoFn introspection and options views (runners/beam_memo.py)."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.testing.util import assert_that
from apache_beam.transforms import userstate
from apache_beam.transforms.core import CallableWrapperDoFn
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer

from mitigate.pipeline import build  # noqa: F401  (installs the memo, as a run does)
from mitigate.runners import beam_memo
from mitigate.runners.local import LocalRunner

COUNT = ReadModifyWriteStateSpec("count", VarIntCoder())
FLUSH = TimerSpec("flush", beam.TimeDomain.WATERMARK)
COUNT_PARAM = beam.DoFn.StateParam(COUNT)
FLUSH_PARAM = beam.DoFn.TimerParam(FLUSH)


class Plain(beam.DoFn):
    def process(self, element):
        yield element


class Counting(beam.DoFn):
    def process(self, element, count=COUNT_PARAM):
        n = (count.read() or 0) + 1
        count.write(n)
        yield element[0], n


class WithTimer(beam.DoFn):
    def process(self, element, flush=FLUSH_PARAM):
        yield element

    @on_timer(FLUSH)
    def on_flush(self):
        return []


class Duplicated(beam.DoFn):
    def process(self, element, a=COUNT_PARAM, b=COUNT_PARAM):
        yield element


class Helper:
    def method(self, element, count=COUNT_PARAM):
        return [element]


def test_installed_by_the_graph_module():
    assert userstate.get_dofn_specs is beam_memo.get_dofn_specs


@pytest.mark.parametrize(
    "dofn",
    [Plain(), Counting(), WithTimer(), CallableWrapperDoFn(lambda x: x)],
    ids=["plain", "state", "timer", "map"],
)
def test_same_answer_as_beam(dofn):
    assert beam_memo.get_dofn_specs(dofn) == beam_memo._ORIGINAL(dofn)
    assert beam_memo.get_dofn_specs(dofn) == beam_memo._ORIGINAL(dofn)  # memoised
    assert userstate.is_stateful_dofn(dofn) == bool(sum(map(len, beam_memo._ORIGINAL(dofn))))


def test_state_and_timers_are_seen_through_the_memo():
    state, timers = beam_memo.get_dofn_specs(Counting())
    assert state == {COUNT} and not timers
    state, timers = beam_memo.get_dofn_specs(WithTimer())
    assert timers == {FLUSH} and not state
    assert userstate.is_stateful_dofn(Counting()) and not userstate.is_stateful_dofn(Plain())


def test_computed_once_per_class(monkeypatch):
    calls = []
    original = beam_memo._ORIGINAL

    def counting(dofn):
        calls.append(type(dofn).__name__)
        return original(dofn)

    monkeypatch.setattr(beam_memo, "_ORIGINAL", counting)
    monkeypatch.setattr(beam_memo, "_MEMO", {})
    for _ in range(5):
        beam_memo.get_dofn_specs(Plain())
        beam_memo.get_dofn_specs(Counting())
    assert sorted(calls) == ["Counting", "Plain"]


def test_returned_sets_are_fresh():
    first, _ = beam_memo.get_dofn_specs(Counting())
    first.clear()
    assert beam_memo.get_dofn_specs(Counting())[0] == {COUNT}


def test_map_of_a_bound_method_is_not_memoised():
    # Beam reads a Map's signature through the instance's _inspect_process hook
    dofn = CallableWrapperDoFn(Helper().method)
    assert beam_memo.memo_key(dofn) is None
    assert beam_memo.get_dofn_specs(dofn) == ({COUNT}, set())


def test_class_with_getattr_is_not_memoised():
    class Dynamic(beam.DoFn):
        def __getattr__(self, name):
            raise AttributeError(name)

        def process(self, element):
            yield element

    assert beam_memo.memo_key(Dynamic()) is None


def test_errors_are_raised_every_time():
    for _ in range(2):
        with pytest.raises(ValueError, match="duplicate"):
            beam_memo.get_dofn_specs(Duplicated())


def test_stateful_pipeline_still_runs_with_state():
    with beam.Pipeline(runner=LocalRunner()) as p:
        out = (
            p
            | beam.Create([("a", 1), ("a", 2), ("b", 3)])
            | beam.ParDo(Counting())
            | beam.combiners.ToList()
        )

        def check(got):
            assert sorted(got[0]) == [("a", 1), ("a", 2), ("b", 1)]

        assert_that(out, check)


def test_options_views_are_reused_and_share_the_options():
    from apache_beam.options.pipeline_options import (
        DirectOptions,
        PipelineOptions,
        StandardOptions,
        TypeOptions,
    )

    assert PipelineOptions.view_as is beam_memo.view_as
    options = PipelineOptions(["--runner=mitigate.runners.local.LocalRunner"])
    view = options.view_as(StandardOptions)
    assert options.view_as(StandardOptions) is view
    assert view.runner == "mitigate.runners.local.LocalRunner"
    assert options.view_as(DirectOptions).direct_num_workers == 1  # Beam's default
    # a write through a view reaches the options and every other view of them
    options.view_as(TypeOptions).pipeline_type_check = False
    assert options.view_as(TypeOptions).pipeline_type_check is False
    assert options.get_all_options()["pipeline_type_check"] is False
    view.streaming = True
    assert options.get_all_options()["streaming"] is True
    # other options objects get their own views and values
    other = PipelineOptions(["--direct_num_workers=3"])
    assert other.view_as(StandardOptions) is not view
    assert other.view_as(DirectOptions).direct_num_workers == 3
    assert other.view_as(StandardOptions).streaming is False


def test_options_view_is_made_again_when_the_option_dict_is_replaced():
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions([])
    view = options.view_as(StandardOptions)
    options._all_options = {}
    fresh = options.view_as(StandardOptions)
    assert fresh is not view and fresh._all_options is options._all_options
    assert fresh.streaming is False
