"""Rebalancing after filtering: density-ratio reweighting of the kept samples.

Filters do not remove all groups equally (DALL-E 2: a sexual-content filter removed
captions mentioning "woman" more often than "man"). The fix implemented here is
importance weighting of the *kept* (filtered) set so that, weighted, it matches the
distribution of the *unfiltered* set (all decodable samples):

1. Draw a bounded, deterministic uniform fit sample of all decodable samples with a
   bottom-k sampler over a stable hash of the sample key (:func:`bottom_k`,
   :func:`bottom_k_merge`); its kept members are the filtered fit sample.
2. Featurise each sample (:class:`FeatureConfig`): signed, hashed caption word unigrams
   and bigrams, optionally concatenated with L2-normalised image embeddings.
3. Fit a deliberately weak (strongly regularisable, linear) classifier that tells
   unfiltered (label 1) from filtered (label 0) samples (:func:`fit_density_ratio`).
   For a kept sample ``x`` the density ratio is::

       w(x) = p_unfiltered(x) / p_filtered(x)
            = P(unfiltered | x) / P(filtered | x) * n_filtered / n_unfiltered

   where ``n_*`` are the class sizes *of the classifier's training sample*; the second
   factor removes the class prior the classifier learnt from unequal class sizes.
   Because the kept set is a subset of the unfiltered set, ``w(x)`` is proportional
   to ``1 / P(keep | x)``.
4. Clip and normalise the raw ratios (:func:`finalize_weights`), report their spread
   (:func:`effective_sample_size`, :func:`weight_summary`) and, if the trainer cannot
   take weights, turn them into integer copy counts (:func:`resample_counts`).
5. Check the effect on probe terms (:class:`ProbeTableAccumulator`,
   :func:`probe_term_table`).

Everything here is Beam-free and deterministic: hashing uses keyed BLAKE2b (sampling,
resampling) and scikit-learn's MurmurHash3 with a fixed seed (features), never
Python's per-process salted ``hash()``. The model object is small and picklable so it
can be a Beam side input; accumulators are plain picklable objects with ``merge``.

Modules: :mod:`.sampling` (step 1), :mod:`.features` (2), :mod:`.model` (3),
:mod:`.weights` (4, plus the mergeable histogram the pipeline normalises with),
:mod:`.probes` (5). This package re-exports their public names.
"""

from __future__ import annotations

from mitigate.rebalance.features import (
    DEFAULT_N_FEATURES,
    FeatureConfig,
    caption_terms,
    normalize_embeddings,
)
from mitigate.rebalance.model import (
    DEFAULT_C,
    DensityRatioModel,
    fit_density_ratio,
    fit_density_ratio_from_sample,
)
from mitigate.rebalance.probes import (
    ProbeRow,
    ProbeTableAccumulator,
    caption_word_set,
    probe_term_table,
)
from mitigate.rebalance.sampling import (
    SampleEntry,
    bottom_k,
    bottom_k_merge,
    key_hash64,
    key_uniform,
)
from mitigate.rebalance.weights import (
    HIST_BINS,
    MAX_ABS_LOG_WEIGHT,
    LogHistogram,
    WeightStats,
    WeightSummary,
    effective_sample_size,
    finalize_weights,
    resample_counts,
    solve_scale,
    weight_summary,
)

__all__ = [
    "DEFAULT_C",
    "DEFAULT_N_FEATURES",
    "HIST_BINS",
    "MAX_ABS_LOG_WEIGHT",
    "DensityRatioModel",
    "FeatureConfig",
    "LogHistogram",
    "ProbeRow",
    "ProbeTableAccumulator",
    "SampleEntry",
    "WeightStats",
    "WeightSummary",
    "bottom_k",
    "bottom_k_merge",
    "caption_terms",
    "caption_word_set",
    "effective_sample_size",
    "finalize_weights",
    "fit_density_ratio",
    "fit_density_ratio_from_sample",
    "key_hash64",
    "key_uniform",
    "normalize_embeddings",
    "probe_term_table",
    "resample_counts",
    "solve_scale",
    "weight_summary",
]
