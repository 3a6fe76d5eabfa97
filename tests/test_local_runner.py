"""The local runner is Beam's DirectRunner pinned to the FnApiRunner: it never tries
Prism (which the stock DirectRunner does, downloading a binary where it can)."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.runners.portability import prism_runner
from apache_beam.testing.util import assert_that, equal_to

from mitigate.config import RunnerConfig
from mitigate.runners import pipeline_options


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
