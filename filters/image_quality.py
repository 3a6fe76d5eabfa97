"""``image_quality``: drop images too small, too elongated, or of implausible file size.

Decides from signals the pipeline stores for every sample (width and height after EXIF
orientation, byte size), so its thresholds can be re-decided without decoding again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field, model_validator

from mitigate.filters import register
from mitigate.filters.base import Drop, Filter, FilterConfig, Score, ScoringItem
from mitigate.reasons import Reason
from mitigate.records import SampleRecord


class ImageQualityConfig(FilterConfig):
    name: Literal["image_quality"] = "image_quality"
    min_side: int = Field(
        default=64, ge=0, description="Shorter side must be at least this many pixels."
    )
    max_aspect_ratio: float = Field(
        default=4.0, ge=1.0, description="Longer side / shorter side must not exceed this."
    )
    min_bytes: int = Field(default=0, ge=0, description="Smallest accepted file size, bytes.")
    max_bytes: int | None = Field(
        default=None, ge=1, description="Largest accepted file size, bytes (none: no limit)."
    )

    @model_validator(mode="after")
    def _bytes_range(self) -> ImageQualityConfig:
        if self.max_bytes is not None and self.max_bytes < self.min_bytes:
            raise ValueError(
                f"max_bytes ({self.max_bytes}) must be at least min_bytes ({self.min_bytes})"
            )
        return self


@register
class ImageQuality(Filter[ImageQualityConfig]):
    """Score: the aspect ratio (longer side / shorter side). The decision also reads the
    stored width, height and byte size, checking in this order: size, aspect ratio,
    bytes; the first failed check names the reason."""

    name = "image_quality"
    config_model = ImageQualityConfig

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        return [Score(_aspect(item.record.width, item.record.height)) for item in items]

    def decide(self, record: SampleRecord) -> Drop | None:
        cfg = self.config
        w, h, n = record.width or 0, record.height or 0, record.n_bytes or 0
        if min(w, h) < cfg.min_side:
            return Drop(
                Reason.IMAGE_TOO_SMALL,
                min(w, h),
                cfg.min_side,
                f"{w}x{h} px, min side {cfg.min_side}",
            )
        aspect = _aspect(w, h)
        if aspect > cfg.max_aspect_ratio:
            return Drop(
                Reason.ASPECT_RATIO_OUT_OF_RANGE,
                aspect,
                cfg.max_aspect_ratio,
                f"{w}x{h} px, aspect {aspect:.2f} > {cfg.max_aspect_ratio}",
            )
        if n < cfg.min_bytes:
            return Drop(Reason.FILE_TOO_SMALL, n, cfg.min_bytes, f"{n} bytes < {cfg.min_bytes}")
        if cfg.max_bytes is not None and n > cfg.max_bytes:
            return Drop(Reason.FILE_TOO_LARGE, n, cfg.max_bytes, f"{n} bytes > {cfg.max_bytes}")
        return None


def _aspect(width: int | None, height: int | None) -> float:
    w, h = width or 0, height or 0
    return max(w, h) / min(w, h) if min(w, h) > 0 else float("inf")
