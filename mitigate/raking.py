"""Calibration of rebalancing weights to declared groups (raking with clipping).

The density-ratio weights of :mod:`mitigate.rebalance` restore what a weak classifier
can see. When the dropped captions are told apart by their *own* context words ("on a
boat", which rarely occurs in kept captions), the classifier explains the removal by
those words and the kept set gets little correction: the group balance a user cares
about ("the filter must not change the gender balance") is only partly restored.
Calibration imposes it: after the density-ratio weights, the weights are adjusted so
that, for every declared group ``g``, the weighted share of kept captions in ``g``
equals the share of ``g`` in the unfiltered population, and the mean weight stays 1.

Method: iterative proportional fitting (raking) over the declared groups, with the
weight clipping respected. A kept sample's *pattern* is the bit set of the declared
groups its caption matches; all samples of a pattern share one multiplier ``m_p`` and
their weight is ``clip(m_p * raw, w_min, w_max)``. So the state of the fit is one number
per pattern (at most ``2**len(groups)`` of them), and everything the fit needs about a
pattern is the function ``T_p(m) = sum clip(m * raw_i, w_min, w_max)`` over its samples:
exact from the raw weights in memory (:class:`ExactCell`) or, at scale, from a
mergeable log-histogram of them (:class:`HistCell`). Each raking step rescales the
multipliers inside a group and outside it, each by one factor found by a monotone 1-D
solve, so that the group's weighted total is ``share * n`` and the overall total stays
``n`` (:func:`rake`). Clipping makes each step a clipped one, so the fit is the bounded
form of raking (a cell whose samples all sit at ``w_max`` cannot grow any more; a
target that needs more than that is reported as unreachable, naming the group).

The histogram is exact except for samples in the bin a clipping bound falls into; a
last exact pass (:class:`ExactTotals`, integer fixed point, so merge order cannot
change a bit) rescales each pattern's unclipped weights so that the pattern's total is
exactly the raked target (:func:`corrections`). Shares then hold to float rounding.

Beam-free and deterministic; the pipeline (:mod:`mitigate.pipeline.rebalance`) runs
the group totals as a combiner and applies the multipliers as a side input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from mitigate.rebalance.probes import _probe_tokens, matching_groups, unspaced_needles
from mitigate.rebalance.weights import _EDGES, HIST_BINS, LogHistogram

#: At most this many declared groups (patterns are bit sets: 2**8 cells at most).
MAX_GROUPS = 8

#: Raking stops when every group's share is within this of its target (absolute).
DEFAULT_TOL = 1e-12

_FIXED_BITS = 40  # ExactTotals: weights summed as integers in units of 2**-40


class CalibrationError(ValueError):
    """The declared group shares cannot be reached within the weight bounds."""


class GroupMatcher:
    """Which declared groups a caption belongs to, as a bit set (its *pattern*).

    Terms are matched as whole words or phrases after normalisation (a term in a
    script written without spaces anywhere), exactly as the bias report's probes are
    (:func:`mitigate.rebalance.probes.matching_groups`), so a
    calibrated group and the probe of the same name count the same captions.

    Args:
        groups: group name -> terms; bit ``i`` of a pattern is the ``i``-th group.
    """

    def __init__(self, groups: Mapping[str, Sequence[str]]) -> None:
        if not groups:
            raise ValueError("at least one group is needed")
        if len(groups) > MAX_GROUPS:
            raise ValueError(f"at most {MAX_GROUPS} groups can be calibrated, got {len(groups)}")
        self.names: tuple[str, ...] = tuple(groups)
        self.terms: tuple[frozenset[tuple[str, ...]], ...] = tuple(
            frozenset(_probe_tokens(t) for t in groups[g]) for g in self.names
        )
        for name, terms in zip(self.names, self.terms, strict=True):
            if not terms:
                raise ValueError(f"group {name!r} has no terms")
        self.max_n = max(len(t) for ts in self.terms for t in ts)
        self.needles = tuple(unspaced_needles(ts) for ts in self.terms)

    def pattern(self, caption: str | None) -> int:
        """Bit set of the groups whose terms occur in ``caption`` (0: none)."""
        bits = 0
        for i in matching_groups(caption, self.terms, self.needles, self.max_n):
            bits |= 1 << i
        return bits


class Cell(Protocol):
    """What raking needs to know about the kept samples of one pattern."""

    n: int

    def total(self, m: float) -> float:
        """``sum(clip(m * raw_i, w_min, w_max))`` over the pattern's samples."""
        ...


class ExactCell:
    """:class:`Cell` from the raw weights themselves (sorted, with prefix sums)."""

    def __init__(self, raw: np.ndarray | Sequence[float], w_min: float, w_max: float) -> None:
        self.values = np.sort(np.asarray(raw, dtype=np.float64).ravel())
        self.prefix = np.concatenate([[0.0], np.cumsum(self.values)])
        self.n = int(self.values.size)
        self.w_min, self.w_max = w_min, w_max

    def total(self, m: float) -> float:
        v = self.values
        a = int(np.searchsorted(v, self.w_min / m, side="right"))  # m * v <= w_min
        b = max(int(np.searchsorted(v, self.w_max / m, side="left")), a)  # m * v >= w_max
        return (
            self.w_min * a + self.w_max * (self.n - b) + m * float(self.prefix[b] - self.prefix[a])
        )


class HistCell:
    """:class:`Cell` from a :class:`~mitigate.rebalance.LogHistogram` of raw weights.

    Exact for bins wholly on one side of a bound; the (at most two) bins a bound falls
    into are taken at their mean value. :func:`corrections` removes that error.
    """

    def __init__(self, hist: LogHistogram, w_min: float, w_max: float) -> None:
        self.counts = hist.counts
        self.sums = hist.sums
        self.cum_n = np.concatenate([[0], np.cumsum(hist.counts)])
        self.cum_s = np.concatenate([[0.0], np.cumsum(self.sums)])
        self.zeros = hist.zeros
        self.n = int(hist.n)
        self.w_min, self.w_max = w_min, w_max

    def total(self, m: float) -> float:
        lo, hi, big = self.w_min, self.w_max, HIST_BINS
        k_lo = min(max(int(np.searchsorted(_EDGES, lo / m, side="right")) - 1, -1), big)
        k_hi = min(max(int(np.searchsorted(_EDGES, hi / m, side="right")) - 1, -1), big)
        total = lo * self.zeros
        total += lo * float(self.cum_n[max(k_lo, 0)])  # bins wholly below w_min
        above_from = min(k_hi + 1, big) if k_hi >= 0 else 0
        total += hi * float(self.cum_n[big] - self.cum_n[above_from])  # wholly above w_max
        i0, i1 = min(max(k_lo + 1, 0), big), min(max(k_hi, 0), big)
        if i1 > i0:
            total += m * float(self.cum_s[i1] - self.cum_s[i0])
        for k in sorted({k_lo, k_hi}):
            if 0 <= k < big and self.counts[k] > 0:
                c = float(self.counts[k])
                total += c * min(max(m * float(self.sums[k]) / c, lo), hi)
        return total


def _solve(cells: Sequence[Cell], mults: Sequence[float], target: float) -> float:
    """The factor ``a`` with ``sum_p T_p(a * m_p) == target`` (monotone in ``a``)."""

    def f(log_a: float) -> float:
        a = math.exp(log_a)
        return sum(c.total(a * m) for c, m in zip(cells, mults, strict=True))

    lo, hi = -1.0, 1.0
    while f(lo) > target and lo > -400:
        lo *= 2
    while f(hi) < target and hi < 400:
        hi *= 2
    f_lo, f_hi = f(lo), f(hi)
    if not f_lo <= target <= f_hi:
        raise CalibrationError("target outside the reachable range")
    for _ in range(200):
        if hi - lo < 1e-13:
            break
        mid = (lo + hi) / 2
        f_mid = f(mid)
        if f_mid < target:
            lo, f_lo = mid, f_mid
        else:
            hi, f_hi = mid, f_mid
    if f_hi == f_lo:
        return math.exp(hi)
    # T is piecewise linear in a (not in log a); one secant step on the last bracket
    a_lo, a_hi = math.exp(lo), math.exp(hi)
    return a_lo + (target - f_lo) * (a_hi - a_lo) / (f_hi - f_lo)


@dataclass
class RakeResult:
    """Multipliers per pattern and what the fit reached.

    Attributes:
        multipliers: pattern -> ``m_p`` (weight = ``clip(m_p * raw, w_min, w_max)``).
        targets: pattern -> the pattern's weighted total at the fit (its cell total).
        shares: group name -> weighted share reached (from the cells).
        iterations: raking sweeps used.
    """

    multipliers: dict[int, float]
    targets: dict[int, float]
    shares: dict[str, float]
    iterations: int
    notes: list[str] = field(default_factory=list)


def rake(
    cells: Mapping[int, Cell],
    target_shares: Mapping[str, float],
    names: Sequence[str],
    w_min: float,
    w_max: float,
    *,
    tol: float = DEFAULT_TOL,
    max_iter: int = 2000,
) -> RakeResult:
    """Raking (iterative proportional fitting) of pattern multipliers with clipping.

    Args:
        cells: pattern -> :class:`Cell` of the kept samples with that pattern.
        target_shares: group name -> share of the group in the unfiltered population.
        names: group names; bit ``i`` of a pattern is ``names[i]``.
        w_min, w_max: weight bounds (``0 <= w_min <= 1 <= w_max``).
        tol: stop when every share is within ``tol`` of its target.
        max_iter: sweeps over the groups before giving up.

    Returns:
        :class:`RakeResult`: the weighted total of all cells is ``n`` (mean weight 1)
        and each group's share is its target to ``tol``.

    Raises:
        CalibrationError: when a target cannot be reached within ``[w_min, w_max]``
            (e.g. a group has no kept sample, or would need weights above ``w_max``).
    """
    if not (0.0 <= w_min <= 1.0 <= w_max and math.isfinite(w_max)):
        raise ValueError(f"need 0 <= w_min <= 1 <= w_max < inf, got {w_min}, {w_max}")
    patterns = sorted(p for p, c in cells.items() if c.n > 0)
    n = float(sum(cells[p].n for p in patterns))
    if n == 0:
        raise CalibrationError("no kept samples to calibrate")
    mults = {p: 1.0 for p in patterns}

    def scale(members: list[int], target: float, what: str) -> None:
        if not members:
            if target > 0:
                raise CalibrationError(
                    f"{what}: no kept sample to carry a share of {target / n:.4g}"
                )
            return
        count = sum(cells[p].n for p in members)
        if not (w_min * count <= target <= w_max * count):
            raise CalibrationError(
                f"{what}: a share of {target / n:.4g} needs a mean weight of "
                f"{target / count:.4g} over its {count} kept samples, outside "
                f"[w_min={w_min}, w_max={w_max}]"
            )
        a = _solve([cells[p] for p in members], [mults[p] for p in members], target)
        for p in members:
            mults[p] *= a

    scale(patterns, n, "all kept samples")
    order = list(enumerate(names))
    iterations = 0
    for sweep in range(1, max_iter + 1):
        iterations = sweep
        for i, name in order:
            share = float(target_shares[name])
            inside = [p for p in patterns if p >> i & 1]
            outside = [p for p in patterns if not p >> i & 1]
            scale(inside, share * n, f"group {name!r}")
            scale(outside, (1.0 - share) * n, f"captions outside group {name!r}")
        totals = {p: cells[p].total(mults[p]) for p in patterns}
        whole = sum(totals.values())
        worst = max(
            abs(sum(t for p, t in totals.items() if p >> i & 1) / whole - target_shares[name])
            for i, name in order
        )
        if worst <= tol and abs(whole / n - 1.0) <= tol:
            break
    else:
        raise CalibrationError(
            f"raking did not converge in {max_iter} sweeps (worst share error {worst:.3g}); "
            "the group targets may be inconsistent with each other within the weight bounds"
        )
    totals = {p: cells[p].total(mults[p]) for p in patterns}
    whole = sum(totals.values())
    shares = {name: sum(t for p, t in totals.items() if p >> i & 1) / whole for i, name in order}
    return RakeResult(mults, totals, shares, iterations)


class ExactTotals:
    """Exact per-pattern totals of weights, in integer fixed point (order-free merge).

    Per pattern: samples at ``w_min``, samples at ``w_max``, and the count and exact
    sum (units of ``2**-40``) of the weights strictly between the bounds.
    """

    def __init__(self) -> None:
        self.cells: dict[int, list[int]] = {}

    def add(self, pattern: int, weight: float, w_min: float, w_max: float) -> ExactTotals:
        cell = self.cells.setdefault(pattern, [0, 0, 0, 0])
        if weight <= w_min:
            cell[0] += 1
        elif weight >= w_max:
            cell[1] += 1
        else:
            cell[2] += 1
            cell[3] += round(weight * (1 << _FIXED_BITS))
        return self

    def merge(self, other: ExactTotals) -> ExactTotals:
        out = ExactTotals()
        for src in (self, other):
            for p, c in src.cells.items():
                acc = out.cells.setdefault(p, [0, 0, 0, 0])
                for j in range(4):
                    acc[j] += c[j]
        return out


def corrections(
    totals: ExactTotals, targets: Mapping[int, float], w_min: float, w_max: float
) -> dict[int, float]:
    """Per pattern, the factor for its unclipped weights that makes its exact total
    equal the raked target (1.0 where nothing is unclipped)."""
    out: dict[int, float] = {}
    for p, (n_lo, n_hi, n_mid, fixed) in sorted(totals.cells.items()):
        mid = fixed / float(1 << _FIXED_BITS)
        if n_mid == 0 or mid <= 0 or p not in targets:
            out[p] = 1.0
            continue
        out[p] = (targets[p] - n_lo * w_min - n_hi * w_max) / mid
    return out


def apply(raw: float, multiplier: float, correction: float, w_min: float, w_max: float) -> float:
    """Final weight of one sample: ``clip(m * raw)``, corrected if strictly inside."""
    w = min(max(multiplier * raw, w_min), w_max)
    if w_min < w < w_max:
        w = min(max(w * correction, w_min), w_max)
    return w


def pattern_counts_to_shares(
    counts: Mapping[int, int], names: Sequence[str]
) -> tuple[dict[str, float], int]:
    """Unfiltered share of each group from population counts per pattern."""
    total = sum(counts.values())
    if total == 0:
        return {name: float("nan") for name in names}, 0
    return {
        name: sum(c for p, c in counts.items() if p >> i & 1) / total
        for i, name in enumerate(names)
    }, total


def calibrate_weights(
    raw: np.ndarray | Sequence[float],
    patterns: np.ndarray | Sequence[int],
    target_shares: Mapping[str, float],
    names: Sequence[str],
    w_min: float = 0.1,
    w_max: float = 10.0,
    *,
    tol: float = DEFAULT_TOL,
) -> tuple[np.ndarray, RakeResult]:
    """In-memory calibration: raw density ratios -> final weights with exact group shares.

    The same computation the pipeline runs across workers: cells from the raw weights,
    :func:`rake`, then the exact correction pass.

    Args:
        raw: raw density ratios of the kept samples (any scale).
        patterns: one group bit set per kept sample (:meth:`GroupMatcher.pattern`).
        target_shares: group name -> share in the unfiltered population.
        names: group names in bit order.
        w_min, w_max: bounds every final weight respects.

    Returns:
        ``(weights, result)``: float64 weights in ``[w_min, w_max]``, mean 1, with the
        weighted share of each group equal to its target.
    """
    r = np.asarray(raw, dtype=np.float64).ravel()
    pat = np.asarray(patterns, dtype=np.int64).ravel()
    if r.size != pat.size:
        raise ValueError(f"{r.size} raw weights but {pat.size} patterns")
    if not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError("raw weights must be finite and non-negative")
    cells = {int(p): ExactCell(r[pat == p], w_min, w_max) for p in np.unique(pat)}
    result = rake(cells, target_shares, names, w_min, w_max, tol=tol)
    mult = np.array([result.multipliers[int(p)] for p in pat])
    w = np.clip(mult * r, w_min, w_max)
    exact = ExactTotals()
    for p, wi in zip(pat.tolist(), w.tolist(), strict=True):
        exact.add(p, wi, w_min, w_max)
    corr = corrections(exact, result.targets, w_min, w_max)
    k = np.array([corr[int(p)] for p in pat])
    inside = (w > w_min) & (w < w_max)
    w[inside] = np.clip(w[inside] * k[inside], w_min, w_max)
    return w, result


__all__ = [
    "MAX_GROUPS",
    "CalibrationError",
    "Cell",
    "ExactCell",
    "ExactTotals",
    "GroupMatcher",
    "HistCell",
    "RakeResult",
    "apply",
    "calibrate_weights",
    "corrections",
    "pattern_counts_to_shares",
    "rake",
]
