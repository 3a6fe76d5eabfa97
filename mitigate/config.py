"""Run configuration: YAML loaded with ``safe_load``, validated into typed objects.

Everything is checked before any Beam object exists. A bad config raises
:class:`ConfigError` whose lines each name the field, e.g.
``filters[1].threshold: must be between 0 and 1, got 1.7``.

Relative paths inside a config file are resolved against the file's folder, so
``configs/default.yaml`` works from any working directory; ``--input``/``--output`` on
the command line are relative to the working directory, as a user would expect.
"""

from __future__ import annotations

import codecs
import copy
import hashlib
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mitigate import filters as filter_registry
from mitigate.filters.base import FilterConfig, NoBoolNumbers
from mitigate.filters.probe import check_heads
from mitigate.sources import SourceLimits

log = logging.getLogger(__name__)


# Runners on which dedup.partition: auto keeps the one-worker near-dup graph: the local
# runner (one process holds every collection anyway) and Beam's Dask runner (which cannot
# run the partitioned graph in useful time: clusters is refused there, see
# _cross_checks).
ONE_WORKER_AUTO_RUNNERS = frozenset({"direct", "dask"})


class ConfigError(ValueError):
    """A config is invalid; ``errors`` holds one ``field: message`` line per problem."""

    #: The line above the errors (a subclass may say another thing went wrong).
    heading = "invalid config:"

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__(self.heading + "\n  " + "\n  ".join(errors))


class OutputInUse(ConfigError):
    """Another run holds the output folder's lock: nothing wrong with the config."""

    heading = "output folder in use:"


#: A path: an empty one (an unset shell variable) is no folder, not the config's own
NonEmpty = Annotated[str, Field(min_length=1)]


class _Strict(NoBoolNumbers):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputConfig(_Strict):
    paths: list[NonEmpty] = Field(
        default_factory=lambda: ["../data/sample/*.tar"],
        min_length=1,
        description="Files or globs (any Beam filesystem: local, gs://, s3://, ...).",
    )
    format: Literal["auto", "webdataset", "parquet", "jsonl", "csv", "folder"] = Field(
        default="auto",
        description="auto: by extension (.tar, .parquet, .jsonl, .csv, .tsv); a local "
        "folder that holds no tar or table is a folder of image files and captions. "
        "folder: every input is such a folder (needed for remote ones, gs://...).",
    )
    key_column: str = "key"
    image_column: str = Field(
        default="image",
        description="Image path, relative to the table, or (Parquet) the "
        "image's bytes (a binary column, a Hugging Face datasets Image).",
    )
    caption_column: str = "caption"
    chunk_size: int = Field(
        default=64, ge=1, le=100_000, description="Samples per unit of distributed work."
    )
    image_root: NonEmpty | None = Field(
        default=None,
        description="Tables: the folder image paths are relative to, and must stay inside "
        "(default: the table's own folder). Paths that leave it are errors "
        "(image_path_outside_root) and are never read.",
    )
    key_prefix: Literal["none", "source"] = Field(
        default="none",
        description="source: a sample's key starts with its input file's name (the "
        "fewest trailing folders that tell the inputs apart: train/00000/0000040), so "
        "inputs that name their samples alike (two img2dataset downloads, both from "
        "000000000) do not collide as duplicate_key.",
    )
    name_encoding: str | None = Field(
        default=None,
        description="Tar shards: encoding tried for member names that are not UTF-8 (e.g. "
        "latin-1 for old GNU tars). Unset: such samples are errors (invalid_key).",
    )

    @field_validator("name_encoding")
    @classmethod
    def _known_codec(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                codecs.lookup(value)
            except LookupError:
                raise ValueError(f"unknown encoding {value!r}") from None
        return value


class OutputConfig(_Strict):
    path: NonEmpty = Field(default="../out", description="Output folder (any Beam filesystem).")
    samples_per_shard: int = Field(default=1000, ge=1, le=10_000_000)
    samples_per_manifest_part: int = Field(
        default=10_000,
        ge=1,
        le=100_000_000,
        description="Most manifest rows a part holds: an input file with more samples gets "
        "a part per block of this many (input order), so no worker ever holds a whole huge "
        "table, tar or folder to write its part (it holds a block's records).",
    )
    overwrite: bool = Field(
        default=False, description="Replace a previous run's results in `path`."
    )
    quarantine: bool = Field(
        default=False,
        description="Also write filtered samples as WebDataset shards under "
        "quarantine/<reason>/, each KEY.json carrying the sample's manifest row.",
    )
    quarantine_duplicates: bool = Field(
        default=False, description="Quarantine duplicates too (under their reason)."
    )
    table_fields: bool = Field(
        default=True,
        description="A table row's other columns (url, license, width, ...) go into its "
        "kept or quarantine shard's KEY.json and the manifest's row_fields (columns that "
        "hold bytes excepted), up to max_table_fields_bytes a row.",
    )
    max_table_fields_bytes: int = Field(
        default=4096,
        ge=2,
        le=1024 * 1024,
        description="Most bytes of a row's carried columns as JSON (they travel with the "
        "sample through the run): over it, the largest columns are left out, named under "
        "_not_carried (an embedding a row: join it on the key).",
    )
    extra_members: bool = Field(
        default=True,
        description="Copy a tar sample's other members (KEY.cls, KEY.npy, masks) into its "
        "kept or quarantine shard byte for byte. A second caption member (KEY.caption "
        "beside KEY.txt: not filtered) and a name no shard should hold (a backslash or "
        "control character, __key__) are never copied; KEY.json lists them under "
        "mitigate.members_not_copied.",
    )


class DecodeConfig(_Strict):
    max_pixels: int = Field(
        default=50_000_000,
        ge=1,
        description="Images declaring more pixels (width x height) are rejected as "
        "decompression bombs before their pixel data is decoded.",
    )
    max_image_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="Larger image files are not read."
    )
    max_caption_bytes: int = Field(
        default=64 * 1024,
        ge=1,
        description="Captions longer than this (bytes, UTF-8) are errors "
        "(caption_too_large), known from the tar index without reading them.",
    )
    max_sidecar_bytes: int = Field(
        default=1024 * 1024,
        ge=1,
        description="Larger KEY.json sidecars are errors (json_too_large), never read.",
    )
    working_size: Annotated[int, Field(ge=32, le=4096)] | Literal["auto"] = Field(
        default="auto",
        description="Shorter side, in pixels, of the reduced decode that hashing (fast "
        "mode), the verification signature and pixel filters share; JPEGs are decoded "
        "directly at about this size. auto: the largest input a model filter asks for "
        "(nsfw: 256), at least 128 (the signature's 128 x 128 samples).",
    )
    hash_mode: Literal["fast", "exact"] = Field(
        default="fast",
        description="fast: pHash of the reduced decode (within a few bits of imagehash). "
        "exact: full decode, bit-identical to imagehash.phash.",
    )
    processes: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = Field(
        default="auto",
        description="Processes that decode and hash images inside each Beam worker. auto: "
        "on the direct runner with one worker, one per usable CPU core: booted before "
        "the pipeline starts for local tar shards of 64 MB or more without a model "
        "filter, else started once a worker has decoded a few hundred samples itself "
        "(runs under 4,096 samples never start them); on other runners 1 (their workers "
        "already use the cores). Outputs are identical for every value.",
    )
    timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a decode process may take for one sample before it is "
        "stopped and the sample becomes a decode_error (an image that makes a decoder "
        "spin). Applies where decoding runs in decode processes (decode.isolate, or "
        "processes above 1), not in the Beam worker itself, which nothing could stop.",
    )
    isolate: bool | Literal["auto"] = Field(
        default="auto",
        description="Decode in worker processes, never in the Beam worker itself, so that "
        "an image that crashes a decoder (a native library's fault) is one decode_error "
        "and the run goes on, instead of taking the Beam worker down (on a cloud runner: "
        "its bundle retried until the job fails). With processes 1, one decode process "
        "a Beam worker. auto: true on every runner but direct (where processes auto "
        "starts a pool from 4,096 samples and a crash ends only the local run).",
    )

    @property
    def working_side(self) -> int:
        """``working_size`` as pixels (``auto`` unresolved, i.e. no filter known: the
        smallest auto size); :func:`validate_config` resolves ``auto`` from the filters."""
        return MIN_AUTO_WORKING_SIZE if self.working_size == "auto" else self.working_size


#: ``decode.working_size: auto`` with no model filter: the verification signature
#: point-samples 128 x 128 pixels of the working image (``mitigate.sigsample``; under 128
#: it takes its slower box path), pHash reads 32 x 32.
MIN_AUTO_WORKING_SIZE = 128


def _resolve_working_size(config: Config) -> Config:
    """``decode.working_size: auto`` as the smallest reduced decode that serves every
    consumer: each filter's ``pixels_needed`` (the model input it resizes from), at least
    :data:`MIN_AUTO_WORKING_SIZE`. The resolved number is what the run records."""
    if config.decode.working_size != "auto":
        return config
    side = max([MIN_AUTO_WORKING_SIZE, *(f.pixels_needed for f in config.filters)])
    decode = config.decode.model_copy(update={"working_size": side})
    return config.model_copy(update={"decode": decode})


class DedupConfig(_Strict):
    exact: bool = Field(default=True, description="Drop samples with identical image bytes.")
    near: bool = Field(
        default=True,
        description="Drop near duplicates (pHash, or mirror pHash with dedup.mirror, within k).",
    )
    k: int = Field(
        default=10,
        ge=0,
        le=32,
        description="Hamming distance, bits of 64, up to which two images are near "
        "duplicates (see README for the measurement behind the default).",
    )
    mirror: bool = Field(
        default=True,
        description="A horizontally mirrored copy counts as a near duplicate: candidates "
        "also by one's pHash (and centre view) against the other's mirror hash, and "
        "verification also tries the pair mirrored. false for data whose mirror image is "
        "another image (letters b/d and p/q, signs, sign language, text).",
    )
    verify: bool = Field(
        default=True,
        description="Check every pHash candidate pair with a finer signature (64x64 luma "
        "and 16x16 chroma of the decoded image) and merge only pairs that pass; catches "
        "look-alikes a 64-bit pHash cannot tell apart (another letter or digit, another "
        "colour).",
    )
    verify_threshold: float = Field(
        default=1.0,
        ge=0.0,
        description="Largest verification score (most changed 1/16-of-the-side window, in "
        "units of normalised luma difference) at which a candidate pair is still merged; "
        "lower is stricter (see README for the measurement behind the default).",
    )
    centre_view: bool = Field(
        default=True,
        description="With verify: also propose as candidates the pairs within k on a "
        "second hash of the image's centre (pHash of the central 24x28 of its 32x32 "
        "thumbnail), which watermark bands and border crops hardly move; only pairs "
        "whose aspect ratios agree within 4%. Ignored without verify.",
    )
    keep: Literal["medoid", "resolution"] = Field(
        default="medoid",
        description="Which copy of a duplicate group to keep. medoid: the copy nearest to "
        "all others (for independent edits of one original, the original), and among "
        "the copies as near as it (within 0.05) the least compressed (JPEG quality, "
        "where all of them are JPEGs), then the largest, then the smallest key. "
        "resolution: the largest (pixels, then JPEG quality), then the smallest key.",
    )
    mode: Literal["auto", "exact", "lsh", "brute"] = Field(
        default="auto",
        description="exact: multi-index hashing, the same pairs as all-pairs search; "
        "lsh: bit-sampling LSH for very large N, its pair recall measured every run; "
        "auto: chosen from N and k.",
    )
    against: list[NonEmpty] = Field(
        default_factory=list,
        description="Reference sets (e.g. evaluation sets): WebDataset shards or hash "
        "lists (.txt/.csv: phash or key,phash[,mirror]); training samples within k of "
        "any reference image become duplicates with reason eval_overlap.",
    )
    partition: Literal["auto", "none", "clusters"] = Field(
        default="auto",
        description="none: every hash in one worker (ToList). clusters: the partitioned "
        "graph (k-modes clusterings, exact search per partition, distributed components). "
        "auto: none on the local runner (direct: its one process holds every collection "
        "anyway, and the one-worker graph is faster there) and on dask (which cannot run "
        "the partitioned graph: clusters is refused there); "
        "on every other runner the partitioned graph (one exact partition while the hashes fit in "
        "max_partition_size, clusters beyond). Both graphs verify candidate pairs and "
        "apply dedup.keep the same way.",
    )
    max_partition_size: int = Field(
        default=2_000_000,
        ge=2,
        description="Hashes one search task may hold by design (~0.5 KB each in "
        "a worker, so the default fits a 4 GB worker with room for the search); the "
        "number of clusters is chosen so the mean partition is half of this, and a "
        "partition that outgrows it is searched in blocks.",
    )
    clusterings: int = Field(
        default=5,
        ge=1,
        le=32,
        description="Independent clusterings; each hash goes to its nearest centroid "
        "(pHash and mirror) in each, so more clusterings find more pairs and shuffle more.",
    )
    probes: int = Field(
        default=2,
        ge=1,
        le=4,
        description="Nearest centroids a hash goes to in each clustering (multi-probe). "
        "2 (default) finds more pairs than twice the clusterings at the same shuffle "
        "(measured pair recall 0.98 at 4,096 clusters, the count at 10^9 samples, BENCHMARKS.md); "
        "clusters per clustering grow with it so partitions keep their size.",
    )
    min_recall: float = Field(
        default=0.9,
        ge=0.0,
        le=1.0,
        description="The run fails before applying any near-duplicate decision when the "
        "measured pair recall (point estimate) is below this.",
    )

    _reference_hashes: list = PrivateAttr(default_factory=list)

    def partitioned_on(self, runner: str) -> bool:
        """Whether near-dup search runs the partitioned graph on ``runner`` (a
        ``runner.name``; see ``partition``)."""
        if self.partition == "auto":
            return runner not in ONE_WORKER_AUTO_RUNNERS
        return self.partition == "clusters"

    _reference_shards: list = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _load_files(self, info: ValidationInfo) -> DedupConfig:
        from mitigate.near import read_hash_list

        base = Path((info.context or {}).get("base_dir", "."))

        def local(p: str) -> Path:
            return Path(p) if "://" in p or Path(p).is_absolute() else (base / p).resolve()

        for i, ref in enumerate(self.against):
            if ref.lower().endswith((".txt", ".csv")):
                path = local(ref)
                if not path.is_file():
                    raise ValueError(f"against[{i}]: file not found: {path}")
                self._reference_hashes.extend(read_hash_list(path))
            else:
                self._reference_shards.append(ref if "://" in ref else str(local(ref)))
        return self

    @property
    def reference_hashes(self) -> list:
        return self._reference_hashes

    @property
    def reference_shards(self) -> list:
        return self._reference_shards


DEFAULT_PROBES = {
    "women": ["woman", "women", "girl", "girls", "female", "lady", "ladies"],
    "men": ["man", "men", "boy", "boys", "male", "gentleman"],
    "people": ["person", "people", "child", "children"],
    "animals": ["dog", "cat", "horse", "bird"],
}


class RebalanceConfig(_Strict):
    """Density-ratio weights that undo the bias the filters introduce (DALL·E 2)."""

    enabled: bool = False
    filtered_by: list[str] | None = Field(
        default=None,
        description="Filter ids whose drops count as 'filtered'; default: every filter "
        "whose category is not 'quality'. Errors, duplicates and other filters' drops are "
        "outside the population that is rebalanced.",
    )
    embedding_filter: str | None = Field(
        default=None,
        description="Model filter whose stored image embedding joins the caption n-grams "
        "as features (it needs store_embeddings: true).",
    )
    n_features: int = Field(default=2**18, ge=16, le=2**24, description="Caption hash buckets.")
    mask_filter_terms: bool = Field(
        default=True,
        description="Cut the terms of the caption filters being rebalanced out of the "
        "caption features. A feature that decides a filter makes the density ratio "
        "constant on the kept set (no kept caption has it), leaving nothing to learn; "
        "masked, the classifier learns how the rest of the caption predicts removal.",
    )
    embedding_weight: float = Field(default=1.0, gt=0, description="Scale of the image block.")
    fit_sample_size: int = Field(
        default=50_000,
        ge=2,
        le=5_000_000,
        description="Samples (a deterministic uniform sample) the classifier is fitted on.",
    )
    C: float | Literal["auto"] = Field(
        default="auto",
        description="Inverse L2 strength of the classifier (small keeps it weak), or auto: "
        "the value of C_grid with the least k-fold held-out log loss on the fit sample.",
    )
    C_grid: list[float] = Field(
        default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0],
        min_length=1,
        description="Values tried by C: auto.",
    )
    cv_folds: int = Field(default=3, ge=2, le=10, description="Folds for C: auto.")
    C_patience: int = Field(
        default=2,
        ge=0,
        le=100,
        description="C: auto climbs C_grid from its weakest value and stops once the "
        "held-out loss has risen at this many consecutive steps (the stronger values, "
        "whose fits cost the most, are not fitted); 0 fits every value.",
    )
    calibrate_groups: list[str] | dict[str, list[str]] = Field(
        default_factory=list,
        description="Groups whose weighted share among kept samples is calibrated (raking, "
        "clipping respected) to their unfiltered share: names of probes groups, or a "
        "mapping group -> terms. Probes not named here are the held-out check.",
    )
    ess_warn_fraction: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Warn when the effective sample size of the final weights falls "
        "below this fraction of the kept samples.",
    )
    w_min: float = Field(default=0.1, ge=0, le=1, description="Smallest weight after clipping.")
    w_max: float = Field(default=10.0, ge=1, le=1e6, description="Largest weight after clipping.")
    mode: Literal["weights", "resample"] = Field(
        default="weights",
        description="weights: store each kept sample's weight for loss reweighting; "
        "resample: also write each kept sample a number of times whose expectation is "
        "its weight (for trainers that cannot take weights).",
    )
    seed: int = Field(default=0, ge=0, lt=2**64)
    probes: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_PROBES.items()},
        description="Bias report: group -> words or phrases, matched as whole words.",
    )

    @field_validator("C_grid")
    @classmethod
    def _positive_grid(cls, value: list[float]) -> list[float]:
        bad = [c for c in value if not (c > 0 and math.isfinite(c))]
        if bad:
            raise ValueError(f"every C must be a positive finite number, got {bad}")
        return value

    @field_validator("C")
    @classmethod
    def _positive_c(cls, value: float | str) -> float | str:
        # the fit checked it, after the whole pipeline had run
        if value != "auto" and not (
            isinstance(value, float) and value > 0 and math.isfinite(value)
        ):
            raise ValueError("must be a positive finite number or auto")
        return value

    def calibration_groups(self) -> dict[str, list[str]]:
        """Calibrated group -> terms (names given as a list take the probes' terms)."""
        if isinstance(self.calibrate_groups, dict):
            return {g: list(t) for g, t in self.calibrate_groups.items()}
        return {g: list(self.probes.get(g, [])) for g in self.calibrate_groups}

    def report_probes(self) -> dict[str, list[str]]:
        """Groups of the bias report: the probes plus calibrated groups given their
        own terms."""
        out = {g: list(t) for g, t in self.probes.items()}
        for g, terms in self.calibration_groups().items():
            out.setdefault(g, terms)
        return out


_REQUIRED = {
    "portable": ("job_endpoint",),
    "flink": ("job_endpoint",),
    "spark": ("job_endpoint",),
    "dataflow": ("project", "region", "temp_location"),
    "dask": ("dask_address",),
}


class RunnerConfig(_Strict):
    """Which Beam runner executes the pipeline, and its options (flat, so that
    ``--set runner.KEY=VALUE`` reaches any of them)."""

    name: Literal["direct", "portable", "dataflow", "flink", "spark", "dask"] = "direct"
    # direct: in-process, threads, or worker processes on this machine
    direct_num_workers: Annotated[int, Field(ge=1, le=1024)] | Literal["auto"] = Field(
        default=1,
        description="Local Beam workers. auto: one Beam worker whose decode step uses "
        "every core (decode.processes), measured faster on one machine than a Beam "
        "worker per core; a number N: N FnApiRunner workers (decode.processes auto is "
        "then 1).",
    )
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = "in_memory"
    spill_signatures: bool | Literal["auto"] = Field(
        default="auto",
        description="Keep verification signatures in files of the run's staging folder "
        "instead of Beam's collections (the local runner holds every collection in "
        "memory: 27 KB a sample with them, 12 without). Needs the one-worker near-dup "
        "search and a folder every worker reaches. auto: true on direct where near-dup "
        "search runs in one worker.",
    )

    def local_workers(self) -> int:
        """``direct_num_workers`` as a number of Beam workers (``auto``: one; its decode
        processes use the cores, :func:`mitigate.decode_pool.plan_processes`)."""
        if self.direct_num_workers == "auto":
            return 1
        return self.direct_num_workers

    def local_running_mode(self) -> str:
        """The DirectRunner mode in force: more than one worker ``in_memory`` would run
        on one thread (Beam only warns), so it becomes ``multi_threading``, which costs
        ~10 % more CPU than one worker where ``multi_processing`` costs ~50 % (worker
        start-up, every element over gRPC; BENCHMARKS.md, issue 14)."""
        if self.local_workers() > 1 and self.direct_running_mode == "in_memory":
            return "multi_threading"
        return self.direct_running_mode

    # portable, flink, spark: a running job service (Flink/Spark: their Beam job server)
    job_endpoint: str | None = Field(default=None, description="host:port of the job service.")
    environment_type: Literal["DOCKER", "PROCESS", "EXTERNAL", "LOOPBACK"] | None = Field(
        default=None, description="How the job service runs Python workers."
    )
    environment_config: str | None = Field(
        default=None, description="e.g. host:port of a worker pool for EXTERNAL."
    )
    # dataflow
    project: str | None = None
    region: str | None = None
    temp_location: str | None = Field(default=None, description="gs:// path for temp files.")
    staging_location: str | None = None
    machine_type: str | None = Field(default=None, description="e.g. n2-standard-4.")
    num_workers: int | None = Field(default=None, ge=1)
    max_num_workers: int | None = Field(default=None, ge=1)
    autoscaling_algorithm: Literal["THROUGHPUT_BASED", "NONE"] | None = None
    sdk_container_image: str | None = Field(
        default=None, description="Custom SDK container (runners/dataflow/Dockerfile)."
    )
    requirements_file: str | None = Field(
        default=None, description="Pinned requirements staged for the workers."
    )
    extra_packages: list[str] = Field(
        default_factory=list, description="sdists/wheels staged for the workers (this package)."
    )
    dry_run: bool = Field(default=False, description="Build the job without submitting it.")
    # dask
    dask_address: str | None = Field(default=None, description="Dask scheduler address.")

    @model_validator(mode="after")
    def _required(self) -> RunnerConfig:
        missing = [k for k in _REQUIRED.get(self.name, ()) if getattr(self, k) in (None, "")]
        if missing:
            raise ValueError(f"runner {self.name!r} needs {', '.join(missing)}")
        if self.dry_run and self.name != "dataflow":
            raise ValueError("dry_run is a Dataflow option (it builds the job offline)")
        return self


class Config(_Strict):
    input: InputConfig = Field(default_factory=InputConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    filters: list[SerializeAsAny[FilterConfig]] = Field(default_factory=list)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    rebalance: RebalanceConfig = Field(default_factory=RebalanceConfig)
    runner: RunnerConfig = Field(default_factory=RunnerConfig)

    @field_validator("filters", mode="plain")
    @classmethod
    def _filters_already_built(cls, value: Any) -> Any:
        # Filter entries are validated one by one in `validate_config` (each against its
        # own registered model); by here they are FilterConfig objects.
        if not all(isinstance(v, FilterConfig) for v in value):
            raise ValueError("filters must be built by validate_config")
        return value

    def source_limits(self) -> SourceLimits:
        """What the source readers check per sample before reading any byte."""
        return SourceLimits(
            max_image_bytes=self.decode.max_image_bytes,
            max_caption_bytes=self.decode.max_caption_bytes,
            max_sidecar_bytes=self.decode.max_sidecar_bytes,
            name_encoding=self.input.name_encoding,
            max_table_fields_bytes=self.output.max_table_fields_bytes,
        )

    def spills_signatures(self) -> bool:
        """Whether signatures wait in files (``runner.spill_signatures``), not in
        Beam's collections (mitigate/pipeline/sigstore.py)."""
        one_worker = not self.dedup.partitioned_on(self.runner.name)
        if self.runner.spill_signatures == "auto":
            return self.runner.name == "direct" and one_worker
        return self.runner.spill_signatures and one_worker

    def effective(self) -> dict[str, Any]:
        """The config as plain data, every default filled in (written beside output)."""
        return self.model_dump(mode="json")

    def digest(self) -> str:
        """sha256 of the effective config (stable key order), recorded in the summary."""
        blob = json.dumps(self.effective(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that owns the field at ``loc`` (for listing valid keys)."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


_RANGE_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
}


# pydantic names each branch of a union in an error's location ("constrained-int",
# "literal['auto']", "function-after[...]", "int", ...); field names never look so
_TYPE_TAGS = frozenset({"int", "float", "str", "bool", "none", "list", "dict", "tuple"})


def _union_branch(part: Any) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or "-" in part)


def _messages(exc: ValidationError, model: type[BaseModel], prefix: tuple[Any, ...]) -> list[str]:
    """One line a field: its location as the user wrote it (``decode.processes``, not
    pydantic's union branches), what it must be (each branch of a union, joined by
    "or"), and the value given where the message does not already show it."""
    fields: dict[tuple[Any, ...], tuple[list[str], str]] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        kind = err["type"]
        got = ""
        if kind == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            valid = ", ".join(sorted(owner.model_fields)) if owner else "?"
            msg = f"unknown key; valid keys: {valid}"
        elif kind == "missing":
            msg = "required field is missing"
        else:
            ctx = err.get("ctx", {})
            msg = _RANGE_MESSAGES[kind].format(**ctx) if kind in _RANGE_MESSAGES else err["msg"]
            msg = msg.removeprefix("Value error, ")
            value = err.get("input")
            shown = isinstance(value, str) and len(value) > 3 and value in msg  # a path
            if "input" in err and not isinstance(value, dict | list) and not shown:
                got = f", got {value!r}"
        where = tuple(p for p in loc if not _union_branch(p))
        msgs, _ = fields.setdefault(where, ([], got))
        if msg not in msgs:
            msgs.append(msg)
    # a union's branches after the first read on: "must be >= 1 or input should be 'auto'"
    return [
        f"{_loc(prefix + where)}: "
        + " or ".join(
            m[0].lower() + m[1:] if k and m.startswith("Input") else m for k, m in enumerate(msgs)
        )
        + got
        for where, (msgs, got) in fields.items()
    ]


#: The largest integer a config value may be: a float64 holds every integer up to it
#: (a threshold column of the manifest holds a filter's bound), and no image, file or
#: count comes near it. Past int64, a run failed after all its work, at the manifest
#: (helper-36: image_quality.min_side of 2**63).
MAX_CONFIG_INT = 2**53
_ANY_INT = {"rebalance.seed"}  # a seed's bits are its own (up to 2**64)


def _huge_ints(value: Any, path: str = "") -> list[str]:
    """An error for every integer of the raw config beyond :data:`MAX_CONFIG_INT`."""
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _huge_ints(v, f"{path}.{k}".lstrip("."))]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in _huge_ints(v, f"{path}[{i}]")]
    if isinstance(value, int) and not isinstance(value, bool) and path not in _ANY_INT:
        if abs(value) > MAX_CONFIG_INT:
            return [f"{path}: {value} is out of range (at most 2**53 = {MAX_CONFIG_INT})"]
    return []


def validate_config(raw: Any, base_dir: Path | str = ".") -> Config:
    """Validate a raw config mapping (as loaded from YAML) into a :class:`Config`.

    ``base_dir`` is where relative paths in the config are resolved from. Raises
    :class:`ConfigError` listing every problem found.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"(top level): must be a mapping, got {type(raw).__name__}"])
    raw = copy.deepcopy(raw)
    base = Path(base_dir)
    errors: list[str] = _huge_ints(raw)
    context = {"base_dir": str(base)}

    raw_filters = raw.pop("filters", []) or []
    built: list[FilterConfig] = []
    if not isinstance(raw_filters, list):
        errors.append(f"filters: must be a list, got {type(raw_filters).__name__}")
        raw_filters = []
    legacy = _legacy_blocklist(raw, raw_filters, context, errors)
    failed: set[str] = set()  # ids of entries already in error: named by no later check
    for i, entry in enumerate(raw_filters):
        where = f"filters[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            errors.append(f"{where}: must be a mapping with a `name` key")
            continue
        failed.add(str(entry.get("id") or entry["name"]))
        try:
            cls = filter_registry.get(str(entry["name"]))
        except KeyError as exc:
            errors.append(f"{where}.name: {exc.args[0]}")
            continue
        try:
            built.append(cls.config_model.model_validate(entry, context=context))
            failed.discard(str(entry.get("id") or entry["name"]))
        except ValidationError as exc:
            errors.extend(_messages(exc, cls.config_model, ("filters", i)))
    if legacy is not None:
        built.insert(0, legacy)  # first, so it names the reason as it did under dedup:
    ids = [f.filter_id for f in built]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        errors.append(f"filters: id {dup!r} used twice; give each copy a distinct `id`")

    config = None
    try:
        config = _resolve_working_size(
            Config.model_validate({**raw, "filters": built}, context=context)
        )
    except ValidationError as exc:
        errors.extend(_messages(exc, Config, ()))
    if config is not None:
        errors.extend(_cross_checks(config, failed))
        errors.extend(check_heads(config.filters))
        errors.extend(_dataflow_names(config))
    if errors or config is None:
        raise ConfigError(errors)
    for warning in _cross_warnings(config):
        log.warning("%s", warning)
    return _resolve_paths(config, base)


def _cross_warnings(config: Config) -> list[str]:
    """Settings that run but may not do what their user expects: a blocklist of pHash
    values matched exactly while the pipeline hashes the reduced decode. Its pHash is
    ``imagehash.phash`` of the full image for 74-91 % of images only, up to 4 bits off
    for photos and 32 for clip art (BENCHMARKS.md, "Fast pHash against imagehash's"), so
    hashes from elsewhere are missed."""
    warnings = []
    if config.decode.hash_mode != "fast":
        return warnings
    for i, flt in enumerate(config.filters):
        entries = getattr(flt, "entries", None) if flt.name == "blocklist" else None
        if entries is None or not entries.phash or getattr(flt, "max_distance", 0) > 0:
            continue
        warnings.append(
            f"filters[{i}] (blocklist): {len(entries.phash)} listed pHash value(s) are "
            "matched exactly (max_distance: 0), but decode.hash_mode: fast hashes the "
            "reduced decode, which equals imagehash.phash of the full image for only "
            "74-91 % of images: list the pHash column of this pipeline's manifest, or "
            "set decode.hash_mode: exact (full decode) or a max_distance"
        )
    return warnings


_LEGACY_BLOCKLIST = {"blocklist": "path", "blocklist_max_distance": "max_distance"}


def _legacy_blocklist(
    raw: dict[str, Any], raw_filters: list[Any], context: dict[str, Any], errors: list[str]
) -> FilterConfig | None:
    """``dedup.blocklist`` / ``dedup.blocklist_max_distance`` (before the blocklist was a
    filter): removed from ``raw`` and returned as the equivalent ``- name: blocklist``
    filter entry (placed first by the caller), with a deprecation warning. Errors name
    the keys the user wrote."""
    dedup = raw.get("dedup")
    if not isinstance(dedup, dict) or not _LEGACY_BLOCKLIST.keys() & dedup.keys():
        return None
    old = {key: dedup.pop(key) for key in list(_LEGACY_BLOCKLIST) if key in dedup}
    if "blocklist" not in old:
        errors.append("dedup.blocklist_max_distance: given without dedup.blocklist")
        return None
    if any(isinstance(f, dict) and f.get("name") == "blocklist" for f in raw_filters):
        errors.append(
            "dedup.blocklist: the blocklist is a filter now and one is configured under "
            "filters:; remove dedup.blocklist (and dedup.blocklist_max_distance)"
        )
        return None
    entry = {"name": "blocklist", **{_LEGACY_BLOCKLIST[k]: v for k, v in old.items()}}
    log.warning(
        "dedup.blocklist and dedup.blocklist_max_distance are deprecated: configure the "
        "blocklist as a filter, first under filters: (- name: blocklist, path: %s, "
        "max_distance: %s)",
        entry["path"],
        entry.get("max_distance", 0),
    )
    cls = filter_registry.get("blocklist")
    try:
        return cls.config_model.model_validate(entry, context=context)
    except ValidationError as exc:
        new_to_old = {v: k for k, v in _LEGACY_BLOCKLIST.items()}
        for msg in _messages(exc, cls.config_model, ()):
            field, _, rest = msg.partition(": ")
            errors.append(f"dedup.{new_to_old.get(field, field)}: {rest}")
        return None


# Google Cloud's naming rules (as Beam's own option validator has them), checked
# offline: Beam answers an invalid bucket by looking for a default bucket over the
# network, which a dry run must never do.
_GCS_BUCKET = re.compile(r"[a-z0-9][-_a-z0-9.]{1,220}[a-z0-9]")
_GCP_PROJECT = re.compile(r"[a-z][-a-z0-9:.]{4,61}[a-z0-9]")
_GCP_REGION = re.compile(r"[a-z]+-[a-z]+[0-9]+")
_IMAGE_NAME = re.compile(r"[a-z0-9]([-a-z0-9._/]*[a-z0-9])?(:[0-9]+)?(/[-a-z0-9._/]+)?")
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def _bucket_problem(path: str) -> str | None:
    if not path.startswith("gs://"):
        return f"{path!r} is not a gs:// path"
    bucket = path[5:].split("/", 1)[0]
    if not _GCS_BUCKET.fullmatch(bucket):
        return (
            f"{bucket!r} in {path} is not a Cloud Storage bucket name (3-63 lowercase "
            "letters, digits, '-', '_' or '.'); put your bucket in place of the placeholder"
        )
    return None


def _dataflow_names(config: Config) -> list[str]:
    """Project, region, bucket and image names a Dataflow job needs, checked offline."""
    r = config.runner
    if r.name != "dataflow":
        return []
    errors = []
    if r.project and (r.project.isdigit() or not _GCP_PROJECT.fullmatch(r.project)):
        errors.append(
            f"runner.project: {r.project!r} is not a Google Cloud project id (6-30 "
            "lowercase letters, digits and '-', starting with a letter)"
        )
    if r.region and not _GCP_REGION.fullmatch(r.region):
        errors.append(f"runner.region: {r.region!r} is not a region name, e.g. europe-west4")
    for name in ("temp_location", "staging_location"):
        value = getattr(r, name)
        if value and (problem := _bucket_problem(value)):
            errors.append(f"runner.{name}: {problem}")
    remote = [("output.path", config.output.path)] + [
        (f"input.paths[{i}]", p) for i, p in enumerate(config.input.paths)
    ]
    if config.input.image_root:  # the workers read a table's images from it (helper-39)
        remote.append(("input.image_root", config.input.image_root))
    remote += [(f"dedup.against[{i}]", p) for i, p in enumerate(config.dedup.against or [])]
    for where, path in remote:
        if path.startswith("gs://") and (problem := _bucket_problem(path)):
            errors.append(f"{where}: {problem}")
        elif "://" not in path:  # a dry run passed these (helper-36)
            errors.append(
                f"{where}: {path} is on this machine's disk, which Dataflow's workers cannot "
                "read or write: give a gs:// path (copy the data there first)"
            )
    if r.sdk_container_image:
        ref = r.sdk_container_image.split("@", 1)[0]  # a digest is Docker's to check
        head, _, last = ref.rpartition("/")
        last, _, tag = last.partition(":")
        name = f"{head}/{last}" if head else last
        if not _IMAGE_NAME.fullmatch(name) or (tag and not _IMAGE_TAG.fullmatch(tag)):
            errors.append(
                f"runner.sdk_container_image: {r.sdk_container_image!r} is not a container "
                "image reference (lowercase registry/repository[:tag])"
            )
    return errors


def _cross_checks(config: Config, failed: set[str] | None = None) -> list[str]:
    """Checks that span sections (which filter ids exist, and what they provide). A
    filter id in ``failed`` (its entry has an error of its own) is not said missing."""
    failed = failed or set()
    errors = []
    by_id = {f.filter_id: f for f in config.filters}
    rb = config.rebalance
    if config.runner.name == "dask" and config.dedup.near and config.dedup.partition == "clusters":
        # Measured (session 7): with both candidate views the partitioned graph has ~100
        # stages, and Beam's Dask runner, which recomputes shared upstream stages per
        # branch, did not finish the bundled samples (45 then) in 25 minutes on a 2-process
        # LocalCluster (18 s on the local runner), warning of inconsistent task graphs.
        errors.append(
            "dedup.partition: the dask runner cannot run the partitioned near-dup graph "
            "(clusters): measured, it did not finish 45 samples in 25 minutes; use "
            "dedup.partition=none (or auto) on dask, or a portable/Dataflow runner"
        )
    if config.runner.spill_signatures is True and config.dedup.partitioned_on(config.runner.name):
        errors.append(
            "runner.spill_signatures: true needs the one-worker near-dup search, but "
            f"dedup.partition is {config.dedup.partition} on {config.runner.name} (the "
            "partitioned search carries signatures in its batches); set "
            "dedup.partition: none or spill_signatures: auto"
        )
    if not rb.enabled:
        # A disabled section is not checked against the rest of the config: switching
        # rebalancing off must not demand the filters or embeddings it would need.
        return errors
    errors.extend(_calibration_checks(rb))
    for i, fid in enumerate(rb.filtered_by or []):
        if fid not in by_id and fid not in failed:
            errors.append(
                f"rebalance.filtered_by[{i}]: no filter {fid!r}; filters: {sorted(by_id)}"
            )
    if rb.embedding_filter is not None:
        flt = by_id.get(rb.embedding_filter)
        if flt is None and rb.embedding_filter in failed:
            pass  # its filter entry's own error says what is wrong
        elif flt is None:
            errors.append(
                f"rebalance.embedding_filter: no filter {rb.embedding_filter!r}; "
                f"filters: {sorted(by_id)}"
            )
        elif not (flt.provides_embeddings and flt.stores_embeddings):
            errors.append(
                f"rebalance.embedding_filter: filter {rb.embedding_filter!r} must have an "
                "embedding_output and store_embeddings: true"
            )
    if rb.enabled and not rb.probes:
        errors.append("rebalance.probes: give at least one probe group")
    if config.runner.name == "dask" and rb.enabled:
        # Measured: Beam's Dask runner recomputes the upstream graph for every side input,
        # and the normalising scale and the weights it is applied to came out of
        # different recomputations (all weights off by a common factor, mean 1.0004 to
        # 1.001 instead of 1; on some machines even without near-dedup). Refuse rather
        # than write wrong weights.
        errors.append(
            "runner.name: the dask runner cannot run rebalancing (its side-input "
            "recomputation gives inconsistent weights); set rebalance.enabled=false or "
            "use another runner"
        )
    return errors


def _calibration_checks(rb: RebalanceConfig) -> list[str]:
    """rebalance.calibrate_groups: known probe names or non-empty term lists, <= 8."""
    errors = []
    groups = rb.calibrate_groups
    if isinstance(groups, list):
        for i, name in enumerate(groups):
            if name not in rb.probes:
                errors.append(
                    f"rebalance.calibrate_groups[{i}]: no probe group {name!r}; probes: "
                    f"{sorted(rb.probes)} (or give a mapping group -> terms)"
                )
        if len(set(groups)) != len(groups):
            errors.append("rebalance.calibrate_groups: a group is named twice")
    else:
        for name, terms in groups.items():
            if not terms or not all(isinstance(t, str) and t.split() for t in terms):
                errors.append(
                    f"rebalance.calibrate_groups.{name}: give at least one non-empty term"
                )
    if len(groups) > 8:
        errors.append(f"rebalance.calibrate_groups: at most 8 groups, got {len(groups)}")
    return errors


def _is_local_relative(path: str) -> bool:
    return "://" not in path and not Path(path).is_absolute()


def _resolve_paths(config: Config, base: Path) -> Config:
    def fix(p: str) -> str:
        # "~/data" as the README quotes globs: the shell expands no ~ inside quotes, and
        # the run wrote into a folder named "~" in the working folder
        p = os.path.expanduser(p) if p.startswith("~") else p
        return str((base / p).resolve()) if _is_local_relative(p) else p

    dedup = config.dedup.model_copy(
        update={
            "against": [fix(p) for p in config.dedup.against],
        }
    )
    return config.model_copy(
        update={
            "input": config.input.model_copy(
                update={"paths": [fix(p) for p in config.input.paths]}
            ),
            "output": config.output.model_copy(update={"path": fix(config.output.path)}),
            "dedup": dedup,
        }
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """``safe_load`` that refuses a key given twice in one mapping: YAML keeps the last
    one without a word (``threshold: 0.3`` then ``threshold: 0.9`` ran at 0.9)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} given twice in one mapping (line {seen[key] + 1} and "
                    f"line {key_node.start_mark.line + 1}); YAML would keep the last",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


# Numbers as YAML 1.2 reads them, not PyYAML's YAML 1.1: an exponent without a dot
# (``1e-3``) is a number (helper-44: `threshold: 1e-3` was refused as text), so are
# ``+.5`` and ``.5e1``; ``010`` is ten, not octal eight, and ``1:30`` is text, not the
# base-60 number 90 (helper-47: `decode.timeout: 1:30` ran with 90 s); ``0x10`` and
# ``0o10`` are hex and octal.
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_INT12 = re.compile(r"^[-+]?(?:[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+)$")
_FLOAT12 = re.compile(
    r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
    r"|[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_EXPONENT = _FLOAT12  # the dumper quotes text that reads as a number here
_FIRST = list("-+.0123456789")


def _int12(loader: yaml.SafeLoader, node: Any) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    sign, digits = (-1, text[1:]) if text[0] == "-" else (1, text.lstrip("+"))
    base = {"0x": 16, "0o": 8}.get(digits[:2], 10)
    return sign * int(digits[2:] if base != 10 else digits, base)


_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(_INT, _INT12, list("-+0123456789"))
_UniqueKeyLoader.add_implicit_resolver(_FLOAT, _FLOAT12, _FIRST)
_UniqueKeyLoader.add_constructor(_INT, _int12)


class _Dumper(yaml.SafeDumper):
    """``safe_dump`` that quotes text :func:`load_yaml` would read as a number (a term
    ``5e2``: PyYAML wrote it bare, and the run's config.yaml read it back as 500.0)."""


_Dumper.add_implicit_resolver(_FLOAT, _FLOAT12, _FIRST)
_Dumper.add_implicit_resolver(_INT, _INT12, list("-+0123456789"))


def dump_yaml(data: Any) -> str:
    """YAML that :func:`load_yaml` reads back as ``data`` (key order kept)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def load_yaml(text: str) -> Any:
    """YAML as configs are read: ``safe_load``, a key given twice refused, ``1e-3`` a
    number."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=value`` (value as YAML) into (['a', 'b'], value)."""
    if "=" not in text:
        raise ConfigError([f"--set {text!r}: expected KEY=VALUE, e.g. dedup.exact=false"])
    key, _, value = text.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError([f"--set {text!r}: empty key segment"])
    try:
        parsed = load_yaml(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError([f"--set {key}: value is not valid YAML: {exc}"]) from None
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a raw config mapping (returns a new mapping).

    ``filters[1].threshold=0.5`` style indexing is written ``filters.1.threshold``.
    """
    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = out
        for depth, part in enumerate(parts[:-1]):
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError([f"--set {where}: no list item {part}"])
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict | list):
                    raise ConfigError([f"--set {where}: is a value, not a section"])
        if not isinstance(node, dict | list):
            where = ".".join(parts[:-1])
            raise ConfigError([f"--set {where}: is a value, not a section"])
        last = parts[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigError([f"--set {'.'.join(parts)}: no list item {last}"])
            node[int(last)] = value
        else:
            node[last] = value
    return out


def load_config(
    path: Path | str | None, overrides: list[str] | None = None
) -> tuple[Config, dict[str, Any]]:
    """Load YAML with ``safe_load``, apply ``--set`` overrides, validate.

    Returns the config and the raw mapping it came from. A document nested deeply
    enough to exhaust the parser's recursion is a config error, not a crash.
    """
    try:
        return _load_config(path, overrides)
    except RecursionError:
        where = path if path is not None else "--set"
        raise ConfigError([f"{where}: nested too deeply to be a config"]) from None


def _load_config(
    path: Path | str | None, overrides: list[str] | None
) -> tuple[Config, dict[str, Any]]:
    if path is not None and Path(path).is_dir():
        raise ConfigError([f"--config: {path} is a folder, not a YAML file"])
    raw: Any = {}
    base = Path(".")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError([f"config file not found: {path}"])
        try:
            raw = load_yaml(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
        except UnicodeDecodeError as exc:
            raise ConfigError([f"{path}: not UTF-8: {exc}"]) from None
        base = path.resolve().parent
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError([f"(top level): must be a mapping, got {type(raw).__name__}"])
    raw = apply_overrides(raw, overrides or [])
    return validate_config(raw, base), raw
