"""The same pipeline on other engines: Beam's portable job service with a worker pool,
Dask distributed with two worker processes, and an offline Dataflow dry run. Every run
must conserve counts and write exactly what the DirectRunner writes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lifetime import die_with_parent

from mitigate.config import load_config
from mitigate.pipeline.run import run

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
COMPARED = ("shards", "manifest", "embeddings")


def _outputs(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for folder in COMPARED
        for p in sorted((out / folder).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def direct_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("direct") / "out"
    config, _ = load_config(DEFAULT, [f"output.path={out}"])
    run(config)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service on port {port} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture(scope="module")
def portable_services(tmp_path_factory):
    """Beam's Python job service and an external worker pool, both on loopback, the
    workers running in this very environment (the project's own venv).

    The worker pool starts each SDK worker as `python` from PATH, so PATH leads with
    this interpreter's folder: the tests need no activated venv."""
    job_port, pool_port = _free_port(), _free_port()
    logs = tmp_path_factory.mktemp("services")
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "apache_beam.runners.portability.local_job_service_main",
                f"--port={job_port}",
            ],
            stdout=open(logs / "job.log", "w"),
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent,
        ),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "apache_beam.runners.worker.worker_pool_main",
                f"--service_port={pool_port}",
            ],
            stdout=open(logs / "pool.log", "w"),
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=die_with_parent,
        ),
    ]
    try:
        _wait_for(job_port, procs[0])
        _wait_for(pool_port, procs[1])
        yield f"localhost:{job_port}", f"localhost:{pool_port}"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.slow
def test_portable_runner_writes_what_the_direct_runner_writes(
    direct_run, portable_services, tmp_path
):
    job, pool = portable_services
    out = tmp_path / "portable"
    config, _ = load_config(
        DEFAULT,
        [
            f"output.path={out}",
            "runner.name=portable",
            f"runner.job_endpoint={job}",
            "runner.environment_type=EXTERNAL",
            f"runner.environment_config={pool}",
        ],
    )
    summary = run(config)
    assert summary["conservation"]["ok"]
    assert _outputs(out) == _outputs(direct_run)


@pytest.mark.slow
def test_dask_two_worker_processes_write_what_the_direct_runner_writes(direct_run, tmp_path):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
    ) as cluster:
        config, _ = load_config(
            DEFAULT,
            [
                f"output.path={tmp_path / 'dask'}",
                "runner.name=dask",
                "rebalance.enabled=false",
                f"runner.dask_address={cluster.scheduler_address}",
            ],
        )
        summary = run(config)
        direct, _ = load_config(
            DEFAULT, [f"output.path={tmp_path / 'direct'}", "rebalance.enabled=false"]
        )
        run(direct)
    assert (summary["conservation"]["ok"], summary["conservation"]["problems"]) == (True, [])
    import pyarrow.parquet as pq

    keys = pq.read_table(tmp_path / "dask" / "manifest", columns=["key", "source"]).to_pylist()
    assert len(keys) == len({(k["key"], k["source"]) for k in keys}) == summary["input_count"]
    assert _outputs(tmp_path / "dask") == _outputs(tmp_path / "direct")


def test_dask_refuses_rebalancing_at_config_time():
    from mitigate.config import ConfigError

    with pytest.raises(ConfigError, match="dask runner cannot run rebalancing"):
        load_config(DEFAULT, ["runner.name=dask", "runner.dask_address=tcp://127.0.0.1:1"])


def test_dask_refuses_the_partitioned_near_dup_graph_at_config_time():
    from mitigate.config import ConfigError

    dask = ["runner.name=dask", "runner.dask_address=tcp://127.0.0.1:1", "rebalance.enabled=false"]
    with pytest.raises(ConfigError, match=r"dedup\.partition: the dask runner cannot run"):
        load_config(DEFAULT, [*dask, "dedup.partition=clusters"])
    for fine in ("dedup.partition=auto", "dedup.partition=none"):  # the one-worker graph
        config, _ = load_config(DEFAULT, [*dask, fine])
        assert not config.dedup.partitioned_on("dask")
    load_config(DEFAULT, [*dask, "dedup.partition=clusters", "dedup.near=false"])  # no search


IMAGE = "europe-west4-docker.pkg.dev/my-project/mitigate/mitigate:0.1.0"
#: A Dataflow dry run's settings: the job is built offline, nothing submitted.
DATAFLOW_DRY_RUN = [
    "input.paths=['gs://my-bucket/shards/*.tar']",  # Dataflow's workers read no local disk
    "output.path=gs://my-bucket/out",
    "runner.name=dataflow",
    "runner.dry_run=true",
    "runner.project=my-project",
    "runner.region=europe-west4",
    "runner.temp_location=gs://my-bucket/tmp",
    f"runner.sdk_container_image={IMAGE}",
    f"runner.requirements_file={REPO / 'runners' / 'dataflow' / 'requirements.txt'}",
]


def test_dataflow_dry_run_builds_the_job_offline(tmp_path):
    config, _ = load_config(
        DEFAULT,
        [
            *DATAFLOW_DRY_RUN,
            # the scalable near-dup graph, with the default verification and medoid rule
            "dedup.partition=clusters",
        ],
    )
    started = time.monotonic()
    job = run(config)
    assert time.monotonic() - started < 60  # offline: nothing waited on the network
    assert job["dry_run"] and job["runner"] == "dataflow"
    assert {
        "Index",
        "Process",
        "NearDedup",
        "Rebalance",
        "Manifest",
        "WriteShards",
        "Summary",
    } <= set(job["top_level_transforms"])
    # the near-dup search is the partitioned graph: no stage gathers every hash
    near = {n.removeprefix("NearDedup/Partitioned/") for n in job["transform_names"]}
    assert {
        "Search/Fit",
        "Search/Assign",
        "Search/Tasks",
        "Search/BlockDict",
        "Search/ByTask",
        "Search/Search",
        "Search/JoinA",
        "Search/Verify",
        "Search/StarRound5/ByNode2",
        "Search/Finish",
        "Search/KeepRule",
        "Search/NotMerged",
        "Search/Recall",
        "CheckRecall",
    } <= near
    assert not any(n.startswith("NearDedup/AllHashes") for n in job["transform_names"])
    (env,) = job["environments"]
    assert env["container_image"] == IMAGE
    assert "requirements.txt" in env["staged_files"]
    assert not (tmp_path / "out").exists()


def test_a_dry_run_opens_no_remote_input_for_its_checks(tmp_path):
    """The checks that read inputs before a run (a tar's captions, tars sharing first
    keys) read local files only in a dry run: a remote one would wait on the network."""
    config, _ = load_config(
        DEFAULT,
        [
            *DATAFLOW_DRY_RUN,
            "input.paths=['gs://my-bucket/a/{00000..00003}.tar', 'gs://my-bucket/b/*.tar']",
        ],
    )
    started = time.monotonic()
    job = run(config)
    assert time.monotonic() - started < 60 and job["dry_run"]


def test_a_dry_run_takes_a_remote_folder_of_images_as_one_source(tmp_path):
    # input.format: folder names gs://bucket/photos/ a folder of image files; a dry run
    # lists nothing remote, and the job reads the folder as one source
    config, _ = load_config(
        DEFAULT,
        [*DATAFLOW_DRY_RUN, "input.paths=['gs://my-bucket/photos']", "input.format=folder"],
    )
    started = time.monotonic()
    job = run(config)
    assert time.monotonic() - started < 60 and job["dry_run"]
    assert job["inputs"] == ["gs://my-bucket/photos/"]
