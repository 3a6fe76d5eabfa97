"""Model filters inside Beam's ``RunInference``.

RunInference batches elements, loads the model once per process (a shared handle) and
records inference latency and batch-size metrics; this module only adapts a
:class:`~mitigate.filters.base.ModelFilter` to Beam's ``ModelHandler`` interface. The
elements are :class:`ScoringItem`s carrying the pipeline's single decode, so no image is
decoded twice. An image whose preprocessing fails becomes an ``error``/``inference_error``
record alone; when the model fails on a batch, each sample of that batch does. Failures
are caught inside the handler rather than through RunInference's dead-letter output,
whose extra branch would need a Flatten that breaks fusion and serialises every image.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from mitigate.filters import ModelFilter, ScoringItem
from mitigate.filters.base import Failure
from mitigate.records import Reason


class FilterModelHandler(ModelHandler[ScoringItem, PredictionResult, Any]):
    """Adapts a model filter to RunInference. Items without pixels (errors) pass through
    untouched, and failures are caught here, per item or per batch, so that the chain
    Decode -> RunInference -> ... -> Decide stays one fused stage: images never cross a
    stage boundary (which would serialise them)."""

    def __init__(self, flt: ModelFilter) -> None:
        # Fixed-size batches: onnxruntime is markedly faster per image on full batches
        # than on the small ones BatchElements' adaptive sizing starts with.
        super().__init__(min_batch_size=flt.batch_size, max_batch_size=flt.batch_size)
        self._flt = flt

    def load_model(self) -> Any:
        return self._flt.load_model()

    def get_num_bytes(self, batch: Sequence[ScoringItem]) -> int:
        # The default pickles the batch to measure it; pixels are what matters.
        return sum(3 * item.image.width * item.image.height for item in batch if item.image)

    def run_inference(
        self,
        batch: Sequence[ScoringItem],
        model: Any,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        predictions = self._flt.predict_batch(model, [item.image for item in batch])
        return [PredictionResult(item, p) for item, p in zip(batch, predictions, strict=True)]

    def get_metrics_namespace(self) -> str:
        return f"mitigate_{self._flt.filter_id}"

    @property
    def filter_id(self) -> str:
        return self._flt.filter_id

    @property
    def batch_size(self) -> int:
        return self._flt.batch_size


def attach(result: PredictionResult, filter_id: str, keep_embedding: bool) -> ScoringItem:
    item: ScoringItem = result.example
    if result.inference is None:  # no pixels: nothing to score
        return item
    if isinstance(result.inference, Failure):
        detail = f"{filter_id}: {result.inference.detail}"
        return ScoringItem(item.record.with_error(Reason.INFERENCE_ERROR, detail), None)
    score, embedding = result.inference
    record = item.record.copy()  # never mutate an element received from upstream
    record.scores[filter_id] = score
    if keep_embedding and embedding is not None:
        record.embeddings[filter_id] = embedding.astype(np.float16)
    return ScoringItem(record, item.image)


class ScoreWithModel(beam.PTransform):
    """Score every item that has pixels with one model filter (RunInference)."""

    def __init__(self, flt: ModelFilter, keep_embedding: bool) -> None:
        super().__init__(label=f"Model[{flt.filter_id}]")
        self._flt = flt
        self._keep = keep_embedding

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        return (
            items
            | "RunInference" >> RunInference(FilterModelHandler(self._flt))
            | "Attach" >> beam.Map(attach, self._flt.filter_id, self._keep)
        )
