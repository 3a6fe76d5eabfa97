"""The deliberately weak density-ratio classifier (unfiltered vs filtered) and its fit."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from mitigate.rebalance.features import FeatureConfig
from mitigate.rebalance.weights import MAX_ABS_LOG_WEIGHT

logger = logging.getLogger(__name__)

#: Default inverse L2 regularisation strength of the density-ratio classifier.
DEFAULT_C = 0.1


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
    return fit_stacked(
        x,
        n_u,
        C=C,
        feature_config=config,
        solver=solver,
        intercept_scaling=intercept_scaling,
        max_iter=max_iter,
        tol=tol,
        random_state=random_state,
        warn=warn,
    )


def fit_stacked(
    x: sp.csr_matrix,
    n_u: int,
    *,
    C: float,
    feature_config: FeatureConfig,
    solver: str,
    intercept_scaling: float,
    max_iter: int,
    tol: float,
    random_state: int,
    warn: bool,
) -> DensityRatioModel:
    """:func:`fit_density_ratio` on rows already stacked: ``x`` (float64 CSR, the
    caller's to change: its indices get sorted) holds the ``n_u`` unfiltered rows, then
    the filtered ones. Model selection gathers each fold's rows this way in one copy
    (``x[index]``: the same matrix as the stacked pair), where the two classes' slices
    and their stack were three. Arguments are not checked again, and have no defaults:
    a caller takes :func:`fit_density_ratio`'s (``fit_density_ratio.__kwdefaults__``),
    so the two fits cannot drift apart."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    config = feature_config
    n_f = x.shape[0] - n_u
    x.sort_indices()
    y = np.concatenate([np.ones(n_u, dtype=np.int8), np.zeros(n_f, dtype=np.int8)])
    extra = {"intercept_scaling": intercept_scaling} if solver == "liblinear" else {}
    clf = LogisticRegression(
        C=C, solver=solver, max_iter=max_iter, tol=tol, random_state=random_state, **extra
    )
    # One BLAS thread: the solver's dot products are split across threads otherwise, and
    # the split (set per process by the runner, e.g. Dask workers use 1) changes the
    # last bits of the coefficients, hence of every weight.
    used, x_used = _used_columns(x)
    coef = np.zeros(x.shape[1], dtype=np.float64)
    if x_used.shape[1] and n_u and n_f:
        with threadpool_limits(limits=1):
            clf.fit(x_used, y)
        coef[used] = np.asarray(clf.coef_, dtype=np.float64).ravel()
        intercept = float(np.asarray(clf.intercept_).ravel()[0])
    else:  # no row has a feature (every caption emoji): nothing tells the classes apart
        logger.warning("rebalancing: no feature in any sampled row, so every weight is 1")
        intercept = math.log(max(n_u, 1) / max(n_f, 1))
    nz = np.flatnonzero(coef).astype(np.int32)
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
        np.asarray(getattr(clf, "n_iter_", 0)).ravel().tolist(),  # not fit: no feature
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


def _used_columns(x: sp.csr_matrix) -> tuple[NDArray[np.int64] | slice, sp.csr_matrix]:
    """The columns some row of ``x`` uses, and ``x`` with those columns alone (row order
    and each row's column order kept). A column that is zero in every row keeps a zero
    coefficient under the L2 penalty (its gradient is the penalty's alone, zero at the
    solvers' start), so the fit is the same, but liblinear's iterations run over every
    column: a fit sample of a few hundred rows uses a few thousand of the 2^18 hashed
    caption columns, and its fits took ~7x longer over all of them (BENCHMARKS.md,
    "Rebalancing's fit over the columns in use"). Where most columns are used, ``x``
    as it is."""
    seen = np.bincount(x.indices, minlength=x.shape[1]) > 0
    n_used = int(np.count_nonzero(seen))
    if n_used > x.shape[1] // 2:
        return slice(None), x
    new_index = (np.cumsum(seen) - 1).astype(x.indices.dtype)
    indices = new_index[x.indices]
    return np.flatnonzero(seen), sp.csr_matrix(
        (x.data, indices, x.indptr), shape=(x.shape[0], n_used)
    )


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
