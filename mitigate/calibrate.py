"""Threshold calibration for score-based harmful-content filters (high-recall operating point).

A classifier filter stores one score per sample in the manifest (column
``score_<filter_id>``, a float; higher means more likely harmful, e.g. P(nsfw)), and a
sample is **dropped when ``score >= threshold``**. The DALL-E 2 pre-training mitigations
chose thresholds for *high recall*: it is better to drop good data than to keep bad data.
This module turns a set of labelled scores (human-reviewed samples, e.g. from the
active-learning export in :mod:`mitigate.select`) into such a threshold and reports what
it costs:

* :func:`threshold_for_recall` -- the highest threshold whose recall on the labelled
  positives is at least the target (exact on ties);
* :func:`evaluate_threshold` -- recall, precision and drop fraction of a given threshold,
  each with a binomial confidence interval (use it on *held-out* labels);
* :func:`calibrate` -- both at once, returning a :class:`CalibrationResult`;
* :func:`threshold_snippet` -- a YAML config fragment with the metrics as comments;
* :func:`binomial_ci` -- Clopper-Pearson (default) or Wilson intervals.

Definitions (all fractions are in ``[0, 1]``; scores are in the classifier's own units)::

    recall        = tp / n_pos                     tp = labelled positives with score >= t
    precision     = tp / (tp + fp)                 fp = labelled negatives with score >= t
    drop_fraction = n_dropped / n_total            over ``all_scores`` (the whole dataset)

Interval method: the default is the Clopper-Pearson "exact" interval (inverting two
one-sided binomial tests via the beta distribution). Its coverage is at least the nominal
level for every true proportion, so it is conservative -- the right side to err on for a
safety filter, and well behaved at 0/n and n/n, where high-recall operating points live.
Wilson score intervals are available with ``method="wilson"`` (narrower, coverage close
to nominal on average but sometimes below it).

Caveats the numbers cannot show:

* **Recall at a threshold chosen on the same data is optimistic.** The threshold is the
  highest one that reaches the target on *these* positives, so their measured recall is
  at least the target by construction and the binomial interval ignores that selection.
  Expect lower recall on new data; estimate it with :func:`evaluate_threshold` on
  positives that were not used to choose the threshold.
* Precision is measured on the *labelled* data, whose positive/negative mix reflects how
  the labels were collected (active learning over-samples borderline and positive
  samples), not the dataset's prevalence. It is not the precision on the whole dataset.
* The drop-fraction interval treats ``all_scores`` as a random sample of the data the
  threshold will be applied to. If ``all_scores`` is the complete dataset the point value
  is exact for it, and the interval speaks only to future data from the same source.

Everything here is Beam-free, deterministic and works on NumPy arrays.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

logger = logging.getLogger(__name__)

#: Interval methods accepted by :func:`binomial_ci`.
CIMethod = Literal["clopper_pearson", "wilson"]

#: Default confidence level of every interval.
DEFAULT_CONFIDENCE = 0.95

# Same pattern as FilterConfig.id/name in mitigate.filters.base (a score column suffix).
_FILTER_ID = re.compile(r"^[a-z][a-z0-9_]*$")


# --------------------------------------------------------------------------------------
# Binomial confidence intervals
# --------------------------------------------------------------------------------------


def binomial_ci(
    k: int,
    n: int,
    confidence: float = DEFAULT_CONFIDENCE,
    method: CIMethod = "clopper_pearson",
) -> tuple[float, float]:
    """Two-sided confidence interval for a binomial proportion ``k / n``.

    Args:
        k: Successes, ``0 <= k <= n``.
        n: Trials. With ``n == 0`` nothing is known and ``(0.0, 1.0)`` is returned.
        confidence: Confidence level in ``(0, 1)``, e.g. ``0.95``.
        method: ``"clopper_pearson"`` (exact, conservative; equal to
            ``scipy.stats.binomtest(k, n).proportion_ci(method="exact")``) or
            ``"wilson"`` (score interval without continuity correction; equal to
            ``proportion_ci(method="wilson")``).

    Returns:
        ``(lower, upper)`` with ``0 <= lower <= k/n <= upper <= 1``. The bound at an
        extreme is exact: ``lower == 0.0`` when ``k == 0``, ``upper == 1.0`` when ``k == n``.
    """
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    if method == "clopper_pearson":
        lower = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
        upper = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    elif method == "wilson":
        z = float(stats.norm.ppf(1 - alpha / 2))
        p = k / n
        denom = 1.0 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        lower = 0.0 if k == 0 else max(0.0, centre - half)
        upper = 1.0 if k == n else min(1.0, centre + half)
    else:
        raise ValueError(f"method must be 'clopper_pearson' or 'wilson', got {method!r}")
    return lower, upper


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------


def _scores(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{what} has {int(bad.sum())} non-finite value(s) (NaN/inf), first at index "
            f"{int(np.argmax(bad))}; drop unscored samples (e.g. null score_<id> cells of "
            "samples that failed to decode) before calibrating"
        )
    return arr


def _labels(values: Sequence[bool] | Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"labels must be one-dimensional with {n} entries, got shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError("labels must be booleans or 0/1 (1 = harmful, the positive class)")
    return arr.astype(bool)


def _check_target(target_recall: float) -> float:
    target = float(target_recall)
    if not 0.0 < target <= 1.0:  # also rejects NaN
        raise ValueError(f"target_recall must satisfy 0 < target_recall <= 1, got {target_recall}")
    return target


# --------------------------------------------------------------------------------------
# Threshold choice
# --------------------------------------------------------------------------------------


def _min_count(target: float, n_pos: int) -> int:
    """Smallest ``k`` in ``1..n_pos`` with ``k / n_pos >= target`` (float division).

    Recall is compared as the float ``k / n_pos``, which is what anyone checking the result
    computes, and which makes ``0.9`` with 10 positives need 9 of them (exact rational
    arithmetic on the binary value of ``0.9``, slightly above 9/10, would need 10).
    Float division is monotone in ``k``, so the search below is exact.
    """
    k = min(n_pos, max(1, math.ceil(target * n_pos)))
    while k > 1 and (k - 1) / n_pos >= target:
        k -= 1
    while k < n_pos and k / n_pos < target:
        k += 1
    return k


def threshold_for_recall(scores_pos: Sequence[float] | np.ndarray, target_recall: float) -> float:
    """The highest threshold whose recall on the labelled positives reaches the target.

    Recall at threshold ``t`` is the fraction of ``scores_pos`` with ``score >= t`` (those
    samples would be dropped). It only changes at score values, so the answer is always one
    of the positives' scores: the ``k``-th highest, where ``k`` is the smallest count with
    ``k / n_pos >= target_recall``. Any higher threshold, even the next float up, has
    recall below the target.

    Ties are exact: samples sharing a score are always on the same side of the threshold,
    so the achieved recall can exceed the target when positives tie at the threshold.

    Args:
        scores_pos: Scores of the labelled positives (harmful samples), any finite floats.
        target_recall: Required recall, ``0 < target_recall <= 1`` (e.g. ``0.99``).

    Returns:
        The threshold, in score units (a ``float`` equal to one of ``scores_pos``).

    Raises:
        ValueError: If there are no positives (recall is undefined, so no threshold can
            be justified -- label some harmful samples first), if a score is NaN or
            infinite, or if ``target_recall`` is outside ``(0, 1]``.
    """
    target = _check_target(target_recall)
    pos = _scores(scores_pos, "scores_pos")
    n_pos = pos.shape[0]
    if n_pos == 0:
        raise ValueError(
            "no labelled positives: recall is undefined, so no threshold can be chosen; "
            "label some harmful samples (e.g. with mitigate.select) and try again"
        )
    k = _min_count(target, n_pos)
    # k-th highest score == (n_pos - k)-th smallest (0-based); O(n) selection.
    return float(np.partition(pos, n_pos - k)[n_pos - k])


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationResult:
    """What a threshold does, measured on labelled data and on all scores.

    A sample is dropped when ``score >= threshold``. Fractions are in ``[0, 1]``; every
    ``*_ci`` is a two-sided ``(lower, upper)`` interval at level ``confidence`` computed
    with ``ci_method`` (see :func:`binomial_ci`). Read the module docstring for why the
    recall interval is optimistic when the threshold was chosen on the same positives and
    why precision on labelled data is not the dataset's precision.
    """

    threshold: float  #: Score units; dropped when ``score >= threshold``.
    target_recall: float | None  #: The requested recall (``None`` if only evaluated).
    recall: float  #: ``tp / n_pos``: labelled positives that are dropped.
    recall_ci: tuple[float, float]
    precision: float  #: ``tp / (tp + fp)`` on labelled data; NaN if nothing is dropped.
    precision_ci: tuple[float, float]
    drop_fraction: float  #: ``n_dropped / n_total``: all scores that are dropped.
    drop_fraction_ci: tuple[float, float]
    n_pos: int  #: Labelled positives (harmful).
    n_neg: int  #: Labelled negatives.
    tp: int  #: Labelled positives with ``score >= threshold``.
    fp: int  #: Labelled negatives with ``score >= threshold``.
    n_total: int  #: Scores in ``all_scores``.
    n_dropped: int  #: Scores in ``all_scores`` that are ``>= threshold``.
    confidence: float = DEFAULT_CONFIDENCE
    ci_method: CIMethod = "clopper_pearson"

    @property
    def fn(self) -> int:
        """Labelled positives that would be kept (missed harmful samples)."""
        return self.n_pos - self.tp

    @property
    def tn(self) -> int:
        """Labelled negatives that would be kept."""
        return self.n_neg - self.fp


def evaluate_threshold(
    labelled_scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | Sequence[int] | np.ndarray,
    all_scores: Sequence[float] | np.ndarray,
    threshold: float,
    *,
    target_recall: float | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    method: CIMethod = "clopper_pearson",
) -> CalibrationResult:
    """Measure a given threshold: recall and precision on labels, drop fraction on all.

    Use this on held-out labels (not the ones a threshold was chosen on) for an honest
    recall estimate.

    Args:
        labelled_scores: Scores of the labelled samples (finite floats).
        labels: One per labelled score; ``True``/``1`` = harmful (positive).
        all_scores: Scores of every sample the threshold will be applied to (the whole
            dataset, labelled or not; finite floats; must not be empty).
        threshold: Candidate threshold, finite, in score units.
        target_recall: Recorded in the result only.
        confidence: Interval confidence level in ``(0, 1)``.
        method: Interval method, see :func:`binomial_ci`.

    Raises:
        ValueError: On mismatched lengths, non-finite scores, labels other than 0/1, no
            labelled positives, or an empty ``all_scores``.
    """
    t = float(threshold)
    if not math.isfinite(t):
        raise ValueError(f"threshold must be finite, got {threshold}")
    scores = _scores(labelled_scores, "labelled_scores")
    lab = _labels(labels, scores.shape[0])
    everything = _scores(all_scores, "all_scores")
    n_pos = int(lab.sum())
    n_neg = int(lab.shape[0] - n_pos)
    if n_pos == 0:
        raise ValueError("no labelled positives: recall is undefined")
    if everything.shape[0] == 0:
        raise ValueError("all_scores is empty: the drop fraction is undefined")

    dropped = scores >= t
    tp = int(np.count_nonzero(dropped & lab))
    fp = int(np.count_nonzero(dropped & ~lab))
    n_total = int(everything.shape[0])
    n_dropped = int(np.count_nonzero(everything >= t))
    return CalibrationResult(
        threshold=t,
        target_recall=None if target_recall is None else float(target_recall),
        recall=tp / n_pos,
        recall_ci=binomial_ci(tp, n_pos, confidence, method),
        precision=tp / (tp + fp) if tp + fp else math.nan,
        precision_ci=binomial_ci(tp, tp + fp, confidence, method),
        drop_fraction=n_dropped / n_total,
        drop_fraction_ci=binomial_ci(n_dropped, n_total, confidence, method),
        n_pos=n_pos,
        n_neg=n_neg,
        tp=tp,
        fp=fp,
        n_total=n_total,
        n_dropped=n_dropped,
        confidence=float(confidence),
        ci_method=method,
    )


def calibrate(
    labelled_scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | Sequence[int] | np.ndarray,
    all_scores: Sequence[float] | np.ndarray,
    target_recall: float,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    method: CIMethod = "clopper_pearson",
) -> CalibrationResult:
    """Choose the highest threshold reaching ``target_recall`` on the labelled positives
    (:func:`threshold_for_recall`) and measure it (:func:`evaluate_threshold`).

    Args:
        labelled_scores: Scores of the labelled samples (finite floats).
        labels: One per labelled score; ``True``/``1`` = harmful (positive).
        all_scores: Scores of every sample the threshold will be applied to (finite floats,
            not empty); gives the drop fraction, i.e. how much data the threshold costs.
        target_recall: Required recall on the labelled positives, ``0 < r <= 1``.
        confidence: Interval confidence level in ``(0, 1)``.
        method: Interval method, see :func:`binomial_ci`.

    Returns:
        A :class:`CalibrationResult`; its ``recall`` is ``>= target_recall`` by
        construction and its ``recall_ci`` is optimistic (see the module docstring).

    Raises:
        ValueError: As :func:`threshold_for_recall` and :func:`evaluate_threshold`.
    """
    target = _check_target(target_recall)
    scores = _scores(labelled_scores, "labelled_scores")
    lab = _labels(labels, scores.shape[0])
    if not lab.any():
        raise ValueError(
            f"no labelled positives among {lab.shape[0]} labelled samples: recall is "
            "undefined, so no threshold can be chosen; label some harmful samples first"
        )
    threshold = threshold_for_recall(scores[lab], target)
    result = evaluate_threshold(
        scores,
        lab,
        all_scores,
        threshold,
        target_recall=target,
        confidence=confidence,
        method=method,
    )
    logger.info(
        "calibrated threshold %r for recall >= %g: recall %.4f (%d/%d), precision %.4f "
        "(%d/%d), drops %.4f of %d scores",
        result.threshold,
        target,
        result.recall,
        result.tp,
        result.n_pos,
        result.precision,
        result.tp,
        result.tp + result.fp,
        result.drop_fraction,
        result.n_total,
    )
    return result


# --------------------------------------------------------------------------------------
# Config snippet
# --------------------------------------------------------------------------------------


def yaml_text(text: str) -> str:
    """``text`` as YAML that configs read back as that text: bare where it is plain
    (``nsfw``), else double-quoted (a filter named ``no`` read back as ``False``, a
    category ``1e3`` as a number)."""
    from mitigate.config import load_yaml
    from mitigate.text import yaml_quoted

    try:
        plain = load_yaml(text) == text and "#" not in text and text.strip() == text
    except Exception:  # any YAML error: quote it
        plain = False
    return text if plain else yaml_quoted(text)


def yaml_float(value: float) -> str:
    """A YAML float literal that ``yaml.safe_load`` reads back as exactly ``value``.

    Python's ``repr`` is the shortest round-trip form, but PyYAML (YAML 1.1) reads
    ``1e-05`` as a *string*: it needs a dot in the mantissa and a signed exponent. This
    writes ``1.0e-05`` instead. Non-finite values use ``.inf``/``-.inf``/``.nan``.
    """
    x = float(value)
    if math.isnan(x):
        return ".nan"
    if math.isinf(x):
        return ".inf" if x > 0 else "-.inf"
    text = repr(x)
    mantissa, e, exponent = text.partition("e")
    if "." not in mantissa:
        mantissa += ".0"
    if e and exponent[0] not in "+-":
        exponent = "+" + exponent
    return mantissa + e + exponent


def _ci_text(ci: tuple[float, float]) -> str:
    return f"{ci[0]:.4f} to {ci[1]:.4f}"


def threshold_snippet(
    filter_id: str,
    threshold: float,
    result: CalibrationResult | None = None,
    *,
    name: str | None = None,
) -> str:
    """A YAML config fragment setting a filter's threshold, with the metrics as comments.

    For example::

        # Calibrated threshold for filter 'nsfw' (dropped when score >= threshold).
        # Target recall 0.99; intervals are 95% Clopper-Pearson.
        # recall on labelled positives: 0.9900 (95% CI 0.9455 to 0.9997), tp 99 of 100
        #   optimistic: the threshold was chosen on these positives; check held-out labels
        # precision on labelled data: 0.5000 (95% CI ...), tp 99, fp 99 of 400 negatives
        # drop fraction of all scores: 0.0312 (95% CI ...), 3120 of 100000
        filters:
          - id: nsfw
            threshold: 0.123456

    The threshold is written in full (shortest round-trip form), so loading the YAML
    gives back exactly ``threshold``; a rounded threshold could keep harmful samples that
    score between the rounded and the calibrated value.

    The fragment is meant to be merged into the filter's entry of a run config: a full
    entry also needs ``name`` (the registered filter), and its config model must have a
    ``threshold`` field. Pass ``name`` to have it written too (``id`` is then written only
    if it differs from ``name``).

    Args:
        filter_id: Filter id (score column ``score_<filter_id>``), ``[a-z][a-z0-9_]*``.
        threshold: The threshold to write, finite, in score units.
        result: Metrics to put in the comments; normally ``calibrate(...)``'s result for
            this threshold. If its threshold differs (e.g. rounded by hand), a warning is
            logged and the comments say which threshold was measured.
        name: Registered filter name to write as ``name:``.

    Returns:
        A string of valid YAML, ending with a newline.
    """
    for label, value in (("filter_id", filter_id), ("name", name)):
        if value is not None and not _FILTER_ID.fullmatch(value):
            raise ValueError(f"{label} must match [a-z][a-z0-9_]*, got {value!r}")
    t = float(threshold)
    if not math.isfinite(t):
        raise ValueError(f"threshold must be finite, got {threshold}")

    lines = [f"# Calibrated threshold for filter '{filter_id}' (dropped when score >= threshold)."]
    if result is not None:
        pct = f"{result.confidence * 100:g}%"
        method = "Clopper-Pearson" if result.ci_method == "clopper_pearson" else "Wilson"
        target = "" if result.target_recall is None else f"Target recall {result.target_recall:g}; "
        lines.append(f"# {target}intervals are {pct} {method}.")
        if result.threshold != t:
            logger.warning(
                "threshold_snippet: writing threshold %r but the metrics were measured at %r",
                t,
                result.threshold,
            )
            lines.append(f"# NOTE: metrics below were measured at threshold {result.threshold!r}.")
        lines += [
            f"# recall on labelled positives: {result.recall:.4f} ({pct} CI "
            f"{_ci_text(result.recall_ci)}), tp {result.tp} of {result.n_pos}",
        ]
        if result.target_recall is not None:
            lines.append(
                "#   optimistic: the threshold was chosen on these positives; check held-out labels"
            )
        lines += [
            f"# precision on labelled data: {result.precision:.4f} ({pct} CI "
            f"{_ci_text(result.precision_ci)}), tp {result.tp}, fp {result.fp} "
            f"of {result.n_neg} negatives",
            f"# drop fraction of all scores: {result.drop_fraction:.4f} ({pct} CI "
            f"{_ci_text(result.drop_fraction_ci)}), {result.n_dropped} of {result.n_total}",
        ]
    lines.append("filters:")
    if name is None:
        lines.append(f"  - id: {yaml_text(filter_id)}")
    else:
        lines.append(f"  - name: {yaml_text(name)}")
        if filter_id != name:
            lines.append(f"    id: {yaml_text(filter_id)}")
    lines.append(f"    threshold: {yaml_float(t)}")
    return "\n".join(lines) + "\n"


__all__ = [
    "DEFAULT_CONFIDENCE",
    "CIMethod",
    "CalibrationResult",
    "binomial_ci",
    "calibrate",
    "evaluate_threshold",
    "threshold_for_recall",
    "threshold_snippet",
    "yaml_float",
    "yaml_text",
]
