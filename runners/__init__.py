"""Turn the validated ``runner:`` section of a config into Beam pipeline options.

* ``direct``: Beam's local runner (FnApiRunner), in-process, multi-threaded or
  multi-process, pinned so that it never switches to Prism (:mod:`.local`);
* ``portable``: any Beam job service over the portability (gRPC) API, e.g. Beam's own
  Python job service with an external worker pool;
* ``flink`` / ``spark``: the portable runner pointed at a team's Flink or Spark Beam job
  server (``job_endpoint``); nothing is downloaded at start;
* ``dataflow``: Google Cloud Dataflow, with this package staged for the workers;
  ``dry_run`` builds the job offline and submits nothing;
* ``dask``: Beam's Dask runner on a running ``distributed`` scheduler.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mitigate.config import ConfigError, RunnerConfig

log = logging.getLogger(__name__)

# What ``--runner`` names for a local run (runners/local.py; Beam imports the class
# from this dotted path, so naming it here keeps Beam out of `validate`).
LOCAL_RUNNER = "mitigate.runners.local.LocalRunner"

if TYPE_CHECKING:  # Beam is imported when options are built, not by `validate`
    from apache_beam.options.pipeline_options import PipelineOptions

DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"


def runner_args(runner: RunnerConfig) -> list[str]:
    """The Beam command-line flags for ``runner``."""
    r = runner
    if r.name == "direct":
        return [
            f"--runner={LOCAL_RUNNER}",
            f"--direct_num_workers={r.local_workers()}",
            f"--direct_running_mode={r.local_running_mode()}",
        ]
    if r.name in ("portable", "flink", "spark"):
        args = ["--runner=PortableRunner", f"--job_endpoint={r.job_endpoint}"]
        if r.environment_type:
            args.append(f"--environment_type={r.environment_type}")
        if r.environment_config:
            args.append(f"--environment_config={r.environment_config}")
        return args
    if r.name == "dataflow":
        args = [
            "--runner=DataflowRunner",
            f"--project={r.project}",
            f"--region={r.region}",
            f"--temp_location={r.temp_location}",
        ]
        optional = {
            "staging_location": r.staging_location,
            "machine_type": r.machine_type,
            "num_workers": r.num_workers,
            "max_num_workers": r.max_num_workers,
            "autoscaling_algorithm": r.autoscaling_algorithm,
            "sdk_container_image": r.sdk_container_image,
            "requirements_file": r.requirements_file,
        }
        args += [f"--{k}={v}" for k, v in optional.items() if v is not None]
        args += [f"--extra_package={p}" for p in r.extra_packages]
        if r.dry_run:
            # Offline: stage the requirements file itself instead of downloading every
            # package into a local cache first.
            args += ["--dry_run=True", "--requirements_cache=skip"]
        return args
    if r.name == "dask":
        return [f"--runner={DASK_RUNNER}", f"--dask_client_address={r.dask_address}"]
    raise ValueError(f"unsupported runner {r.name!r}")  # pragma: no cover - config forbids


def pipeline_options(runner: RunnerConfig, extra_args: list[str] | None = None) -> PipelineOptions:
    """Beam options for ``runner``; ``extra_args`` (raw Beam flags) come last, so an
    explicit flag on the command line wins over the config."""
    from apache_beam.options.pipeline_options import PipelineOptions

    options = PipelineOptions(runner_args(runner) + list(extra_args or []))
    if extra_args:
        # Beam drops the flags it does not know with a warning that is hidden unless -vv
        # (`-- --set filters=[]` ran the default filters without a word)
        known = options.get_all_options()
        unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
        given = {a.lstrip("-").split("=", 1)[0] for a in extra_args if a.startswith("--")}
        ours = [n for n in unknown if n in _OUR_OPTIONS]
        if ours:
            raise ConfigError(
                [
                    "after `--`: " + ", ".join(f"--{name}" for name in ours) + " is mitigate's "
                    "option, not Beam's: put it before `--` (Beam would drop it without a word)"
                ]
            )
        # a runner's own options (Dask's) are known once its module is loaded: a warning
        for name in (n for n in unknown if n in given):
            log.warning("Apache Beam knows no option --%s: it is ignored", name)
    return options


#: mitigate's own command-line options, which Beam drops when they follow `--`.
_OUR_OPTIONS = frozenset(
    {"set", "input", "output", "config", "overwrite", "force", "runner", "dry_run", "from"}
)
