"""Local runs (issue 14): the runner is Beam's DirectRunner pinned to the FnApiRunner
and never tries Prism (which the stock DirectRunner does, downloading a binary where it
can); `auto` workers; work cut so that workers get equal shares; per-element costs that
grew with the sample (the fit-sample combiner)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.runners.portability import prism_runner
from apache_beam.testing.util import assert_that, equal_to

from mitigate.config import ConfigError, RunnerConfig, validate_config
from mitigate.pipeline.build import CHUNKS, IndexSource
from mitigate.runners import pipeline_options
from mitigate.runners.local import LocalRunner
from mitigate.stages import balanced_chunks


@pytest.fixture
def prism_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every attempt to run on Prism, which fails at once (as it does offline)."""
    attempts: list[str] = []

    def refuse(self, pipeline, options):
        attempts.append("prism")
        raise RuntimeError("no Prism here")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    return attempts


def _squares(options: beam.options.pipeline_options.PipelineOptions) -> None:
    with beam.Pipeline(options=options) as p:
        out = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * x)
        assert_that(out, equal_to([1, 4, 9]))


def test_stock_direct_runner_tries_prism_first(prism_attempts: list[str]) -> None:
    # The behaviour the pin exists for: without it, Beam hands the pipeline to Prism.
    _squares(beam.options.pipeline_options.PipelineOptions(["--runner=DirectRunner"]))
    assert prism_attempts == ["prism"]


@pytest.mark.parametrize("workers", [1, 2])
def test_local_runner_never_tries_prism(prism_attempts: list[str], workers: int) -> None:
    runner = RunnerConfig(direct_num_workers=workers, direct_running_mode="multi_threading")
    options = pipeline_options(runner)
    assert options.get_all_options()["runner"] == "mitigate.runners.local.LocalRunner"
    _squares(options)
    assert prism_attempts == []


def test_local_runner_skips_the_runner_api_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    # Beam skips its portability self-test (pipeline -> protos -> pipeline) for batch
    # pipelines on its own SwitchingDirectRunner; the pinned subclass must too (a fixed
    # cost of every run otherwise).
    rebuilt: list[str] = []
    original = beam.Pipeline.from_runner_api

    def recording(*args, **kwargs):
        rebuilt.append("round trip")
        return original(*args, **kwargs)

    monkeypatch.setattr(beam.Pipeline, "from_runner_api", staticmethod(recording))
    _squares(pipeline_options(RunnerConfig()))
    assert rebuilt == []
    # the check can fail: a runner Beam does not exempt makes the round trip
    options = pipeline_options(RunnerConfig())
    with beam.Pipeline(runner=_NotExempt(), options=options) as p:
        assert_that(p | beam.Create([1, 2]) | beam.Map(lambda x: x + 1), equal_to([2, 3]))
    assert rebuilt == ["round trip"]


def test_a_local_runs_bundles_wait_for_their_state_sampler_at_most_the_short_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Beam's sampler sleeps up to 200 ms between wakes and a bundle's end joins it: each
    # stage of a local run (one bundle) waited up to that long, idle
    import time

    from apache_beam.runners.worker import statesampler
    from apache_beam.utils.counters import CounterFactory

    from mitigate.runners import local

    init = statesampler.StateSampler.__init__
    monkeypatch.setattr(init, "__defaults__", (statesampler.DEFAULT_SAMPLING_PERIOD_MS,))
    assert statesampler.StateSampler("x", CounterFactory()).sampling_period_ms == 200
    with beam.Pipeline(runner=LocalRunner()) as p:
        assert_that(p | beam.Create([1, 2]) | beam.Map(lambda x: x + 1), equal_to([2, 3]))
    sampler = statesampler.StateSampler("x", CounterFactory())
    assert sampler.sampling_period_ms == local.SAMPLING_PERIOD_MS == 10
    sampler.start()
    time.sleep(1.5)  # long enough for the sleeps to grow to their longest
    started = time.perf_counter()
    sampler.stop()
    assert time.perf_counter() - started < 0.1  # at most ~10 ms; 200 ms before
    local.short_state_sampling()  # idempotent
    assert init.__defaults__ == (local.SAMPLING_PERIOD_MS,)


class _NotExempt(LocalRunner):
    def is_fnapi_compatible(self) -> bool:
        return False


def test_auto_workers_are_one_beam_worker_decoding_on_every_core_and_more_leave_one_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mitigate import decode_pool
    from mitigate.config import DecodeConfig

    monkeypatch.setattr(decode_pool, "usable_cores", lambda: 6)
    auto = validate_config({"runner": {"direct_num_workers": "auto"}}).runner
    assert auto.local_workers() == 1
    flags = pipeline_options(auto).get_all_options()
    assert (flags["direct_num_workers"], flags["direct_running_mode"]) == (1, "in_memory")
    assert decode_pool.plan_processes(DecodeConfig(), auto)[0] == 6  # the cores decode
    six = RunnerConfig(direct_num_workers=6)
    assert six.local_running_mode() == "multi_threading"  # not 6 workers on one thread
    assert decode_pool.plan_processes(DecodeConfig(), six)[0] == 1
    procs = RunnerConfig(direct_num_workers=2, direct_running_mode="multi_processing")
    assert procs.local_running_mode() == "multi_processing"  # an explicit mode stands
    assert RunnerConfig().local_running_mode() == "in_memory"
    with pytest.raises(ConfigError, match=r"runner\.direct_num_workers"):
        validate_config({"runner": {"direct_num_workers": "many"}})


@pytest.mark.parametrize(
    ("n", "size", "sizes"),
    [(100, 32, [25, 25, 25, 25]), (64, 32, [32, 32]), (5, 32, [5]), (0, 32, []), (7, 3, [3, 2, 2])],
)
def test_balanced_chunks_keep_order_and_differ_by_at_most_one(n, size, sizes) -> None:
    records = list(range(n))
    chunks = balanced_chunks(records, size)
    assert [len(c) for c in chunks] == sizes
    assert [r for c in chunks for r in c] == records


def test_index_cuts_every_source_into_equal_chunks(tmp_path: Path) -> None:
    # 100 samples in chunks of at most 32: four of 25, not 32, 32, 32, 4 (the short
    # remainder always went to the same worker of two).
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(100):
            for ext, data in (("jpg", b"x"), ("txt", b"a caption")):
                info = tarfile.TarInfo(f"{i:04d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    config = validate_config({"input": {"paths": [str(shard)], "chunk_size": 32}})
    out = list(IndexSource.of(config).process((0, str(shard))))
    sizes = [len(chunk) for tag, (_, chunk) in out if tag == CHUNKS]
    assert sizes == [25, 25, 25, 25]
    keys = [r.key for tag, (_, chunk) in out if tag == CHUNKS for r in chunk]
    assert keys == [f"{i:04d}" for i in range(100)]


@pytest.mark.parametrize("n", [0, 1, 7, 50, 500])
def test_bottom_k_add_input_equals_the_merge_it_replaces(n: int) -> None:
    from mitigate import rebalance as rb
    from mitigate.pipeline.rebalance import BottomK

    combine = BottomK(n, seed=3)
    keys = [f"k{i % 211}" for i in range(300)]  # repeats: a key already in stays once
    fast, slow = combine.create_accumulator(), []
    for i, key in enumerate(keys):
        fast = combine.add_input(fast, (key, i))
        slow = rb.bottom_k_merge(slow, [(rb.key_hash64(key, 3), key, i)], n)
    assert fast == slow
    assert len(fast) == min(n, 211)
