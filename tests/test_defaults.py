"""The installed CLI works from any folder: the packaged default config, `mitigate init`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from mitigate.cli import main
from mitigate.config import load_config
from mitigate.defaults import packaged_config, packaged_config_dir

REPO = Path(__file__).resolve().parents[1]


def test_packaged_config_and_terms_match_the_checkout_copies():
    # configs/ is the user-facing copy; the package ships the same bytes.
    assert packaged_config().read_bytes() == (REPO / "configs" / "default.yaml").read_bytes()
    for terms in (REPO / "configs" / "terms").iterdir():
        assert (packaged_config_dir() / "terms" / terms.name).read_bytes() == terms.read_bytes()


def test_pyproject_ships_every_packaged_config_file():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["mitigate"]
    shipped = {p for g in globs for p in (REPO / "mitigate").glob(g)}
    present = {p for p in (REPO / "mitigate" / "configs").rglob("*") if p.is_file()}
    assert present and present == shipped


def test_packaged_config_resolves_its_terms_file_from_the_package(sample_dir):
    config, _ = load_config(packaged_config(), [f"input.paths=[{str(sample_dir)!r}]"])
    terms = next(f for f in config.filters if f.filter_id == "caption_terms")
    assert Path(terms.terms_file) == (packaged_config_dir() / "terms" / "violence.txt").resolve()


def test_outside_a_checkout_without_input_says_what_to_pass(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "--input: no --config given and no configs/default.yaml in this folder" in err
    assert "mitigate init" in err


def test_outside_a_checkout_validate_uses_the_packaged_config(
    tmp_path, monkeypatch, capsys, sample_dir
):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--input", str(sample_dir / "shard-00000.tar")]) == 0
    out = capsys.readouterr().out
    assert "filters: nsfw, image_quality, caption_terms" in out
    assert f"output: {tmp_path / 'out'}" in out


def test_outside_a_checkout_input_and_output_may_come_by_set_relative_to_the_working_dir(
    tmp_path, monkeypatch, capsys, sample_dir
):
    # Regression: --set input.paths was refused ("pass --input"), and --set output.path=o
    # resolved against the packaged config's folder, inside the installed package
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.tar").write_bytes((sample_dir / "shard-00000.tar").read_bytes())
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "--set", "input.paths=[data/a.tar]", "--set", "output.path=o"]) == 0
    out = capsys.readouterr().out
    assert "config OK: 1 input file(s)" in out
    assert f"output: {tmp_path / 'o'}" in out


def test_set_paths_of_the_data_resolve_against_the_working_dir_and_file_paths_against_the_file(
    tmp_path, monkeypatch, sample_dir
):
    from mitigate.cli import _load, build_parser

    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "terms.txt").write_text("knife\n")
    (conf / "c.yaml").write_text(
        "filters:\n  - {name: caption_terms, category: violence, terms_file: terms.txt}\n"
        "output:\n  path: from-file\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    (work / "a.tar").write_bytes((sample_dir / "shard-00000.tar").read_bytes())
    monkeypatch.chdir(work)
    args = build_parser().parse_args(
        [
            "validate",
            "--config",
            str(conf / "c.yaml"),
            "--set",
            "input.paths=[a.tar, gs://bucket/b.tar]",
            "--set",
            "dedup.against=[a.tar]",
        ]
    )
    config, _ = _load(args)
    assert config.input.paths == [str(work / "a.tar"), "gs://bucket/b.tar"]
    assert config.dedup.against == [str(work / "a.tar")]
    assert config.output.path == str(conf / "from-file")  # the file's own path: its folder
    assert config.filters[0].terms_file == str(conf / "terms.txt")
    args = build_parser().parse_args(
        ["validate", "--config", str(conf / "c.yaml"), "--set", "output.path=o"]
    )
    assert _load(args)[0].output.path == str(work / "o")


@pytest.mark.slow
def test_installed_cli_runs_from_a_folder_without_configs(tmp_path, sample_dir):
    exe = Path(sys.executable).parent / "mitigate"
    proc = subprocess.run(
        [str(exe), "run", "--input", str(sample_dir / "shard-00002.tar"), "--output", "o"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["input_count"] == sum(c["total"] for c in summary["counts"].values()) > 0
    assert summary["counts"]["kept"]["total"] > 0
    # the packaged terms list was read: its path lies in the package, not in tmp_path
    effective = (tmp_path / "o" / "config.yaml").read_text()
    assert str((packaged_config_dir() / "terms" / "violence.txt").resolve()) in effective
    assert (tmp_path / "o" / "report.html").is_file()
    assert not (tmp_path / "configs").exists()


def test_init_writes_a_starter_that_validates_and_refuses_to_overwrite(
    tmp_path, monkeypatch, capsys, sample_dir
):
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    starter = Path("mitigate.yaml")
    assert (tmp_path / "terms" / "violence.txt").read_bytes() == (
        REPO / "configs" / "terms" / "violence.txt"
    ).read_bytes()
    text = starter.read_text()
    starter = tmp_path / "mitigate.yaml"
    assert text.count("#") > 20  # commented
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "a.tar").write_bytes((sample_dir / "shard-00000.tar").read_bytes())
    capsys.readouterr()
    assert main(["validate", "--config", str(starter)]) == 0
    assert "config OK: 1 input file(s), filters: nsfw, image_quality, caption_terms" in (
        capsys.readouterr().out
    )
    starter.write_text("mine")
    assert main(["init"]) == 2
    assert capsys.readouterr().err == (
        "mitigate: init: mitigate.yaml exists; pass --force to overwrite it, or choose "
        "another PATH\n"
    )
    assert starter.read_text() == "mine"
    assert main(["init", "--force"]) == 0
    assert starter.read_text() == text
    # a folder gets mitigate.yaml inside it
    assert main(["init", str(tmp_path / "sub")]) == 0
    assert (tmp_path / "sub" / "mitigate.yaml").is_file()
    # another extension is no folder to make: `init my.json` made the folder my.json
    capsys.readouterr()
    assert main(["init", "my.json"]) == 2
    assert "my.json is not a .yaml or .yml file name" in capsys.readouterr().err
    assert not (tmp_path / "my.json").exists()
    (tmp_path / "plainfile").write_text("mine")  # a file, not a folder to write into
    assert main(["init", "plainfile"]) == 2
    assert "plainfile is a file, not a .yaml or .yml config nor a folder" in capsys.readouterr().err
    assert (tmp_path / "plainfile").read_text() == "mine"
    (tmp_path / "cfg.d").mkdir()  # an existing folder with a dot in its name is one
    assert main(["init", "cfg.d"]) == 0
    assert (tmp_path / "cfg.d" / "mitigate.yaml").is_file()


def test_a_second_config_in_a_folder_shares_its_terms_list(tmp_path, monkeypatch, capsys):
    """Regression (helper-32): after `init`, `init my.yaml` was refused because
    terms/violence.txt existed ("choose another PATH": any path in that folder hit the
    same file). The list is kept (a user's edits with it) and the config written."""
    monkeypatch.chdir(tmp_path)
    assert main(["init"]) == 0
    terms = tmp_path / "terms" / "violence.txt"
    terms.write_text("my own\n")
    assert main(["init", "my.yaml"]) == 0
    assert (tmp_path / "my.yaml").is_file() and terms.read_text() == "my own\n"
    assert main(["validate", "--config", "my.yaml"]) in (0, 2)  # parses (inputs may miss)
    assert "unknown key" not in capsys.readouterr().err
    assert main(["init", "my.yaml"]) == 2  # the config itself is never replaced
    assert main(["init", "my.yaml", "--force"]) == 0  # --force writes both again
    assert terms.read_text() != "my own\n"
