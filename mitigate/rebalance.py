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
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from mitigate.text import normalize_text, words

logger = logging.getLogger(__name__)

P = TypeVar("P")

#: Default number of hashed caption-feature buckets (columns).
DEFAULT_N_FEATURES = 2**18

#: Default inverse L2 regularisation strength of the density-ratio classifier.
DEFAULT_C = 0.1

#: Log-weights are clipped to +-this before ``exp`` so raw weights stay finite
#: (e**50 ~ 5e21); :func:`finalize_weights` clips far tighter anyway.
MAX_ABS_LOG_WEIGHT = 50.0

# BLAKE2b "person" strings (domain separation): the same key and seed give independent
# streams for fit-sample selection and for resampling.
_PERSON_SAMPLE = b"mitigate.sample"
_PERSON_RESAMPLE = b"mitigate.resamp"

_UINT64_MAX = 2**64 - 1


# --------------------------------------------------------------------------------------
# Stable hashing
# --------------------------------------------------------------------------------------


def _key_bytes(key: str | bytes) -> bytes:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode("utf-8")
    raise TypeError(f"sample key must be str or bytes, got {type(key).__name__}")


def _seed_bytes(seed: int) -> bytes:
    if not 0 <= seed <= _UINT64_MAX:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return seed.to_bytes(8, "little")


def _blake64(key: str | bytes, seed: int, person: bytes) -> int:
    digest = hashlib.blake2b(
        _key_bytes(key), digest_size=8, key=_seed_bytes(seed), person=person
    ).digest()
    return int.from_bytes(digest, "little")


def key_hash64(key: str | bytes, seed: int) -> int:
    """Stable 64-bit hash of a sample key, used to rank samples for bottom-k sampling.

    Keyed BLAKE2b (8-byte digest, ``seed`` as the 8-byte key); identical on every
    process, platform and Python version. ``str`` keys are hashed as UTF-8.

    Returns:
        An integer in ``[0, 2**64)``.
    """
    return _blake64(key, seed, _PERSON_SAMPLE)


def key_uniform(key: str | bytes, seed: int) -> float:
    """Stable pseudo-uniform number in ``[0, 1)`` for a sample key (used for resampling).

    The top 53 bits of a keyed BLAKE2b hash, domain-separated from :func:`key_hash64`,
    so using one seed for sampling and for resampling does not correlate the two.
    """
    return (_blake64(key, seed, _PERSON_RESAMPLE) >> 11) * 2.0**-53


# --------------------------------------------------------------------------------------
# Bottom-k sampling (bounded, deterministic, mergeable)
# --------------------------------------------------------------------------------------

#: One bottom-k entry: ``(key_hash64(key, seed), key, payload)``.
SampleEntry = tuple[int, str, Any]


def _rank(entry: SampleEntry) -> tuple[int, str]:
    return entry[0], entry[1]


def bottom_k_merge(a: Sequence[SampleEntry], b: Sequence[SampleEntry], n: int) -> list[SampleEntry]:
    """Merge two bottom-k samples into the bottom-``n`` sample of their union.

    Both inputs must be sorted by ``(hash, key)`` with unique keys, as returned by
    :func:`bottom_k` or by this function; the output has the same form. The operation
    is commutative and associative on keys (if the same key occurs in both inputs,
    the entry from ``a`` is kept), which is what a Beam ``CombineFn`` needs for
    ``merge_accumulators``. Pure: the inputs are not modified.

    Args:
        a, b: bottom-k samples (lists of ``(hash, key, payload)``).
        n: maximum number of entries to keep (the sample size).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out: list[SampleEntry] = []
    last_key: str | None = None
    last_hash = -1
    for entry in heapq.merge(a, b, key=_rank):
        if len(out) >= n:
            break
        if entry[0] == last_hash and entry[1] == last_key:
            continue  # same key in both inputs
        out.append(entry)
        last_hash, last_key = entry[0], entry[1]
    return out


def bottom_k(
    items: Iterable[tuple[str, P]], n: int, seed: int, *, chunk_size: int = 65536
) -> list[tuple[int, str, P]]:
    """Deterministic uniform sample of ``n`` items from a stream of unknown length.

    Keeps the ``n`` items whose :func:`key_hash64` ``(key, seed)`` is smallest (ties,
    astronomically rare, are broken by key). Memory is ``O(n + chunk_size)``; the
    result depends only on the *set* of keys, not on their order or on how the stream
    is split, so partial results combine with :func:`bottom_k_merge`. Because the hash
    behaves like a uniform random variable per key, the result is a simple random
    sample without replacement (of size ``min(n, number of distinct keys)``).

    For fitting :func:`fit_density_ratio`, prefer one sample over all decodable
    samples with the kept flag in the payload (its kept members are the filtered
    sample) to two independent samples; see :func:`fit_density_ratio_from_sample`.

    Args:
        items: ``(key, payload)`` pairs with ``str`` keys, assumed distinct (a repeated
            key is kept once, with the payload of its first occurrence).
        n: sample size.
        seed: hash seed in ``[0, 2**64)``.
        chunk_size: number of items hashed before each merge (tuning only).

    Returns:
        ``(hash, key, payload)`` entries sorted by ``(hash, key)``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    acc: list[SampleEntry] = []
    buf: list[SampleEntry] = []
    for key, payload in items:
        h = key_hash64(key, seed)
        if len(acc) >= n and (n == 0 or (h, key) >= _rank(acc[-1])):
            continue  # cannot enter the sample
        buf.append((h, key, payload))
        if len(buf) >= chunk_size:
            acc = bottom_k_merge(acc, _sorted_unique(buf, n), n)
            buf = []
    if buf:
        acc = bottom_k_merge(acc, _sorted_unique(buf, n), n)
    return acc


def _sorted_unique(entries: list[SampleEntry], n: int) -> list[SampleEntry]:
    entries = sorted(entries, key=_rank)  # stable: first occurrence wins among equals
    return bottom_k_merge(entries, [], n)


def bottom_k_threshold(sample: Sequence[SampleEntry], n: int) -> int | None:
    """Hash at or above which a new key cannot enter a full bottom-``n`` sample.

    Returns ``None`` while ``sample`` holds fewer than ``n`` entries (any key may still
    enter). Useful to drop elements early (e.g. before a shuffle) without changing
    the final sample. A key whose hash equals the threshold can enter only if it
    sorts before the last entry's key.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if len(sample) < n:
        return None
    return sample[n - 1][0]


# --------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------


def caption_terms(
    caption: str | None, masked: frozenset[tuple[str, ...]] = frozenset()
) -> list[str]:
    """Word unigrams and bigrams of a caption after :func:`mitigate.text.normalize_text`.

    Bigrams are the two words joined by one space; words never contain spaces, so
    unigrams and bigrams cannot collide as strings. ``None`` gives no terms.

    ``masked`` holds word sequences (normalised, as caption filters match them) that
    are cut out, and no bigram spans the cut, so nothing about a masked term (not even
    a new bigram of its neighbours) reaches the features.
    """
    if not caption:
        return []
    toks = words(normalize_text(caption))
    segments = _cut(toks, masked) if masked else [toks]
    out = [t for seg in segments for t in seg]
    out += [f"{a} {b}" for seg in segments for a, b in pairwise(seg)]
    return out


def _cut(toks: list[str], masked: frozenset[tuple[str, ...]]) -> list[list[str]]:
    lengths = sorted({len(m) for m in masked}, reverse=True)
    segments, current, i = [], [], 0
    while i < len(toks):
        hit = next((n for n in lengths if tuple(toks[i : i + n]) in masked), 0)
        if hit:
            segments.append(current)
            current, i = [], i + hit
        else:
            current.append(toks[i])
            i += 1
    segments.append(current)
    return [s for s in segments if s]


@dataclass(frozen=True)
class FeatureConfig:
    """How a sample is turned into a sparse feature row.

    Columns ``[0, n_features)`` hold signed hashed caption terms (:func:`caption_terms`;
    scikit-learn ``HashingVectorizer``: MurmurHash3 with seed 0, sign from the hash,
    term counts then L2-normalised per row). Columns
    ``[n_features, n_features + embedding_dim)`` hold the image embedding, L2-normalised
    per row and multiplied by ``embedding_weight`` (relative importance of the image
    block against the unit-norm caption block).

    Attributes:
        n_features: number of caption hash buckets (default ``2**18``).
        embedding_dim: image embedding dimension; 0 means captions only.
        embedding_weight: scale of the (unit-norm) embedding block.
    """

    n_features: int = DEFAULT_N_FEATURES
    embedding_dim: int = 0
    embedding_weight: float = 1.0
    masked_terms: frozenset[tuple[str, ...]] = frozenset()

    def __post_init__(self) -> None:
        if self.n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {self.n_features}")
        if self.embedding_dim < 0:
            raise ValueError(f"embedding_dim must be >= 0, got {self.embedding_dim}")
        if not (math.isfinite(self.embedding_weight) and self.embedding_weight > 0):
            raise ValueError(f"embedding_weight must be > 0, got {self.embedding_weight}")

    @property
    def width(self) -> int:
        """Total number of feature columns."""
        return self.n_features + self.embedding_dim

    def featurize(
        self, captions: Sequence[str | None], embeddings: np.ndarray | None = None
    ) -> sp.csr_matrix:
        """Feature rows for a batch of samples.

        Args:
            captions: one caption per sample (``None`` or ``""`` gives an all-zero
                caption block).
            embeddings: ``(len(captions), embedding_dim)`` array; required iff
                ``embedding_dim > 0``. Rows are L2-normalised here (all-zero rows stay
                zero); non-finite values are rejected.

        Returns:
            float32 CSR matrix of shape ``(len(captions), width)``. The bytes are a
            pure function of the inputs and the config (no process-salted hashing).
        """
        from sklearn.feature_extraction.text import HashingVectorizer

        vec = HashingVectorizer(
            n_features=self.n_features,
            analyzer=functools.partial(caption_terms, masked=self.masked_terms),
            alternate_sign=True,
            norm="l2",
            dtype=np.float32,
        )
        text_block = vec.transform(list(captions)).tocsr()
        if self.embedding_dim == 0:
            if embeddings is not None:
                raise ValueError("embeddings given but embedding_dim == 0")
            text_block.sort_indices()
            return text_block
        if embeddings is None:
            raise ValueError(f"embedding_dim={self.embedding_dim} but no embeddings given")
        emb = normalize_embeddings(embeddings) * np.float32(self.embedding_weight)
        if emb.shape != (len(captions), self.embedding_dim):
            raise ValueError(
                f"embeddings shape {emb.shape} != ({len(captions)}, {self.embedding_dim})"
            )
        out = sp.hstack([text_block, sp.csr_matrix(emb)], format="csr", dtype=np.float32)
        out.sort_indices()
        return out


def normalize_embeddings(embeddings: np.ndarray) -> np.ndarray:
    """Return a float32 copy of a 2-D embedding array with unit-L2-norm rows.

    All-zero rows stay zero. Raises ``ValueError`` on non-finite values or wrong rank.
    """
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {emb.shape}")
    if not np.all(np.isfinite(emb)):
        raise ValueError("embeddings contain NaN or inf")
    # math.fsum is exactly rounded, so a row's norm does not depend on how SIMD code
    # happens to split the sum (which varies with memory alignment, i.e. from process to
    # process): weights must be bit-identical on every runner.
    wide = emb.astype(np.float64)
    norms = np.array([math.sqrt(math.fsum(r * r)) for r in wide], dtype=np.float32)
    norms[norms == 0] = 1.0
    return emb / norms[:, None]


# --------------------------------------------------------------------------------------
# Density-ratio model
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class DensityRatioModel:
    """A fitted linear unfiltered-vs-filtered classifier, stored compactly.

    Only the non-zero coefficients are stored (hashed buckets never seen in training
    have exactly zero weight under L2 regularisation), so the pickled size grows with
    the training vocabulary, not with ``n_features``. A dense coefficient vector is
    rebuilt lazily on first use and is not pickled.

    Attributes:
        feature_config: the featurisation the model was trained on.
        coef_indices: int32 column indices of the non-zero coefficients (sorted).
        coef_values: float64 coefficients (log-odds per unit feature value).
        intercept: log-odds intercept.
        log_prior_ratio: ``log(n_filtered / n_unfiltered)`` of the training sample.
        n_unfiltered: size of the unfiltered (label 1) training sample.
        n_filtered: size of the filtered (label 0) training sample.
        C: inverse L2 regularisation strength used (scikit-learn convention).
        train_auc: ROC AUC of the classifier on its own training sample; values near
            0.5 mean the filter barely changed the distribution (as seen by the
            features), values near 1 mean the populations barely overlap and weights
            will be extreme.
    """

    feature_config: FeatureConfig
    coef_indices: np.ndarray
    coef_values: np.ndarray
    intercept: float
    log_prior_ratio: float
    n_unfiltered: int
    n_filtered: int
    C: float
    train_auc: float = float("nan")
    _dense: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_dense"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def coef(self) -> np.ndarray:
        """Dense float64 coefficient vector of length ``feature_config.width``."""
        if self._dense is None:
            dense = np.zeros(self.feature_config.width, dtype=np.float64)
            dense[self.coef_indices] = self.coef_values
            self._dense = dense
        return self._dense

    def decision_function(self, features: sp.spmatrix | np.ndarray) -> np.ndarray:
        """Classifier log-odds ``log P(unfiltered|x) / P(filtered|x)`` per row (float64)."""
        if features.shape[1] != self.feature_config.width:
            raise ValueError(
                f"features have {features.shape[1]} columns, model expects "
                f"{self.feature_config.width}"
            )
        if sp.issparse(features):
            x = sp.csr_matrix(features, dtype=np.float64)
            logits = x @ self.coef
        else:
            logits = np.asarray(features, dtype=np.float64) @ self.coef
        return np.asarray(logits, dtype=np.float64).ravel() + self.intercept

    def log_weights(self, features: sp.spmatrix | np.ndarray) -> np.ndarray:
        """Natural log of :meth:`weights`, clipped to ``+-MAX_ABS_LOG_WEIGHT``."""
        lw = self.decision_function(features) + self.log_prior_ratio
        return np.clip(lw, -MAX_ABS_LOG_WEIGHT, MAX_ABS_LOG_WEIGHT)

    def weights(self, features: sp.spmatrix | np.ndarray) -> np.ndarray:
        """Raw, prior-corrected density ratios ``p_unfiltered(x) / p_filtered(x)``.

        ``P(unfiltered|x) / P(filtered|x) * n_filtered / n_unfiltered``, a positive
        float64 per row. For kept samples this estimates ``P(keep) / P(keep | x)``
        (overall keep rate over the keep rate near ``x``), whose mean over the kept
        set is 1 if the classifier is calibrated. Not clipped or normalised: see
        :func:`finalize_weights`.
        """
        return np.exp(self.log_weights(features))

    def weights_for(
        self,
        captions: Sequence[str | None],
        embeddings: np.ndarray | None = None,
        *,
        batch_size: int = 8192,
    ) -> np.ndarray:
        """Featurise with :attr:`feature_config` in batches and return :meth:`weights`.

        Memory is bounded by ``batch_size`` rows of features.
        """
        n = len(captions)
        out = np.empty(n, dtype=np.float64)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            emb = None if embeddings is None else embeddings[start:stop]
            feats = self.feature_config.featurize(captions[start:stop], emb)
            out[start:stop] = self.weights(feats)
        return out


def fit_density_ratio(
    unfiltered_features: sp.spmatrix | np.ndarray,
    filtered_features: sp.spmatrix | np.ndarray,
    *,
    C: float = DEFAULT_C,
    feature_config: FeatureConfig | None = None,
    solver: str = "liblinear",
    intercept_scaling: float = 10.0,
    max_iter: int = 1000,
    tol: float = 1e-6,
    random_state: int = 0,
    warn: bool = True,
) -> DensityRatioModel:
    """Fit the unfiltered-vs-filtered classifier and return a :class:`DensityRatioModel`.

    L2-regularised logistic regression (scikit-learn ``LogisticRegression``, label 1 =
    unfiltered, label 0 = filtered). Smaller ``C`` means a weaker, smoother classifier
    (weights closer to 1); scikit-learn's objective sums the loss over samples, so the
    effective regularisation also weakens as the fit sample grows. The default
    ``C=0.1`` is deliberately weak: it keeps the classifier from memorising rare hashed
    terms (which shows up as weights that move probe-group frequencies by noise).

    The class-prior correction ``n_filtered / n_unfiltered`` is taken from the row
    counts of the two inputs, so the fit samples may have unequal sizes.

    **Sampling advice.** Draw *one* uniform sample of all decodable samples (e.g.
    :func:`bottom_k` with the kept flag in the payload) and use its kept members as the
    filtered sample (:func:`fit_density_ratio_from_sample`). Two independent samples
    add sampling noise of the group frequencies (about ``sqrt(2 (1-p) / (n p))``
    relative for a group of frequency ``p``, ~2% at ``n = 50k, p = 0.1``) that the
    classifier then learns as if the filter had caused it; the coupled sample leaves
    only the filter's effect.

    Solvers: ``"liblinear"`` (default; trust-region Newton on the primal, fast on wide
    sparse data) penalises the intercept like a feature of value
    ``intercept_scaling``; the default 10 makes that penalty negligible (100x weaker),
    so the prior correction stays accurate. ``"lbfgs"`` does not penalise the intercept
    but is ~10x slower on ``2**18`` hashed columns. Either way only the overall scale
    of raw weights is affected, which :func:`finalize_weights` removes.

    Args:
        unfiltered_features: rows for a uniform sample of all decodable samples.
        filtered_features: rows for a uniform sample of the kept samples.
        C: inverse regularisation strength (> 0).
        feature_config: featurisation that produced the rows (default
            ``FeatureConfig()``); its width must equal the number of columns.
        solver: ``"liblinear"`` or ``"lbfgs"``.
        intercept_scaling: liblinear only, see above.
        max_iter, tol: optimiser limits.
        random_state: passed to scikit-learn (fixed for reproducibility).
        warn: log the fit at INFO and warn on a near-separable fit (off for the many
            trial fits of model selection).

    Returns:
        The fitted model. Same inputs give bit-identical coefficients on the same
        machine and library versions.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    config = feature_config if feature_config is not None else FeatureConfig()
    if solver not in ("liblinear", "lbfgs"):
        raise ValueError(f"solver must be 'lbfgs' or 'liblinear', got {solver!r}")
    if not (C > 0 and math.isfinite(C)):
        raise ValueError(f"C must be a positive finite number, got {C}")
    n_u, n_f = unfiltered_features.shape[0], filtered_features.shape[0]
    if n_u == 0 or n_f == 0:
        raise ValueError(f"both classes need samples (unfiltered={n_u}, filtered={n_f})")
    for name, m in (("unfiltered", unfiltered_features), ("filtered", filtered_features)):
        if m.shape[1] != config.width:
            raise ValueError(
                f"{name}_features have {m.shape[1]} columns, feature_config.width is {config.width}"
            )
    x = sp.vstack(
        [sp.csr_matrix(unfiltered_features), sp.csr_matrix(filtered_features)],
        format="csr",
        dtype=np.float64,
    )
    x.sort_indices()
    y = np.concatenate([np.ones(n_u, dtype=np.int8), np.zeros(n_f, dtype=np.int8)])
    extra = {"intercept_scaling": intercept_scaling} if solver == "liblinear" else {}
    clf = LogisticRegression(
        C=C, solver=solver, max_iter=max_iter, tol=tol, random_state=random_state, **extra
    )
    # One BLAS thread: the solver's dot products are split across threads otherwise, and
    # the split (set per process by the runner, e.g. Dask workers use 1) changes the
    # last bits of the coefficients, hence of every weight.
    with threadpool_limits(limits=1):
        clf.fit(x, y)
    coef = np.asarray(clf.coef_, dtype=np.float64).ravel()
    nz = np.flatnonzero(coef).astype(np.int32)
    intercept = float(np.asarray(clf.intercept_).ravel()[0])
    logits = np.asarray(x @ coef).ravel() + intercept
    auc = float(roc_auc_score(y, logits)) if n_u and n_f else float("nan")
    model = DensityRatioModel(
        feature_config=config,
        coef_indices=nz,
        coef_values=coef[nz].copy(),
        intercept=intercept,
        log_prior_ratio=math.log(n_f / n_u),
        n_unfiltered=int(n_u),
        n_filtered=int(n_f),
        C=float(C),
        train_auc=auc,
    )
    if not warn:
        return model
    logger.info(
        "density-ratio fit: n_unfiltered=%d n_filtered=%d C=%g solver=%s n_iter=%s "
        "nonzero_coef=%d train_auc=%.4f",
        n_u,
        n_f,
        C,
        solver,
        np.asarray(clf.n_iter_).ravel().tolist(),
        nz.size,
        auc,
    )
    if auc > 0.9:
        logger.warning(
            "unfiltered vs filtered are easy to tell apart (train AUC %.3f): weights "
            "will be extreme; consider a smaller C or tighter clipping",
            auc,
        )
    return model


def fit_density_ratio_from_sample(
    sample_features: sp.spmatrix | np.ndarray,
    kept: np.ndarray | Sequence[bool],
    **kwargs: Any,
) -> DensityRatioModel:
    """Fit from one uniform sample of all decodable samples and its kept flags.

    The unfiltered class is every row of ``sample_features``; the filtered class is
    the rows with ``kept`` true (the coupled sample recommended in
    :func:`fit_density_ratio`, to which ``kwargs`` are passed).
    """
    mask = np.asarray(kept, dtype=bool).ravel()
    if mask.size != sample_features.shape[0]:
        raise ValueError(f"{mask.size} kept flags for {sample_features.shape[0]} rows")
    rows = sp.csr_matrix(sample_features) if sp.issparse(sample_features) else sample_features
    return fit_density_ratio(sample_features, rows[mask], **kwargs)


# --------------------------------------------------------------------------------------
# Weight post-processing and diagnostics
# --------------------------------------------------------------------------------------


def finalize_weights(
    raw: np.ndarray, w_min: float = 0.1, w_max: float = 10.0, *, max_iter: int = 200
) -> np.ndarray:
    """Rescale and clip raw ratios so that they lie in ``[w_min, w_max]`` with mean 1.

    Method ("scale-then-clip"): find the scale ``s > 0`` with
    ``mean(clip(s * raw, w_min, w_max)) == 1`` and return ``clip(s * raw, w_min, w_max)``.
    The function ``s -> mean(clip(s * raw))`` is continuous, non-decreasing and piecewise
    linear, so ``s`` is bracketed by bisection on ``log s`` until no breakpoint remains,
    then solved in closed form. Hence, unlike
    clip-then-normalise, **both** constraints hold: every weight is within
    ``[w_min, w_max]`` exactly and the mean is 1 up to float rounding (~1e-15
    relative). The ranking of samples is preserved (ties may be created at the bounds)
    and unclipped weights keep their raw ratios to each other. (Alternately clipping
    and normalising is *not* equivalent: a weight clipped up to ``w_min`` in an early
    round loses its raw value for good.)

    Args:
        raw: non-negative, finite raw ratios (e.g. :meth:`DensityRatioModel.weights`),
            any scale: only relative values matter.
        w_min, w_max: bounds, with ``0 <= w_min <= 1 <= w_max``.
        max_iter: bisection steps (each ``O(len(raw))``).

    Returns:
        float64 weights, one per input.

    Raises:
        ValueError: on bad bounds, negative/non-finite input, or if mean 1 is
            unreachable (e.g. all raw weights zero).
    """
    r = np.asarray(raw, dtype=np.float64).ravel()
    if not (0.0 <= w_min <= 1.0 <= w_max and math.isfinite(w_max)):
        raise ValueError(f"need 0 <= w_min <= 1 <= w_max < inf, got {w_min}, {w_max}")
    if r.size == 0:
        return r.copy()
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError("raw weights must be finite and non-negative")
    pos = r[r > 0]
    if pos.size == 0 or (w_min * (r.size - pos.size) + w_max * pos.size) < r.size:
        raise ValueError("mean 1 is unreachable: too many zero raw weights for w_max")
    if w_min == w_max:  # == 1
        return np.ones_like(r)

    n = r.size

    def counts(s: float) -> tuple[int, int]:
        sr = s * r
        return int(np.count_nonzero(sr <= w_min)), int(np.count_nonzero(sr >= w_max))

    # Bracket: at lo every positive weight is <= w_min (mean <= 1), at hi every
    # positive weight is >= w_max (mean >= 1 by the feasibility check above).
    hi = w_max / float(pos.min())
    lo = min(w_min / float(pos.max()), hi) if w_min > 0 else 0.0
    c_lo, c_hi = counts(lo), counts(hi)
    for _ in range(max_iter):
        if c_lo == c_hi:  # same partition on [lo, hi]: no breakpoint left inside
            break
        mid = math.sqrt(lo * hi) if lo > 0 else hi / 2.0
        if mid <= lo or mid >= hi:  # adjacent floats
            break
        if float(np.clip(mid * r, w_min, w_max).mean()) < 1.0:
            lo, c_lo = mid, counts(mid)
        else:
            hi, c_hi = mid, counts(mid)
    n_low, n_high = c_hi
    middle = (s_r := hi * r) > w_min
    middle &= s_r < w_max
    sum_mid = float(r[middle].sum())
    if sum_mid > 0:
        s = (n - n_low * w_min - n_high * w_max) / sum_mid
    else:
        s = hi  # every weight at a bound: mean is already 1 on this plateau
    out = np.clip(s * r, w_min, w_max)
    if abs(float(out.mean()) - 1.0) > 1e-9:
        logger.warning("finalize_weights: mean is %.12f, not 1 (degenerate input)", out.mean())
    logger.debug(
        "finalize_weights: scale=%g clipped_low=%d clipped_high=%d mean=%.15f",
        s,
        int(np.count_nonzero(out <= w_min)),
        int(np.count_nonzero(out >= w_max)),
        float(out.mean()),
    )
    return out


def effective_sample_size(weights: np.ndarray) -> float:
    """Kish effective sample size ``(sum w)**2 / sum(w**2)``, in samples.

    Equals ``len(w)`` for equal weights and shrinks as weights spread; ``0.0`` for an
    empty or all-zero input.
    """
    w = np.asarray(weights, dtype=np.float64).ravel()
    sq = float(np.dot(w, w))
    if sq == 0.0:
        return 0.0
    return float(w.sum()) ** 2 / sq


@dataclass(frozen=True)
class WeightSummary:
    """Distribution of a weight vector.

    Attributes:
        n: number of weights.
        mean, min, max: of the weights.
        ess: :func:`effective_sample_size`, in samples.
        ess_fraction: ``ess / n`` (1 = no loss of effective data).
        quantiles: quantile level -> weight (linear interpolation).
        n_at_min, n_at_max: weights equal to the smallest / largest value (clipping).
    """

    n: int
    mean: float
    min: float
    max: float
    ess: float
    ess_fraction: float
    quantiles: dict[float, float]
    n_at_min: int
    n_at_max: int


def weight_summary(
    weights: np.ndarray,
    quantiles: Sequence[float] = (0.001, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999),
) -> WeightSummary:
    """Summarise a weight vector (mean, range, ESS, quantiles, counts at the extremes)."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.size == 0:
        nan = float("nan")
        return WeightSummary(0, nan, nan, nan, 0.0, nan, {q: nan for q in quantiles}, 0, 0)
    ess = effective_sample_size(w)
    qv = np.quantile(w, np.asarray(quantiles, dtype=np.float64)) if quantiles else []
    lo, hi = float(w.min()), float(w.max())
    return WeightSummary(
        n=int(w.size),
        mean=float(w.mean()),
        min=lo,
        max=hi,
        ess=ess,
        ess_fraction=ess / w.size,
        quantiles={float(q): float(v) for q, v in zip(quantiles, qv, strict=True)},
        n_at_min=int(np.count_nonzero(w == lo)),
        n_at_max=int(np.count_nonzero(w == hi)),
    )


def resample_counts(
    weights: np.ndarray | Sequence[float], keys: Sequence[str | bytes], seed: int
) -> np.ndarray:
    """Integer number of copies of each sample, with expected value equal to its weight.

    ``count = floor(w) + (u < w - floor(w))`` where ``u = key_uniform(key, seed)``, so
    the result for a sample depends only on its own key, weight and the seed (it can
    be computed independently on any worker, in any order).

    Args:
        weights: non-negative finite weights (typically from :func:`finalize_weights`).
        keys: one sample key per weight.
        seed: in ``[0, 2**64)``.

    Returns:
        int64 array of copy counts (0 drops the sample).
    """
    w = np.asarray(weights, dtype=np.float64).ravel()
    if len(keys) != w.size:
        raise ValueError(f"{w.size} weights but {len(keys)} keys")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights must be finite and non-negative")
    base = np.floor(w)
    frac = w - base
    u = np.fromiter((key_uniform(k, seed) for k in keys), dtype=np.float64, count=w.size)
    return base.astype(np.int64) + (u < frac).astype(np.int64)


# --------------------------------------------------------------------------------------
# Probe-term bias report
# --------------------------------------------------------------------------------------


def _probe_tokens(term: str) -> tuple[str, ...]:
    toks = tuple(words(normalize_text(term)))
    if not toks:
        raise ValueError(f"probe term {term!r} has no words after normalisation")
    return toks


def caption_word_set(caption: str | None, max_n: int = 1) -> frozenset[tuple[str, ...]]:
    """Word n-grams (as tuples, ``n <= max_n``) of a normalised caption, for probing.

    Words are :func:`mitigate.text.words` of :func:`mitigate.text.normalize_text`.
    A word joined by inner apostrophes or hyphens (``"woman's"``, ``"x-ray"``) also
    contributes its parts as words, so probe ``"woman"`` matches ``"woman's"`` and
    ``"woman-owned"``; n-grams are formed over the original word sequence only.
    """
    if not caption:
        return frozenset()
    toks = words(normalize_text(caption))
    grams: set[tuple[str, ...]] = set()
    for t in toks:
        grams.add((t,))
        if "'" in t or "-" in t:
            for part in t.replace("'", "-").split("-"):
                if part:
                    grams.add((part,))
    for n in range(2, max_n + 1):
        for i in range(len(toks) - n + 1):
            grams.add(tuple(toks[i : i + n]))
    return frozenset(grams)


@dataclass(frozen=True)
class ProbeRow:
    """Bias-report row for one probe group.

    Frequencies are the fraction of captions containing at least one of the group's
    terms as whole words (after normalisation). ``rel_change_*`` is
    ``freq / freq_unfiltered - 1`` (NaN when ``freq_unfiltered`` is 0); e.g. -0.14
    means the group is 14% rarer than in the unfiltered data.
    """

    group: str
    freq_unfiltered: float
    freq_filtered: float
    freq_reweighted: float
    rel_change_filtered: float
    rel_change_reweighted: float
    hits_unfiltered: int
    hits_filtered: int
    n_unfiltered: int
    n_filtered: int


class ProbeTableAccumulator:
    """Streaming, mergeable counts behind :func:`probe_term_table`.

    State: sample counts, per-group hit counts, total filtered weight and per-group
    hit weight. ``add_*`` mutate in place (cheap per element, as a Beam ``CombineFn``
    ``add_input`` wants); :meth:`merge` returns a new accumulator. Picklable.

    Args:
        probes: group name -> list of probe terms (single words or multi-word phrases).
    """

    def __init__(self, probes: Mapping[str, Sequence[str]]) -> None:
        if not probes:
            raise ValueError("probes must contain at least one group")
        self.groups: tuple[str, ...] = tuple(probes)
        self.terms: tuple[frozenset[tuple[str, ...]], ...] = tuple(
            frozenset(_probe_tokens(t) for t in probes[g]) for g in self.groups
        )
        self.max_n: int = max((len(t) for ts in self.terms for t in ts), default=1)
        self.n_unfiltered = 0
        self.n_filtered = 0
        self.weight_filtered = 0.0
        self.hits_unfiltered = [0] * len(self.groups)
        self.hits_filtered = [0] * len(self.groups)
        self.weight_hits_filtered = [0.0] * len(self.groups)

    def _hits(self, caption: str | None) -> Iterator[int]:
        grams = caption_word_set(caption, self.max_n)
        for i, terms in enumerate(self.terms):
            if not terms.isdisjoint(grams):
                yield i

    def add_unfiltered(self, caption: str | None) -> None:
        """Count one unfiltered (all decodable samples) caption."""
        self.n_unfiltered += 1
        for i in self._hits(caption):
            self.hits_unfiltered[i] += 1

    def add_filtered(self, caption: str | None, weight: float = 1.0) -> None:
        """Count one kept caption with its (final) weight."""
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight must be finite and >= 0, got {weight}")
        self.n_filtered += 1
        self.weight_filtered += weight
        for i in self._hits(caption):
            self.hits_filtered[i] += 1
            self.weight_hits_filtered[i] += weight

    def merge(self, other: ProbeTableAccumulator) -> ProbeTableAccumulator:
        """New accumulator holding the counts of both (same probes required)."""
        if self.groups != other.groups or self.terms != other.terms:
            raise ValueError("cannot merge accumulators built with different probes")
        out = ProbeTableAccumulator.__new__(ProbeTableAccumulator)
        out.groups, out.terms, out.max_n = self.groups, self.terms, self.max_n
        out.n_unfiltered = self.n_unfiltered + other.n_unfiltered
        out.n_filtered = self.n_filtered + other.n_filtered
        out.weight_filtered = self.weight_filtered + other.weight_filtered
        out.hits_unfiltered = [
            a + b for a, b in zip(self.hits_unfiltered, other.hits_unfiltered, strict=True)
        ]
        out.hits_filtered = [
            a + b for a, b in zip(self.hits_filtered, other.hits_filtered, strict=True)
        ]
        out.weight_hits_filtered = [
            a + b
            for a, b in zip(self.weight_hits_filtered, other.weight_hits_filtered, strict=True)
        ]
        return out

    def result(self) -> dict[str, ProbeRow]:
        """One :class:`ProbeRow` per group, in the order the probes were given."""
        rows: dict[str, ProbeRow] = {}
        for i, g in enumerate(self.groups):
            fu = _ratio(self.hits_unfiltered[i], self.n_unfiltered)
            ff = _ratio(self.hits_filtered[i], self.n_filtered)
            fw = _ratio(self.weight_hits_filtered[i], self.weight_filtered)
            rows[g] = ProbeRow(
                group=g,
                freq_unfiltered=fu,
                freq_filtered=ff,
                freq_reweighted=fw,
                rel_change_filtered=_rel(ff, fu),
                rel_change_reweighted=_rel(fw, fu),
                hits_unfiltered=self.hits_unfiltered[i],
                hits_filtered=self.hits_filtered[i],
                n_unfiltered=self.n_unfiltered,
                n_filtered=self.n_filtered,
            )
        return rows


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _rel(value: float, reference: float) -> float:
    if not (reference > 0) or math.isnan(value):
        return float("nan")
    return value / reference - 1.0


def probe_term_table(
    captions_unfiltered: Iterable[str | None],
    captions_filtered: Iterable[str | None],
    weights_filtered: Iterable[float],
    probes: Mapping[str, Sequence[str]],
) -> dict[str, ProbeRow]:
    """Probe-group frequencies before filtering, after filtering, and after reweighting.

    Args:
        captions_unfiltered: captions of all decodable samples (or a uniform sample).
        captions_filtered: captions of the kept samples.
        weights_filtered: one weight per kept caption (same order).
        probes: group name -> terms, e.g. ``{"woman": ["woman", "women", "girl"]}``.

    Returns:
        group -> :class:`ProbeRow`; see :class:`ProbeTableAccumulator` for the
        streaming form of the same computation.
    """
    acc = ProbeTableAccumulator(probes)
    for c in captions_unfiltered:
        acc.add_unfiltered(c)
    _sentinel = object()
    wit = iter(weights_filtered)
    for c in captions_filtered:
        w = next(wit, _sentinel)
        if w is _sentinel:
            raise ValueError("fewer weights than filtered captions")
        acc.add_filtered(c, float(w))  # type: ignore[arg-type]
    if next(wit, _sentinel) is not _sentinel:
        raise ValueError("more weights than filtered captions")
    return acc.result()


def format_probe_table(rows: Mapping[str, ProbeRow]) -> str:
    """Plain-text table of :func:`probe_term_table` rows (percentages)."""
    header = f"{'group':<16} {'unfilt':>8} {'filt':>8} {'reweight':>8} {'d_filt':>8} {'d_rew':>8}"
    lines = [header]
    for r in rows.values():
        lines.append(
            f"{r.group:<16} {100 * r.freq_unfiltered:>7.2f}% {100 * r.freq_filtered:>7.2f}% "
            f"{100 * r.freq_reweighted:>7.2f}% {100 * r.rel_change_filtered:>+7.1f}% "
            f"{100 * r.rel_change_reweighted:>+7.1f}%"
        )
    return "\n".join(lines)


__all__ = [
    "DEFAULT_C",
    "DEFAULT_N_FEATURES",
    "MAX_ABS_LOG_WEIGHT",
    "DensityRatioModel",
    "FeatureConfig",
    "ProbeRow",
    "ProbeTableAccumulator",
    "SampleEntry",
    "WeightSummary",
    "bottom_k",
    "bottom_k_merge",
    "bottom_k_threshold",
    "caption_terms",
    "caption_word_set",
    "effective_sample_size",
    "finalize_weights",
    "fit_density_ratio",
    "fit_density_ratio_from_sample",
    "format_probe_table",
    "key_hash64",
    "key_uniform",
    "normalize_embeddings",
    "probe_term_table",
    "resample_counts",
    "weight_summary",
]


# --------------------------------------------------------------------------------------
# Normalisation and weight statistics at scale (mergeable, bounded memory)
# --------------------------------------------------------------------------------------

HIST_BINS = 1 << 15  # over log-weights in [-MAX_ABS_LOG_WEIGHT, MAX_ABS_LOG_WEIGHT]
_EDGES = np.exp(np.linspace(-MAX_ABS_LOG_WEIGHT, MAX_ABS_LOG_WEIGHT, HIST_BINS + 1))


_FRAC_BITS = 44  # fixed-point resolution of a value's position inside its bin


class LogHistogram:
    """Mergeable summary of non-negative values: per log-spaced bin, a count and the
    sum of the values in it (plus a count of zeros).

    Bins are 0.3% wide (2**15 over e**-50..e**50), so anything computed from the
    histogram is exact for bins wholly on one side of a cut and off by at most that
    for the bin a cut falls into. Memory is fixed (512 KiB) whatever the data size,
    which is what lets the pipeline normalise weights over any number of samples.

    Sums are kept in integer fixed point (each value's offset inside its bin, to
    2**-44 of the bin's lower edge), so merging in any order gives the same bits: the
    normalising scale, and so every weight, is identical on every runner. (Float sums
    would differ in the last bit with the order of addition.) A bin overflows only
    past ~10**8 values.
    """

    def __init__(self) -> None:
        self.counts = np.zeros(HIST_BINS, dtype=np.int64)
        self.fixed = np.zeros(HIST_BINS, dtype=np.int64)  # sum of offsets, 2**-44 units
        self.zeros = 0

    @property
    def sums(self) -> np.ndarray:
        """Sum of the values in each bin (float64, derived deterministically)."""
        return _EDGES[:-1] * (self.counts + self.fixed / float(1 << _FRAC_BITS))

    @property
    def n(self) -> int:
        return int(self.counts.sum()) + self.zeros

    def add(self, values: np.ndarray | Sequence[float]) -> LogHistogram:
        v = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError("values must be finite and non-negative")
        pos = v[v > 0]
        self.zeros += int(v.size - pos.size)
        idx = np.clip(np.searchsorted(_EDGES, pos, side="right") - 1, 0, HIST_BINS - 1)
        offset = np.clip(pos / _EDGES[idx] - 1.0, 0.0, None)
        np.add.at(self.counts, idx, 1)
        np.add.at(self.fixed, idx, np.round(offset * (1 << _FRAC_BITS)).astype(np.int64))
        return self

    def merge(self, other: LogHistogram) -> LogHistogram:
        out = LogHistogram()
        out.counts = self.counts + other.counts
        out.fixed = self.fixed + other.fixed
        out.zeros = self.zeros + other.zeros
        return out

    def clipped_mean(self, scale: float, w_min: float, w_max: float) -> float:
        """mean(clip(scale * v, w_min, w_max)) over the summarised values."""
        n = self.n
        if n == 0:
            return float("nan")
        lo, hi = scale * _EDGES[:-1], scale * _EDGES[1:]
        c, s = self.counts, self.sums * scale
        below = hi <= w_min
        above = lo >= w_max
        inside = ~below & ~above & (lo >= w_min) & (hi <= w_max)
        straddle = ~below & ~above & ~inside
        total = w_min * (c[below].sum() + self.zeros) + w_max * c[above].sum() + s[inside].sum()
        # a bin cut by a bound: treat its values as all at their mean (error <= bin width)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_in_bin = np.where(c[straddle] > 0, s[straddle] / np.maximum(c[straddle], 1), 0)
        total += float((np.clip(mean_in_bin, w_min, w_max) * c[straddle]).sum())
        return float(total) / n

    def quantile(self, q: float) -> float:
        """Approximate quantile (geometric centre of the bin that holds it)."""
        n = self.n
        if n == 0:
            return float("nan")
        rank = q * (n - 1)
        if rank < self.zeros:
            return 0.0
        cum = np.cumsum(self.counts) + self.zeros
        b = int(np.searchsorted(cum, rank, side="right"))
        b = min(b, HIST_BINS - 1)
        return float(math.sqrt(_EDGES[b] * _EDGES[b + 1]))


def solve_scale(hist: LogHistogram, w_min: float, w_max: float) -> float:
    """The scale ``s`` with ``mean(clip(s * raw, w_min, w_max)) == 1``, from a histogram
    of the raw weights (see :func:`finalize_weights` for the exact in-memory version;
    this one agrees to within the histogram's 0.3% bin width, and only through the
    samples whose weight lands right at a bound)."""
    if not (0.0 <= w_min <= 1.0 <= w_max and math.isfinite(w_max)):
        raise ValueError(f"need 0 <= w_min <= 1 <= w_max < inf, got {w_min}, {w_max}")
    if hist.n == 0 or hist.counts.sum() == 0:
        return 1.0
    # raw weights lie within e**+-MAX_ABS_LOG_WEIGHT, so this bracket spans every partition
    lo, hi = -3 * MAX_ABS_LOG_WEIGHT, 3 * MAX_ABS_LOG_WEIGHT
    if hist.clipped_mean(math.exp(hi), w_min, w_max) < 1.0:
        raise ValueError("mean 1 is unreachable: too many zero raw weights for w_max")
    for _ in range(200):
        mid = (lo + hi) / 2
        if hist.clipped_mean(math.exp(mid), w_min, w_max) < 1.0:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return math.exp(hi)


@dataclass
class WeightStats:
    """Mergeable exact moments plus a histogram, for the summary of final weights."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    at_min: int = 0  # weights equal to w_min (clipped up)
    at_max: int = 0  # weights equal to w_max (clipped down)
    hist: LogHistogram = field(default_factory=LogHistogram)

    def add(self, weights: np.ndarray, w_min: float, w_max: float) -> WeightStats:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.size:
            self.n += int(w.size)
            self.total += float(w.sum())
            self.total_sq += float(np.dot(w, w))
            self.minimum = min(self.minimum, float(w.min()))
            self.maximum = max(self.maximum, float(w.max()))
            self.at_min += int(np.count_nonzero(w <= w_min))
            self.at_max += int(np.count_nonzero(w >= w_max))
            self.hist.add(w)
        return self

    def merge(self, other: WeightStats) -> WeightStats:
        return WeightStats(
            self.n + other.n,
            self.total + other.total,
            self.total_sq + other.total_sq,
            min(self.minimum, other.minimum),
            max(self.maximum, other.maximum),
            self.at_min + other.at_min,
            self.at_max + other.at_max,
            self.hist.merge(other.hist),
        )

    def summary(
        self, quantiles: Sequence[float] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
    ) -> dict[str, Any]:
        ess = self.total**2 / self.total_sq if self.total_sq > 0 else 0.0
        return {
            "n": self.n,
            "mean": self.total / self.n if self.n else None,
            "min": self.minimum if self.n else None,
            "max": self.maximum if self.n else None,
            "effective_sample_size": ess,
            "ess_fraction": ess / self.n if self.n else None,
            "clipped_at_min": self.at_min,
            "clipped_at_max": self.at_max,
            "quantiles": {str(q): self.hist.quantile(q) for q in quantiles},
        }
