"""Runs that are interrupted, repeated or concurrent, a full disk, and hostile images
in a real run: the output folder holds a complete result or nothing under final
names, and no input starts an external program."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import sample_members, tar_bytes
from mitigate.config import ConfigError
from mitigate.pipeline import outdir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _cli(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, **kw.pop("env", {})}
    return subprocess.Popen(
        [PY, "-m", "mitigate.cli", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _run_args(inputs: list[Path], out: Path, *extra: str) -> list[str]:
    args = ["run", "--config", str(REPO / "configs" / "default.yaml"), "--output", str(out)]
    for path in inputs:
        args += ["--input", str(path)]
    # no model and no rebalancing: a quick run (the nsfw filter is tested elsewhere)
    args += ["--set", "filters=[{name: image_quality}]", "--set", "rebalance.enabled=false"]
    args += ["--set", "rebalance.embedding_filter=null"]
    return args + list(extra)


def _final_names(out: Path) -> set[str]:
    return {p.name for p in out.iterdir() if not p.name.startswith(".")} if out.exists() else set()


def _snapshot(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and not p.relative_to(out).parts[0].startswith(".")
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory, sample_dir) -> tuple[Path, dict[str, bytes]]:
    """A complete previous result, and its files."""
    out = tmp_path_factory.mktemp("prev") / "out"
    proc = _cli(_run_args([sample_dir / "shard-00000.tar"], out), REPO)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out, _snapshot(out)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_overwrite_replaces_only_what_the_previous_run_wrote(finished, tmp_path, sample_dir):
    out = _copy(finished[0], tmp_path / "out")
    (out / "notes.txt").write_text("mine")
    beam_flags = ("--", "--direct_num_workers=2", "--direct_running_mode=multi_threading")
    args = _run_args([sample_dir / "shard-00001.tar"], out, "--overwrite", *beam_flags)
    proc = _cli(args, tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert (out / "notes.txt").read_text() == "mine"
    summary = json.loads((out / "summary.json").read_text())
    # the options in force, not the config's defaults
    runner = summary["run"]["runner"]
    assert (runner["direct_num_workers"], runner["direct_running_mode"]) == (2, "multi_threading")
    assert runner["decode_processes"] == 1  # two Beam workers: no decode processes of their own
    assert summary["input_count"] != json.loads(finished[1]["summary.json"])["input_count"]
    assert not [p for p in out.iterdir() if p.name.startswith(".mitigate")]
    # --overwrite is not passed on: a redecide, whose default config is this file,
    # replaced an existing run in its --output unasked (helper-43)
    assert "  overwrite: false\n" in (out / "config.yaml").read_text()
    other = _copy(finished[0], tmp_path / "other")
    proc = _cli(["redecide", "--from", str(out), "--output", str(other)], tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "--overwrite" in err, err
    assert _snapshot(other) == finished[1]
    # a run of an earlier version recorded overwrite: true: still not passed on
    text = (out / "config.yaml").read_text()
    (out / "config.yaml").write_text(text.replace("  overwrite: false\n", "  overwrite: true\n"))
    proc = _cli(["redecide", "--from", str(out), "--output", str(other)], tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "--overwrite" in err, err
    assert _snapshot(other) == finished[1]


def test_files_the_run_did_not_create_are_never_replaced(tmp_path, sample_dir):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yaml").write_text("# my own config\n")
    for extra in ((), ("--overwrite",)):
        proc = _cli(_run_args([sample_dir / "shard-00000.tar"], out, *extra), tmp_path)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2
        assert "already holds config.yaml, not written by a mitigate run" in err
    assert (out / "config.yaml").read_text() == "# my own config\n"


def test_another_tools_summary_or_a_users_file_in_a_run_folder_stops_overwrite(finished, tmp_path):
    """A summary.json of another tool made the folder a "previous run" and --overwrite
    replaced the user's config.yaml and shards/ and manifest/ whole; a file a user put
    inside a real run's shards/ went with it."""
    out = tmp_path / "theirs"
    (out / "shards").mkdir(parents=True)
    (out / "summary.json").write_text('{"accuracy": 0.91}')
    (out / "shards" / "README.md").write_text("mine")
    assert outdir.previous_outputs(str(out)) is None
    with pytest.raises(ConfigError, match=r"already holds shards, summary\.json, not written by"):
        outdir.check_output(str(out), overwrite=True)
    run = _copy(finished[0], tmp_path / "run")
    outdir.check_output(str(run), overwrite=True)  # a run's own files only: fine
    (run / "shards" / "README.md").write_text("mine")
    (run / "manifest" / "other.parquet").write_bytes(b"")
    with pytest.raises(ConfigError) as refused:
        outdir.check_output(str(run), overwrite=True)
    assert "holds manifest/other.parquet, shards/README.md inside a previous run's" in str(
        refused.value
    )
    assert (run / "shards" / "README.md").read_text() == "mine"


def test_the_config_file_itself_is_protected(finished, tmp_path):
    out = _copy(finished[0], tmp_path / "out")
    with pytest.raises(ConfigError, match="which it reads"):
        outdir.check_output(str(out), True, protected=[str(out / "config.yaml")])


def test_an_input_inside_what_the_run_replaces_is_refused(finished, tmp_path):
    """Re-running on the previous run's own output shards into the same folder with
    --overwrite would replace the inputs it reads: refused before any work, naming the
    file; an input beside the output folder's names is not in the way."""
    out = _copy(finished[0], tmp_path / "out")
    shard = next((out / "shards").glob("*.tar"))
    proc = _cli(_run_args([shard], out, "--overwrite"), tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert f"the run would replace {shard}, which it reads" in err
    beside = out / "mine.tar"
    beside.write_bytes(shard.read_bytes())
    outdir.check_output(str(out), True, protected=[str(beside)])
    with pytest.raises(ConfigError, match="which it reads"):
        outdir.check_output(str(out), True, protected=[str(out / "shards" / "x" / "y.tar")])


@pytest.mark.parametrize("overwrite", [False, True])
def test_sigkill_leaves_the_previous_result_or_nothing(finished, tmp_path, sample_dir, overwrite):
    out = _copy(finished[0], tmp_path / "out") if overwrite else tmp_path / "out"
    before = _snapshot(out) if overwrite else {}
    extra = ("--overwrite",) if overwrite else ()
    proc = _cli(_run_args([sample_dir / "shard-00001.tar"], out, *extra), tmp_path)
    deadline = time.monotonic() + 120
    staged = []
    while time.monotonic() < deadline and not staged:
        staged = list(out.glob(".mitigate-staging-*/config.yaml")) if out.exists() else []
        time.sleep(0.05)
    assert staged, "the run never started staging"
    time.sleep(0.5)  # well inside the Beam run
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _snapshot(out) == before  # the previous complete result, or nothing
    if not overwrite:
        assert _final_names(out) == set()
    # The next run takes over the dead run's lock, clears its staging and finishes.
    proc = _cli(_run_args([sample_dir / "shard-00001.tar"], out, "--overwrite"), tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []
    assert "taking over a stale lock" in err


def test_a_second_run_into_a_locked_folder_is_refused(finished, tmp_path, sample_dir):
    out = _copy(finished[0], tmp_path / "out")
    first = _cli(_run_args([sample_dir / "shard-00001.tar"], out, "--overwrite"), tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out / outdir.LOCK).exists():
        time.sleep(0.02)
    # The first run holds the lock; pause it there so that it cannot finish (and let go
    # of the lock) before the second run has started: a fast first run made this racy.
    first.send_signal(signal.SIGSTOP)
    try:
        second = _cli(_run_args([sample_dir / "shard-00000.tar"], out, "--overwrite"), tmp_path)
        _, err2 = second.communicate(timeout=120)
    finally:
        first.send_signal(signal.SIGCONT)
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert second.returncode == 2
    assert "is in use by another run (pid" in err2
    assert "output folder in use:" in err2 and "invalid config" not in err2
    sources = set(pq.read_table(out / "manifest").column("source").to_pylist())
    assert {Path(s).name for s in sources} == {"shard-00001.tar"}  # the first run's input


def test_lock_held_by_a_live_process_refuses_and_a_dead_one_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": sleeper.pid, "host": socket.gethostname(), "started": time.time()}
        (out / outdir.LOCK).write_text(json.dumps(lock))
        with pytest.raises(ConfigError, match=f"pid {sleeper.pid}"), outdir.locked(str(out)):
            pass
    finally:
        sleeper.kill()
        sleeper.wait()
    with outdir.locked(str(out)):  # its process is gone now: taken over
        held = json.loads((out / outdir.LOCK).read_text())
        assert held["pid"] == os.getpid()
    assert not (out / outdir.LOCK).exists()


def test_full_disk_fails_cleanly_and_keeps_the_previous_result(finished, tmp_path, sample_dir):
    out = _copy(finished[0], tmp_path / "out")
    before = _snapshot(out)
    # Writes past 64 KiB per file fail with EFBIG, as on a full disk (shards are larger).
    limiter = (
        "import resource, runpy, signal, sys;"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536));"
        "sys.argv = ['mitigate'] + sys.argv[1:];"
        "runpy.run_module('mitigate.cli', run_name='__main__')"
    )
    args = _run_args([sample_dir / "shard-00001.tar"], out, "--overwrite")
    proc = subprocess.run(
        [PY, "-c", limiter, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 1, proc.stderr
    assert "mitigate: failed:" in proc.stderr and "Traceback" not in proc.stderr
    assert _snapshot(out) == before
    leftovers = [p for p in out.rglob("*") if ".tmp-" in p.name or "staging" in p.name]
    assert leftovers == []


def test_no_external_program_ever_runs_on_input_bytes(tmp_path):
    """A PostScript file named KEY.jpg with a fake `gs` first on PATH: if Pillow
    handed it to Ghostscript, the fake would leave a marker."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gs-was-run"
    fake = bin_dir / "gs"
    fake.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    fake.chmod(0o755)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "PNG")
    shard = tmp_path / "in.tar"
    shard.write_bytes(
        tar_bytes(
            sample_members("eps", eps, "postscript")
            + sample_members("tiff", b"II*\x00" + bytes(100), "tiff", ext="jpg")
            + sample_members("ok", buf.getvalue(), "a red square", ext="png")
        )
    )
    out = tmp_path / "out"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = _cli(_run_args([shard], out, "--set", "filters=[]"), tmp_path, env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert not marker.exists()
    rows = {r["key"]: r for r in pq.read_table(out / "manifest").to_pylist()}
    assert (rows["eps"]["state"], rows["eps"]["reason"]) == ("error", "unsupported_format")
    assert "PostScript" in rows["eps"]["detail"]
    assert rows["tiff"]["reason"] == "unsupported_format"
    assert rows["ok"]["state"] == "kept"


def test_runs_with_no_sample_or_nothing_kept_finish_with_summary_and_report(tmp_path, sample_dir):
    import gzip

    from mitigate.config import load_config
    from mitigate.pipeline.run import run

    empty, zero, gz = tmp_path / "empty.tar", tmp_path / "zero.tar", tmp_path / "gz.tar"
    empty.write_bytes(tar_bytes([]))
    zero.write_bytes(b"")
    gz.write_bytes(gzip.compress(tar_bytes(sample_members("a", b"x"))))
    cases = {
        "nothing": ([empty, zero, gz], []),
        # every sample dropped: a filter no photo passes
        "none_kept": (
            [sample_dir / "shard-00000.tar"],
            ["filters=[{name: image_quality, min_side: 100000}]"],
        ),
    }
    for name, (inputs, sets) in cases.items():
        out = tmp_path / name
        config, _ = load_config(
            REPO / "configs" / "default.yaml",
            [
                f"input.paths={[str(p) for p in inputs]!r}",
                f"output.path='{out}'",
                "filters=[]",
                "rebalance.enabled=true",
                "rebalance.embedding_filter=null",
                *sets,
            ],
        )
        summary = run(config)
        assert summary["counts"]["kept"]["total"] == 0
        assert summary["conservation"]["ok"]
        assert (out / "report.html").stat().st_size > 1000
        parts = sorted((out / "manifest").glob("part-*.parquet"))
        assert len(parts) == len(inputs)  # an (empty) part for every input file
        rows = pq.read_table(out / "manifest").num_rows
        assert rows == summary["input_count"]
    issues = json.loads((tmp_path / "nothing" / "summary.json").read_text())["source_issues"]
    assert sorted(i["reason"] for i in issues) == ["read_error", "read_error"]


def test_an_output_folder_that_cannot_be_made_is_named_before_any_work(tmp_path):
    """/proc/x and a name over 255 bytes failed after the work, with exit 1; a folder
    that can be made is not made by the check (validate leaves nothing behind)."""
    for out, why in (
        ("/proc/no-such-folder/out", "cannot create /proc/no-such-folder/out: "),
        (str(tmp_path / ("a" * 300) / "out"), "is over 255 bytes"),
    ):
        with pytest.raises(ConfigError, match=re.escape(why)):
            outdir.check_output(out, overwrite=False)
    fresh = tmp_path / "new" / "out"
    outdir.check_output(str(fresh), overwrite=False)
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path) == []


def test_a_run_that_fails_leaves_no_empty_folder_it_made(tmp_path):
    from mitigate.config import validate_config
    from mitigate.pipeline.run import _staged

    def fails(config, layout):
        raise RuntimeError("a bundle failed")

    for existed in (False, True):
        out = tmp_path / f"out-{existed}"
        if existed:
            out.mkdir()
        config = validate_config({"output": {"path": str(out)}})
        with pytest.raises(RuntimeError, match="a bundle failed"):
            _staged(config, fails)
        assert out.exists() == existed  # a folder the user made stays
        assert not existed or os.listdir(out) == []
    # nor the parents it made for it (helper-42: --output n1/n2/out left n1/n2)
    deep = tmp_path / "n1" / "n2" / "out"
    with pytest.raises(RuntimeError, match="a bundle failed"):
        _staged(validate_config({"output": {"path": str(deep)}}), fails)
    assert not (tmp_path / "n1").exists()


def _fake_run(folder: Path, tag: str, names: list[str]) -> dict[str, bytes]:
    """A run's top-level entries (folders with one file, files) and its summary."""
    folder.mkdir(parents=True)
    for name in names:
        if "." in name:
            (folder / name).write_text(f"{tag} {name}")
        else:
            (folder / name).mkdir()
            (folder / name / "part-000000.parquet").write_text(f"{tag} {name}")
    summary = {"input_count": 1, "counts": {}, "conservation": {}, "tag": tag}
    summary["outputs"] = [*names, "summary.json"]
    (folder / "summary.json").write_text(json.dumps(summary))
    return _snapshot(folder)


def test_a_swap_stopped_at_any_step_leaves_one_whole_result_after_recovery(tmp_path, monkeypatch):
    """Regression (helper-32): a Ctrl-C (or a kill) during the final swap left the output
    folder with parts of two runs, `mitigate report` said it had no manifest, and the
    next run's recovery deleted the previous result's half it had moved aside. Every
    step of the swap is stopped in turn here; what recovery leaves is the previous
    result whole, or (the swap done) the new one whole."""
    old_names = ["shards", "manifest", "report.html", "config.yaml"]
    new_names = ["shards", "manifest", "quarantine", "config.yaml", "report.html"]
    renames = len(old_names) + 1 + len(new_names) + 1
    real_rename = outdir.fs.rename
    for stop in range(renames + 1):
        out = tmp_path / f"out{stop}"
        before = _fake_run(out, "old", old_names)
        staging = Path(outdir.new_staging(str(out)))
        after = _fake_run(staging, "new", new_names)
        done = []

        def rename(src, dst, stop=stop, done=done):
            if len(done) == stop:
                raise KeyboardInterrupt
            done.append(src)
            real_rename(src, dst)

        monkeypatch.setattr(outdir.fs, "rename", rename)
        try:
            outdir.swap_in(str(out), str(staging))
            finished = True
        except KeyboardInterrupt:
            finished = False
        monkeypatch.setattr(outdir.fs, "rename", real_rename)
        assert finished == (stop == renames)
        outdir.recover(str(out))
        assert _snapshot(out) == (after if finished else before), stop
        assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_signal_during_the_swap_waits_for_its_end(tmp_path):
    """A Ctrl-C or SIGTERM that comes while the swap runs takes effect after it, and
    says the output is in place; outside it, at once."""
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from mitigate import console\n"
        "out, sig, inside = sys.argv[1], getattr(signal, sys.argv[2]), sys.argv[3] == '1'\n"
        "with console.interruptible(out):\n"
        "    if inside:\n"
        "        with console.uninterrupted():\n"
        "            os.kill(os.getpid(), sig)\n"
        "            Path(out, 'swapped').write_text('whole')\n"
        "    else:\n"
        "        os.kill(os.getpid(), sig)\n"
        "        Path(out, 'never').write_text('')\n"
    )
    for sig, code, word in (("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")):
        for inside in (True, False):
            out = tmp_path / f"{sig}{inside}"
            out.mkdir()
            proc = subprocess.run(
                [PY, "-c", script, str(out), sig, "1" if inside else "0"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert proc.returncode == code, proc.stderr
            assert proc.stderr.startswith(f"mitigate: {word}")
            assert ("swapped into" in proc.stderr) == inside
            assert [p.name for p in out.iterdir()] == (["swapped"] if inside else [])


def test_sigterm_ends_a_run_like_ctrl_c(finished, tmp_path, sample_dir):
    """Regression (helper-32): `kill PID` (docker stop, a CI timeout) ended a run with no
    word and left its lock, staging folder and Beam's temporary folder behind."""
    out = _copy(finished[0], tmp_path / "out")
    before = _snapshot(out)
    proc = _cli(_run_args([sample_dir / "shard-00001.tar"], out, "--overwrite"), tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(out.glob(".mitigate-staging-*/config.yaml")):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "mitigate: terminated" in err
    assert _snapshot(out) == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


def test_a_lock_whose_pid_a_newer_process_holds_is_taken_over(tmp_path):
    """Regression (helper-32): a lock left by a killed run names a pid that a process
    started since may hold (a container restarted on the same volume runs the command
    as pid 1 again: the lock named its own pid); it was "in use by another run" until
    deleted by hand. A lock of a live process that started before it was written still
    refuses."""
    out = tmp_path / "out"
    out.mkdir()
    host = socket.gethostname()
    mine = outdir._process_start(os.getpid())
    assert mine is not None and abs(mine - time.time()) < 3600  # /proc is read
    for pid, started, refused in (
        (os.getpid(), mine - 600, False),  # this process's pid, in a lock older than it
        (1, time.time(), True),  # a live process older than the lock: its holder
    ):
        (out / outdir.LOCK).write_text(json.dumps({"pid": pid, "host": host, "started": started}))
        if refused:
            with pytest.raises(ConfigError, match=f"pid {pid}"), outdir.locked(str(out)):
                pass
            continue
        with outdir.locked(str(out)):
            assert json.loads((out / outdir.LOCK).read_text())["started"] > started


def test_validate_says_when_a_live_run_holds_the_output(tmp_path, capsys):
    """Regression (helper-32): `validate` said "config OK" while another run held the
    output's lock, and the run was then refused. It now says so (exit 0: the config is
    valid); a stale lock says nothing."""
    from mitigate.cli import main

    out = tmp_path / "out"
    out.mkdir()
    args = ["validate", "--config", str(REPO / "configs" / "default.yaml"), "--output", str(out)]
    sleeper = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        lock = {"pid": sleeper.pid, "host": socket.gethostname(), "started": time.time()}
        (out / outdir.LOCK).write_text(json.dumps(lock))
        assert main(args) == 0
        err = capsys.readouterr().err
        assert f"is in use by another run (pid {sleeper.pid}" in err
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main(args) == 0  # its process is gone: a stale lock, taken over by a run
    assert "in use" not in capsys.readouterr().err


def test_an_output_under_a_file_is_named_as_such(tmp_path):
    """Regression (helper-32): ``--output afile/sub`` (afile a file) was "not writable
    (no write permission on afile)"."""
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(ConfigError, match=r"lies under .*afile, which is a file"):
        outdir.check_output(str(tmp_path / "afile" / "sub"), False)


def test_a_read_only_mount_is_told_from_a_permission(tmp_path, monkeypatch):
    """A read-only file system was said as "no write permission" (helper-32)."""
    assert not outdir._read_only(str(tmp_path))
    real = os.statvfs

    class ReadOnly:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(
        outdir.os, "statvfs", lambda p: ReadOnly() if p == str(tmp_path) else real(p)
    )
    monkeypatch.setattr(outdir.os, "access", lambda p, mode: p != str(tmp_path))
    with pytest.raises(ConfigError, match="a read-only file system on"):
        outdir.check_output(str(tmp_path / "out"), False)


def test_report_holds_the_outputs_lock_as_a_run_does(default_run, tmp_path, capsys, monkeypatch):
    # helper-34: a report written while `run --overwrite` replaced the folder described
    # the run before (124 kept on the page, 132 in summary.json)
    import shutil

    from mitigate.cli import main

    out = Path(shutil.copytree(default_run, tmp_path / "out"))
    sleeper = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"pid": sleeper.pid, "host": socket.gethostname(), "started": time.time()}
        (out / outdir.LOCK).write_text(json.dumps(lock))
        assert main(["report", str(out)]) == 2
        assert f"is in use by another run (pid {sleeper.pid}" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    (out / outdir.LOCK).unlink()
    taken = []
    real = outdir.locked
    monkeypatch.setattr(outdir, "locked", lambda path: taken.append(path) or real(path))
    assert main(["report", str(out)]) == 0
    assert taken == [str(out)] and not (out / outdir.LOCK).exists()


def test_a_failed_runs_error_is_not_hidden_by_its_cleanup(tmp_path, monkeypatch):
    """A folder gone read-only mid-run: removing the lock and the staging folder failed
    too, and the message named the lock, not the write (helper-42)."""
    from mitigate.config import validate_config
    from mitigate.pipeline import fs
    from mitigate.pipeline.run import _staged

    def fails(config, layout):
        def read_only(*args, **kwargs):
            raise OSError(30, "Read-only file system")

        monkeypatch.setattr(os, "unlink", read_only)
        monkeypatch.setattr(fs, "delete_tree", read_only)
        raise OSError(28, "No space left on device: the shard")

    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space left on device: the shard"):
        _staged(validate_config({"output": {"path": str(out)}}), fails)


def test_an_interrupted_run_leaves_no_empty_folder_it_made(tmp_path):
    """Ctrl-C ends the process from its handler (os._exit), past _staged's clean-up of
    a failed run: --output n1/n2/out interrupted left n1/n2/out, empty, behind. A
    folder that was there stays."""
    script = (
        "import os, signal, sys\n"
        "from mitigate import console\n"
        "from mitigate.config import validate_config\n"
        "from mitigate.pipeline.run import _staged\n"
        "out = sys.argv[1]\n"
        "def work(config, layout):\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "with console.interruptible(out):\n"
        "    _staged(validate_config({'output': {'path': out}}), work)\n"
    )
    (tmp_path / "there").mkdir()
    for out, left in (
        (tmp_path / "n1" / "n2" / "out", tmp_path / "n1"),
        (tmp_path / "there" / "out", tmp_path / "there" / "out"),
    ):
        proc = subprocess.run(
            [PY, "-c", script, str(out)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 130, proc.stderr
        assert "mitigate: interrupted" in proc.stderr
        assert not left.exists()
    assert (tmp_path / "there").is_dir()
