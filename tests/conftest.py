"""Shared fixtures: the bundled sample data (real photos) and small builders."""

from __future__ import annotations

import atexit
import csv
import io
import json
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from lifetime import die_with_parent

# A pytest-xdist worker (addopts run one a core) dies with the pytest that started it:
# killed, it would otherwise finish its current test first, and a job service with it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    die_with_parent()

# Every temporary folder of this test process and of the processes it starts (Beam's
# pipeline and job-server temp folders, which Beam leaves behind for pipelines that are
# built but not run, worker pools, decode workers) goes into one folder, removed when
# the process exits: the suite does not litter the machine's /tmp.
# (pytest's own tmp_path folders stay where pytest keeps them for a look afterwards)
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
_TMP_ROOT = tempfile.mkdtemp(prefix="mitigate-tests-")
os.environ["TMPDIR"] = _TMP_ROOT
tempfile.tempdir = None  # read TMPDIR again
atexit.register(shutil.rmtree, _TMP_ROOT, ignore_errors=True)

# Passed model checks are remembered in a cache folder (filters/onnx_image.py); the
# suite keeps its own, so it neither reads nor writes the user's.
os.environ.setdefault("MITIGATE_CACHE_DIR", tempfile.mkdtemp(prefix="mitigate-test-cache-"))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _kernels_compiled_again() -> Iterator[None]:
    """A small run's Decode turns this process's numba kernels off (their numpy
    references give the same bits, mitigate.kernels.set_compiled); ``run()`` turns them
    back on, a pipeline a test builds itself does not: each test starts with them on,
    so a test of the compiled path never checks numpy against itself."""
    from mitigate import kernels

    kernels.set_compiled(True)
    yield


SAMPLE = REPO / "data" / "sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """The default config's run on the bundled sample (nsfw with stored embeddings),
    once a test process, for the tools that read a finished run. Tests read it; one
    that changes a run copies it first."""
    from mitigate.config import load_config
    from mitigate.pipeline.run import run

    out = tmp_path_factory.mktemp("default-run") / "out"
    config, _ = load_config(REPO / "configs" / "default.yaml", [f"output.path={out}"])
    run(config)
    return out


@pytest.fixture(scope="session")
def expected_states() -> list[dict[str, str]]:
    with open(SAMPLE / "expected.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def photos(expected_states) -> dict[str, bytes]:
    """Image bytes of every sample photo the sample data expects to keep, by key."""
    kept = {(r["key"], r["shard"]) for r in expected_states if r["state"] == "kept"}
    out = {}
    for shard in ("shard-00000.tar", "shard-00001.tar"):
        with tarfile.open(SAMPLE / shard) as tar:
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                if ext in ("jpg", "png", "webp") and (key, shard) in kept:
                    out[key] = tar.extractfile(member).read()
    assert len(out) >= 30
    return out


def quarantine_run(source: Path, out: Path, *extra: str) -> dict[str, dict]:
    """A run of ``source`` with image_quality alone (shorter side 32 px), quarantine on,
    no rebalancing nor near-dedup, ``extra`` overrides after; its manifest rows by key."""
    import pyarrow.parquet as pq

    from mitigate.config import load_config
    from mitigate.pipeline.run import run

    config, _ = load_config(
        REPO / "configs" / "default.yaml",
        [
            f"input.paths=[{str(source)!r}]",
            f"output.path={str(out)!r}",
            "filters=[{name: image_quality, min_side: 32, max_aspect_ratio: 4.0}]",
            "rebalance.enabled=false",
            "dedup.near=false",
            "output.quarantine=true",
            *extra,
        ],
    )
    run(config)
    return {r["key"]: r for r in pq.read_table(out / "manifest").to_pylist()}


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A tar archive holding ``members`` (name, data) in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def sample_members(
    key: str, image: bytes, caption: str = "a photo", ext: str = "jpg", meta: dict | None = None
) -> list[tuple[str, bytes]]:
    members = [(f"{key}.{ext}", image), (f"{key}.txt", caption.encode())]
    if meta is not None:
        members.append((f"{key}.json", json.dumps(meta).encode()))
    return members


class Gate:
    """A FIFO that worker start calls block on (``os.open(path, os.O_RDONLY)`` returns
    once a writer opens it): :meth:`open` lets them through; :attr:`opened` says whether
    it was. A timer opens it after 60 s, so that a test that waits on it by mistake
    fails instead of hanging."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self._fds: list[int] = []
        self._timer = threading.Timer(60, self.open)
        self._timer.start()

    @property
    def opened(self) -> bool:
        return bool(self._fds)

    @property
    def start_call(self) -> tuple[object, tuple[str, int]]:
        """A worker's start call (function, args) that blocks until :meth:`open`."""
        return os.open, (str(self.path), os.O_RDONLY)

    def open(self) -> None:
        if not self._fds:
            self._fds.append(os.open(self.path, os.O_WRONLY))

    def close(self) -> None:
        self._timer.cancel()
        for fd in self._fds:
            os.close(fd)


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    g = Gate(tmp_path / "gate")
    yield g
    g.close()
