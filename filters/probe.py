"""``linear_probe``: a trained head on a backbone filter's image embedding.

``mitigate train`` fits a linear probe (logistic regression) on the embeddings an
``onnx_image`` filter (e.g. ``nsfw``, 1024-d pooled features) stored in a finished run
and exports the head alone as a small ONNX model (``embedding`` ``(N, D)`` float ->
``probability`` ``(N, 1)``). This filter applies such a head::

    filters:
      - name: nsfw
        store_embeddings: true
      - name: linear_probe
        id: animal             # score column score_animal, reason animal_above_threshold
        category: animal
        backbone: nsfw         # the filter whose embedding feeds the head
        model: {path: animal.onnx}
        threshold: 0.2         # drop when P(category) >= threshold

The backbone runs once per image; every head reads its embedding, so a new category
costs one dot product per sample, not a model pass. Heads are scored after every model
filter (the embedding must exist) from the same float16 embedding that is stored
under ``embeddings/<backbone>/``, so ``mitigate redecide`` can add or re-threshold a
head on a finished run without running the backbone, with the same scores to the bit.
Each sample is scored on its own (batch of one), so a score never depends on which
other samples shared its batch.

The head file is opened when the config is validated: an unreadable file, an input
that is not ``(N, D)`` float, or an output that is not one probability per row stops
the run before any work, naming the filter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, PrivateAttr, ValidationInfo, model_validator

from mitigate.filters import register
from mitigate.filters.base import Drop, Filter, FilterConfig, Probability, Score, ScoringItem
from mitigate.filters.onnx_image import CPU, ModelFile, ModelFileConfig
from mitigate.records import ERROR, Reason, SampleRecord


class LinearProbeConfig(ModelFileConfig):
    name: Literal["linear_probe"] = "linear_probe"
    category: str = Field(default="unsafe", pattern=r"^[a-z][a-z0-9_]*$")
    backbone: str = Field(
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Id of the model filter whose embedding_output feeds the head.",
    )
    model: ModelFile
    threshold: Probability = Field(
        default=0.5, description="Drop when the head's probability >= threshold."
    )

    _dim: int = PrivateAttr(default=0)

    @model_validator(mode="after")
    def _check_model(self, info: ValidationInfo) -> LinearProbeConfig:
        self._dim = check_head(open_head(str(self._locate_model(info))))
        return self

    @property
    def dim(self) -> int:
        """Embedding width the head takes."""
        return self._dim


def open_head(path: str) -> Any:
    """An onnxruntime session for a head, single-threaded (it is one dot product)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(path, sess_options=options, providers=CPU)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ValueError(f"model {path} cannot be loaded: {exc}") from None


def check_head(session: Any) -> int:
    """The embedding width a head takes; ValueError when it is not ``(N, D)`` float in,
    ``(N, 1)`` out."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            f"model: a head has one input and one output; this one has {len(inputs)} and "
            f"{len(outputs)}"
        )
    spec = inputs[0]
    if spec.type != "tensor(float)" or len(spec.shape) != 2 or not isinstance(spec.shape[1], int):
        raise ValueError(
            f"model: head input {spec.name!r} is {spec.type} {spec.shape}, expected "
            "tensor(float) of shape (N, D)"
        )
    shape = outputs[0].shape
    if len(shape) != 2 or shape[1] != 1:
        raise ValueError(f"model: head output has shape {shape}, expected (N, 1)")
    return int(spec.shape[1])


@register
class LinearProbe(Filter[LinearProbeConfig]):
    """Score: the head's probability of the category, from the backbone's embedding."""

    name = "linear_probe"
    config_model = LinearProbeConfig

    @property
    def reason(self) -> str:
        return f"{self.filter_id}_above_threshold"

    @property
    def backbone(self) -> str:
        return self.config.backbone

    def provenance(self) -> dict[str, Any]:
        return {
            "filter": self.filter_id,
            "name": self.name,
            "category": self.config.category,
            "backbone": self.config.backbone,
            "model_file": self.config.model_path,
            "model_sha256": self.config.model_sha256,
        }

    def setup(self) -> None:
        self._session = open_head(self.config.model_path)
        self._input = self._session.get_inputs()[0].name

    def score_embedding(self, embedding: np.ndarray) -> float:
        """The head's probability for one embedding (any float dtype, shape ``(D,)``)."""
        if getattr(self, "_session", None) is None:
            self.setup()
        row = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        if row.shape[1] != self.config.dim:
            raise ValueError(
                f"filter {self.filter_id}: backbone {self.backbone!r} gives {row.shape[1]}-d "
                f"embeddings, the head takes {self.config.dim}"
            )
        (out,) = self._session.run(None, {self._input: row})
        return float(np.clip(np.asarray(out, dtype=np.float64).reshape(-1)[0], 0.0, 1.0))

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        out = []
        for item in items:
            emb = item.record.embeddings.get(self.backbone)
            if emb is None:
                out.append(Score(float("nan"), f"no {self.backbone} embedding"))
            else:
                out.append(Score(self.score_embedding(emb)))
        return out

    def decide(self, record: SampleRecord) -> Drop | None:
        score = record.scores.get(self.filter_id)
        if score is not None and score >= self.config.threshold:
            detail = f"{self.config.category} score {score:.4f} >= {self.config.threshold}"
            return Drop(self.reason, score, self.config.threshold, detail)
        return None


def is_head(flt: Filter) -> bool:
    """Whether a filter reads another filter's embedding (scored after the models)."""
    return isinstance(flt, LinearProbe)


def backbones(configs: Sequence[FilterConfig]) -> set[str]:
    """Ids of the filters whose embeddings some head reads."""
    return {c.backbone for c in configs if isinstance(c, LinearProbeConfig)}


def apply_heads(record: SampleRecord, heads: Sequence[LinearProbe]) -> SampleRecord:
    """``record`` with every head's score set from its backbone's embedding (a copy;
    the input is never mutated). Errors are not scored; a head whose embedding is
    absent leaves the record's stored score for it (if any) as it is."""
    if not heads or record.state == ERROR:
        return record
    out = record.copy()
    for head in heads:
        emb = record.embeddings.get(head.backbone)
        if emb is not None:
            score = head.score_embedding(emb)
            if not math.isfinite(score):  # NaN >= threshold is False: it was kept
                # (a backbone whose embedding is NaN; helper-39): no score at all
                return out.with_error(
                    Reason.INFERENCE_ERROR,
                    f"{head.filter_id}: the head gave {score}, not a finite score (its "
                    f"{head.backbone!r} embedding is not finite)",
                )
            out.scores[head.filter_id] = score
    return out


def check_heads(configs: Sequence[FilterConfig]) -> list[str]:
    """Config errors: every head's backbone is a filter of the config that exposes an
    embedding (``embedding_output``)."""
    errors = []
    by_id = {c.filter_id: c for c in configs}
    for i, cfg in enumerate(configs):
        if not isinstance(cfg, LinearProbeConfig):
            continue
        target = by_id.get(cfg.backbone)
        if target is None:
            errors.append(
                f"filters[{i}].backbone: no filter {cfg.backbone!r}; filters: {sorted(by_id)}"
            )
        elif not getattr(target, "embedding_output", None):
            errors.append(
                f"filters[{i}].backbone: filter {cfg.backbone!r} has no embedding_output "
                "to feed a head"
            )
        elif (width := getattr(target, "embedding_width", 0)) and width != cfg.dim:
            errors.append(  # found at run time before, every sample an inference_error
                f"filters[{i}].model: the head takes embeddings {cfg.dim} wide; backbone "
                f"{cfg.backbone!r} gives {width} (a head trained on another model's?)"
            )
    return errors
