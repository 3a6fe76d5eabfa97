"""The command line: help, validation exit codes, a run with overrides."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mitigate.cli import main

REPO = Path(__file__).resolve().parents[1]


COMMANDS = ["run", "redecide", "report", "calibrate", "select", "train", "validate", "init"]


@pytest.mark.parametrize("argv", [["--help"], *([c, "--help"] for c in COMMANDS)])
def test_help_on_every_command(argv, capsys):
    """Every command's help prints, and reads as written: no format escape ("%%") left
    in a description, which argparse prints as it is."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "usage: mitigate" in text
    assert "%%" not in text and "%(" not in text


def test_validate_accepts_the_default_config(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    # not the checkout's out/: the README's first command leaves a run there, which a
    # validate of that folder rightly refuses to overwrite
    assert main(["validate", "--output", str(tmp_path / "out")]) == 0
    assert "config OK: 3 input file(s), filters: nsfw, image_quality, caption_terms" in (
        capsys.readouterr().out
    )


def test_validate_names_the_bad_field_and_exits_2(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    code = main(["validate", "--set", "filters.1.max_aspect_ratio=0.5", "--set", "decode.x=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "filters[1].max_aspect_ratio: must be >= 1.0, got 0.5" in err
    assert "decode.x: unknown key; valid keys:" in err


def test_run_with_input_output_and_set(tmp_path, sample_dir, capsys):
    out = tmp_path / "o"
    code = main(
        [
            "run",
            "--config",
            str(REPO / "configs" / "default.yaml"),
            "--input",
            str(sample_dir / "shard-00000.tar"),
            "--input",
            str(sample_dir / "shard-00001.tar"),
            "--output",
            str(out),
            "--set",
            "dedup.exact=false",
            "--set",
            "dedup.near=false",
        ]
    )
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_count"] == 45
    # the planted exact duplicate (000010006) survives when dedup is switched off
    assert summary["counts"]["duplicate"]["total"] == 0
    rows = pq.read_table(out / "manifest").to_pylist()
    assert [r["state"] for r in rows if r["key"] == "000010006"] == ["kept"]
    table = capsys.readouterr().out
    assert "mitigate: 45 input samples" in table and "kept" in table
    effective = (out / "config.yaml").read_text()
    assert "exact: false" in effective
    # a second run into the same folder is refused without --overwrite
    assert main(["run", "--input", str(sample_dir / "shard-00001.tar"), "--output", str(out)]) == 2


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "mitigate"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "validate" in proc.stdout
    assert "import entry" in exe.read_text()  # the fast exit, not main()


_EXIT_PROBE = """
import atexit, sys
from mitigate import cli
class Teardown:
    def __del__(self):
        print("teardown-ran", flush=True)
kept_until_teardown = Teardown()
atexit.register(print, "exit-handler-ran")
sys.argv = ["mitigate", *sys.argv[1:]]
{call}
"""


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["validate", "--output", "{tmp}/out"], 0, "config OK"),
        (["validate", "--set", "decode.x=1"], 2, "decode.x: unknown key"),
        (["--help"], 0, "usage: mitigate"),
    ],
)
def test_the_command_ends_without_the_interpreters_teardown(args, code, says, tmp_path):
    """The console script's exit: the same status and output, exit handlers run, and
    the interpreter does not free every object first (~1 s after a run)."""
    argv = [a.format(tmp=tmp_path) for a in args]

    def run(call: str) -> subprocess.CompletedProcess[str]:
        probe = _EXIT_PROBE.format(call=call)
        cmd = [sys.executable, "-c", probe, *argv]
        return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)

    fast = run("cli.entry()")
    assert fast.returncode == code, fast.stderr
    assert says in fast.stdout + fast.stderr
    assert "exit-handler-ran" in fast.stdout
    assert "teardown-ran" not in fast.stdout
    # the probe does see a teardown where there is one: main() returns, and Python exits
    slow = run("sys.exit(cli.main())")
    assert slow.returncode == code
    assert "exit-handler-ran" in slow.stdout and "teardown-ran" in slow.stdout


def test_beam_flags_after_double_dash_win_over_the_config():
    from mitigate.config import RunnerConfig
    from mitigate.runners import pipeline_options

    opts = pipeline_options(RunnerConfig(), ["--direct_num_workers=3"]).get_all_options()
    assert opts["direct_num_workers"] == 3
    assert opts["runner"] == "mitigate.runners.local.LocalRunner"  # DirectRunner minus Prism


def test_a_failure_inside_a_run_exits_1_with_one_line(capsys, monkeypatch, tmp_path):
    import mitigate.pipeline.run as run_module

    def boom(*args, **kwargs):
        raise ValueError("a worker found something odd\nsecond line")

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(run_module, "run", boom)
    code = main(["run", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1  # a ValueError from inside a run is no usage error
    assert err.strip().splitlines() == [
        "mitigate: failed: ValueError: a worker found something odd (run with -v for the traceback)"
    ]


def test_an_output_path_that_is_a_file_exits_2(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    (tmp_path / "out").write_text("x")
    assert main(["validate", "--output", str(tmp_path / "out")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_beam_options_beam_does_not_know_are_refused_or_said(caplog):
    """Beam dropped them with a warning hidden unless -vv: a --set put after `--` was
    lost and the run used the default filters."""
    from mitigate.config import ConfigError, RunnerConfig
    from mitigate.runners import pipeline_options

    with pytest.raises(ConfigError, match=r"after `--`: --set is mitigate's option, not Beam's"):
        pipeline_options(RunnerConfig(), ["--bogus_flag=1", "--set", "filters=[]"])
    assert pipeline_options(RunnerConfig(), ["--direct_num_workers=3"])
    with caplog.at_level(logging.WARNING, logger="mitigate.runners"):
        assert pipeline_options(RunnerConfig(), ["--bogus_flag=1"])
    assert "Apache Beam knows no option --bogus_flag: it is ignored" in caplog.text
