"""Run a validated config: preflight checks, output preparation, the Beam run itself."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import apache_beam as beam
import yaml
from apache_beam.options.pipeline_options import PipelineOptions

from mitigate import __version__, console, decode_pool, kernels, output, progress
from mitigate.config import Config, ConfigError, dump_yaml
from mitigate.decode_pool import plan_processes
from mitigate.filters import ModelFilter, build_filter
from mitigate.filters.probe import LinearProbeConfig, is_head
from mitigate.layout import MANIFEST_PATTERN
from mitigate.pipeline import fs, outdir
from mitigate.pipeline.build import Layout, build, build_redecide
from mitigate.pipeline.preflight import preflight
from mitigate.runners import pipeline_options
from mitigate.sidecar import summary_bytes
from mitigate.sources import SourceIssue

log = logging.getLogger(__name__)
_PACKAGES = ("apache-beam", "pillow", "imagehash", "numpy", "scipy", "onnxruntime", "pyarrow")


def package_versions() -> dict[str, str]:
    out = {"mitigate": __version__}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def write_config(config: Config, layout: Layout) -> None:
    effective = config.effective()
    # --overwrite was this run's permission, not a setting to pass on: a redecide (whose
    # default config this file is) replaced an existing run in its --output unasked
    effective["output"]["overwrite"] = False
    text = (
        "# Effective config of this run: every default filled in, paths absolute.\n"
        "# Re-run with: mitigate run --config <this file>\n" + dump_yaml(effective)
    )
    fs.write_bytes(layout.config, text.encode())


def _staged(config: Config, work: Callable[[Config, Layout], None]) -> dict[str, Any]:
    """Run ``work`` into a staging folder under the output folder's lock, then swap
    the complete result in (see :mod:`mitigate.pipeline.outdir`). ``work`` gets the
    config pointed at the staging folder; config.yaml records the real output path."""
    out = config.output.path
    started = time.perf_counter()
    made = []  # the folders this run makes: the output and parents not there yet
    if "://" not in out:
        folder = os.path.abspath(out)
        while not os.path.exists(folder) and os.path.dirname(folder) != folder:
            made.append(folder)
            folder = os.path.dirname(folder)
    console.MADE_DIRS[:] = made  # and one interrupted (it ends the process at once)
    try:
        return _staged_in(config, work, out, started)
    except BaseException:
        for folder in made:  # a run that failed leaves no empty folder it made
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    finally:
        console.MADE_DIRS.clear()


def _staged_in(
    config: Config, work: Callable[[Config, Layout], None], out: str, started: float
) -> dict[str, Any]:
    """:func:`_staged`'s work under the output folder's lock."""
    with outdir.locked(out):
        outdir.recover(out)
        # Checked again under the lock: another run may have finished meanwhile.
        outdir.check_output(out, config.output.overwrite)
        staging = outdir.new_staging(out)
        layout = Layout(staging)
        try:
            write_config(config, layout)
            staged = config.model_copy(
                update={"output": config.output.model_copy(update={"path": staging})}
            )
            work(staged, layout)
            # signatures kept in files while the run lasted (pipeline/sigstore.py)
            fs.delete_tree(layout.signature_store)
            summary = _finish_summary(layout, config, time.perf_counter() - started)
            with console.uninterrupted():  # a Ctrl-C waits: never half a swap
                outdir.swap_in(out, staging)
        except BaseException:
            with contextlib.suppress(OSError):  # read-only since: the first error tells
                fs.delete_tree(staging)
            raise
    return summary


def run(
    config: Config,
    sources: list[str] | None = None,
    beam_args: list[str] | None = None,
) -> dict[str, Any]:
    """Run the pipeline to completion and return the summary (also in summary.json)."""
    if sources is None:
        sources = preflight(config)
    if config.runner.dry_run:
        return dry_run(config, sources, beam_args)
    options = pipeline_options(config.runner, beam_args)
    config = with_flags_in_force(config, options)
    # the decode workers boot on the other cores while this process builds and starts
    # the pipeline on one (a no-op where the CLI booted them before importing Beam)
    decode_pool.prestart_for(config, sources)
    try:
        header = _header(config, sources)
        header["runner_options"] = options_in_force(options)

        def work(staged: Config, layout: Layout) -> None:
            pipeline = _pipeline(options)
            build(pipeline, staged, sources, header)
            try:
                _execute(pipeline, config)
            finally:  # a small run's Decode may have turned them off in this process
                kernels.set_compiled(True)

        return _staged(config, work)
    finally:
        decode_pool.close_prestarted()  # booted, and taken by no pool


def _pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Beam pipeline whose temporary folder a Ctrl-C also removes
    (:func:`mitigate.console.interruptible`: it ends the process before ``run`` would)."""
    pipeline = beam.Pipeline(options=options)
    console.own_temp_dir(pipeline.local_tempdir)
    return pipeline


def with_flags_in_force(config: Config, options: PipelineOptions) -> Config:
    """``config`` with the local runner's worker flags that Beam flags on the command line
    (``mitigate run ... -- --direct_num_workers=2``) set over it, so that what depends on
    them sees them: ``decode.processes: auto`` starts no decode processes under several
    Beam workers (each would start its own: more processes than cores)."""
    if config.runner.name != "direct":
        return config
    in_force = options.get_all_options(drop_default=True)
    update = {
        name: in_force[name]
        for name in ("direct_num_workers", "direct_running_mode")
        if in_force.get(name) is not None and in_force[name] != getattr(config.runner, name)
    }
    if update.get("direct_num_workers") == 0:  # Beam: one worker per CPU
        import multiprocessing

        update["direct_num_workers"] = multiprocessing.cpu_count()
    if update.get("direct_num_workers") == 1 and config.runner.direct_num_workers == "auto":
        del update["direct_num_workers"]  # auto is one Beam worker: the same
    if not update:
        return config
    return config.model_copy(update={"runner": config.runner.model_copy(update=update)})


def options_in_force(options: PipelineOptions) -> dict[str, Any]:
    """The Beam options the run actually used (config and command-line flags merged),
    as JSON-safe values: what summary.json reports, not what the config asked for."""
    out = {}
    for name, value in sorted(options.get_all_options(drop_default=True).items()):
        if value is None or value == [] or name in ("pipeline_type_check",):
            continue
        out[name] = value if isinstance(value, bool | int | float | str) else repr(value)
    return out


def dry_run(
    config: Config, sources: list[str], beam_args: list[str] | None = None
) -> dict[str, Any]:
    """Build the Dataflow job offline and describe what would be submitted: the
    transform graph, the container image, the files staged for the workers. Nothing is
    submitted, read or written."""
    from apache_beam.portability.api import beam_runner_api_pb2 as pb

    pipeline = beam.Pipeline(options=pipeline_options(config.runner, beam_args))
    build(pipeline, config, sources, _header(config, sources))
    result = pipeline.run()
    job = result.job
    proto = job.proto_pipeline
    environments = []
    for env_id, env in sorted(proto.components.environments.items()):
        image = None
        if env.urn == "beam:env:docker:v1":
            image = pb.DockerPayload.FromString(env.payload).container_image
        staged = sorted(
            pb.ArtifactStagingToRolePayload.FromString(d.role_payload).staged_name
            for d in env.dependencies
        )
        environments.append({"id": env_id, "container_image": image, "staged_files": staged})
    names = sorted(t.unique_name for t in proto.components.transforms.values())
    return {
        "dry_run": True,
        "runner": config.runner.name,
        "job_name": job.proto.name,
        "project": config.runner.project,
        "region": config.runner.region,
        "transforms": len(names),
        "top_level_transforms": sorted({n.split("/")[0] for n in names}),
        "transform_names": names,
        "environments": environments,
        "inputs": sources,
        "output": config.output.path,
    }


def _execute(pipeline: beam.Pipeline, config: Config) -> None:
    """Run to completion; a dry run (Dataflow) only builds the job."""
    result = pipeline.run()
    if config.runner.dry_run:
        return
    _announce_job(config, result)
    state = result.wait_until_finish()
    client = getattr(result, "client", None)  # the Dask runner's distributed.Client
    if client is not None:
        client.close()
    if state not in (None, "DONE", beam.runners.runner.PipelineState.DONE):
        raise RuntimeError(f"pipeline ended in state {state}")


def _announce_job(config: Config, result: Any) -> None:
    """Where to watch a cloud job: the Dataflow console page of the submitted job."""
    job_id = getattr(result, "job_id", None)
    if config.runner.name == "dataflow" and callable(job_id):
        url = progress.dataflow_console_url(
            config.runner.project or "", config.runner.region or "", job_id()
        )
        progress.announce(f"Dataflow job {job_id()}: {url}")


def _header(config: Config, sources: list[str]) -> dict[str, Any]:
    return {
        "config_sha256": config.digest(),
        "versions": package_versions(),
        "sources": len(sources),
        "filters": [f.filter_id for f in config.filters],
        "models": [
            flt.provenance()
            for flt in map(build_filter, config.filters)
            if isinstance(flt, ModelFilter) or is_head(flt)
        ],
    }


def _finish_summary(layout: Layout, config: Config, elapsed: float) -> dict[str, Any]:
    """Add wall time and throughput (known only to the driver) and the list of outputs
    to summary.json, then write the HTML report beside it."""
    summary = json.loads(fs.read_bytes(layout.summary))
    # What this run wrote (the report follows): all that a later --overwrite may delete.
    written = [n for n in outdir.OUTPUT_NAMES if fs.exists(fs.join(layout.root, n))]
    summary["outputs"] = sorted({*written, "report.html", outdir.SUMMARY})
    runner = config.runner.model_dump()
    in_force = summary.get("runner_options", {})
    for name in ("direct_num_workers", "direct_running_mode", "job_endpoint", "project"):
        if name in in_force:
            runner[name] = in_force[name]
    if config.runner.name == "direct":
        if "direct_num_workers" not in in_force:  # Beam's default (1) is not listed
            runner["direct_num_workers"] = config.runner.local_workers()
        runner["decode_processes"] = plan_processes(config.decode, config.runner)[0]
    summary["run"] = {
        "runner": runner,
        "wall_seconds": round(elapsed, 3),
        "samples_per_second": round(summary["input_count"] / elapsed, 2) if elapsed else None,
    }
    fs.write_bytes(layout.summary, summary_bytes(summary))
    try:
        write_html_report(layout.root, shown_as=config.output.path)
    except Exception as exc:
        # The report is a view of a complete output: its failure (a bug on unusual data,
        # memory on a huge run) must not discard the run, which is swapped in without it.
        log.warning(
            "report.html not written (%s: %s); the run's output is complete: write it "
            "later with `mitigate report %s`",
            type(exc).__name__,
            exc,
            config.output.path,
        )
        # (report.html stays in "outputs": the name is the run's, for `mitigate report`
        # to write and a later --overwrite to replace)
        summary["report_error"] = f"{type(exc).__name__}: {exc}"
        fs.write_bytes(layout.summary, summary_bytes(summary))
    return summary


def stored_run(path: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """What a finished run left: its summary, the filter ids with stored scores, and the
    input files its manifest refers to (sorted)."""
    import pyarrow.dataset as ds

    layout = Layout(path)
    if not fs.exists(layout.summary):
        raise ConfigError([f"--from: {path} holds no finished run (no summary.json)"])
    try:
        summary = json.loads(fs.read_bytes(layout.summary))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError([f"--from: {layout.summary}: not a run's summary ({exc})"]) from None
    if "://" not in path:
        from mitigate.review import manifest_parts
        from mitigate.runtable import PartedEmbeddings, RunTable

        try:  # every part there, and the rows the run wrote (else inputs left out)
            manifest_parts(path)
            index = RunTable.index(path)  # the parts' row counts, no column read
            for folder in sorted(Path(layout.embeddings).glob("*/")):  # copied to the output
                PartedEmbeddings(index, folder.name)  # each part's file there, whole
        except (FileNotFoundError, ValueError) as exc:
            raise ConfigError([f"--from: {exc}"]) from None
    dataset = ds.dataset(layout.manifest, format="parquet")
    missing = output.missing_columns(dataset.schema.names)
    if missing:  # its rows could not be rebuilt (a bare FileNotFoundError: '' before)
        raise ConfigError(
            [
                f"--from: {path}'s manifest has no column {', '.join(map(repr, missing))}: "
                "written by another version of mitigate; run `mitigate run` on its inputs"
            ]
        )
    stored = [c.removeprefix("score_") for c in dataset.schema.names if c.startswith("score_")]
    sources = sorted(set(dataset.to_table(columns=["source"]).column("source").to_pylist()))
    return summary, stored, sources


def redecide(config: Config, from_path: str, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Apply ``config``'s filters and thresholds to the stored scores of the run in
    ``from_path``, writing a complete new output (shards, manifest, summary) to
    ``config.output.path`` without running any model or decoding any image."""
    if fs.join(from_path, "") == fs.join(config.output.path, ""):
        raise ConfigError(["--output: must differ from --from (the source run is read)"])
    previous, stored, sources = stored_run(from_path)
    errors = [
        f"filters[{i}]: no stored scores for {f.filter_id!r} in {from_path} (stored: "
        f"{', '.join(stored) or 'none'}); re-run the pipeline to score with a new filter"
        for i, f in enumerate(config.filters)
        if f.filter_id not in stored and not isinstance(f, LinearProbeConfig)
    ]
    errors += _head_errors(config, from_path)
    errors += _signature_errors(config, from_path)
    errors += _fixed_settings(config, from_path)
    from mitigate.review import inside_input_folder

    folder = inside_input_folder(config.output.path, sources)
    if folder is not None:  # a later run of the folder reads it (helper-40)
        errors.append(
            f"output.path: {config.output.path} lies in the input folder {folder} of the run, "
            "whose every file is read as a sample's: choose an output outside it"
        )
    gone = [p for p in sources if "://" not in p and not os.path.exists(p)]
    if gone:  # found only when the shards were written, after all the work
        errors.append(
            f"--from: {len(gone)} of the run's {len(sources)} input file(s) are gone, e.g. "
            f"{', '.join(gone[:3])}: kept samples are copied from them; put them back "
            "where the run read them"
        )
    if errors:
        raise ConfigError(errors)
    outdir.check_output(config.output.path, config.output.overwrite)
    header = _header(config, sources)
    header["redecided_from"] = from_path
    header["models"] = _redecided_models(previous.get("models", []), header["models"])
    issues = [SourceIssue(**i) for i in previous.get("source_issues", [])]
    options = pipeline_options(config.runner, beam_args)
    config = with_flags_in_force(config, options)
    header["runner_options"] = options_in_force(options)
    parts = fs.files_in(Layout(from_path).manifest, MANIFEST_PATTERN)

    def work(staged: Config, layout: Layout) -> None:
        pipeline = _pipeline(options)
        build_redecide(pipeline, staged, from_path, parts, sources, header, stored, issues)
        _execute(pipeline, config)
        _copy_tree(Layout(from_path).embeddings, layout.embeddings)

    return _staged(config, work)


def _redecided_models(before: list[dict], now: list[dict]) -> list[dict]:
    """The models of a redecided run: the run's (their stored scores are used), each
    head of the config in place of the run's entry of that filter (a redecide of a
    redecided run listed the head twice: helper-40). A head whose file changed since
    the run is said so: it is scored anew, and a threshold calibrated on the run's
    scores was the old head's."""
    heads = [m for m in now if m.get("name") == "linear_probe"]
    by_filter = {m.get("filter"): m for m in before}
    for head in heads:
        old = by_filter.get(head.get("filter"))
        was, is_now = (old or {}).get("model_sha256"), head.get("model_sha256")
        if was and is_now and was != is_now:
            log.warning(
                "filter %r: its head %s changed since the run (sha256 %s... then, %s... "
                "now): it is scored anew from the stored embeddings; a threshold "
                "calibrated on the run's scores was the old head's",
                head.get("filter"),
                head.get("model_file"),
                was[:12],
                is_now[:12],
            )
    ids = {m.get("filter") for m in heads}
    return [m for m in before if m.get("filter") not in ids] + heads


#: Settings a redecide cannot apply: what the run read and how it decoded it (the
#: manifest holds the outcome). Set in a redecide, they went into its config.yaml and
#: changed nothing (helper-40: a caption over a lowered max_caption_bytes stayed kept).
FIXED_SETTINGS = {
    "input": (
        "paths",
        "format",
        "key_column",
        "image_column",
        "caption_column",
        "image_root",
        "key_prefix",
        "name_encoding",
    ),
    "decode": (
        "max_pixels",
        "max_image_bytes",
        "max_caption_bytes",
        "max_sidecar_bytes",
        "working_size",
        "hash_mode",
    ),
}


def _fixed_settings(config: Config, from_path: str) -> list[str]:
    """An error for each of :data:`FIXED_SETTINGS` that differs from the run's."""
    try:
        stored = yaml.safe_load(fs.read_bytes(Layout(from_path).config))
    except (OSError, yaml.YAMLError):
        return []  # stored_run and review.run_config name a damaged file
    if not isinstance(stored, dict):
        return []
    now = config.effective()
    out = []
    for section, names in FIXED_SETTINGS.items():
        before = stored.get(section) if isinstance(stored.get(section), dict) else {}
        for name in names:
            if name in before and before[name] != now[section][name]:
                out.append(
                    f"{section}.{name}: {now[section][name]!r}, the run's {before[name]!r}: "
                    "redecide re-decides the run's stored signals and cannot change what it "
                    "read or how it decoded it; `mitigate run` applies it"
                )
    return out


def _signature_errors(config: Config, from_path: str) -> list[str]:
    """With verification on, the run's stored signatures must be of this version: one of
    another (a run before the signature changed) is never scored against anything, so
    every candidate pair would merge on pHash alone, the look-alike merges verification
    exists to stop. One run writes one version, so its first stored signature decides."""
    if not (config.dedup.near and config.dedup.verify):
        return []
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from mitigate import verify

    dataset = ds.dataset(Layout(from_path).manifest, format="parquet")
    if "signature" not in dataset.schema.names:
        found = "no signatures (its manifest has no signature column)"
    else:
        first = dataset.head(1, columns=["signature"], filter=pc.field("signature").is_valid())
        if not first.num_rows:
            return []  # no sample was decoded: nothing to verify
        sig = first.column(0)[0].as_py()
        if len(sig) == verify.SIG_BYTES and sig[-1] in (2, verify.SIG_VERSION):
            return []  # version 2: verify.is_signature takes most of them
        found = f"signatures of another version ({len(sig)} bytes, last byte {sig[-1]})"
    return [
        f"dedup.verify: the run in {from_path} stored {found}; this version verifies "
        f"with {verify.SIG_BYTES}-byte signatures of version {verify.SIG_VERSION}, so "
        "every near-duplicate candidate would merge on pHash alone. Re-run `mitigate run` "
        "to store current signatures, or set dedup.verify: false to redecide on pHash "
        "alone knowingly"
    ]


def _head_errors(config: Config, from_path: str) -> list[str]:
    """A head is scored again from its backbone's stored embeddings: they must exist
    for every manifest part and have the width the head takes."""
    import numpy as np

    errors = []
    parts = fs.files_in(fs.join(from_path, "manifest"), MANIFEST_PATTERN)
    for i, f in enumerate(config.filters):
        if not isinstance(f, LinearProbeConfig):
            continue
        for part in sorted(parts):
            name = part.rsplit("/", 1)[-1].replace(".parquet", ".npy")
            path = fs.join(from_path, "embeddings", f.backbone, name)
            if not fs.exists(path):
                errors.append(
                    f"filters[{i}]: head {f.filter_id!r} needs the stored {f.backbone!r} "
                    f"embeddings, but {path} is missing (store_embeddings: true on "
                    f"{f.backbone!r} in the run)"
                )
                break
            with fs.open_read(path) as fh:
                major, _ = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0
                if major != 1:
                    read = np.lib.format.read_array_header_2_0
                shape = read(fh)[0]
            if len(shape) == 2 and shape[1] not in (0, f.dim):
                errors.append(
                    f"filters[{i}]: head {f.filter_id!r} takes {f.dim}-d embeddings but "
                    f"{path} holds {shape[1]}-d ones"
                )
                break
    return errors


def _copy_tree(src: str, dst: str) -> None:
    if not fs.exists(src):
        return
    for path in fs.files_under(src):
        fs.write_bytes(dst + path[len(src) :], fs.read_bytes(path))


def write_html_report(out_dir: str, shown_as: str | None = None) -> None:
    """OUT/report.html (local output folders; for object stores run `mitigate report`
    on a local copy)."""
    from mitigate.report import write_report

    if "://" in out_dir:
        log.warning("report.html is written for local outputs only; skipped for %s", out_dir)
        return
    write_report(out_dir, opener=fs.open_read, shown_as=shown_as)
