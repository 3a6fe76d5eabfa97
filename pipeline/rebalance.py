"""Rebalancing in Beam: fit on a bounded sample, apply as a side input, normalise
globally, report probe-term frequencies. All the math is in :mod:`mitigate.rebalance`.

::

    final records ─ population (not error, not dropped for other reasons)
        ├─ bottom-k by key hash (CombineGlobally, bounded) ─ fit (one worker) ─ model
        └─ probe counts (unfiltered)
    kept ─ raw weight (model as side input, batched) ─ log-histogram ─ scale
         ─ weight = clip(scale * raw) [─ copies] ─ probe counts (kept, weighted)

With ``calibrate_groups`` the scale step becomes raking over the declared groups
(:mod:`mitigate.raking`)::

    population ─ group pattern ─ counts ┐
    kept ─ raw weight ─ group pattern ──┴ group totals (combiner: counts, and per pattern
         a log-histogram of raw weights) ─ raking ─ multipliers (side input)
         ─ clip(m_p * raw) ─ exact fixed-point totals per pattern (combiner)
         ─ corrections (side input) ─ final weight [─ copies]

Nothing holds more than the fit sample and fixed-size histograms in one worker.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.pvalue import AsSingleton

from mitigate import raking
from mitigate import rebalance as rb
from mitigate.config import RebalanceConfig
from mitigate.filters import FilterConfig
from mitigate.pipeline.rebalance_fit import (
    BottomK,
    RawWeight,
    entry_embedding,
    fit,
    raw_weights,
)
from mitigate.records import FILTERED, KEPT, SampleRecord

log = logging.getLogger(__name__)
_BATCH = 512


class PatternWeight(NamedTuple):
    """A kept record, its raw ratio and its calibration-group pattern (bit per group)."""

    record: SampleRecord
    raw: float
    pattern: int


class GroupInput(NamedTuple):
    """One input of the group totals: an unfiltered sample's pattern, or a kept one's
    pattern and raw ratio (``kind`` is "unfiltered" or "kept")."""

    kind: str
    pattern: int
    raw: float


class PatternTotal(NamedTuple):
    """A kept sample's provisional calibrated weight, by pattern."""

    pattern: int
    weight: float


class ProbeInput(NamedTuple):
    """One input of the bias table: an unfiltered caption, or a kept caption and its
    final weight (``kind`` is "unfiltered" or "kept")."""

    kind: str
    caption: str | None
    weight: float | None


def harmful_filter_ids(cfg: RebalanceConfig, filters: Sequence[FilterConfig]) -> set[str]:
    """Filters whose drops count as 'filtered' for rebalancing."""
    if cfg.filtered_by is not None:
        return set(cfg.filtered_by)
    return {f.filter_id for f in filters if f.category != "quality"}


def in_population(record: SampleRecord, harmful: set[str]) -> bool:
    """The rebalanced population: samples whose fate only the harmful filters decided
    (errors, duplicates and other filters' drops are outside it)."""
    if record.state == KEPT:
        return True
    return record.state == FILTERED and record.filter in harmful


def masked_terms(
    cfg: RebalanceConfig, filters: Sequence[FilterConfig]
) -> frozenset[tuple[str, ...]]:
    """Normalised terms of the caption filters whose drops are being rebalanced."""
    if not cfg.mask_filter_terms:
        return frozenset()
    harmful = harmful_filter_ids(cfg, filters)
    out: set[tuple[str, ...]] = set()
    for flt in filters:
        if flt.filter_id in harmful:
            out.update(flt.matched_terms)
    return frozenset(out)


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


def _final(pair: RawWeight, scale: float, cfg: RebalanceConfig) -> SampleRecord:
    record, raw = pair
    weight = float(np.clip(scale * raw, cfg.w_min, cfg.w_max))
    copies = None
    if cfg.mode == "resample":
        copies = int(rb.resample_counts([weight], [record.key], cfg.seed)[0])
    return dataclasses.replace(record, weight=weight, copies=copies)


class GroupTotalsFn(beam.CombineFn):
    """Group totals for calibration: unfiltered counts per group pattern and, per
    pattern, a log-histogram of the kept samples' raw weights; out comes the raking fit
    (multipliers per pattern, the side input of the weighting step)."""

    def __init__(self, cfg: RebalanceConfig, names: tuple[str, ...]) -> None:
        self.cfg, self.names = cfg, names

    def create_accumulator(self) -> tuple[dict[int, int], dict[int, rb.LogHistogram]]:
        return {}, {}

    def add_input(self, acc, item: GroupInput):
        counts, hists = acc
        kind, pattern, raw = item
        if kind == "unfiltered":
            counts[pattern] = counts.get(pattern, 0) + 1
        else:
            if pattern not in hists:
                hists[pattern] = rb.LogHistogram()
            hists[pattern].add([raw])
        return counts, hists

    def add_inputs(self, acc, items: Iterable[GroupInput]):
        counts, hists = acc
        raws: dict[int, list[float]] = {}
        for kind, pattern, raw in items:
            if kind == "unfiltered":
                counts[pattern] = counts.get(pattern, 0) + 1
            else:
                raws.setdefault(pattern, []).append(raw)
        for pattern, values in raws.items():
            if pattern not in hists:
                hists[pattern] = rb.LogHistogram()
            hists[pattern].add(np.asarray(values, dtype=np.float64))
        return counts, hists

    def merge_accumulators(self, accs):
        counts: dict[int, int] = {}
        hists: dict[int, rb.LogHistogram] = {}
        for c, h in accs:
            for p, n in c.items():
                counts[p] = counts.get(p, 0) + n
            for p, hist in h.items():
                # merge() returns a new histogram: no input accumulator is aliased
                hists[p] = (hists[p] if p in hists else rb.LogHistogram()).merge(hist)
        return counts, hists

    def extract_output(self, acc) -> dict[str, Any]:
        counts, hists = acc
        return calibration_fit(counts, hists, self.cfg, self.names)


def calibration_fit(
    counts: dict[int, int],
    hists: dict[int, rb.LogHistogram],
    cfg: RebalanceConfig,
    names: tuple[str, ...],
) -> dict[str, Any]:
    """Raking over the declared groups from merged group totals (plain values only,
    so the result pickles small and prints into the summary)."""
    shares, n_population = raking.pattern_counts_to_shares(counts, names)
    whole = rb.LogHistogram()
    for p in sorted(hists):
        whole = whole.merge(hists[p])
    scale = rb.solve_scale(whole, cfg.w_min, cfg.w_max) if whole.n else 1.0
    out: dict[str, Any] = {
        "groups": list(names),
        "unfiltered_shares": shares,
        "population": n_population,
        "scale": scale,
        "multipliers": {p: scale for p in hists},  # fallback: plain density-ratio weights
        "targets": {},
        "error": None,
    }
    cells = {p: raking.HistCell(h, cfg.w_min, cfg.w_max) for p, h in sorted(hists.items())}
    try:
        if n_population == 0 or not cells:
            raise raking.CalibrationError("no samples to calibrate")
        fit = raking.rake(cells, shares, names, cfg.w_min, cfg.w_max)
    except raking.CalibrationError as exc:
        log.warning("rebalance.calibrate_groups: %s; weights are not calibrated", exc)
        out["error"] = str(exc)
        return out
    out.update(multipliers=fit.multipliers, targets=fit.targets, iterations=fit.iterations)
    return out


class ExactTotalsFn(beam.CombineFn):
    """Exact (fixed-point) per-pattern totals of the provisional calibrated weights."""

    def __init__(self, w_min: float, w_max: float) -> None:
        self.w_min, self.w_max = w_min, w_max

    def create_accumulator(self) -> raking.ExactTotals:
        return raking.ExactTotals()

    def add_input(self, acc: raking.ExactTotals, item: PatternTotal) -> raking.ExactTotals:
        pattern, weight = item
        return acc.add(pattern, weight, self.w_min, self.w_max)

    def merge_accumulators(self, accs: Iterable[raking.ExactTotals]) -> raking.ExactTotals:
        out = raking.ExactTotals()
        for acc in accs:
            out = out.merge(acc)
        return out

    def extract_output(self, acc: raking.ExactTotals) -> raking.ExactTotals:
        return acc


def _provisional(item: PatternWeight, cal: dict[str, Any], cfg) -> PatternTotal:
    _, raw, pattern = item
    m = cal["multipliers"].get(pattern, cal["scale"])
    return PatternTotal(pattern, float(np.clip(m * raw, cfg.w_min, cfg.w_max)))


def _corrections(totals: raking.ExactTotals, cal: dict[str, Any], cfg) -> dict[int, float]:
    if cal["error"] is not None:
        return {}
    return raking.corrections(totals, cal["targets"], cfg.w_min, cfg.w_max)


def _final_calibrated(
    item: PatternWeight,
    cal: dict[str, Any],
    corr: dict[int, float],
    cfg: RebalanceConfig,
) -> SampleRecord:
    record, raw, pattern = item
    m = cal["multipliers"].get(pattern, cal["scale"])
    weight = raking.apply(raw, m, corr.get(pattern, 1.0), cfg.w_min, cfg.w_max)
    copies = None
    if cfg.mode == "resample":
        copies = int(rb.resample_counts([weight], [record.key], cfg.seed)[0])
    return dataclasses.replace(record, weight=weight, copies=copies)


class StatsFn(beam.CombineFn):
    def __init__(self, cfg: RebalanceConfig) -> None:
        self.cfg = cfg

    def create_accumulator(self) -> tuple[rb.WeightStats, rb.ProbeTableAccumulator]:
        return rb.WeightStats(), rb.ProbeTableAccumulator(self.cfg.report_probes())

    def add_input(self, acc, item: ProbeInput):
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
        calibrated = set(self.cfg.calibration_groups())
        table = {
            group: {
                "unfiltered": _finite(row.freq_unfiltered),
                "filtered": _finite(row.freq_filtered),
                "reweighted": _finite(row.freq_reweighted),
                "change_filtered": _finite(row.rel_change_filtered),
                "change_reweighted": _finite(row.rel_change_reweighted),
                "count_unfiltered": row.hits_unfiltered,
                "count_filtered": row.hits_filtered,
                "calibrated": group in calibrated,
            }
            for group, row in probes.result().items()
        }
        return {"weights": stats.summary(), "probes": table}


def _finite(value: float) -> float | None:
    """JSON has no NaN: an undefined frequency or change (no samples) is null."""
    return float(value) if np.isfinite(value) else None


class Rebalance(beam.PTransform):
    """Final records in, the same records out with kept ones weighted; plus a summary
    PCollection (one dict) for summary.json. ``rejoin=False``: the records as two parts,
    (weighted kept, others), for a caller that groups them anyway (a Flatten less)."""

    def __init__(
        self,
        cfg: RebalanceConfig,
        filters: Sequence[FilterConfig],
        rejoin: bool = True,
        store: str | None = None,
    ) -> None:
        super().__init__()
        self.cfg, self.rejoin = cfg, rejoin
        self.store = store  # where the decode step kept the embeddings (sigstore.py)
        self.filters = list(filters)  # which drops are rebalanced, and their caption terms

    def expand(self, records: beam.PCollection) -> tuple[Any, beam.PCollection]:
        cfg = self.cfg
        harmful = harmful_filter_ids(self.cfg, self.filters)
        emb_id = cfg.embedding_filter
        population = records | "Population" >> beam.Filter(in_population, harmful)
        fitted = (
            population
            | "SampleEntries"
            >> beam.Map(
                lambda r, store: (
                    r.key,
                    (r.caption, entry_embedding(r, emb_id, store), r.state == KEPT),
                ),
                self.store,
            )
            | "FitSample" >> beam.CombineGlobally(BottomK(cfg.fit_sample_size, cfg.seed))
            | "Fit" >> beam.Map(fit, cfg, emb_id, masked_terms(self.cfg, self.filters), self.store)
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
            >> beam.FlatMap(
                lambda kv, f, store: raw_weights(list(kv[1]), f, emb_id, store),
                AsSingleton(fitted),
                self.store,
            )
        )
        groups = cfg.calibration_groups()
        calibration = None
        if groups:
            weighted, scale, calibration = self._calibrated(population, raw, groups)
        else:
            scale = (
                raw
                | "Raw" >> beam.Map(lambda pair: pair.raw)
                | "Scale" >> beam.CombineGlobally(ScaleFn(cfg.w_min, cfg.w_max))
            )
            weighted = raw | "Weights" >> beam.Map(_final, AsSingleton(scale), cfg)
        unfiltered = population | "ProbeUnfiltered" >> beam.Map(
            lambda r: ProbeInput("unfiltered", r.caption, None)
        )
        filtered = weighted | "ProbeKept" >> beam.Map(
            lambda r: ProbeInput("kept", r.caption, r.weight)
        )
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
                "masked_terms": len(masked_terms(self.cfg, self.filters)),
            },
            AsSingleton(fitted),
            AsSingleton(scale),
        )
        if calibration is not None:
            report = report | "CalibrationReport" >> beam.Map(
                _with_calibration, AsSingleton(calibration)
            )
        report = report | "EssCheck" >> beam.Map(_ess_check, cfg.ess_warn_fraction)
        parts = (weighted, others)  # not rejoined: on the local runner a Flatten is a copy
        return (parts | "Rejoin" >> beam.Flatten() if self.rejoin else parts), report

    def _calibrated(
        self, population: beam.PCollection, raw: beam.PCollection, groups: dict[str, list[str]]
    ) -> tuple[beam.PCollection, beam.PCollection, beam.PCollection]:
        """Raking over the declared groups: group totals as a combiner, multipliers and
        exact corrections as side inputs (two global combines, nothing held per sample)."""
        cfg = self.cfg
        matcher = raking.GroupMatcher(groups)
        with_pattern = raw | "GroupPattern" >> beam.Map(
            lambda pair, m: PatternWeight(pair.record, pair.raw, m.pattern(pair.record.caption)),
            matcher,
        )
        totals_in = (
            population
            | "GroupPatternUnfiltered"
            >> beam.Map(lambda r, m: GroupInput("unfiltered", m.pattern(r.caption), 0.0), matcher),
            with_pattern
            | "GroupPatternKept" >> beam.Map(lambda t: GroupInput("kept", t.pattern, t.raw)),
        ) | "GroupTotalsInputs" >> beam.Flatten()
        calibration = totals_in | "GroupTotals" >> beam.CombineGlobally(
            GroupTotalsFn(cfg, matcher.names)
        )
        corrections = (
            with_pattern
            | "Provisional" >> beam.Map(_provisional, AsSingleton(calibration), cfg)
            | "ExactTotals" >> beam.CombineGlobally(ExactTotalsFn(cfg.w_min, cfg.w_max))
            | "Corrections" >> beam.Map(_corrections, AsSingleton(calibration), cfg)
        )
        weighted = with_pattern | "CalibratedWeights" >> beam.Map(
            _final_calibrated, AsSingleton(calibration), AsSingleton(corrections), cfg
        )
        scale = calibration | "CalibrationScale" >> beam.Map(lambda c: c["scale"])
        return weighted, scale, calibration


def _with_calibration(report: dict[str, Any], cal: dict[str, Any]) -> dict[str, Any]:
    """The calibrated groups apart from the held-out probes, with what was reached."""
    probes = report["probes"]
    names = cal["groups"]
    reached = {g: probes[g]["reweighted"] for g in names if g in probes}
    out = {
        "groups": names,
        "held_out_probes": [g for g in probes if g not in names],
        "unfiltered_shares": cal["unfiltered_shares"],
        "reached_shares": reached,
        "max_abs_share_error": max(
            (
                abs(reached[g] - cal["unfiltered_shares"][g])
                for g in names
                if reached.get(g) is not None
            ),
            default=None,
        ),
        "iterations": cal.get("iterations"),
        "error": cal["error"],
    }
    if cal["error"] is None:
        unmatched = [g for g in names if g in probes and probes[g].get("count_unfiltered") == 0]
        if not unmatched:
            return {**report, "calibration": out}
        # a group no caption holds has nothing to calibrate: not shown as calibrated
        # (helper-37: "calibrated", share error 0, where its terms matched nothing)
        shown = {
            g: {**row, "calibrated": False} if g in unmatched else row for g, row in probes.items()
        }
        warning = (
            f"rebalance.calibrate_groups: {', '.join(unmatched)} matched no caption of the "
            "unfiltered data: nothing was calibrated for it (check its terms)"
        )
        log.warning("%s", warning)
        warnings = [*report.get("warnings", []), warning]
        return {**report, "probes": shown, "warnings": warnings, "calibration": out}
    # not calibrated after all: no group is shown as one, and the summary says why
    failed = {g: {**row, "calibrated": False} for g, row in probes.items()}
    warning = f"rebalance.calibrate_groups failed ({cal['error']}): weights are not calibrated"
    warnings = [*report.get("warnings", []), warning]
    return {**report, "probes": failed, "warnings": warnings, "calibration": out}


def _ess_check(report: dict[str, Any], fraction: float) -> dict[str, Any]:
    """Warn (log and summary) when the final weights leave too little effective data."""
    ess = report["weights"].get("ess_fraction")
    warnings = list(report.get("warnings", []))
    if ess is not None and ess < fraction:
        text = (
            f"effective sample size is {ess:.1%} of the kept samples, below "
            f"rebalance.ess_warn_fraction={fraction:.0%}: the weights concentrate on few "
            "samples"
        )
        log.warning("rebalance: %s", text)
        warnings.append(text)
    for text in _gap_warnings(report.get("probes") or {}):
        log.warning("rebalance: %s", text)
        warnings.append(text)
    return {**report, "ess_warn_fraction": fraction, "warnings": warnings}


#: A probe group's share that filtering moved by at least this much (relative), over at
#: least :data:`GAP_MIN_COUNT` unfiltered captions, and that the weights moved back by
#: less than a quarter, is named in the run's warnings.
GAP_MIN_CHANGE, GAP_MIN_COUNT, GAP_MIN_CLOSED = 0.05, 30, 0.25


def _gap_warnings(probes: dict[str, dict[str, Any]]) -> list[str]:
    """The probe groups whose filtered gap reweighting left (almost) open: the run said
    nothing where the women share went -14.5 % -> -14.5 % (helper-37)."""
    out = []
    for group, row in probes.items():
        before, after = row.get("change_filtered"), row.get("change_reweighted")
        if row.get("calibrated") or before is None or after is None:
            continue
        if abs(before) < GAP_MIN_CHANGE or (row.get("count_unfiltered") or 0) < GAP_MIN_COUNT:
            continue
        closed = 1 - after / before
        if closed < GAP_MIN_CLOSED:
            out.append(
                f"probe {group!r}: filtering changed its share by {before:+.1%} and the "
                f"weights leave {after:+.1%} ({max(closed, 0):.0%} of the gap closed): the "
                "dropped captions' own words may explain the removal to the classifier; "
                "rebalance.calibrate_groups restores declared groups exactly (README, "
                '"Why calibrate")'
            )
    return out
