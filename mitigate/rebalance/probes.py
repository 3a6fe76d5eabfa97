"""Probe-term frequencies: unfiltered / filtered / reweighted (the bias table)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from mitigate.rebalance.weights import FIXED_BITS
from mitigate.text import UNSPACED, normalize_text, words

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


def unspaced_needles(terms: frozenset[tuple[str, ...]]) -> frozenset[str]:
    """The terms written in a script without spaces (Chinese, Japanese, Thai, ...), as
    text: a caption holds them anywhere, not as words of their own (helper-37: the
    probes 女人 and 男人 matched no Chinese caption, and calibrating them did nothing
    while the report said it had)."""
    return frozenset(" ".join(t) for t in terms if UNSPACED.search(" ".join(t)))


def matching_groups(
    caption: str | None,
    terms: Sequence[frozenset[tuple[str, ...]]],
    needles: Sequence[frozenset[str]],
    max_n: int,
) -> Iterator[int]:
    """The indices of the groups whose terms ``caption`` holds: as whole words or
    phrases (:func:`caption_word_set`), or, a term in a script without spaces,
    anywhere (:func:`unspaced_needles`)."""
    grams = caption_word_set(caption, max_n)
    text = normalize_text(caption) if caption and any(needles) else ""
    for i, group in enumerate(terms):
        if not group.isdisjoint(grams) or any(n in text for n in needles[i]):
            yield i


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
        self.needles = tuple(unspaced_needles(ts) for ts in self.terms)
        self.n_unfiltered = 0
        self.n_filtered = 0
        self.weight_filtered = 0  # units of 2**-FIXED_BITS
        self.hits_unfiltered = [0] * len(self.groups)
        self.hits_filtered = [0] * len(self.groups)
        self.weight_hits_filtered = [0] * len(self.groups)

    def _hits(self, caption: str | None) -> Iterator[int]:
        return matching_groups(caption, self.terms, self.needles, self.max_n)

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
        units = round(weight * (1 << FIXED_BITS))  # an integer sum: the same in any order
        self.weight_filtered += units
        for i in self._hits(caption):
            self.hits_filtered[i] += 1
            self.weight_hits_filtered[i] += units

    def merge(self, other: ProbeTableAccumulator) -> ProbeTableAccumulator:
        """New accumulator holding the counts of both (same probes required)."""
        if self.groups != other.groups or self.terms != other.terms:
            raise ValueError("cannot merge accumulators built with different probes")
        out = ProbeTableAccumulator.__new__(ProbeTableAccumulator)
        out.groups, out.terms, out.max_n = self.groups, self.terms, self.max_n
        out.needles = self.needles
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
