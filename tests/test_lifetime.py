"""The suite's own processes: a killed test run leaves nothing running, and a finished one
leaves no temporary folders behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SLEEPER = """
import os
import tempfile
import time


def test_sleeps():
    with open(os.environ["LIFETIME_PID_FILE"], "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            time.sleep(0.5)
        except KeyboardInterrupt:  # as a test blocked in a Beam job does not see it
            pass
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_pytest_takes_its_xdist_workers_with_it(tmp_path):
    """The suite runs on pytest-xdist workers (addopts); this suite's conftest, loaded
    as a plugin into a run of a test that sleeps 120 s, must make the worker die when
    the pytest that started it is killed, not when its test ends. (xdist interrupts a
    worker's main thread when its pytest goes away; a test blocked in a Beam job, as
    the portable-runner test is, does not stop for that, so the sleeper ignores it.)"""
    (tmp_path / "test_sleeper.py").write_text(textwrap.dedent(SLEEPER))
    pid_file = tmp_path / "worker.pid"
    env = {
        **os.environ,
        "LIFETIME_PID_FILE": str(pid_file),
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_ADDOPTS", None)
    args = ["-p", "conftest", "-n", "1", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path)]
    controller = subprocess.Popen(
        [sys.executable, "-m", "pytest", *args, "test_sleeper.py"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait(lambda: pid_file.exists() and pid_file.read_text(), 90), "the test never ran"
        worker = int(pid_file.read_text())
        assert worker != controller.pid and _running(worker)
        controller.kill()
        controller.wait()
        # execnet ends an orphaned worker itself after ~10 s; the parent-death signal
        # ends it at once (and its services with it, which the grace would leave running).
        assert _wait(lambda: not _running(worker), 5), "the xdist worker outlived its pytest"
    finally:
        controller.kill()
        if pid_file.exists() and pid_file.read_text() and _running(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), 9)


def test_temporary_folders_stay_in_the_test_processs_own_root() -> None:
    """conftest points TMPDIR at a folder removed when the process exits; Beam's
    temp folders (left behind by pipelines built but not run) and subprocesses' land
    there."""
    import apache_beam as beam

    root = Path(os.environ["TMPDIR"])
    assert root.name.startswith("mitigate-tests-") and root.is_dir()
    assert Path(tempfile.gettempdir()) == root
    pipeline = beam.Pipeline()  # built, never run: Beam keeps its temp folder
    assert Path(pipeline.local_tempdir).parent == root
    child = subprocess.run(
        [sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(child.stdout.strip()) == root
