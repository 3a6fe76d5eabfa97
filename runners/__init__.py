"""Turn the validated ``runner:`` section of a config into Beam pipeline options.

Only the DirectRunner is wired up so far (in-process, multi-threaded or
multi-process); distributed runners arrive with their own option sections.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from mitigate.config import RunnerConfig


def pipeline_options(runner: RunnerConfig, extra_args: list[str] | None = None) -> PipelineOptions:
    """Beam options for ``runner``; ``extra_args`` (raw Beam flags) come last, so an
    explicit flag on the command line wins over the config."""
    args: list[str] = []
    if runner.name == "direct":
        args += [
            "--runner=DirectRunner",
            f"--direct_num_workers={runner.direct_num_workers}",
            f"--direct_running_mode={runner.direct_running_mode}",
        ]
    else:  # pragma: no cover - the config model admits only the names handled above
        raise ValueError(f"unsupported runner {runner.name!r}")
    return PipelineOptions(args + list(extra_args or []))
