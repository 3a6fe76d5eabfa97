"""ProcessChunk: a chunk of samples read, decoded once, scored by every filter, decided.

::

    chunk ─ Decode (bytes, sha256, one decode, hashes, signature, pixel filters; in a
            pool of decode processes where configured: mitigate/decode_pool.py; the
            signatures to the run's store with runner.spill_signatures: sigstore.py)
          ─ ScoreWithModel per model filter (RunInference; inline in Decode on Dask)
          ─ Decide (filter decisions in config order; pixels dropped)
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.shared import Shared
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from mitigate import decode_pool, kernels, progress, stages, workers
from mitigate.config import Config, DecodeConfig
from mitigate.decode_pool import DecodePool, PoolUnavailable, plan_isolation, plan_processes
from mitigate.filters import (
    Filter,
    FilterConfig,
    ModelFilter,
    ScoringItem,
    build_filter,
    scored_at_decode,
)
from mitigate.filters.probe import apply_heads, backbones, is_head
from mitigate.pipeline import fs, sigstore
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
        isolate: bool = False,
        store: str | None = None,
    ) -> None:
        self.filter_configs = list(filters)
        # runner.spill_signatures: the signatures go to this store, not downstream
        self.store = store
        self.decode = decode
        self.inline_models = inline_models
        # (worker processes, samples decoded here first): mitigate.decode_pool
        self.processes, self.warmup = processes
        # decode.isolate: every chunk to the pool (one process at least), none decoded
        # here, also while its workers boot (a chunk waits in the pipe behind the boot)
        self.isolate = isolate
        self._shared = Shared() if inline_models else None
        self._filters: list[Filter] = []
        self._pool: DecodePool | None = None
        self._booted: tuple[float, int] | None = None  # (when, samples seen) the pool booted
        self._pool_args: tuple[DecodeConfig, list[FilterConfig], bool] | None = None
        self._early = False  # its workers were booted before the pipeline started
        self._total: int | None = None  # the run's input samples, where known
        self._small_noted = False
        # A chunk stays in flight in the pool until the next is handed over, so the
        # pool decodes while this worker runs the steps after Decode (emitted at the
        # latest in finish_bundle; not where a runner drops finish_bundle output)
        self.overlap = not inline_models
        self._tickets: list[decode_pool.Ticket] = []  # chunks in flight, oldest first

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
        decodes. Workers booted before the pipeline started
        (:func:`mitigate.decode_pool.prestart_for`) are used from the first chunk, with
        no warm-up, whatever the run's size."""
        if self.processes < 2 and not self.isolate:
            return None
        if self._pool_args is None:
            self._pool_args = decode_pool.pool_args(self.decode, self.filter_configs)
            self._early = decode_pool.has_prestarted(*self._pool_args, fs.open_read)
        booting = False  # an isolated pool's workers still starting (chunks wait for them)
        if not self._early and not self.isolate:
            if self._seen < self.warmup // 2:
                return None
            if self.warmup and self._total is not None:
                if self._total < decode_pool.AUTO_MIN_SAMPLES:
                    if not self._small_noted:  # auto, too small a run for a pool to pay off
                        self._small_noted = True
                        log.info(
                            "%d input samples: decoded in this process (decode.processes: "
                            "auto starts a pool from %d)",
                            self._total,
                            decode_pool.AUTO_MIN_SAMPLES,
                        )
                    return None
        try:
            if self._pool is None:
                decode, configs, models = self._pool_args
                self._pool = DecodePool(
                    self.processes, decode, configs, keep_images=models, opener=fs.open_read
                )
                self._pool.start()
                self._booted = (time.perf_counter(), self._seen)
            if self.isolate:  # PoolUnavailable if a worker could not start
                booting = self._pool.booting()
            elif (not self._early and self._seen < self.warmup) or self._pool.booting():
                return None
        except PoolUnavailable as exc:
            self._give_up_pool(exc)
            return None
        if self._booted is not None and not (self.isolate and booting):
            at, seen = self._booted
            self._booted = None
            _preload_scoring()
            log.info(
                "%d decode processes up after %.2f s%s; %d samples decoded here meanwhile",
                self.processes,
                time.perf_counter() - at,
                " of this step (booted before the pipeline)" if self._early else "",
                self._seen - seen,
            )
        return self._pool

    def _give_up_pool(self, exc: PoolUnavailable) -> None:
        log.warning("decoding in this process instead of %d: %s", self.processes, exc)
        if self._pool is not None:
            self._pool.close()
        self._pool, self.processes, self.isolate = None, 1, False

    def _here(self, records: list[SampleRecord]) -> list[ScoringItem]:
        payloads = stages.load_payloads(
            records, fs.open_read, self.decode.max_image_bytes, self.decode.max_caption_bytes
        )
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
        # a chunk in flight: the pool is in use (a worker that replaced a dead one may
        # still be booting; its share waits behind its start call)
        pool = self._pool if self._tickets else self._pooled()
        self._seen += len(records)
        if pool is None:
            yield from self._finish(self._here(records))
            return
        if self._tickets and not (self.overlap and pool.fits_ahead(records)):
            yield from self._finish(self._collect())
        if self._pool is None:  # given up while collecting: the rest here
            yield from self._finish(self._here(records))
            return
        try:
            self._tickets.append(pool.send(records))
        except PoolUnavailable as exc:
            yield from self._finish(self._abandon(exc, records))
            return
        # with overlap, one chunk stays in flight: its workers go on to it while the
        # steps after Decode run on the chunk before (emitted at the latest in
        # finish_bundle)
        if len(self._tickets) > 1 or not self.overlap:
            yield from self._finish(self._collect())

    def _collect(self) -> list[ScoringItem]:
        """The items of the oldest chunk in flight; if the pool cannot go on, those of
        every chunk in flight, decoded here."""
        assert self._pool is not None
        ticket = self._tickets.pop(0)
        crashed = self._pool.crashed
        try:
            items, _ = self._pool.receive(ticket)
        except PoolUnavailable as exc:
            self._tickets.insert(0, ticket)
            return self._abandon(exc)
        self._crashed.inc(self._pool.crashed - crashed)
        return items

    def _abandon(
        self, exc: PoolUnavailable, records: Sequence[SampleRecord] = ()
    ) -> list[ScoringItem]:
        """Give the pool up: the chunks in flight, then ``records``, decoded here."""
        pending = [r for ticket in self._tickets for r in ticket.records] + list(records)
        self._tickets = []
        self._give_up_pool(exc)
        return self._here(pending)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        while self._tickets:
            for item in self._finish(self._collect()):
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
        if self.store is not None:
            records = sigstore.spill(self.store, [item.record for item in items])
            items = [dataclasses.replace(i, record=r) for i, r in zip(items, records, strict=True)]
        self._samples.inc(len(items))
        self._decoded.inc(sum(1 for item in items if item.record.phash is not None))
        progress.emit("processed", len(items))
        yield from items


def _preload_scoring() -> None:
    """Load verification's compiled kernels on a thread of this process while its pool
    decodes: this worker then mostly waits on the pool's pipes, and the near-dup decision
    after the decode step would otherwise load numba first (~0.6 s on the run's serial
    path where this worker decoded nothing itself). Nothing where the kernels run as
    their numpy references (:func:`mitigate.kernels.set_compiled`)."""
    if not kernels.compiled():
        return

    def load() -> None:
        try:
            workers.warm_scoring()
        except Exception as exc:  # a head start only: the decision loads them itself
            log.debug("pair scoring kernels not preloaded: %s", exc)

    threading.Thread(target=load, name="preload-scoring", daemon=True).start()


class _ModelHolder:
    """Weak-referenceable box for a model in Beam's per-process ``Shared`` cache."""

    def __init__(self, model: Any) -> None:
        self.model = model


class Decide(beam.DoFn):
    """Every score is in: apply the filters' decisions (config order), drop the pixels.
    With a ``store`` (``runner.spill_signatures``, where the models ran after the decode
    step: RunInference) the stored embeddings go there, :data:`SPILL_BATCH` records a
    file, and the records on without them (the local runner's worker grew 18 KB a
    sample more with them: BENCHMARKS.md, "Stored embeddings in files")."""

    def __init__(self, filters: Sequence[FilterConfig], store: str | None = None) -> None:
        self.filter_configs = list(filters)
        self.store = store

    def setup(self) -> None:
        self._filters = [build_filter(c) for c in self.filter_configs]
        self._heads = [f for f in self._filters if is_head(f)]

    def start_bundle(self) -> None:
        self._held: list[SampleRecord] = []

    def process(self, item: ScoringItem) -> Iterator[SampleRecord]:
        record = stages.decide(apply_heads(item.record, self._heads), self._filters)
        if self.store is None:
            yield record
            return
        self._held.append(record)
        if len(self._held) >= SPILL_BATCH:
            yield from self._spill()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self.store is not None:
            for record in self._spill():
                yield WindowedValue(record, MIN_TIMESTAMP, [GlobalWindow()])

    def _spill(self) -> list[SampleRecord]:
        held, self._held = self._held, []
        assert self.store is not None
        return sigstore.spill(self.store, held, embeddings=True) if held else []


#: Records whose stored embeddings :class:`Decide` writes to one store file.
SPILL_BATCH = 64


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
        self.isolate = plan_isolation(config.decode, config.runner)
        self.store = sigstore.location(config)  # runner.spill_signatures

    def expand(self, chunks: beam.PCollection) -> beam.PCollection:
        decode = Decode(
            self.filters, self.decode, self.inline, self.processes, self.isolate, self.store
        )
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
        # the embeddings to the store after the heads read them, where the runner keeps
        # finish_bundle's output (Dask's, with the models inline, does not)
        store = None if self.inline else self.store
        return items | "Decide" >> beam.ParDo(Decide(self.filters, store))
