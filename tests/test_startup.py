"""Start-up: the CLI and `validate` import no heavy library they do not use, a passed
model check is remembered (and only a passed one), and the Beam-free local file paths
behave as Beam's do. Checked by what gets imported, not by timing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from onnx_models import pooled_linear

from mitigate.config import ConfigError, validate_config
from mitigate.filters import onnx_image
from mitigate.pipeline import fs

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("apache_beam", "onnxruntime", "onnx", "matplotlib", "sklearn", "scipy", "pyarrow")


def _modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    """Heavy top-level modules in sys.modules after running ``code`` in a fresh process."""
    dump = "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    probe = f"{code}\nimport json, sys\n{dump}"
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    return set(json.loads(proc.stdout.strip().splitlines()[-1])) & set(HEAVY)


def test_importing_the_cli_and_help_pull_in_no_heavy_library() -> None:
    assert _modules_after("import mitigate.cli") == set()
    help_run = "import contextlib, io\nfrom mitigate.cli import main\n"
    help_run += "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
    help_run += "    main(['--help'])"
    assert _modules_after(help_run) == set()


def test_validate_needs_neither_beam_nor_onnxruntime_once_the_model_is_checked(
    tmp_path: Path,
) -> None:
    env = {"MITIGATE_CACHE_DIR": str(tmp_path / "cache")}
    validate = (
        "from mitigate.cli import main\n"
        f"assert main(['validate', '--config', 'configs/default.yaml', "
        f"'--output', {str(tmp_path / 'out')!r}]) == 0"
    )
    first = _modules_after(validate, env)
    assert "onnxruntime" in first  # the nsfw model was really opened and checked once
    assert "apache_beam" not in first
    assert len(list((tmp_path / "cache" / "model-checks").iterdir())) == 1
    assert _modules_after(validate, env) == set()


def test_model_check_is_remembered_per_model_and_spec_and_failures_are_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MITIGATE_CACHE_DIR", str(tmp_path / "cache"))
    opened = []
    real_open = onnx_image.open_session
    monkeypatch.setattr(
        onnx_image, "open_session", lambda cfg, threads=None: opened.append(1) or real_open(cfg)
    )
    model = tmp_path / "m.onnx"
    pooled_linear(model)
    entry = {"name": "onnx_image", "model": {"path": str(model)}, "size": 8}
    validate_config({"filters": [entry]})
    validate_config({"filters": [entry]})
    assert len(opened) == 1
    # A field the check reads makes a new check, and a failing one fails every time.
    for _ in range(2):
        with pytest.raises(ConfigError, match="layout/size"):
            validate_config({"filters": [{**entry, "size": 16}]})
    assert len(opened) == 3
    # So does different model bytes under the same path.
    pooled_linear(model, layout="NHWC")
    with pytest.raises(ConfigError, match="layout/size"):
        validate_config({"filters": [entry]})
    assert len(opened) == 4


def test_local_match_expands_globs_exactly_as_beam_does(tmp_path: Path) -> None:
    from apache_beam.io.filesystems import FileSystems

    for name in ("a.tar", "b.tar", "c.parquet", ".hidden.tar", "x/d.tar", "x/y/e.tar", "f[1].tar"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    patterns = [
        f"{tmp_path}/*.tar",
        f"{tmp_path}/**.tar",
        f"{tmp_path}/**/*.tar",
        f"{tmp_path}/?.tar",
        f"{tmp_path}/[ab].tar",
        f"{tmp_path}/[!a].tar",
        f"{tmp_path}/x/",
        f"{tmp_path}/a.tar",
        f"{tmp_path}/missing.tar",
        f"{tmp_path}/nowhere/*.tar",
        f"{tmp_path}/f[1].tar",
    ]
    ours = {p: sorted(fs._match_local(p)) for p in patterns}
    beams = FileSystems.match(patterns)
    for pattern, result in zip(patterns, beams, strict=True):
        assert ours[pattern] == sorted(m.path for m in result.metadata_list), pattern
    assert (
        len(ours[f"{tmp_path}/**/*.tar"]) == 2 and len(ours[f"{tmp_path}/*.tar"]) == 4
    )  # dotfiles too, as Beam
    # fs.match reads a "/**/" also as no folder (bash's and Python's glob): Beam's
    # matches of both readings
    both = FileSystems.match([f"{tmp_path}/**/*.tar", f"{tmp_path}/*.tar"])
    union = sorted({m.path for r in both for m in r.metadata_list})
    assert fs.match([f"{tmp_path}/**/*.tar"])[f"{tmp_path}/**/*.tar"] == union
    assert len(union) == 6


def test_the_model_with_its_embedding_exposed_is_built_once_then_read_from_the_cache(
    tmp_path: Path,
) -> None:
    """Exposing ``embedding_output`` imports ``onnx`` and rewrites the graph; a second
    process (every worker of every run) opens the cached model instead."""
    env = {"MITIGATE_CACHE_DIR": str(tmp_path / "cache")}
    code = (
        "import numpy as np\n"
        "from mitigate.config import validate_config\n"
        "from mitigate.filters.onnx_image import open_session\n"
        "cfg = validate_config({'filters': [{'name': 'nsfw'}]}).filters[0]\n"
        "s = open_session(cfg)\n"
        "x = np.random.default_rng(0).random((2, 224, 224, 3), np.float32) * 255\n"
        "emb = s.run(['Reshape:0'], {s.get_inputs()[0].name: x})[0]\n"
        "print(float(np.abs(emb).sum()))\n"
    )
    first = _modules_after(code, env)
    assert "onnx" in first
    assert len(list((tmp_path / "cache" / "models").glob("*.onnx"))) == 1
    assert "onnx" not in _modules_after(code, env)


def test_a_damaged_cached_model_is_rebuilt_and_scores_stay_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    monkeypatch.setenv("MITIGATE_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "m.onnx"
    pooled_linear(model)
    entry = {
        "name": "onnx_image",
        "model": {"path": str(model)},
        "size": 8,
        "embedding_output": "pooled",
    }
    cfg = validate_config({"filters": [entry]}).filters[0]
    x = np.random.default_rng(1).random((3, 3, 8, 8), np.float32)

    def outputs() -> list:
        session = onnx_image.open_session(cfg)
        return session.run(["logits", "pooled"], {"pixels": x})

    built = outputs()
    cached = onnx_image._exposed_model_path(cfg)
    assert cached is not None and cached.is_file()
    cached_bytes = cached.read_bytes()
    for got, want in zip(outputs(), built, strict=True):  # from the cache
        np.testing.assert_array_equal(got, want)
    cached.write_bytes(b"not a model")
    for got, want in zip(outputs(), built, strict=True):  # rebuilt
        np.testing.assert_array_equal(got, want)
    assert cached.read_bytes() == cached_bytes
    # Other model bytes under the same path get their own cache entry.
    pooled_linear(model, layout="NHWC")
    other = validate_config({"filters": [{**entry, "layout": "NHWC"}]}).filters[0]
    assert onnx_image._exposed_model_path(other) != cached
