"""``nudenet``: the NudeNet YOLOv8 detector (``320n.onnx``) as an image filter.

Optional: install with ``pip install -e ".[nudenet]"``. **Licence: the NudeNet package
and its model are AGPL-3.0** (the wheel's LICENSE file; its metadata says MIT, the
licence text it ships is the GNU Affero GPL v3). Using it in a service you offer to
others has AGPL obligations; it is not installed by default for that reason.

Preprocessing follows NudeNet's own, with OpenCV as NudeNet uses it (a dependency of
the ``nudenet`` package), applied to the pipeline's single decode: the image is
letterboxed onto a black square (top left), resized to 320x320 (bilinear), RGB scaled
to [0, 1], NCHW. The detector outputs, per anchor, 4 box values and 18 class scores. As
in NudeNet, each anchor is labelled with its best class; the filter's score is the
highest anchor score among anchors whose best class is an *exposed* class in
``columns`` (default: exposed buttocks, female breast, female genitalia, anus, male
genitalia), 0 if none. NudeNet decodes the full image where the pipeline hands over its
reduced decode, so scores can differ from the ``nudenet`` package's by a few hundredths.

The default threshold 0.25 sits near NudeNet's own detection cut (0.2) so that weak
detections still drop the image, following the recall-first choice of DALL·E 2.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from mitigate.filters import register
from mitigate.filters.base import Probability
from mitigate.filters.onnx_image import ModelFile, OnnxImage, OnnxImageConfig

LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED",
    "BELLY_COVERED", "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE",
    "BELLY_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)  # fmt: skip
EXPOSED = [LABELS.index(name) for name in (
    "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED", "ANUS_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
)]  # fmt: skip
_BOX = 4  # x, y, w, h precede the class scores in each anchor's column


class NudenetConfig(OnnxImageConfig):
    name: Literal["nudenet"] = "nudenet"  # type: ignore[assignment]
    category: str = Field(default="sexual", pattern=r"^[a-z][a-z0-9_]*$")
    model: ModelFile = ModelFile(package="nudenet", file="320n.onnx")
    threshold: Probability = 0.25
    input_name: str | None = "images"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    size: int = 320
    resize_mode: Literal["squash", "shorter_side", "pad"] = "pad"
    crop: Literal["center", "none"] = "none"
    scale: float = 1 / 255
    output: str | int = "output0"
    columns: list[int] = Field(default_factory=lambda: list(EXPOSED), min_length=1)


@register
class Nudenet(OnnxImage):
    """Score: max over anchors of the exposed-body-part class scores, in [0, 1]."""

    name = "nudenet"
    config_model = NudenetConfig

    def preprocess(self, image: Image.Image) -> np.ndarray:
        import cv2

        rgb = np.asarray(image.convert("RGB"))
        side = max(rgb.shape[:2])
        square = np.zeros((side, side, 3), dtype=np.uint8)
        square[: rgb.shape[0], : rgb.shape[1]] = rgb
        size = self.config.size
        resized = cv2.resize(square, (size, size), interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32) / 255.0

    def predict(self, model: Any, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        (out,) = model.run([self.config.output], {self.config.input_name: batch})
        classes = np.asarray(out, dtype=np.float64)[:, _BOX:, :]  # (N, 18, anchors)
        best = classes.argmax(axis=1)  # each anchor's class, as NudeNet labels it
        anchor_score = classes.max(axis=1)
        exposed = np.isin(best, self.config.columns)
        scores = np.where(exposed, anchor_score, 0.0).max(axis=1)
        return np.clip(scores, 0.0, 1.0), None
