"""Normalising raw ratios into weights (clip, scale), their spread, and resampling counts.

The whole-array functions (:func:`finalize_weights`, :func:`weight_summary`) and their
mergeable, bounded-memory counterparts (:class:`LogHistogram`, :func:`solve_scale`,
:class:`WeightStats`) that the pipeline uses at scale give the same result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mitigate.rebalance.sampling import key_uniform

logger = logging.getLogger(__name__)

#: Log-weights are clipped to +-this before ``exp`` so raw weights stay finite
#: (e**50 ~ 5e21); :func:`finalize_weights` clips far tighter anyway.
MAX_ABS_LOG_WEIGHT = 50.0


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


#: Weights are summed as integers in units of ``2**-FIXED_BITS``: integer sums are the
#: same in any order, so a run's summary is the same whatever its workers' bundles
#: (float sums differed in their last digits between runs: helper-42).
FIXED_BITS = 40


def fixed_sum(values: np.ndarray) -> int:
    """The sum of ``values`` in units of ``2**-FIXED_BITS`` (each rounded once)."""
    scaled = np.rint(np.asarray(values, dtype=np.float64).ravel() * float(1 << FIXED_BITS))
    top = float(np.abs(scaled).max()) if scaled.size else 0.0
    if top >= 2.0**62:  # past int64: one Python int a value
        return sum(int(v) for v in scaled.tolist())
    exact = scaled.astype(np.int64)
    step = max(1, int(2.0**62 // max(top, 1.0)))  # no int64 sum of a block overflows
    return sum(int(exact[i : i + step].sum()) for i in range(0, exact.size, step))


@dataclass
class WeightStats:
    """Mergeable exact moments plus a histogram, for the summary of final weights."""

    n: int = 0
    total: int = 0  # units of 2**-FIXED_BITS, as total_sq: order-free sums
    total_sq: int = 0
    minimum: float = math.inf
    maximum: float = -math.inf
    at_min: int = 0  # weights equal to w_min (clipped up)
    at_max: int = 0  # weights equal to w_max (clipped down)
    hist: LogHistogram = field(default_factory=LogHistogram)

    def add(self, weights: np.ndarray, w_min: float, w_max: float) -> WeightStats:
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.size:
            self.n += int(w.size)
            self.total += fixed_sum(w)
            self.total_sq += fixed_sum(w * w)
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
        unit = 1 << FIXED_BITS
        ess = self.total**2 / (self.total_sq * unit) if self.total_sq > 0 else 0.0
        return {
            "n": self.n,
            "mean": self.total / (self.n * unit) if self.n else None,
            "min": self.minimum if self.n else None,
            "max": self.maximum if self.n else None,
            "effective_sample_size": ess,
            "ess_fraction": ess / self.n if self.n else None,
            "clipped_at_min": self.at_min,
            "clipped_at_max": self.at_max,
            "quantiles": {str(q): self.hist.quantile(q) for q in quantiles},
        }
