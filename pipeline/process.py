"""ProcessChunk: a chunk of samples read, decoded once, scored by every filter, decided.

::

    chunk ─ Decode (bytes, sha256, one decode, hashes, signature, pixel filters; in a
            pool of decode processes where configured: mitigate/decode_pool.py)
          ─ ScoreWithModel per model filter (RunInference; inline in Decode on Dask)
          ─ Decide (filter decisions in config order; pixels dropped)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.shared import Shared
from apache_beam.utils.windowed_value import WindowedValue

from mitigate import decode_pool, kernels, progress, stages
from mitigate.config import Config, DecodeConfig
from mitigate.decode_pool import DecodePool, PoolUnavailable, plan_processes
from mitigate.filters import (
    Filter,
    FilterConfig,
    ModelFilter,
    ScoringItem,
    build_filter,
    scored_at_decode,
)
from mitigate.filters.probe import apply_heads, backbones, is_head
from mitigate.pipeline import fs
from mitigate.pipeline.inference import FilterModelHandler, ScoreWithModel, attach
from mitigate.records import SampleRecord

log = logging.getLogger(__name__)

NAMESPACE = "mitigate"
# Beam's Dask runner drops output a DoFn emits from finish_bundle, which RunInference's
# batching (BatchElements) relies on: there, model filters run inside Decode instead,
# batched per chunk, with the same handler code and results.
INLINE_MODEL_RUNNERS = frozenset({"dask"})


class Decode(beam.DoFn):
    """Read a chunk's bytes, decode each image once, compute signals, and score with
    every filter that needs no model. Model filters follow in RunInference, or, with
    ``inline_models``, run here on the chunk as one batch, the model shared per process
    (for runners that drop finish_bundle output, which RunInference's batching uses)."""

    def __init__(
        self,
        filters: Sequence[FilterConfig],
        decode: DecodeConfig,
        inline_models: bool = False,
        processes: tuple[int, int] = (1, 0),
    ) -> None:
        self.filter_configs = list(filters)
        self.decode = decode
        self.inline_models = inline_models
        # (worker processes, samples decoded here first): mitigate.decode_pool
        self.processes, self.warmup = processes
        self._shared = Shared() if inline_models else None
        self._filters: list[Filter] = []
        self._pool: DecodePool | None = None
        self._booted: tuple[float, int] | None = None  # (when, samples seen) the pool booted
        self._total: int | None = None  # the run's input samples, where known
        self._small_noted = False
        # Decoded items whose downstream steps wait for the next chunk's hand-off to the
        # pool, so the pool decodes while this worker runs them (emitted at the latest
        # in finish_bundle; not where a runner drops finish_bundle output)
        self.overlap = not inline_models
        self._held: list[ScoringItem] = []

    def setup(self) -> None:
        built = [build_filter(c) for c in self.filter_configs]
        # heads read a model's embedding: they are scored in Decide, after the models
        self._filters = scored_at_decode(built)
        for flt in self._filters:
            flt.setup()
        self._models: list[tuple[FilterModelHandler, Any, bool]] = []
        if self.inline_models:
            for cfg, flt in zip(self.filter_configs, built, strict=True):
                if isinstance(flt, ModelFilter):
                    handle = self._shared.acquire(
                        lambda f=flt: _ModelHolder(f.load_model()), tag=flt.filter_id
                    )
                    keep = _keeps_embedding(cfg, self.filter_configs)
                    self._models.append((FilterModelHandler(flt), handle.model, keep))
        self._samples = Metrics.counter(NAMESPACE, "samples_processed")
        self._decoded = Metrics.counter(NAMESPACE, "samples_decoded")
        self._crashed = Metrics.counter(NAMESPACE, "decoder_crashes")
        self._seen = 0

    def teardown(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _pooled(self) -> DecodePool | None:
        """The decode pool, once this worker has decoded its warm-up share itself and
        the pool's workers are up. They boot from half the warm-up on (at the first
        chunk without one), ~1 s each with their kernels, side by side, while this worker
        decodes."""
        if self.processes < 2 or self._seen < self.warmup // 2:
            return None
        if self.warmup and self._total is not None and self._total < decode_pool.AUTO_MIN_SAMPLES:
            if not self._small_noted:  # auto, and too small a run for a pool to pay off
                self._small_noted = True
                log.info(
                    "%d input samples: decoded in this process (decode.processes: auto "
                    "starts a pool from %d)",
                    self._total,
                    decode_pool.AUTO_MIN_SAMPLES,
                )
            return None
        try:
            if self._pool is None:
                models = any(isinstance(build_filter(c), ModelFilter) for c in self.filter_configs)
                configs = [f.config for f in self._filters]
                self._pool = DecodePool(
                    self.processes, self.decode, configs, keep_images=models, opener=fs.open_read
                )
                self._pool.start()
                self._booted = (time.perf_counter(), self._seen)
            if self._seen < self.warmup or self._pool.booting():
                return None
        except PoolUnavailable as exc:
            self._give_up_pool(exc)
            return None
        if self._booted is not None:
            at, seen = self._booted
            self._booted = None
            log.info(
                "%d decode processes up after %.2f s; %d samples decoded here meanwhile",
                self.processes,
                time.perf_counter() - at,
                self._seen - seen,
            )
        return self._pool

    def _give_up_pool(self, exc: PoolUnavailable) -> None:
        log.warning("decoding in this process instead of %d: %s", self.processes, exc)
        if self._pool is not None:
            self._pool.close()
        self._pool, self.processes = None, 1

    def _here(self, records: list[SampleRecord]) -> list[ScoringItem]:
        payloads = stages.load_payloads(records, fs.open_read, self.decode.max_image_bytes)
        items = stages.compute_signals(payloads, self.decode, self._filters)
        stages.score_items(items, self._filters)
        return items

    def process(
        self, element: tuple[int, list[SampleRecord]], total: int | None = None
    ) -> Iterator[ScoringItem]:
        """``total``: the run's input samples (a side input where ``decode.processes``
        is ``auto`` or the runner is ``direct``), for :meth:`_pooled` and, at the first
        chunk, whether the kernels run compiled (:data:`mitigate.kernels.COMPILED_MIN_SAMPLES`)."""
        _, records = element
        if total is not None and self._total is None:
            # the kernels' numpy references (same bits) where numba's load would not pay
            small = total < kernels.COMPILED_MIN_SAMPLES
            kernels.set_compiled(not small)
            if small:
                log.info(
                    "a run of %d samples: kernels as their numpy references, numba not "
                    "loaded (from %d samples)",
                    total,
                    kernels.COMPILED_MIN_SAMPLES,
                )
        self._total = total
        pool = self._pooled()
        self._seen += len(records)
        held, self._held = self._held, []
        if pool is None:
            yield from self._finish(held)
            yield from self._finish(self._here(records))
            return
        try:
            ticket = pool.send(records)
            if self.overlap:  # the steps after Decode run on the last chunk meanwhile
                yield from self._finish(held)
                held = []
            crashed = pool.crashed
            items, _ = pool.receive(ticket)
            self._crashed.inc(pool.crashed - crashed)
        except PoolUnavailable as exc:
            self._give_up_pool(exc)
            items = self._here(records)
        yield from self._finish(held)
        if self.overlap and self._pool is not None:
            self._held = items
        else:
            yield from self._finish(items)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        held, self._held = self._held, []
        for item in self._finish(held):
            yield GlobalWindows.windowed_value(item)
        if self._pool is not None:  # idle until the next bundle: the near-dup scoring's
            self._pool.lend_idle()

    def _finish(self, items: list[ScoringItem]) -> Iterator[ScoringItem]:
        """Inline model filters, counters, then the items downstream."""
        if not items:
            return
        for handler, model, keep in self._models:
            fid = handler.filter_id
            items = [
                attach(result, fid, keep)
                for start in range(0, len(items), handler.batch_size)
                for result in handler.run_inference(
                    items[start : start + handler.batch_size], model
                )
            ]
        self._samples.inc(len(items))
        self._decoded.inc(sum(1 for item in items if item.record.phash is not None))
        progress.emit("processed", len(items))
        yield from items


class _ModelHolder:
    """Weak-referenceable box for a model in Beam's per-process ``Shared`` cache."""

    def __init__(self, model: Any) -> None:
        self.model = model


class Decide(beam.DoFn):
    """Every score is in: apply the filters' decisions (config order), drop the pixels."""

    def __init__(self, filters: Sequence[FilterConfig]) -> None:
        self.filter_configs = list(filters)

    def setup(self) -> None:
        self._filters = [build_filter(c) for c in self.filter_configs]
        self._heads = [f for f in self._filters if is_head(f)]

    def process(self, item: ScoringItem) -> Iterator[SampleRecord]:
        yield stages.decide(apply_heads(item.record, self._heads), self._filters)


def _keeps_embedding(cfg: FilterConfig, filters: Sequence[FilterConfig]) -> bool:
    """A model filter's embedding stays on the record when it is stored or a head reads it."""
    return cfg.stores_embeddings or cfg.filter_id in backbones(filters)


class ProcessChunk(beam.PTransform):
    """Decode once, score with every filter (models through RunInference), decide."""

    def __init__(self, config: Config, input_count: beam.PCollection | None = None) -> None:
        """``input_count``: a one-element collection, the run's input samples; with
        ``decode.processes: auto`` a run under :data:`mitigate.decode_pool.AUTO_MIN_SAMPLES`
        then decodes in its Beam worker alone."""
        super().__init__()
        self.input_count = input_count
        # each step below gets only the config sections it reads
        self.filters = list(config.filters)
        self.decode = config.decode
        self.inline = config.runner.name in INLINE_MODEL_RUNNERS
        self.runs_here = config.runner.name == "direct"
        self.processes = plan_processes(config.decode, config.runner)

    def expand(self, chunks: beam.PCollection) -> beam.PCollection:
        decode = Decode(self.filters, self.decode, self.inline, self.processes)
        auto = self.processes[0] > 1 and self.processes[1] > 0
        local = self.runs_here
        if (auto or local) and self.input_count is not None:
            # the run's size decides on a pool, and on the local runner on numba
            # (mitigate.kernels.COMPILED_MIN_SAMPLES): in the process that reads the
            # count, where a distributed runner would wait for every chunk to be counted
            total = beam.pvalue.AsSingleton(self.input_count)
            items = chunks | "Decode" >> beam.ParDo(decode, total=total)
        else:
            items = chunks | "Decode" >> beam.ParDo(decode)
        if not self.inline:
            for cfg in self.filters:
                flt = build_filter(cfg)
                if isinstance(flt, ModelFilter):
                    items = items | ScoreWithModel(flt, _keeps_embedding(cfg, self.filters))
        return items | "Decide" >> beam.ParDo(Decide(self.filters))
