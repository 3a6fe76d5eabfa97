"""The README holds on a fresh machine: the Dataflow dry run never touches the network,
placeholder names are config errors, and a missing extra is named."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest

from mitigate.cli import main
from mitigate.config import ConfigError, load_config
from mitigate.runners.extras import missing_extra

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"


def _readme_dry_run() -> list[str]:
    """The README's literal Dataflow dry-run command, as argv."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("mitigate run --runner dataflow --dry-run")
    lines = []
    for line in text[start:].splitlines():
        lines.append(line.rstrip("\\").strip())
        if not line.endswith("\\"):
            break
    return shlex.split(" ".join(lines))[1:]


def test_the_readme_dry_run_with_its_placeholders_fails_offline_at_once(capsys):
    argv = _readme_dry_run()
    assert "gs://BUCKET/out" in argv
    started = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - started < 30  # no credential or bucket lookups
    err = capsys.readouterr().err
    assert "runner.project: 'PROJECT' is not a Google Cloud project id" in err
    assert (
        "runner.temp_location: 'BUCKET' in gs://BUCKET/tmp is not a Cloud Storage bucket "
        "name (3-63 lowercase letters, digits, '-', '_' or '.'); put your bucket in place "
        "of the placeholder"
    ) in err
    assert "output.path: 'BUCKET' in gs://BUCKET/out" in err
    assert "runner.sdk_container_image: 'europe-west4-docker.pkg.dev/PROJECT/REPO" in err


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("runner.project", "123456"),
        ("runner.region", "Europe West"),
        ("runner.temp_location", "/tmp/local"),
        ("runner.staging_location", "gs://Bad_Bucket/x"),
        ("runner.sdk_container_image", "Registry/Img:1"),
    ],
)
def test_dataflow_names_are_checked_offline(field, value):
    good = [
        "input.paths=['gs://my-bucket/shards/*.tar']",
        "output.path=gs://my-bucket/out",
        "runner.name=dataflow",
        "runner.project=my-project",
        "runner.region=europe-west4",
        "runner.temp_location=gs://my-bucket/tmp",
        "runner.sdk_container_image=europe-west4-docker.pkg.dev/my-project/r/mitigate:0.1.0",
    ]
    load_config(DEFAULT, good)  # the good names pass
    with pytest.raises(ConfigError) as exc:
        load_config(DEFAULT, [*good, f"{field}={value}"])
    assert [e.split(":")[0] for e in exc.value.errors] == [field]


def test_dataflow_refuses_paths_on_this_machines_disk():
    """A dry run accepted /tmp inputs and a local output, which Dataflow's workers
    cannot reach (helper-36)."""
    names = [
        "runner.name=dataflow",
        "runner.project=my-project",
        "runner.region=europe-west4",
        "runner.temp_location=gs://my-bucket/tmp",
    ]
    with pytest.raises(ConfigError) as exc:
        load_config(DEFAULT, [*names, "output.path=/tmp/out"])
    fields = [e.split(":")[0] for e in exc.value.errors]
    assert fields == ["output.path", "input.paths[0]"], exc.value.errors
    assert "is on this machine's disk, which Dataflow's workers cannot" in exc.value.errors[0]
    gs = ["input.paths=['gs://my-bucket/t.parquet']", "output.path=gs://my-bucket/o"]
    with pytest.raises(ConfigError) as exc:  # a table's images are read from it too
        load_config(DEFAULT, [*names, *gs, "input.image_root=/tmp/images"])
    assert [e.split(":")[0] for e in exc.value.errors] == ["input.image_root"]


def test_a_missing_extra_names_the_extra_to_install(monkeypatch, capsys):
    assert missing_extra("dataflow") is None and missing_extra("direct") is None
    monkeypatch.setitem(sys.modules, "google.cloud.dataflow", None)
    argv = [
        "validate",
        "--input",
        "gs://my-bucket/shards/*.tar",
        "--output",
        "gs://my-bucket/out",
        "--set",
        "runner.dry_run=true",  # no bucket is listed (no network here)
        "--set",
        "runner.name=dataflow",
        "--set",
        "runner.project=my-project",
        "--set",
        "runner.region=europe-west4",
        "--set",
        "runner.temp_location=gs://my-bucket/tmp",
    ]
    monkeypatch.chdir(REPO)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        "runner.name: the dataflow runner needs the [dataflow] extra (google.cloud.dataflow "
        "is not installed): pip install 'mitigate-pipeline[dataflow]' (in a checkout: "
        "pip install -e '.[dataflow]')"
    ) in err
    assert "Traceback" not in err
