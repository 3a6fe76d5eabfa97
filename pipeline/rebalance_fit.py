"""Rebalancing's fit and raw weights (:mod:`mitigate.pipeline.rebalance`): the bounded
fit sample (bottom-k by key hash), the density-ratio fit on it in one worker, and a
batch of kept records' raw ratios; the embeddings the decode step kept in the run's
store (``runner.spill_signatures``: :mod:`mitigate.pipeline.sigstore`) read back for
the fit sample and for each batch.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np

from mitigate import rebalance as rb
from mitigate import rebalance_select as select
from mitigate.config import RebalanceConfig
from mitigate.pipeline import sigstore
from mitigate.records import SampleRecord


class RawWeight(NamedTuple):
    """A kept record and its raw density ratio (before clipping and scaling)."""

    record: SampleRecord
    raw: float


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


def entry_embedding(
    record: SampleRecord, filter_id: str | None, store: str | None
) -> np.ndarray | bytes | None:
    """A fit sample entry's embedding: the record's, or where the decode step kept it in
    the run's store (pipeline/sigstore.py), its 16-byte ref (read for the fit sample
    only: 4 KB a sample less in the sampling's buffers)."""
    emb = _embedding(record, filter_id)
    if emb is None and store is not None and filter_id is not None:
        return sigstore.ref(record)
    return emb


def _resolve(sample: list, filter_id: str | None, store: str | None) -> list:
    """Fit sample entries with their refs replaced by the stored embeddings."""
    refs = [p[1] for _, _, p in sample if isinstance(p[1], bytes)]
    if not refs or store is None or filter_id is None:
        return sample
    stored = sigstore.read_refs(store, refs, sigstore.embedding_kind(filter_id))

    def vector(value: Any) -> Any:
        if not isinstance(value, bytes):
            return value
        data = stored.get(value)
        return None if data is None else np.frombuffer(data, np.float16).astype(np.float32)

    return [(h, k, (p[0], vector(p[1]), p[2])) for h, k, p in sample]


def _stored_embeddings(
    batch: list[SampleRecord], filter_id: str | None, store: str | None
) -> dict[int, np.ndarray]:
    """The stored embeddings of a batch of one source's records that carry none."""
    missing = [r.index for r in batch if filter_id not in r.embeddings]
    if store is None or filter_id is None or not missing:
        return {}
    kind = sigstore.embedding_kind(filter_id)
    entries = sigstore.read_source(store, batch[0].source, min(missing), max(missing) + 1, kind)
    return sigstore.vectors(entries)


class BottomK(beam.CombineFn):
    """Deterministic uniform sample of at most ``n`` population records."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def create_accumulator(self) -> list:
        return []

    def add_input(self, acc: list, item: tuple[str, Any]) -> list:
        """``bottom_k_merge(acc, [entry], n)`` in O(log n): a binary search and one list
        insert (the accumulator is Beam's to modify), instead of walking the whole
        sample for every element (issue 14: ~1 ms per sample at a few thousand)."""
        key, payload = item
        rank = (rb.key_hash64(key, self.seed), key)
        if self.n <= 0 or (len(acc) >= self.n and rank >= acc[-1][:2]):
            return acc
        at = bisect.bisect_left(acc, rank, key=lambda entry: entry[:2])
        if at < len(acc) and acc[at][:2] == rank:
            return acc  # the same key is in already; its entry stays
        acc.insert(at, (*rank, payload))
        if len(acc) > self.n:
            acc.pop()
        return acc

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
    sample: list,
    cfg: RebalanceConfig,
    embedding_filter: str | None,
    masked: frozenset,
    store: str | None = None,
) -> Fitted:
    sample = _resolve(sample, embedding_filter, store)
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
    c_value = cfg.C
    if c_value == "auto":
        hashes = [h for h, _, _ in sample]
        c_value, info["C_selection"] = select.select_for_run(
            hashes, features, kept, cfg, feature_config
        )
    model = rb.fit_density_ratio_from_sample(
        features, kept, C=float(c_value), feature_config=feature_config
    )
    info["C"] = float(c_value)
    info["train_auc"] = model.train_auc
    return Fitted(model, info)


def raw_weights(
    batch: list[SampleRecord],
    fitted: Fitted,
    embedding_filter: str | None,
    store: str | None = None,
) -> list[RawWeight]:
    """(record, raw density ratio) for a batch of kept records of one source
    (featurised together, which is ~25x cheaper per sample than one at a time); the
    embeddings the decode step kept in the run's store read back for it."""
    batch = sorted(batch, key=lambda r: r.order)
    if fitted.model is None:
        return [RawWeight(r, 1.0) for r in batch]
    emb = None
    if embedding_filter is not None:
        stored = _stored_embeddings(batch, embedding_filter, store)
        emb = np.stack(
            [
                e
                if (e := _embedding(r, embedding_filter)) is not None
                else np.asarray(stored[r.index], dtype=np.float32)
                for r in batch
            ]
        )
    raw = fitted.model.weights_for([r.caption for r in batch], emb)
    return [RawWeight(r, float(v)) for r, v in zip(batch, raw, strict=True)]
