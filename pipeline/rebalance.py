"""Rebalancing in Beam: fit on a bounded sample, apply as a side input, normalise
globally, report probe-term frequencies. All the math is in :mod:`mitigate.rebalance`.

::

    final records ─ population (not error, not dropped for other reasons)
        ├─ bottom-k by key hash (CombineGlobally, bounded) ─ fit (one worker) ─ model
        └─ probe counts (unfiltered)
    kept ─ raw weight (model as side input, batched) ─ log-histogram ─ scale
         ─ weight = clip(scale * raw) [─ copies] ─ probe counts (kept, weighted)

Nothing holds more than the fit sample and fixed-size histograms in one worker.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.pvalue import AsSingleton

from mitigate import rebalance as rb
from mitigate.config import Config, RebalanceConfig
from mitigate.records import FILTERED, KEPT, SampleRecord

log = logging.getLogger(__name__)
_BATCH = 512


def harmful_filter_ids(config: Config) -> set[str]:
    """Filters whose drops count as 'filtered' for rebalancing."""
    if config.rebalance.filtered_by is not None:
        return set(config.rebalance.filtered_by)
    return {f.filter_id for f in config.filters if f.category != "quality"}


def in_population(record: SampleRecord, harmful: set[str]) -> bool:
    """The rebalanced population: samples whose fate only the harmful filters decided
    (errors, duplicates and other filters' drops are outside it)."""
    if record.state == KEPT:
        return True
    return record.state == FILTERED and record.filter in harmful


def masked_terms(config: Config) -> frozenset[tuple[str, ...]]:
    """Normalised terms of the caption filters whose drops are being rebalanced."""
    if not config.rebalance.mask_filter_terms:
        return frozenset()
    harmful = harmful_filter_ids(config)
    out: set[tuple[str, ...]] = set()
    for flt in config.filters:
        table = getattr(flt, "_term_table", None)
        if flt.filter_id in harmful and table:
            out.update(table)
    return frozenset(out)


def _features(cfg: RebalanceConfig, dim: int, masked: frozenset) -> rb.FeatureConfig:
    return rb.FeatureConfig(
        n_features=cfg.n_features,
        embedding_dim=dim,
        embedding_weight=cfg.embedding_weight,
        masked_terms=masked,
    )


def _embedding(record: SampleRecord, filter_id: str | None) -> np.ndarray | None:
    if filter_id is None:
        return None
    emb = record.embeddings.get(filter_id)
    return None if emb is None else np.asarray(emb, dtype=np.float32)


class BottomK(beam.CombineFn):
    """Deterministic uniform sample of at most ``n`` population records."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def create_accumulator(self) -> list:
        return []

    def add_input(self, acc: list, item: tuple[str, Any]) -> list:
        key, payload = item
        return rb.bottom_k_merge(acc, [(rb.key_hash64(key, self.seed), key, payload)], self.n)

    def merge_accumulators(self, accs: Iterable[list]) -> list:
        out: list = []
        for acc in accs:
            out = rb.bottom_k_merge(out, acc, self.n)
        return out

    def extract_output(self, acc: list) -> list:
        return acc


@dataclasses.dataclass(frozen=True)
class Fitted:
    """The fitted model (None when the sample cannot support a fit) and fit facts."""

    model: rb.DensityRatioModel | None
    info: dict[str, Any]


def fit(
    sample: list, cfg: RebalanceConfig, embedding_filter: str | None, masked: frozenset
) -> Fitted:
    captions = [p[0] for _, _, p in sample]
    kept = np.array([p[2] for _, _, p in sample], dtype=bool)
    info = {"fit_sample": len(sample), "fit_sample_kept": int(kept.sum())}
    if len(sample) < 2 or kept.all() or not kept.any():
        info["note"] = "nothing to learn (no filtered or no kept samples in the fit sample)"
        return Fitted(None, info)
    embeddings = None
    dim = 0
    if embedding_filter is not None:
        embeddings = np.stack([p[1] for _, _, p in sample])
        dim = embeddings.shape[1]
    feature_config = _features(cfg, dim, masked)
    features = feature_config.featurize(captions, embeddings)
    model = rb.fit_density_ratio_from_sample(features, kept, C=cfg.C, feature_config=feature_config)
    info["train_auc"] = model.train_auc
    return Fitted(model, info)


def raw_weights(
    batch: list[SampleRecord], fitted: Fitted, embedding_filter: str | None
) -> list[tuple[SampleRecord, float]]:
    """(record, raw density ratio) for a batch of kept records (featurised together,
    which is ~25x cheaper per sample than one at a time)."""
    batch = sorted(batch, key=lambda r: r.order)
    if fitted.model is None:
        return [(r, 1.0) for r in batch]
    emb = None
    if embedding_filter is not None:
        emb = np.stack([_embedding(r, embedding_filter) for r in batch])
    raw = fitted.model.weights_for([r.caption for r in batch], emb)
    return [(r, float(v)) for r, v in zip(batch, raw, strict=True)]


class ScaleFn(beam.CombineFn):
    """Raw weights -> log-histogram -> the scale that makes clipped weights mean 1."""

    def __init__(self, w_min: float, w_max: float) -> None:
        self.w_min, self.w_max = w_min, w_max

    def create_accumulator(self) -> rb.LogHistogram:
        return rb.LogHistogram()

    def add_input(self, acc: rb.LogHistogram, raw: float) -> rb.LogHistogram:
        return acc.add([raw])

    def add_inputs(self, acc: rb.LogHistogram, raws: Iterable[float]) -> rb.LogHistogram:
        return acc.add(np.fromiter(raws, dtype=np.float64))

    def merge_accumulators(self, accs: Iterable[rb.LogHistogram]) -> rb.LogHistogram:
        out = rb.LogHistogram()
        for acc in accs:
            out = out.merge(acc)
        return out

    def extract_output(self, acc: rb.LogHistogram) -> float:
        return rb.solve_scale(acc, self.w_min, self.w_max)


def _final(pair: tuple[SampleRecord, float], scale: float, cfg: RebalanceConfig) -> SampleRecord:
    record, raw = pair
    weight = float(np.clip(scale * raw, cfg.w_min, cfg.w_max))
    copies = None
    if cfg.mode == "resample":
        copies = int(rb.resample_counts([weight], [record.key], cfg.seed)[0])
    return dataclasses.replace(record, weight=weight, copies=copies)


class StatsFn(beam.CombineFn):
    def __init__(self, cfg: RebalanceConfig) -> None:
        self.cfg = cfg

    def create_accumulator(self) -> tuple[rb.WeightStats, rb.ProbeTableAccumulator]:
        return rb.WeightStats(), rb.ProbeTableAccumulator(self.cfg.probes)

    def add_input(self, acc, item: tuple[str, str | None, float | None]):
        stats, probes = acc
        kind, caption, weight = item
        if kind == "unfiltered":
            probes.add_unfiltered(caption)
        else:
            probes.add_filtered(caption, weight)
            stats.add([weight], self.cfg.w_min, self.cfg.w_max)
        return stats, probes

    def merge_accumulators(self, accs):
        accs = list(accs)
        stats, probes = accs[0]
        for s, p in accs[1:]:
            stats, probes = stats.merge(s), probes.merge(p)
        return stats, probes

    def extract_output(self, acc) -> dict[str, Any]:
        stats, probes = acc
        table = {
            group: {
                "unfiltered": _finite(row.freq_unfiltered),
                "filtered": _finite(row.freq_filtered),
                "reweighted": _finite(row.freq_reweighted),
                "change_filtered": _finite(row.rel_change_filtered),
                "change_reweighted": _finite(row.rel_change_reweighted),
                "count_unfiltered": row.hits_unfiltered,
                "count_filtered": row.hits_filtered,
            }
            for group, row in probes.result().items()
        }
        return {"weights": stats.summary(), "probes": table}


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined frequency or change (no samples) is null."""
    return float(value) if np.isfinite(value) else None


class Rebalance(beam.PTransform):
    """Final records in, the same records out with kept ones weighted; plus a summary
    PCollection (one dict) for summary.json."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config

    def expand(self, records: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        cfg = self.config.rebalance
        harmful = harmful_filter_ids(self.config)
        emb_id = cfg.embedding_filter
        population = records | "Population" >> beam.Filter(in_population, harmful)
        fitted = (
            population
            | "SampleEntries"
            >> beam.Map(lambda r: (r.key, (r.caption, _embedding(r, emb_id), r.state == KEPT)))
            | "FitSample" >> beam.CombineGlobally(BottomK(cfg.fit_sample_size, cfg.seed))
            | "Fit" >> beam.Map(fit, cfg, emb_id, masked_terms(self.config))
        )
        # Filters rather than Partition, and batches formed by a GroupByKey on (source,
        # index block) rather than buffered until finish_bundle: both work on every
        # runner, including Dask's, which mishandles multi-output ParDos and drops
        # finish_bundle output.
        kept = records | "Kept" >> beam.Filter(lambda r: r.state == KEPT)
        others = records | "NotKept" >> beam.Filter(lambda r: r.state != KEPT)
        raw = (
            kept
            | "BatchKey" >> beam.Map(lambda r: ((r.source, r.index // _BATCH), r))
            | "Batches" >> beam.GroupByKey()
            | "RawWeights"
            >> beam.FlatMap(lambda kv, f: raw_weights(list(kv[1]), f, emb_id), AsSingleton(fitted))
        )
        scale = (
            raw
            | "Raw" >> beam.Map(lambda pair: pair[1])
            | "Scale" >> beam.CombineGlobally(ScaleFn(cfg.w_min, cfg.w_max))
        )
        weighted = raw | "Weights" >> beam.Map(_final, AsSingleton(scale), cfg)
        unfiltered = population | "ProbeUnfiltered" >> beam.Map(
            lambda r: ("unfiltered", r.caption, None)
        )
        filtered = weighted | "ProbeKept" >> beam.Map(lambda r: ("kept", r.caption, r.weight))
        stats = (
            (unfiltered, filtered)
            | "ProbeInputs" >> beam.Flatten()
            | "Stats" >> beam.CombineGlobally(StatsFn(cfg))
        )
        report = stats | "Report" >> beam.Map(
            lambda s, f, sc: {
                **s,
                "fit": f.info,
                "scale": sc,
                "mode": cfg.mode,
                "filtered_by": sorted(harmful),
                "embedding_filter": emb_id,
                "masked_terms": len(masked_terms(self.config)),
            },
            AsSingleton(fitted),
            AsSingleton(scale),
        )
        return (weighted, others) | "Rejoin" >> beam.Flatten(), report
