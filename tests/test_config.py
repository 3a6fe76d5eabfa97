"""Config validation: every problem names its field; overrides; path resolution."""

import argparse
from pathlib import Path

import pytest
import yaml

from mitigate.config import ConfigError, apply_overrides, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]


def _errors(raw, base="."):
    with pytest.raises(ConfigError) as err:
        validate_config(raw, base)
    return err.value.errors


def test_default_config_is_valid_and_resolves_paths_against_its_folder():
    config, _ = load_config(REPO / "configs" / "default.yaml")
    assert config.input.paths == [str(REPO / "data" / "sample" / "*.tar")]
    assert config.output.path == str(REPO / "out")
    assert [f.filter_id for f in config.filters] == ["nsfw", "image_quality", "caption_terms"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"decode": {"max_pixels": 0}}, "decode.max_pixels: must be >= 1, got 0"),
        ({"decode": {"hash_mode": "slow"}}, "decode.hash_mode: Input should be 'fast' or 'exact'"),
        (
            {"output": {"samples_per_shard": "many"}},
            "output.samples_per_shard: must be a number, not text",
        ),
        (
            {"input": {"pathz": []}},
            "input.pathz: unknown key; valid keys: caption_column, chunk_size",
        ),
        (
            {"bogus": 1},
            "bogus: unknown key; valid keys: decode, dedup, filters, input, output, rebalance, "
            "runner",
        ),
        (
            {"filters": [{"name": "image_quality"}, {"name": "image_quality", "min_side": -1}]},
            "filters[1].min_side: must be >= 0, got -1",
        ),
        (
            {"filters": [{"name": "nsfw_magic"}]},
            "filters[0].name: unknown filter 'nsfw_magic'; valid names:",
        ),
        (
            {"filters": [{"name": "image_quality", "colour": 1}]},
            "filters[0].colour: unknown key; valid keys:",
        ),
        ({"filters": [{"min_side": 3}]}, "filters[0]: must be a mapping with a `name` key"),
        ({"filters": "image_quality"}, "filters: must be a list, got str"),
        ({"runner": {"name": "spark"}}, "runner: runner 'spark' needs job_endpoint"),
        ({"runner": {"name": "sparky"}}, "runner.name: Input should be 'direct', 'portable'"),
        ({"runner": {"dry_run": True}}, "runner: dry_run is a Dataflow option"),
        # a union's branches on one line, at the field's own name (no pydantic branch tags)
        (
            {"decode": {"processes": -3}},
            "decode.processes: must be >= 1 or input should be 'auto', got -3",
        ),
        ({"dedup": {"k": 3.5}}, "dedup.k: Input should be a valid integer"),
        (
            {"filters": [{"name": "image_quality"}, {"name": "image_quality"}]},
            "filters: id 'image_quality' used twice",
        ),
    ],
)
def test_errors_name_the_field(raw, expected):
    errors = _errors(raw)
    assert any(e.startswith(expected) for e in errors), errors


def test_an_error_shows_the_value_given_once():
    """The value given follows the message, unless the message already names it (a
    path); a number is shown even when its digits appear in the message."""
    errors = _errors({"filters": [{"name": "caption_terms", "terms_file": "/nowhere/t.txt"}]})
    line = next(e for e in errors if e.startswith("filters[0].terms_file"))
    assert line.count("/nowhere/t.txt") == 1, line
    assert "dedup.k: must be <= 32, got 33" in _errors({"dedup": {"k": 33}})
    assert "input.chunk_size: must be >= 1, got 0" in _errors({"input": {"chunk_size": 0}})


def test_all_errors_are_reported_at_once():
    errors = _errors(
        {"decode": {"max_pixels": 0}, "output": {"bogus": 1}, "filters": [{"name": "x"}]}
    )
    assert len(errors) == 3


def test_a_filter_entry_in_error_is_not_also_said_missing_where_it_is_named():
    raw = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    raw["filters"][0]["threshold"] = 2  # nsfw, rebalancing's embedding_filter
    raw["rebalance"] = {**(raw.get("rebalance") or {}), "filtered_by": ["nsfw"]}
    errors = _errors(raw, REPO / "configs")
    assert errors == ["filters[0].threshold: must be between 0 and 1, got 2"]
    del raw["filters"][0]  # gone: then the names that refer to it are wrong
    errors = _errors(raw, REPO / "configs")
    assert any(e.startswith("rebalance.embedding_filter: no filter 'nsfw'") for e in errors)
    assert any(e.startswith("rebalance.filtered_by[0]: no filter 'nsfw'") for e in errors)


def test_overrides_parse_values_as_yaml_and_index_lists():
    raw = {"filters": [{"name": "image_quality", "min_side": 10}]}
    out = apply_overrides(
        raw,
        [
            "dedup.exact=false",
            "filters.0.min_side=32",
            "filters=[{name: image_quality, min_side: 7}]",
        ],
    )
    assert out["dedup"] == {"exact": False}
    assert out["filters"] == [{"name": "image_quality", "min_side": 7}]
    assert raw["filters"][0]["min_side"] == 10  # input not mutated
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["dedup.exact"])
    with pytest.raises(ConfigError, match="no list item 3"):
        apply_overrides(raw, ["filters.3.min_side=1"])


def test_load_config_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\(top level\): must be a mapping"):
        load_config(listy)


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("input: !!python/object/apply:os.system ['echo hi']\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)


def test_effective_config_round_trips_and_digest_tracks_changes(tmp_path):
    config, _ = load_config(REPO / "configs" / "default.yaml")
    again = validate_config(yaml.safe_load(yaml.safe_dump(config.effective())), tmp_path)
    assert again.effective() == config.effective()
    assert again.digest() == config.digest()
    changed, _ = load_config(REPO / "configs" / "default.yaml", ["decode.hash_mode=exact"])
    assert changed.digest() != config.digest()


def test_uris_are_not_resolved_as_local_paths(tmp_path):
    config = validate_config(
        {"input": {"paths": ["gs://bucket/x/*.tar"]}, "output": {"path": "gs://bucket/out"}},
        tmp_path,
    )
    assert config.input.paths == ["gs://bucket/x/*.tar"]
    assert config.output.path == "gs://bucket/out"


def test_runner_options_map_to_beam_flags():
    from mitigate.runners import runner_args

    def args(**runner):
        where = {  # Dataflow's workers reach no local path
            "input": {"paths": ["gs://my-bucket/s/*.tar"]},
            "output": {"path": "gs://my-bucket/out"},
        }
        return runner_args(validate_config({"runner": runner, **where}).runner)

    assert args(
        name="flink",
        job_endpoint="jm:8099",
        environment_type="EXTERNAL",
        environment_config="w:50000",
    ) == [
        "--runner=PortableRunner",
        "--job_endpoint=jm:8099",
        "--environment_type=EXTERNAL",
        "--environment_config=w:50000",
    ]
    dataflow = args(
        name="dataflow",
        project="my-project",
        region="europe-west4",
        temp_location="gs://my-bucket/tmp",
        machine_type="n2-standard-4",
        max_num_workers=50,
        sdk_container_image="eu.gcr.io/my-project/mitigate:0.1",
        extra_packages=["dist/x.tar.gz"],
        dry_run=True,
    )
    assert dataflow[0] == "--runner=DataflowRunner"
    assert {
        "--machine_type=n2-standard-4",
        "--max_num_workers=50",
        "--dry_run=True",
        "--sdk_container_image=eu.gcr.io/my-project/mitigate:0.1",
        "--extra_package=dist/x.tar.gz",
    } <= set(dataflow)
    assert args(name="dask", dask_address="tcp://127.0.0.1:8786") == [
        "--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
        "--dask_client_address=tcp://127.0.0.1:8786",
    ]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("filters.0.threshold=true", "filters[0].threshold: must be a number, not a boolean"),
        ("decode.max_pixels=true", "decode.max_pixels: must be a number, not a boolean"),
        ("dedup.k=false", "dedup.k: must be a number, not a boolean"),
        # where the type is a union or a list of numbers too (helper-43)
        ("decode.processes=true", "decode.processes: must be a number, not a boolean"),
        ("runner.direct_num_workers=true", "runner.direct_num_workers: must be a number, not"),
        ("rebalance.C_grid=[0.1, true]", "rebalance.C_grid: item 1 must be a number, not a"),
        ("rebalance.C_grid=['1']", "rebalance.C_grid: item 0 must be a number, not text"),
        # quoted in YAML: text, which pydantic's lax mode took as the number
        ("filters.0.threshold='0.5'", "filters[0].threshold: must be a number, not text"),
        ("decode.max_pixels='1000'", "decode.max_pixels: must be a number, not text"),
        ("decode.working_size='128'", "decode.working_size: must be a number, not text"),
        # an empty path (an unset shell variable) is no folder, not the config's own
        ("output.path=''", "output.path: String should have at least 1 character"),
        ("input.paths=['']", "input.paths[0]: String should have at least 1 character"),
        ("input.image_root=''", "input.image_root: String should have at least 1 character"),
        ("dedup.against=['']", "dedup.against[0]: String should have at least 1 character"),
        ("input.paths.0.x=1", "--set input.paths.0: is a value, not a section"),
        ("input.name_encoding=klingon", "input.name_encoding: unknown encoding 'klingon'"),
    ],
)
def test_bad_values_are_config_errors_not_coercions(override, expected):
    with pytest.raises(ConfigError) as exc:
        load_config(REPO / "configs" / "default.yaml", [override])
    assert any(e.startswith(expected) for e in exc.value.errors), exc.value.errors


def test_an_exponent_without_a_dot_is_a_number_as_in_yaml_1_2(tmp_path):
    """PyYAML reads 1e-3 as text; refusing text for numbers refused it (helper-44)."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "input: {paths: ['*.tar']}\nfilters:\n  - {name: nsfw, threshold: 1e-3}\n"
        "rebalance: {C: 1E2, w_max: +2e1}\n"
    )
    config, _ = load_config(path)
    assert config.filters[0].threshold == 0.001
    assert (config.rebalance.C, config.rebalance.w_max) == (100.0, 20.0)
    config, _ = load_config(path, ["filters.0.threshold=5e-2"])
    assert config.filters[0].threshold == 0.05
    # a leading dot with a sign or an exponent, which PyYAML reads as text (helper-45)
    config, _ = load_config(path, ["rebalance.w_min=+.1", "filters.0.threshold=.5e-1"])
    assert (config.rebalance.w_min, config.filters[0].threshold) == (0.1, 0.05)
    with pytest.raises(ConfigError, match=r"threshold: must be a number, not text"):
        load_config(path, ["filters.0.threshold='1e-3'"])  # quoted: text


def test_integers_are_read_as_yaml_1_2_reads_them(tmp_path):
    """PyYAML's YAML 1.1 read 010 as octal 8 and 1:30 as the base-60 number 90
    (helper-47: `decode.timeout: 1:30` passed as 90 s)."""
    from mitigate.config import dump_yaml, load_yaml

    assert load_yaml("[010, 0x10, 0o10, -0x1f, 1_000, +3, 0b11, '1:30', 1:30]") == [
        10, 16, 8, -31, 1000, 3, "0b11", "1:30", "1:30"
    ]  # fmt: skip
    path = tmp_path / "c.yaml"
    path.write_text("input: {paths: ['*.tar']}\ndecode: {timeout: 1:30}\n")
    with pytest.raises(ConfigError, match=r"decode.timeout"):
        load_config(path)
    path.write_text("input: {paths: ['*.tar']}\noutput: {samples_per_shard: 010}\n")
    assert load_config(path)[0].output.samples_per_shard == 10
    # text that reads as a number is quoted where a run's config.yaml is written
    data = {"terms": ["0o10", "010", "0x1F", "1:30"]}
    assert load_yaml(dump_yaml(data)) == data


def test_a_runs_config_yaml_reads_back_text_that_looks_like_an_exponent(tmp_path):
    """A term "5e2" (quoted by the user) was written bare into the run's config.yaml,
    and read back as 500.0: the run could not be redecided (helper-45)."""
    from mitigate.config import dump_yaml, load_yaml

    data = {"terms": ["gore", "5e2", "1E-3"], "w": 5e2, "path": "1e3"}
    assert load_yaml(dump_yaml(data)) == data
    assert "- '5e2'" in dump_yaml(data)


def test_auto_stays_text_where_a_number_field_takes_it():
    config, _ = load_config(
        REPO / "configs" / "default.yaml",
        ["decode.processes=auto", "runner.direct_num_workers=auto"],
    )
    assert config.decode.processes == config.runner.direct_num_workers == "auto"


def test_an_empty_output_or_input_on_the_command_line_is_refused(tmp_path, capsys, monkeypatch):
    from mitigate.cli import main

    monkeypatch.chdir(tmp_path)
    sample = str(REPO / "data" / "sample" / "*.tar")
    assert main(["validate", "--input", sample, "--output", ""]) == 2
    assert "--output: an empty path" in capsys.readouterr().err
    assert main(["validate", "--input", ""]) == 2
    assert "input.paths[0]: String should have at least 1 character" in capsys.readouterr().err
    assert main(["validate", "--input", sample, "--set", "output.path="]) == 2


@pytest.mark.parametrize("nesting", ["[", "{a: "])
def test_absurdly_nested_yaml_is_a_config_error(tmp_path, nesting):
    closing = "]" if nesting == "[" else "}"
    path = tmp_path / "deep.yaml"
    path.write_text("input: " + nesting * 5000 + "1" + closing * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)


def test_a_quoted_tilde_is_the_home_folder(tmp_path, monkeypatch):
    """The shell expands no ~ inside quotes ('~/data/*.tar' as the README quotes
    globs): the run wrote into a folder named "~" in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    config, _ = load_config(
        REPO / "configs" / "default.yaml", ["input.paths=['~/d/*.tar']", "output.path=~/out"]
    )
    assert config.input.paths == [str(tmp_path / "d" / "*.tar")]
    assert config.output.path == str(tmp_path / "out")


def test_a_key_given_twice_in_a_config_is_refused(tmp_path):
    """YAML keeps the last of two equal keys: a filter's threshold: 0.3 then 0.9 ran
    at 0.9 after "config OK"."""
    path = tmp_path / "c.yaml"
    path.write_text("filters:\n  - name: nsfw\n    threshold: 0.3\n    threshold: 0.9\n")
    with pytest.raises(
        ConfigError, match=r"key 'threshold' given twice in one mapping \(line 3 and line 4\)"
    ):
        load_config(path, [])
    with pytest.raises(ConfigError, match="is a folder, not a YAML file"):
        load_config(tmp_path, [])
    path.write_text("filters:\n  - name: nsfw\n    threshold: 0.3\n  - name: image_quality\n")
    assert load_config(path, [])  # equal keys in two mappings are no repeat


def test_a_terms_file_given_with_set_is_found_in_the_working_folder(tmp_path, monkeypatch):
    """With no --config the default config's folder (inside the package) was the only
    place looked in: `--set filters=[{..., terms_file: terms/mine.txt}]` was not found."""
    (tmp_path / "terms").mkdir()
    (tmp_path / "terms" / "mine.txt").write_text("zebra\n")
    monkeypatch.chdir(tmp_path)
    entry = "{name: caption_terms, category: violence, terms_file: terms/mine.txt}"
    config, _ = load_config(
        REPO / "mitigate" / "configs" / "default.yaml",
        [f"filters=[{entry}]", "rebalance.embedding_filter=null"],
    )
    assert config.filters[0].terms_file == str(tmp_path / "terms" / "mine.txt")
    # the config's folder first: the packaged terms file of the default config
    default, _ = load_config(REPO / "mitigate" / "configs" / "default.yaml", [])
    terms = next(f for f in default.filters if f.filter_id == "caption_terms")
    assert terms.terms_file == str(REPO / "mitigate" / "configs" / "terms" / "violence.txt")


def test_an_integer_past_2_to_the_53_is_refused_naming_its_field():
    """image_quality.min_side of 2**63 passed validate; the run did all its work, then
    failed writing the manifest (Arrow: too large for int64) (helper-36)."""
    raw = {
        "filters": [{"name": "image_quality", "min_side": 2**63, "min_bytes": 2**53}],
        "input": {"chunk_size": -(2**70)},
        "rebalance": {"seed": 2**63},  # a seed's bits are its own
    }
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    huge = [e for e in err.value.errors if "out of range (at most 2**53" in e]
    assert [e.split(":")[0] for e in huge] == ["filters[0].min_side", "input.chunk_size"]
    ok = {"filters": [{"name": "image_quality", "min_bytes": 2**53}], "rebalance": {"seed": 2**63}}
    assert validate_config(ok).filters[0].min_bytes == 2**53


@pytest.mark.parametrize(
    "folder",
    ["nb\u00a0sp", "ja\u3000dir", "\U0001f4f7 pics", 'it\'s "q"', "back\\slash"],
)
def test_command_line_paths_from_a_folder_of_any_name_are_that_folder(
    tmp_path, monkeypatch, folder
):
    """--input/--output/--set paths were written into the overrides with repr(), whose
    escapes (a no-break space as \\xa0) YAML's single quotes keep: from a folder named
    with one, the run wrote into another folder, named with a backslash; --set's
    json.dumps wrote an emoji as two halves of a surrogate pair."""
    from mitigate.cli_config import _load

    work = tmp_path / folder
    (work / "in").mkdir(parents=True)
    (work / "in" / "a.tar").write_bytes(b"")
    monkeypatch.chdir(work)
    args = argparse.Namespace(
        config=str(REPO / "configs" / "default.yaml"),
        input=["in/a.tar"],
        output="out",
        overrides=["dedup.against=[in/a.tar]"],
        add_filter=[],
    )
    config, _ = _load(args)
    assert config.input.paths == [str(work / "in" / "a.tar")]
    assert config.output.path == str(work / "out")
    assert config.dedup.against == [str(work / "in" / "a.tar")]
    args.input, args.output, args.overrides = None, None, ["output.path=o"]
    assert _load(args)[0].output.path == str(work / "o")


def test_a_date_as_a_set_path_is_an_error_naming_the_field(tmp_path, monkeypatch, capsys):
    """`--set output.path=2024-01-01` (YAML reads a date) ended in a TypeError of
    json.dumps, exit 1 and no field named."""
    from mitigate.cli import main

    monkeypatch.chdir(tmp_path)
    sample = str(REPO / "data" / "sample" / "*.tar")
    assert main(["validate", "--input", sample, "--set", "output.path=2024-01-01"]) == 2
    assert "output.path: Input should be a valid string" in capsys.readouterr().err
