"""Every helper-command error is one line naming the thing at fault and what to do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mitigate.cli import main
from mitigate.output import write_manifest
from mitigate.records import SampleRecord

REPO = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "mitigate"


@pytest.fixture()
def run_dir(tmp_path) -> Path:
    """A finished run's layout (config.yaml + manifest) with 40 nsfw scores."""
    out = tmp_path / "run"
    (out / "manifest").mkdir(parents=True)
    filters = [
        {"name": "nsfw", "threshold": 0.3},
        {"name": "image_quality", "min_side": 64, "max_aspect_ratio": 4.0},
    ]
    (out / "config.yaml").write_text(yaml.safe_dump({"filters": filters}))
    records = [
        SampleRecord(
            key=f"k{i:03d}",
            source=str(tmp_path / "gone.tar"),
            index=i,
            state="kept" if i % 4 else "filtered",
            caption=f"caption {i}",
            scores={"nsfw": i / 40},
        )
        for i in range(40)
    ]
    with open(out / "manifest" / "part-000000.parquet", "wb") as f:
        write_manifest(records, ["nsfw", "image_quality"], f)
    return out


def _labels(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("key,label\n" + "".join(f"{k},{v}\n" for k, v in rows))
    return path


def _err(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_calibrate_missing_labels_file(run_dir, tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    argv = ["calibrate", "--scores", str(run_dir), "--labels", str(missing), "--filter", "nsfw"]
    assert main(argv) == 2
    assert _err(capsys) == [
        f"mitigate: --labels: no such file: {missing} (a key,label CSV, e.g. the labels.csv "
        "that `mitigate select`'s contact sheet downloads)"
    ]


def test_calibrate_missing_scores_folder(tmp_path, capsys):
    labels = _labels(tmp_path / "l.csv", [("k001", "1")])
    argv = ["calibrate", "--scores", str(tmp_path / "x"), "--labels", str(labels)]
    assert main([*argv, "--filter", "nsfw"]) == 2
    assert _err(capsys) == [
        f"mitigate: --scores: {tmp_path / 'x'}: not the output folder of a finished run (it has no "
        "config.yaml); pass the folder that `mitigate run --output` wrote"
    ]


def test_select_missing_positives_file(run_dir, tmp_path, capsys):
    missing = tmp_path / "pos.csv"
    argv = ["select", "--from", str(run_dir), "--filter", "nsfw", "--strategy", "neighbours"]
    assert main([*argv, "--positives", str(missing), "--output", str(tmp_path / "s")]) == 2
    assert _err(capsys) == [
        f"mitigate: --positives: no such file: {missing} (a key,label CSV, e.g. the "
        "labels.csv that `mitigate select`'s contact sheet downloads)"
    ]


def test_select_missing_from_folder(tmp_path, capsys):
    assert main(["select", "--from", str(tmp_path / "x"), "--filter", "nsfw"]) == 2
    assert _err(capsys)[0].startswith(f"mitigate: --from: {tmp_path / 'x'}: not the output")


def test_select_and_calibrate_refuse_a_rule_filter(run_dir, tmp_path, capsys):
    out = tmp_path / "sel"
    argv = ["select", "--from", str(run_dir), "--filter", "image_quality", "--output", str(out)]
    assert main(argv) == 2
    assert _err(capsys) == [
        "mitigate: --filter image_quality: a rule filter with no score and threshold to "
        "work on; choose a scored filter of that run: nsfw"
    ]
    labels = _labels(tmp_path / "l.csv", [("k001", "1")])
    argv = ["calibrate", "--scores", str(run_dir), "--labels", str(labels)]
    assert main([*argv, "--filter", "image_quality"]) == 2
    assert _err(capsys)[0].startswith("mitigate: --filter image_quality: a rule filter")
    assert not out.exists()


def test_unknown_filter_lists_the_run_s_filters(run_dir, tmp_path, capsys):
    assert main(["select", "--from", str(run_dir), "--filter", "nope"]) == 2
    assert _err(capsys) == [
        f"mitigate: run in {run_dir} has no filter 'nope'; it has ['nsfw', 'image_quality']"
    ]


@pytest.mark.parametrize(
    ("label", "hint"), [("maybe", ""), ("yes", " (ambiguous: say harmful or benign)")]
)
def test_calibrate_label_vocabulary(run_dir, tmp_path, capsys, label, hint):
    labels = _labels(tmp_path / "l.csv", [("k001", "1"), ("k002", label)])
    argv = ["calibrate", "--scores", str(run_dir), "--labels", str(labels), "--filter", "nsfw"]
    assert main(argv) == 2
    assert _err(capsys) == [
        f"mitigate: {labels}:3: label {label!r} is not one of 1/true/harmful/positive "
        f"(harmful) or 0/false/benign/negative (benign){hint}"
    ]


def test_select_refuses_a_non_empty_output_without_overwrite(run_dir, tmp_path, capsys):
    out = tmp_path / "sel"
    argv = ["select", "--from", str(run_dir), "--filter", "nsfw", "--n", "5", "--output", str(out)]
    assert main(argv) == 0
    first = (out / "selection.csv").read_text()
    (out / "selection.csv").write_text("my edits")
    capsys.readouterr()
    assert main(argv) == 2
    assert _err(capsys) == [
        f"mitigate: --output: {out} is not empty (an earlier selection?); pass --overwrite "
        "to replace its selection.csv and contact_sheet.html, or choose another folder"
    ]
    assert (out / "selection.csv").read_text() == "my edits"
    assert main([*argv, "--force"]) == 0
    assert (out / "selection.csv").read_text() == first


def test_calibrate_piped_into_head_exits_quietly(run_dir, tmp_path):
    labels = _labels(tmp_path / "l.csv", [(f"k{i:03d}", "1" if i > 30 else "0") for i in range(40)])
    cmd = (
        f"{EXE} calibrate --scores {run_dir} --labels {labels} --filter nsfw --target-recall 0.9"
        " | head -c 1"
    )
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120
    )
    assert proc.stdout == "f"  # "filter nsfw: threshold ..."
    assert proc.stderr == ""
    assert proc.returncode == 0


@pytest.mark.slow
def test_a_run_piped_into_head_exits_0(tmp_path, sample_dir):
    """rich's console ended a finished run with SystemExit(1), no word (helper-43)."""
    out = tmp_path / "o"
    cmd = (
        f"{EXE} run --input '{sample_dir}/shard-00000.tar' --output {out} --set "
        "'filters=[{name: image_quality}]' --set rebalance.enabled=false --set "
        "rebalance.embedding_filter=null 2>/dev/null | head -c 1"
    )
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=300
    )
    assert proc.stdout == "m"  # "mitigate: N input samples"
    assert proc.returncode == 0
    assert (out / "summary.json").is_file()


@pytest.mark.slow
def test_ctrl_c_during_a_run_is_one_line_and_exit_130(tmp_path, sample_dir):
    out = tmp_path / "o"
    temp = tmp_path / "tmp"  # the run's temporary folder (TMPDIR): Beam's go there
    temp.mkdir()
    proc = subprocess.Popen(
        [str(EXE), "run", "--input", str(sample_dir / "*.tar"), "--output", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    deadline = time.monotonic() + 120
    # wait until the run is under way (its staging folder exists), then Ctrl-C the group
    while time.monotonic() < deadline and not any(out.glob(".mitigate-staging-*")):
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if not line.startswith("mitigate ")]
    assert lines == ["mitigate: interrupted"], err
    # the interrupted run's staging folder and lock are gone, and the output folder it
    # made for them: nothing was written
    assert not out.exists()
    # nor is Beam's temporary folder left behind (only Pipeline.run removes it)
    assert list(temp.glob("beam-pipeline-temp*")) == []


@pytest.mark.parametrize(
    ("flags", "beam_level", "relay_level"),
    [([], "CRITICAL", "NOTSET"), (["-v"], "WARNING", "ERROR"), (["-vv"], "NOTSET", "NOTSET")],
)
def test_beam_logging_stays_quiet_unless_vv(flags, beam_level, relay_level, monkeypatch, tmp_path):
    import logging

    beam = logging.getLogger("apache_beam")
    relay = logging.getLogger("apache_beam.runners.portability.local_job_service")
    monkeypatch.setattr(beam, "level", logging.NOTSET)
    monkeypatch.setattr(relay, "level", logging.NOTSET)
    monkeypatch.chdir(REPO)
    assert main([*flags, "validate", "--output", str(tmp_path / "out")]) == 0
    assert logging.getLevelName(beam.level) == beam_level
    assert logging.getLevelName(relay.level) == relay_level


def test_the_resource_module_warning_is_dropped():
    import logging

    from mitigate.cli import _quiet_beam_import_noise

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("root", logging.WARNING, __file__, 1, message, None, None)

    text = "Resource module is not available for current platform, memory usage cannot be fetched."
    assert not _quiet_beam_import_noise(record(text))
    assert _quiet_beam_import_noise(record("a real warning"))


def test_an_unquoted_glob_is_refused_not_half_read(tmp_path, capsys, monkeypatch):
    """The shell expands `--input *.parquet`: the second file and every option after it
    reached run's Beam options, so it read one table and wrote to the default folder
    with the default filters. Now it stops, saying what to do; Beam options after `--`
    still pass."""
    called: list[list[str]] = []
    monkeypatch.setattr("mitigate.cli.cmd_run", lambda args: called.append(args.beam_args) or 0)
    for name in ("a.parquet", "b.parquet"):
        (tmp_path / name).write_bytes(b"")
    argv = ["run", "--input", str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--output", str(tmp_path / "out"), "--set", "dedup.k=4"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unexpected arguments: " in err and "b.parquet --output" in err
    assert "quote it (--input 'data/*.tar', 'shard-{000000..000099}.tar')" in err
    assert not called
    assert main([*argv[:3], "--", "--direct_num_workers=2"]) == 0
    assert called == [["--direct_num_workers=2"]]
    # the other commands: argparse said only "unrecognized arguments: b.parquet"
    for command in (["validate"], ["redecide", "--from", str(tmp_path)]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, *argv[1:]])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert "unexpected arguments: " in err and "a glob or brace set the shell expanded?" in err
    with pytest.raises(SystemExit):  # an option no command has is said so
        main(["report", str(tmp_path), "--bogus"])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_redecide_names_inputs_that_are_gone_before_any_work(tmp_path, sample_dir, capsys):
    """It failed at its end, writing the shards, after all the work; and --input was
    taken and ignored."""
    import shutil

    from mitigate.config import ConfigError, load_config
    from mitigate.pipeline.run import redecide, run

    shard = tmp_path / "in" / "shard-00000.tar"
    shard.parent.mkdir()
    shutil.copy(sample_dir / "shard-00000.tar", shard)
    cheap = ["filters=[{name: image_quality}]", "rebalance.enabled=false"]
    config, _ = load_config(
        REPO / "configs" / "default.yaml",
        [f"input.paths=[{str(shard)!r}]", f"output.path={tmp_path / 'run'}", *cheap],
    )
    run(config)
    shard.rename(tmp_path / "moved.tar")
    again, _ = load_config(tmp_path / "run" / "config.yaml", [f"output.path={tmp_path / 're'}"])
    with pytest.raises(ConfigError, match=r"--from: 1 of the run's 1 input file\(s\) are gone"):
        redecide(again, str(tmp_path / "run"))
    assert not (tmp_path / "re").exists()
    argv = ["redecide", "--from", str(tmp_path / "run"), "--output", str(tmp_path / "re")]
    assert main([*argv, "--input", str(tmp_path / "moved.tar")]) == 2
    assert "--input: redecide reads the inputs the run in --from read" in capsys.readouterr().err


def test_verbose_is_taken_after_the_command_too(monkeypatch):
    """Every failure says "run with -v"; `mitigate run -v ...` was an unrecognized
    argument (only `mitigate -v run ...` was taken)."""
    seen: list[int] = []
    monkeypatch.setattr("mitigate.cli.cmd_validate", lambda args: seen.append(args.verbose) or 0)
    assert main(["validate", "-v"]) == 0
    assert main(["-v", "validate", "-v"]) == 0
    assert main(["validate"]) == 0
    assert seen == [1, 2, 0]


def test_report_on_something_that_is_no_run_says_so(tmp_path, capsys):
    (tmp_path / "a.tar").write_bytes(b"")
    (tmp_path / "half").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "summary.json").write_text("{not json")
    expected = {
        "a.tar": "not a folder (give a run's output folder)",
        "half": "not a finished run (no summary.json: a run writes it last",
        "bad": "summary.json: not a run's summary (not JSON: ",
    }
    for name, message in expected.items():
        assert main(["report", str(tmp_path / name)]) == 2
        assert message in capsys.readouterr().err


def test_a_negative_thumbnail_count_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", str(tmp_path), "--max-thumbs", "-1"])
    assert exit_.value.code == 2
    assert "argument --max-thumbs: -1 is below 0" in capsys.readouterr().err


def test_ctrl_c_while_the_command_imports_is_one_line_and_exit_130():
    """Regression (helper-32): a Ctrl-C in the first half second (numpy, pyarrow
    importing, before a command handles it) printed a traceback and the process died
    by the signal."""
    script = (
        "from mitigate import cli\n"
        "def main():\n"
        "    raise KeyboardInterrupt\n"
        "cli.main = main\n"
        "cli.entry()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 130
    assert proc.stderr == "mitigate: interrupted\n"


def test_every_tool_refuses_a_run_with_a_part_missing_or_cut(default_run, tmp_path, capsys):
    # helper-34: with a part deleted, redecide wrote a run of two inputs out of three
    # (exit 0, "counts add up"), and calibrate and select left its samples out
    import shutil

    run = tmp_path / "run"
    shutil.copytree(default_run, run)
    parts = sorted((run / "manifest").glob("part-*.parquet"))
    assert len(parts) == 3
    labels = _labels(tmp_path / "l.csv", [("000000000", "1"), ("000000001", "0")])
    tools = {
        "calibrate": [
            "calibrate",
            "--scores",
            str(run),
            "--labels",
            str(labels),
            "--filter",
            "nsfw",
        ],
        "select": [
            "select",
            "--from",
            str(run),
            "--filter",
            "nsfw",
            "--output",
            str(tmp_path / "s"),
        ],
        "report": ["report", str(run)],
        "redecide": ["redecide", "--from", str(run), "--output", str(tmp_path / "re")],
    }
    hidden = parts[1].rename(tmp_path / parts[1].name)
    for name, argv in tools.items():
        assert main(argv) == 2, name
        err = capsys.readouterr().err
        assert "manifest parts hold 28 rows, its summary.json says the run wrote 49" in err, name
        assert f"{parts[1].stem} missing)" in err, name  # the part named (helper-43)
    parts[1].write_bytes(hidden.read_bytes()[:-100])  # cut: its footer gone
    for name, argv in tools.items():
        assert main(argv) == 2, name
        assert f"{parts[1]}: not a readable manifest part" in capsys.readouterr().err, name
    assert not (tmp_path / "re").exists() and not (tmp_path / "s").exists()


def test_select_offers_no_error_row_to_label(tmp_path, capsys):
    # helper-34: a duplicate_key copy (scored, then refused) was offered beside the
    # sample the run holds under that key: two images behind one label
    import csv

    out = tmp_path / "run"
    (out / "manifest").mkdir(parents=True)
    (out / "config.yaml").write_text(
        yaml.safe_dump({"filters": [{"name": "nsfw", "threshold": 0.3}]})
    )
    records = [
        SampleRecord(key=f"k{i}", source="a.tar", index=i, state="kept", scores={"nsfw": i / 10})
        for i in range(10)
    ]
    copy = SampleRecord(key="k0", source="b.tar", index=0, state="kept", scores={"nsfw": 0.3})
    records.append(copy.with_error("duplicate_key", "key 'k0' already used at a.tar"))
    # nor a duplicate (helper-40: 10 of 10 picks were copies of one image)
    records += [
        SampleRecord(key=f"d{i}", source="a.tar", index=10 + i, state="duplicate",
                     reason="near_duplicate", duplicate_of="k3", scores={"nsfw": 0.3})
        for i in range(5)
    ]  # fmt: skip
    with open(out / "manifest" / "part-000000.parquet", "wb") as f:
        write_manifest(records, ["nsfw"], f)
    argv = ["select", "--from", str(out), "--filter", "nsfw", "--n", "3", "--output"]
    assert main([*argv, str(tmp_path / "s")]) == 0
    with open(tmp_path / "s" / "selection.csv", newline="") as f:
        picked = [(r["key"], r["state"]) for r in csv.DictReader(f)]
    assert picked == [("k3", "kept"), ("k2", "kept"), ("k4", "kept")]


def test_a_damaged_file_of_a_run_is_named_by_the_tool_that_reads_it(default_run, tmp_path, capsys):
    # helper-34: "cannot reshape array of size 15328", "ParserError: while parsing a
    # flow node", a JSONDecodeError, a 36-line Arrow schema: none named the file
    import shutil

    import pyarrow.parquet as pq

    def damaged(name: str) -> Path:
        return Path(shutil.copytree(default_run, tmp_path / name))

    labels = _labels(tmp_path / "l.csv", [("000000000", "1"), ("000000001", "0")])
    cut = damaged("cut")
    npy = cut / "embeddings" / "nsfw" / "part-000001.npy"
    npy.write_bytes(npy.read_bytes()[:5000])
    yml = damaged("yml")
    (yml / "config.yaml").write_text("filters: [{name: nsfw\n")
    summ = damaged("summ")
    (summ / "summary.json").write_text("{not json")
    cols = damaged("cols")
    part = cols / "manifest" / "part-000000.parquet"
    pq.write_table(pq.read_table(part).drop(["score_nsfw"]), part)
    old = damaged("old")  # an older version's layout: no members column (a bare
    for old_part in (old / "manifest").glob("part-*.parquet"):  # FileNotFoundError: '')
        pq.write_table(pq.read_table(old_part).drop(["members", "phash_centre"]), old_part)
    cases = [
        (["select", "--from", str(cut), "--filter", "nsfw", "--strategy", "neighbours",
          "--positives", str(labels), "--output", str(tmp_path / "s")], f"{npy}: cut short"),
        (["redecide", "--from", str(cut), "--output", str(tmp_path / "r1")], f"{npy}: cut short"),
        (["calibrate", "--scores", str(yml), "--labels", str(labels), "--filter", "nsfw"],
         f"{yml / 'config.yaml'}: not the run's config (not YAML"),
        (["redecide", "--from", str(summ), "--output", str(tmp_path / "r2")],
         f"{summ / 'summary.json'}: not a run's summary"),
        (["calibrate", "--scores", str(cols), "--labels", str(labels), "--filter", "nsfw"],
         f"{part}: no column 'score_nsfw'"),
        (["redecide", "--from", str(old), "--output", str(tmp_path / "r3")],
         "manifest has no column 'members': written by another version"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) <= 2, (argv, err)


def test_helper_commands_name_what_helper_34_met(run_dir, tmp_path, capsys):
    # labels of another run (or keys with spaces around them): "no labelled positives
    # among 0 labelled samples" said nothing of why
    spaced = _labels(tmp_path / "s.csv", [(" k001 ", "1"), (" k002 ", "0")])
    argv = ["calibrate", "--scores", str(run_dir), "--labels", str(spaced), "--filter", "nsfw"]
    assert main(argv) == 2
    (err,) = _err(capsys)
    assert "none of the 2 labelled key(s) has a nsfw score" in err and "spaces around" in err
    # a spreadsheet's blank row is skipped, not the whole file refused
    blank = tmp_path / "b.csv"
    blank.write_text("key,label\nk031,1\nk001,0\nk035,1\n,\n")
    argv = ["calibrate", "--scores", str(run_dir), "--labels", str(blank), "--filter", "nsfw"]
    assert main(argv) == 0
    capsys.readouterr()
    # neighbours of no positive: 0 samples and exit 0 before
    negatives = _labels(tmp_path / "n.csv", [("k001", "0")])
    argv = ["select", "--from", str(run_dir), "--filter", "nsfw", "--strategy", "neighbours"]
    assert main([*argv, "--positives", str(negatives), "--output", str(tmp_path / "o")]) == 2
    assert _err(capsys) == [f"mitigate: --positives: {negatives} labels no sample harmful"]
    # an output under a file: NotADirectoryError, exit 1 before
    (tmp_path / "file").write_text("x")
    argv = ["select", "--from", str(run_dir), "--filter", "nsfw", "--output"]
    assert main([*argv, str(tmp_path / "file" / "sub")]) == 2
    assert "--output: cannot create" in _err(capsys)[0]


def test_add_filter_of_a_calibrate_snippet_says_to_set_the_threshold(tmp_path, capsys):
    # helper-34: "id 'nsfw' used twice" and an unrelated rebalance error
    from mitigate.calibrate import threshold_snippet

    snippet = tmp_path / "t.yaml"
    snippet.write_text(threshold_snippet("nsfw", 0.125, name="nsfw"))
    argv = ["validate", "--add-filter", str(snippet), "--output", str(tmp_path / "o")]
    assert main(argv) == 2
    (line,) = [x for x in _err(capsys) if "--add-filter" in x]
    assert f"--add-filter {snippet}: 'nsfw' is filters.0 of the config already" in line
    assert "--set filters.0.threshold=0.125" in line


def test_runs_in_folders_named_with_glob_characters(default_run, tmp_path, capsys):
    """A run moved under ``runs [2023]/`` was redecided into an empty run, exit 0, its
    counts adding up to 0 (the manifest parts found by a glob); a run into an output
    folder named ``re [1]`` did all its work, then failed deleting its staging folder
    and left it behind, failing every later run there (helper-36)."""
    import shutil

    run = tmp_path / "runs [2023]" / "run1"
    shutil.copytree(default_run, run)
    out = tmp_path / "re [1]?"
    assert main(["redecide", "--from", str(run), "--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_count"] == 49 and summary["manifest_rows"] == 49
    assert (
        summary["samples_written"]
        == json.loads((run / "summary.json").read_text())["samples_written"]
    )
    assert not [p for p in out.iterdir() if p.name.startswith(".mitigate-staging")]
    assert sorted(p.name for p in (out / "embeddings" / "nsfw").iterdir()) == sorted(
        p.name for p in (run / "embeddings" / "nsfw").iterdir()
    )  # copied from the run, not matched as a glob
    capsys.readouterr()
    # again into the same folder: a leftover staging folder failed this at once
    assert main(["redecide", "--from", str(run), "--output", str(out), "--overwrite"]) == 0


def test_a_job_endpoint_nothing_answers_at_stops_before_any_work(tmp_path, capsys):
    """Beam waited 5 minutes in silence, then failed with an empty FutureTimeoutError
    (helper-36); now the config check connects first, and names the field."""
    import socket

    sets = ["--set", "runner.name=portable", "--output", str(tmp_path / "o")]
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert main(["validate", *sets, "--set", f"runner.job_endpoint=127.0.0.1:{port}"]) == 0
    capsys.readouterr()
    assert main(["run", *sets, "--set", f"runner.job_endpoint=127.0.0.1:{port}"]) == 2
    err = _err(capsys)
    assert err[0] == "mitigate: invalid config:" and len(err) == 2, err
    assert f"runner.job_endpoint: nothing answers at 127.0.0.1:{port}" in err[1]
    assert not (tmp_path / "o").exists()
    # gRPC's other target forms are Beam's to pass on, not tried here (helper-39)
    for target in (f"dns:///127.0.0.1:{port}", f"ipv6:[::1]:{port}"):
        assert main(["validate", *sets, "--set", f"runner.job_endpoint={target}"]) == 0


def test_a_run_without_filters_says_so(tmp_path, caplog):
    """A config whose filters were all commented out ran unfiltered without a word
    (helper-36)."""
    from mitigate.config import load_config
    from mitigate.pipeline.preflight import preflight

    sample = str(REPO / "data" / "sample" / "*.tar")
    config, _ = load_config(
        None, ["filters=[]", f"output.path={tmp_path / 'o'}", f"input.paths=['{sample}']"]
    )
    with caplog.at_level("WARNING"):
        preflight(config)
    assert "filters: none: nothing is filtered" in caplog.text
    caplog.clear()
    config, _ = load_config(REPO / "configs" / "default.yaml", [f"output.path={tmp_path / 'p'}"])
    with caplog.at_level("WARNING"):
        preflight(config)
    assert "filters: none" not in caplog.text


def test_an_add_filter_snippets_files_are_found_beside_it(tmp_path, monkeypatch, capsys):
    """A snippet's relative terms_file (or model path) was looked for beside the main
    config, which without --config is inside the installed package; a snippet's other
    settings were dropped in silence (helper-36)."""
    snippets = tmp_path / "snippets"
    snippets.mkdir()
    (snippets / "words.txt").write_text("crossbow\n")
    snippet = snippets / "extra.yaml"
    entry = "{name: caption_terms, id: weapons, category: weapons, terms_file: words.txt}"
    snippet.write_text(f"filters: [{entry}]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no configs/default.yaml here: the packaged default
    sample = str(REPO / "data" / "sample" / "*.tar")
    argv = ["validate", "--input", sample, "--output", str(tmp_path / "o")]
    assert main([*argv, "--add-filter", str(snippet)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    snippet.write_text(f"filters: [{entry}]\ndedup: {{k: 3}}\n")
    assert main([*argv, "--add-filter", str(snippet)]) == 2
    (line,) = [x for x in _err(capsys) if "--add-filter" in x]
    assert "holds dedup beside `filters`; --add-filter adds filters only" in line


def test_redecide_refuses_settings_it_cannot_apply(default_run, tmp_path, capsys):
    """--set decode.max_caption_bytes or input.paths went into the redecided run's
    config.yaml and changed nothing: a caption over the new limit stayed kept, the
    manifest covered inputs the config no longer named (helper-40)."""
    argv = ["redecide", "--from", str(default_run), "--output", str(tmp_path / "r")]
    cases = [
        ("decode.max_caption_bytes=1000", "decode.max_caption_bytes: 1000, the run's 65536"),
        ("decode.hash_mode=exact", "decode.hash_mode: 'exact', the run's 'fast'"),
        (f"input.paths=['{default_run}/x.tar']", "input.paths: ["),
    ]
    for setting, message in cases:
        assert main([*argv, "--set", setting]) == 2, setting
        err = capsys.readouterr().err
        assert message in err and "cannot change what it read or how it decoded" in err, err
    assert not (tmp_path / "r").exists()
    # what it does apply: a threshold, execution settings
    assert main([*argv, "--set", "filters.0.threshold=0.5", "--set", "decode.processes=1"]) == 0


def test_a_workers_traceback_as_text_fails_with_its_last_error_line():
    """A second Beam worker's failure reaches the run as a RuntimeError whose message
    is that worker's traceback: the one line read "RuntimeError: Traceback (most
    recent call last):" (helper-42)."""
    from mitigate.console import RunFailed
    from mitigate.console import runtime as _runtime

    text = (
        'Traceback (most recent call last):\n  File "x.py", line 1, in f\n    g()\n'
        "RuntimeError: OSError: [Errno 28] No space left on device [while running 'W']\n"
    )
    with pytest.raises(RunFailed) as exc, _runtime():
        raise RuntimeError(text)
    assert str(exc.value) == (
        "RuntimeError: RuntimeError: OSError: [Errno 28] No space left on device "
        "[while running 'W']"
    )
    with pytest.raises(RunFailed, match=r"^ValueError: plain$"), _runtime():
        raise ValueError("plain")


def test_a_terminals_escapes_in_input_names_are_shown_not_acted_on(tmp_path, capsys):
    """An input named with ESC ] 0 ... BEL set the terminal's title from a warning and
    the source-issue line (helper-44)."""
    import logging

    from mitigate.console import TerminalText, print_summary

    record = logging.LogRecord(
        "m", logging.WARNING, "f", 1, "%s: cut", ("x\x1b]0;T\x07.tar",), None
    )
    assert TerminalText().filter(record) and record.getMessage() == "x\\x1b]0;T\\x07.tar: cut"
    summary = {
        "input_count": 1,
        "counts": {"error": {"total": 1, "reasons": {"truncated_shard": 1}}},
        "source_issues": [
            {"source": "a\x1b[31m[b].tar", "reason": "truncated_shard", "detail": "x\r"}
        ],
        "shards": [],
    }
    from mitigate.console import stdout_console

    print_summary(summary, stdout_console())
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out  # no escape reaches the terminal
    assert "a\\x1b[31m[b].tar: truncated_shard: x\\x0d" in out


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["select", "--from", "x", "--filter", "nsfw", "--output", ""], "--output"),
        (["select", "--from", "", "--filter", "nsfw"], "--from"),
        (["calibrate", "--scores", "", "--labels", "l.csv", "--filter", "nsfw"], "--scores"),
        (["report", ""], "OUT"),
        (
            [
                "train",
                "--from",
                "r",
                "--embeddings",
                "e",
                "--labels",
                "",
                "--name",
                "n",
                "--output",
                "o",
            ],
            "--labels",
        ),
    ],
)
def test_an_empty_path_is_refused_not_taken_for_the_working_folder(
    argv, flag, capsys, tmp_path, monkeypatch
):
    """`select --output ""` wrote into the working folder (helper-44)."""
    monkeypatch.chdir(tmp_path)
    from mitigate.cli import main

    assert main(argv) == 2
    assert f"mitigate: {flag}: an empty path" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_run_kills_its_child_processes_first():
    """After a Ctrl-C to the run's process alone, Beam's worker processes wrote on into
    the staging folder just removed (helper-42): the children go first."""
    code = (
        "import subprocess, sys, time\n"
        "from mitigate.console import _kill_children\n"
        "kids = [subprocess.Popen(['sleep', '60']) for _ in range(2)]\n"
        "_kill_children()\n"
        "print([k.wait(timeout=10) for k in kids])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[-9, -9]", proc.stderr
