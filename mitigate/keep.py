"""Which copy of a near-duplicate group to keep (``dedup.keep``).

``medoid`` (default): the copy nearest to all the others of its group; among the copies
as near as it (within :data:`MEDOID_TIE`) the least compressed (a JPEG's quality, where
every one of them is a JPEG), then the largest (:func:`size_key`); then the smallest key.
For independent edits of one original (a re-encode, a crop, a watermarked copy, ...)
every edit is near the original but the edits are farther from each other, so the
original is the medoid or as near as it; the means differ by hundredths where the edits
are small, so among those the original (less compressed than its re-encodes, larger
than its downscaled copies) stays, not a half-size or JPEG q40 copy that happened to be
a hair nearer. Quality comes before pixels there, so a blurry upscaled repost (more
pixels, re-encoded) does not win, and counts only among JPEGs (a PNG re-save of a q30
copy is no lossless original). ``resolution``: the largest (pixels, then JPEG quality,
a PNG's as 100), then the smallest key (the rule before verification existed).

Groups are the connected components of the verified pairs. "Nearest" is the mean
verification score (:mod:`mitigate.verify`) to the other members, or the mean pHash
pair distance when a member has no signature. A group of more than
:data:`MEDOID_ANCHORS` members is measured against its first ``MEDOID_ANCHORS`` members
by key only, so the cost stays ``O(group size x MEDOID_ANCHORS)``; the pairs are scored
in chunks of :data:`CENTRALITY_CHUNK`, so memory stays bounded too. A pair's score is
symmetric, so a pair that is met both ways in a chunk (two anchors) is scored once, and
a pair whose score the caller knows already (a verified candidate pair) is not scored
again: the same numbers, each computed once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from mitigate import neardup, verify

KEEP_RULES = ("medoid", "resolution")
MEDOID_ANCHORS = 64
#: Copies whose mean score to the others is within this of their group's most central
#: copy are equally central (:func:`keep_rank`): the means of independent edits of one
#: original differ by a few hundredths, and which of them was the smallest was chance
#: (helper-37: a half-size, a JPEG q40 or a logo copy kept over the original); 0.1 let
#: a blurry upscale in (helper-39; ``benchmarks/eval_keep.py --hard``).
MEDOID_TIE = 0.05
#: (member, anchor) pairs scored at a time by :func:`centrality` (bounded memory: the
#: index arrays and the signature table of one chunk).
CENTRALITY_CHUNK = 1 << 16
#: A copy's pixels count above its JPEG quality in :func:`size_key`.
_QUALITY_BITS = 8
_MAX_PIXELS = (1 << 54) - 1


def size_key(pixels: int, quality: int | None) -> int:
    """A copy's pixels and JPEG quality in one int64, as the keep rule reads them
    (:func:`keep_rank`): ``pixels << 8 | quality``, quality 1-100 from the file's
    tables (:func:`mitigate.decode.jpeg_quality`), 0 where unknown (another format:
    a PNG may be an original or a re-save of a JPEG at 30)."""
    q = 0 if quality is None else min(max(int(quality), 1), 100)
    return (min(max(int(pixels), 0), _MAX_PIXELS) << _QUALITY_BITS) | q


def _split(sizes: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(pixels, quality; 0 unknown) of :func:`size_key` values."""
    return sizes >> _QUALITY_BITS, sizes & ((1 << _QUALITY_BITS) - 1)


def pixels_of(size: int) -> int:
    """The pixels of a :func:`size_key`."""
    return int(size) >> _QUALITY_BITS


def centrality(
    component: NDArray[np.int64],
    keys: Sequence[str],
    phash: NDArray[np.uint64],
    mirror: NDArray[np.uint64],
    signatures: Sequence[bytes | None],
    score_pairs: Callable[..., NDArray[np.float64]] = verify.pair_scores,
    known: Mapping[tuple[int, int], float] | None = None,
) -> NDArray[np.float64]:
    """Mean distance of each item to the other members of its component (0 when alone).

    Distances are verification scores when every member of the component has a
    signature, else pHash pair distances in bits. The scores of all components are
    computed in one ``score_pairs`` call (:func:`mitigate.verify.pair_scores`, or a
    drop-in that spreads them over processes); scores are per pair and symmetric, so the
    result does not depend on how the pairs are batched or oriented.

    ``known``: verification scores already computed for some pairs ``(i, j)`` (either
    order), used instead of scoring them again. They must be whole scores, as
    ``score_pairs`` gives them without ``stop_above`` (a score at or below the
    ``stop_above`` it was computed with is one: :func:`mitigate.verify.pair_scores`)."""
    n = len(keys)
    out = np.zeros(n, dtype=np.float64)
    members: dict[int, list[int]] = {}
    for i, c in enumerate(component.tolist()):
        members.setdefault(c, []).append(i)
    scored: list[tuple[list[int], list[int]]] = []  # (members, anchors) of each group
    counted: list[tuple[list[int], list[int]]] = []
    in_groups: list[int] = []
    for group in members.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda x: keys[x])
        in_groups.extend(group)
        anchors = group[:MEDOID_ANCHORS]
        if all(verify.is_signature(signatures[x]) for x in group):
            scored.append((group, anchors))
        else:
            counted.append((group, anchors))
    total = np.zeros(n, dtype=np.float64)
    count = np.zeros(n, dtype=np.int64)
    lookup = _canonical(known)
    for gi, ga in _pair_chunks(scored):
        d = _chunk_scores(gi, ga, keys, signatures, score_pairs, lookup)
        # each member's pairs lie in one chunk, in anchor order: the same sums as ever
        total += np.bincount(gi, weights=d, minlength=n)
        count += np.bincount(gi, minlength=n)
    for gi, ga in _pair_chunks(counted):
        d = neardup.pair_distance(phash[gi], mirror[gi], phash[ga], mirror[ga]).astype(np.float64)
        total += np.bincount(gi, weights=d, minlength=n)
        count += np.bincount(gi, minlength=n)
    idx = np.asarray(in_groups, dtype=np.int64)
    out[idx] = total[idx] / np.maximum(count[idx], 1)
    return out


def _canonical(known: Mapping[tuple[int, int], float] | None) -> dict[tuple[int, int], float]:
    """``known`` keyed ``(smaller, larger)``."""
    return {(min(i, j), max(i, j)): s for (i, j), s in (known or {}).items()}


def _chunk_scores(
    gi: NDArray[np.int64],
    ga: NDArray[np.int64],
    keys: Sequence[str],
    signatures: Sequence[bytes | None],
    score_pairs: Callable[..., NDArray[np.float64]],
    known: dict[tuple[int, int], float],
) -> NDArray[np.float64]:
    """Score of each pair ``(gi[t], ga[t])``: every unordered pair once, the ``known``
    ones (keyed ``(smaller, larger)``) not at all."""
    n = len(keys)
    ids, inverse = np.unique(np.minimum(gi, ga) * n + np.maximum(gi, ga), return_inverse=True)
    lo, hi = ids // n, ids % n
    d = np.empty(ids.shape[0], dtype=np.float64)
    todo = np.ones(ids.shape[0], dtype=bool)
    if known:
        for t, pair in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
            s = known.get(pair)
            if s is not None:
                d[t], todo[t] = s, False
    if todo.any():
        a, b = lo[todo], hi[todo]
        # a chunk's table of the signatures it names (a pair's score does not depend on
        # the table holding it: verify.pair_scores), so the chunking changes no score
        used = sorted(set(a.tolist()) | set(b.tolist()), key=lambda x: keys[x])
        pos = np.zeros(len(keys), dtype=np.int64)
        pos[used] = np.arange(len(used))
        sigs = verify.as_signatures([signatures[x] for x in used])
        d[todo] = score_pairs(pos[a], pos[b], sigs)
    return d[inverse.reshape(-1)]


def _pair_chunks(
    groups: list[tuple[list[int], list[int]]],
) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64]]]:
    """``(member, anchor)`` pairs (member != anchor) of every group, in chunks of about
    :data:`CENTRALITY_CHUNK` pairs (a large group is cut by members), so memory beyond
    the inputs stays bounded whatever the component sizes."""
    gi_parts: list[NDArray[np.int64]] = []
    ga_parts: list[NDArray[np.int64]] = []
    held = 0
    for group, anchors in groups:
        a = np.asarray(anchors, np.int64)
        step = max(1, CENTRALITY_CHUNK // len(anchors))
        for s in range(0, len(group), step):
            g = np.asarray(group[s : s + step], np.int64)
            gi = np.repeat(g, a.size)
            ga = np.tile(a, g.size)
            off = gi != ga
            gi_parts.append(gi[off])
            ga_parts.append(ga[off])
            held += int(off.sum())
            if held >= CENTRALITY_CHUNK:
                yield np.concatenate(gi_parts), np.concatenate(ga_parts)
                gi_parts, ga_parts, held = [], [], 0
    if gi_parts:
        yield np.concatenate(gi_parts), np.concatenate(ga_parts)


def keep_rank(
    rule: str,
    keys: Sequence[str],
    resolution: Sequence[int],
    centrality_values: NDArray[np.float64] | None = None,
    component: NDArray[np.int64] | None = None,
) -> NDArray[np.int64]:
    """Rank positions (0 = kept first) under ``rule``; ties end at the smallest key.
    ``resolution``: each copy's :func:`size_key` (pixels and JPEG quality).

    ``medoid``: the copies of a group (``component``: a label a group) within
    :data:`MEDOID_TIE` of its most central copy first, among them the least compressed
    (JPEG quality, where each of them has one), then the largest, then the most
    central; then the others by centrality, size and key. Without ``component`` every
    item is its own group's (centrality, then pixels, then quality, then key)."""
    if rule not in KEEP_RULES:
        raise ValueError(f"unknown keep rule {rule!r}; valid: {', '.join(KEEP_RULES)}")
    n = len(keys)
    # keys rank by string order; np.unique gives the position of each key in that order
    _, key_pos = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
    pixels, quality = _split(np.asarray(resolution, dtype=np.int64))
    if rule == "resolution":  # an unknown quality (a PNG) counts as lossless here
        return neardup.rank_positions(-pixels, -np.where(quality > 0, quality, 100), key_pos)
    if centrality_values is None or centrality_values.shape != (n,):
        raise ValueError("the medoid rule needs one centrality value per item")
    if component is None:
        return neardup.rank_positions(centrality_values, -pixels, -quality, key_pos)
    _, label = np.unique(np.asarray(component), return_inverse=True)
    label = label.reshape(-1)
    groups = int(label.max(initial=-1)) + 1
    best = np.full(groups, np.inf)
    np.minimum.at(best, label, centrality_values)
    tied = centrality_values <= best[label] + MEDOID_TIE
    # the quality only where every tied copy of the group has one (JPEGs alike): a PNG
    # re-save of a q30 copy, taken as lossless, beat its q95 original (helper-39)
    unknown = np.zeros(groups, dtype=bool)
    np.logical_or.at(unknown, label[tied & (quality == 0)], True)
    q_tied = np.where(tied & ~unknown[label], quality, 0)
    p_tied = np.where(tied, pixels, 0)
    return neardup.rank_positions(
        ~tied, -q_tied, -p_tied, centrality_values, -pixels, -quality, key_pos
    )
