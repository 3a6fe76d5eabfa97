"""The local runner: Beam's DirectRunner pinned to the engines this project tests.

Beam's ``DirectRunner`` (``SwitchingDirectRunner``) first tries the Prism runner for
any pipeline Prism supports: it downloads a Prism binary from GitHub, starts it, and
falls back to the FnApiRunner (or the BundleBasedDirectRunner) only when that fails.
Where GitHub is reachable a run could therefore execute on a runner the project never
tested; where it is not, every run pays for the failed attempt. :class:`LocalRunner`
keeps Beam's own choice between the FnApiRunner (batch pipelines, every pipeline of
this project) and the BundleBasedDirectRunner, and never tries Prism.

Beam also round-trips a pipeline through its runner-API protos before running it
(``Pipeline._run_internal``), a portability self-test it skips for batch pipelines on a
runner whose class is named ``SwitchingDirectRunner``: a subclass under another name
paid for it on every run (~1 s of CPU for the default graph, fixed; BENCHMARKS.md, issue
14). :meth:`LocalRunner.is_fnapi_compatible` says what Beam assumes for its own class.

Each bundle's end waits for Beam's state sampler thread to wake and see it stopped
(``StateSampler.stop`` joins it); the thread sleeps up to 200 ms at a time once a bundle
has run ~1 s, and the FnApiRunner runs each stage as one bundle, one after another: ~0.6
s of a 6,400-sample run was that wait. :func:`short_state_sampling` makes it sleep at
most :data:`SAMPLING_PERIOD_MS` (BENCHMARKS.md, issue 14, session 19).

Prism is not offered as ``runner.name``: it needs a Prism binary that is not on
PyPI, so it cannot be tested here offline (see the README, "Runners").
"""

from __future__ import annotations

from typing import Any

from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner
from apache_beam.runners.worker import statesampler

from mitigate.runners import LOCAL_RUNNER  # what ``--runner`` names

__all__ = ["LOCAL_RUNNER", "SAMPLING_PERIOD_MS", "LocalRunner", "short_state_sampling"]

SAMPLING_PERIOD_MS: int = 10
"""The longest sleep of a local run's state sampler threads (Beam's default: 200 ms).
Each wakes to add the time since its last wake to the current step's counter: at 10 ms,
100 wakes a second of a few instructions each, without the GIL."""


def short_state_sampling() -> None:
    """Make the state samplers built in this process (one a bundle, by Beam's
    ``BundleProcessor``) sleep at most :data:`SAMPLING_PERIOD_MS`, so a bundle's end
    waits at most that long for its sampler (idempotent; where Beam's sampler takes no
    such argument, nothing changes)."""
    init = statesampler.StateSampler.__init__
    defaults = getattr(init, "__defaults__", None)
    if defaults is not None and len(defaults) == 1 and isinstance(defaults[0], int):
        init.__defaults__ = (SAMPLING_PERIOD_MS,)


class LocalRunner(SwitchingDirectRunner):
    """``SwitchingDirectRunner`` without the Prism attempt."""

    def is_fnapi_compatible(self) -> bool:
        # Read by Beam only in Pipeline._run_internal, to skip the runner-API round trip
        # as it does for SwitchingDirectRunner (batch: the FnApiRunner, which translates
        # the pipeline to protos itself). This project builds batch pipelines only.
        return True

    def run_pipeline(self, pipeline: Any, options: Any) -> Any:
        # Beam skips Prism for interactive pipelines, and uses this flag for nothing
        # else in run_pipeline (apache_beam/runners/direct/direct_runner.py); the test
        # suite checks that Prism is never constructed.
        self._is_interactive = True
        short_state_sampling()  # the bundle processors are built in this process
        return super().run_pipeline(pipeline, options)
