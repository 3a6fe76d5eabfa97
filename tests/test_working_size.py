"""``decode.working_size: auto``: the smallest reduced decode that serves every consumer
(issue 14): the largest model input a filter resizes from, at least 128 px for the
verification signature; a number stays as written; the run decodes at what is resolved."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from mitigate import stages
from mitigate.config import (
    MIN_AUTO_WORKING_SIZE,
    ConfigError,
    _resolve_working_size,
    load_config,
    validate_config,
)
from mitigate.filters.base import FilterConfig
from mitigate.records import SampleRecord

REPO = Path(__file__).resolve().parents[1]
DEFAULT = REPO / "configs" / "default.yaml"
NO_MODELS = [  # the default config minus its model filter (as bench_pipeline.py runs it)
    "filters=[{name: image_quality}, {name: caption_terms, category: violence, "
    "terms_file: terms/violence.txt}]",
    "rebalance.embedding_filter=null",
]


def test_the_default_config_decodes_at_what_nsfw_resizes_from():
    config, _ = load_config(DEFAULT, [])
    nsfw = next(f for f in config.filters if f.name == "nsfw")
    assert config.decode.working_size == nsfw.pixels_needed == 256


def test_without_model_filters_auto_is_the_signatures_128():
    config, _ = load_config(DEFAULT, NO_MODELS)
    assert config.decode.working_size == MIN_AUTO_WORKING_SIZE == 128
    assert validate_config({}).decode.working_size == 128


@pytest.mark.parametrize(
    ("entry", "side"),
    [
        ({"name": "nudenet"}, 320),  # pads to a square, resizes to its 320 input
        ({"name": "nsfw", "resize": 300}, 300),
        ({"name": "nsfw", "resize": None}, 224),  # no resize: its crop size
    ],
)
def test_auto_is_the_largest_input_a_model_filter_resizes_from(entry, side):
    assert validate_config({"filters": [entry]}).decode.working_size == side


def test_a_model_filter_reading_less_than_128_still_gets_128():
    class Small(FilterConfig):
        name: str = "small"

        @property
        def pixels_needed(self) -> int:
            return 64

    base = validate_config({"decode": {"working_size": 300}})
    auto = base.decode.model_copy(update={"working_size": "auto"})
    config = base.model_copy(update={"decode": auto, "filters": [Small()]})
    assert _resolve_working_size(config).decode.working_size == 128


def test_two_model_filters_take_the_larger():
    config = validate_config({"filters": [{"name": "nsfw"}, {"name": "nudenet", "id": "nude"}]})
    assert config.decode.working_size == 320


def test_a_number_is_kept_and_recorded():
    config, _ = load_config(DEFAULT, ["decode.working_size=200"])
    assert config.decode.working_size == 200
    assert config.effective()["decode"]["working_size"] == 200
    auto, _ = load_config(DEFAULT, NO_MODELS)
    assert auto.effective()["decode"]["working_size"] == 128  # the run records the number


def test_a_bad_working_size_names_the_field():
    with pytest.raises(ConfigError, match=r"decode\.working_size"):
        validate_config({"decode": {"working_size": "big"}})
    with pytest.raises(ConfigError, match=r"decode\.working_size"):
        validate_config({"decode": {"working_size": 16}})


def _jpeg(width: int, height: int) -> bytes:
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(("overrides", "shorter"), [([], 384), (NO_MODELS, 192)])
def test_the_run_decodes_a_large_jpeg_at_the_resolved_size(overrides, shorter):
    """A 1024 x 768 JPEG: with nsfw (256) the scaled decode is 1/2 (512 x 384), without a
    model filter (128) 1/4 (256 x 192); its size signals stay the full ones."""
    config, _ = load_config(DEFAULT, overrides)
    data = _jpeg(1024, 768)
    record = SampleRecord(key="k", source="s", index=0, caption="a gradient")
    (item,) = stages.compute_signals([(record, data)], config.decode)
    assert item.image is not None and min(item.image.size) == shorter
    assert (item.record.width, item.record.height) == (1024, 768)
