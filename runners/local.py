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

Prism is not offered as ``runner.name``: it needs a Prism binary that is not on
PyPI, so it cannot be tested here offline (see the README, "Runners").
"""

from __future__ import annotations

from typing import Any

from apache_beam.runners.direct.direct_runner import SwitchingDirectRunner

from mitigate.runners import LOCAL_RUNNER  # what ``--runner`` names

__all__ = ["LOCAL_RUNNER", "LocalRunner"]


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
        return super().run_pipeline(pipeline, options)
