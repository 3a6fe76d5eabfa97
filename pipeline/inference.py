"""Model filters inside Beam's ``RunInference``.

RunInference batches elements, loads the model once per process (a shared handle) and
records inference latency and batch-size metrics; this module only adapts a
:class:`~mitigate.filters.base.ModelFilter` to Beam's ``ModelHandler`` interface. The
elements are :class:`ScoringItem`s carrying the pipeline's single decode, so no image is
decoded twice. A batch that fails as a whole goes to RunInference's dead-letter output
and its samples become ``error``/``inference_error`` records; an image that fails alone
in preprocessing fails alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from mitigate.filters import ModelFilter, ScoringItem
from mitigate.records import Reason


@dataclasses.dataclass(frozen=True)
class Failure:
    """Stands in for a prediction when one item could not be preprocessed."""

    detail: str


class FilterModelHandler(ModelHandler[ScoringItem, PredictionResult, Any]):
    def __init__(self, flt: ModelFilter) -> None:
        super().__init__(min_batch_size=1, max_batch_size=flt.batch_size)
        self._flt = flt

    def load_model(self) -> Any:
        return self._flt.load_model()

    def run_inference(
        self,
        batch: Sequence[ScoringItem],
        model: Any,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        tensors, ok, failed = [], [], []
        for item in batch:
            try:
                tensors.append(self._flt.preprocess(item.image))
                ok.append(item)
            except Exception as exc:  # one item's failure stays with that item
                failed.append(PredictionResult(item, Failure(f"preprocessing: {exc!r}")))
        results = list(failed)
        if ok:
            scores, embeddings = self._flt.predict(model, np.stack(tensors))
            for i, item in enumerate(ok):
                emb = None if embeddings is None else embeddings[i]
                results.append(PredictionResult(item, (float(scores[i]), emb)))
        return results

    def get_metrics_namespace(self) -> str:
        return f"mitigate_{self._flt.filter_id}"


def _attach(result: PredictionResult, filter_id: str, keep_embedding: bool) -> ScoringItem:
    item: ScoringItem = result.example
    if isinstance(result.inference, Failure):
        record = item.record.with_error(
            Reason.INFERENCE_ERROR, f"{filter_id}: {result.inference.detail}"
        )
        return ScoringItem(record, None)
    score, embedding = result.inference
    item.record.scores[filter_id] = score
    if keep_embedding and embedding is not None:
        item.record.embeddings[filter_id] = embedding.astype(np.float16)
    return item


def _failed_batch(
    element: tuple[Sequence[ScoringItem], Any], filter_id: str
) -> Iterator[ScoringItem]:
    batch, exc = element
    for item in batch:
        detail = f"{filter_id}: model failed on this sample's batch: {exc}"
        yield ScoringItem(item.record.with_error(Reason.INFERENCE_ERROR, detail), None)


class ScoreWithModel(beam.PTransform):
    """Score the items that have pixels with one model filter; pass the rest through."""

    def __init__(self, flt: ModelFilter, keep_embedding: bool) -> None:
        super().__init__(label=f"Model[{flt.filter_id}]")
        self._flt = flt
        self._keep = keep_embedding

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        fid = self._flt.filter_id
        with_pixels, without = items | "HasPixels" >> beam.Partition(
            lambda item, _: 0 if item.image is not None else 1, 2
        )
        main, dead = (
            with_pixels
            | "RunInference"
            >> RunInference(FilterModelHandler(self._flt)).with_exception_handling()
        )
        scored = main | "Attach" >> beam.Map(_attach, fid, self._keep)
        failed = dead.failed_inferences | "FailedBatches" >> beam.FlatMap(_failed_batch, fid)
        return (scored, failed, without) | "Merge" >> beam.Flatten()
