"""Active-learning export: which samples to send to human review next.

The DALL-E 2 pre-training mitigations improved their harmful-content classifiers by
active learning: label the samples the current classifier is least sure about, check its
predicted positives for false positives, and look for harmful samples it missed near
known ones. Each function here picks row indices of a score table (the Parquet manifest:
``key``, ``score_<filter_id>``) for one of those reviews. A sample is a predicted
positive (would be dropped) when ``score >= threshold``.

* :func:`select_uncertain` -- the samples whose score is nearest the threshold;
* :func:`select_positives` -- predicted positives, for false-positive review, spread
  over the score range when there are too many;
* :func:`select_neighbours` -- samples scoring *below* the threshold whose embedding is
  most cosine-similar to a known positive (candidate missed positives), in bounded memory.

All three are Beam-free and deterministic: ties are broken by sample key, then by row
index, and the only randomness is a keyed BLAKE2b hash of the key (never Python's salted
``hash()``), so the same table gives the same selection on any machine. Scores that are
NaN (unscored samples, e.g. null manifest cells of samples that failed to decode) are
never selected.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Default bound on the candidate-by-positive similarity block of
#: :func:`select_neighbours`, in matrix elements (float64: 2**22 elements = 32 MiB).
DEFAULT_BLOCK_ELEMENTS = 2**22

_PERSON = b"mitigate.selpos"  # BLAKE2b personalisation (domain separation)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def _check_table(keys: Sequence[str], scores: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {arr.shape}")
    if len(keys) != arr.shape[0]:
        raise ValueError(f"keys and scores differ in length: {len(keys)} != {arr.shape[0]}")
    return arr


def _check_n(n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    return int(n)


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if np.isnan(t):
        raise ValueError("threshold must not be NaN")
    return t


def _smallest(values: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    """Entries of ``idx`` whose ``values`` are among the ``n`` smallest, boundary ties
    included (so the exact, key-based tie-break can be applied to a small set)."""
    if idx.shape[0] <= n:
        return idx
    cutoff = np.partition(values, n - 1)[n - 1]
    return idx[values <= cutoff]


def _order(values: np.ndarray, idx: np.ndarray, keys: Sequence[str]) -> np.ndarray:
    """``idx`` sorted by ``(values, key, index)``; ``values`` is aligned with ``idx``.

    A NumPy sort does the bulk; only runs of equal values are re-sorted in Python by
    ``(key, index)``, which is cheap unless values are heavily tied.
    """
    perm = np.argsort(values, kind="stable")
    out = idx[perm]
    v = values[perm]
    if out.shape[0] > 1:
        tied = v[1:] == v[:-1]
        if tied.any():
            edges = np.flatnonzero(np.diff(np.r_[False, tied, False].astype(np.int8)))
            for start, stop in zip(edges[::2], edges[1::2] + 1, strict=True):
                out[start:stop] = sorted(out[start:stop].tolist(), key=lambda i: (keys[i], i))
    return out


def _key_hashes(keys: Sequence[str], rows: np.ndarray, seed: int) -> np.ndarray:
    """Keyed BLAKE2b 64-bit hashes (``seed`` as the key) of ``keys[rows]`` (UTF-8)."""
    base = hashlib.blake2b(digest_size=8, key=int(seed).to_bytes(8, "little"), person=_PERSON)

    def one(key: str) -> int:
        h = base.copy()
        h.update(key.encode("utf-8"))
        return int.from_bytes(h.digest(), "little")

    return np.fromiter((one(keys[i]) for i in rows.tolist()), dtype=np.uint64, count=rows.size)


# --------------------------------------------------------------------------------------
# Uncertainty sampling
# --------------------------------------------------------------------------------------


def select_uncertain(
    keys: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    threshold: float,
    n: int,
) -> list[int]:
    """Indices of the ``n`` samples whose scores are nearest the threshold.

    Distance is ``|score - threshold|`` in score units, on both sides of the threshold.
    Ties are broken by key, then by index, so the result does not depend on row order.
    NaN scores are skipped; if fewer than ``n`` samples have a score, all of them are
    returned.

    Args:
        keys: Sample keys, one per score (``str``; normally unique).
        scores: Classifier scores (float, higher = more likely harmful).
        threshold: The current decision threshold, in score units.
        n: How many to select, ``>= 0``.

    Returns:
        Row indices, nearest first.
    """
    arr = _check_table(keys, scores)
    n = _check_n(n)
    t = _check_threshold(threshold)
    if n == 0:
        return []
    idx = np.flatnonzero(~np.isnan(arr))
    chosen = _smallest(np.abs(arr[idx] - t), idx, n)
    return _order(np.abs(arr[chosen] - t), chosen, keys)[:n].tolist()


# --------------------------------------------------------------------------------------
# False-positive review
# --------------------------------------------------------------------------------------


def select_positives(
    keys: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    threshold: float,
    n: int,
    *,
    seed: int = 0,
) -> list[int]:
    """Predicted positives (``score >= threshold``) to review for false positives.

    If there are at most ``n``, all are returned. Otherwise the selection is a
    **rank-stratified sample**: the ``M`` predicted positives are sorted by
    ``(score, key, index)`` and cut into ``n`` contiguous strata of ``floor(M/n)`` or
    ``ceil(M/n)`` samples (stratum ``j`` holds ranks ``floor(j*M/n)`` to
    ``floor((j+1)*M/n) - 1``); from each stratum the sample with the smallest keyed
    BLAKE2b hash of its UTF-8 key (64-bit digest, ``seed`` as the hash key; a hash
    collision, about ``M**2 / 2**65`` likely, goes to the lower rank) is taken. So:

    * the selection covers the whole score range of the predicted positives, from just
      above the threshold (where false positives concentrate) to the top, in proportion
      to how many positives each score region holds;
    * every predicted positive has inclusion probability ``1 / stratum size`` (about
      ``n / M``), so the false-positive rate found by review is an (almost exactly)
      unbiased estimate of the false-positive rate of everything the filter drops;
    * the choice inside a stratum depends only on keys and ``seed``, not on row order.

    Args:
        keys: Sample keys, one per score.
        scores: Classifier scores; NaN is never a positive.
        threshold: Decision threshold; ``score >= threshold`` is a predicted positive.
        n: How many to select, ``>= 0``.
        seed: Hash key in ``[0, 2**64)``; another seed gives another sample.

    Returns:
        Row indices, highest score first (ties by key, then index).
    """
    arr = _check_table(keys, scores)
    n = _check_n(n)
    t = _check_threshold(threshold)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if n == 0:
        return []
    pos = np.flatnonzero(arr >= t)  # NaN compares False
    m = pos.shape[0]
    if m > n:
        ranked = _order(arr[pos], pos, keys)  # by (score, key, index)
        bounds = np.arange(n + 1, dtype=np.int64) * m // n
        stratum = np.repeat(np.arange(n), np.diff(bounds))
        # Sort by (stratum, hash, rank): each stratum's first entry has the smallest hash.
        by_hash = np.lexsort((np.arange(m), _key_hashes(keys, ranked, seed), stratum))
        pos = ranked[by_hash[bounds[:-1]]]
        logger.debug("select_positives: %d of %d predicted positives (rank strata)", n, m)
    return _order(-arr[pos], pos, keys).tolist()


# --------------------------------------------------------------------------------------
# Missed-positive search by embedding similarity
# --------------------------------------------------------------------------------------


def _unit_rows(block: Any) -> tuple[np.ndarray, np.ndarray]:
    """Rows as float64 unit vectors, and a mask of rows with a usable (finite, non-zero)
    norm; unusable rows are left as zeros."""
    x = np.asarray(block, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1)
    ok = np.isfinite(norms) & (norms > 0)
    out = np.zeros_like(x)
    out[ok] = x[ok] / norms[ok, None]
    return out, ok


def select_neighbours(
    keys: Sequence[str],
    embeddings: np.ndarray,
    positive_keys: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    threshold: float,
    n: int,
    *,
    chunk_size: int | None = None,
    positive_rows: Sequence[int] | None = None,
) -> list[tuple[int, int, float]]:
    """Samples scoring below the threshold that look most like known positives.

    These are candidate **missed positives** (harmful samples the classifier would keep).
    For every candidate -- a row with ``score < threshold`` whose key is not in
    ``positive_keys`` -- the cosine similarity to each known positive's embedding is
    computed; the candidate's similarity is its maximum over positives. The ``n``
    candidates with the highest similarity are returned, each at most once (with its
    most similar positive), so the result is deduplicated by index.

    Order and ties: highest similarity first; equal similarities by candidate key, then
    index. A candidate equally similar to several positives is paired with the one with
    the smallest key (then index).

    Memory: candidates are processed in chunks of ``chunk_size`` rows and only a running
    top ``n`` (plus boundary ties) is kept, so besides the output and the positives'
    ``P x D`` matrix the working memory is ``O(chunk_size * (D + P))``. ``embeddings`` may
    be a memory-mapped array (``np.load(..., mmap_mode="r")``): only the rows of one chunk
    are read at a time. Compute is ``O(N * P * D)``.

    Determinism: the result is a pure function of the inputs and ``chunk_size``. Matrix
    products may round differently in the last bit for different chunk sizes, which can
    only reorder candidates whose similarities agree to about 1e-16.

    Args:
        keys: Sample keys, one per row of ``embeddings`` and ``scores``.
        embeddings: ``(N, D)`` array of embeddings (any float dtype; not normalised).
            Rows with a zero or non-finite norm are skipped (as candidates and as
            positives).
        positive_keys: Keys of known positives (e.g. reviewed harmful samples). Keys not
            in ``keys`` are ignored, with a logged warning.
        scores: Classifier scores, one per row; NaN rows are not candidates.
        threshold: Decision threshold; candidates have ``score < threshold``.
        n: How many candidates to return, ``>= 0``.
        chunk_size: Candidate rows per chunk; default keeps the ``chunk x P`` similarity
            block at most :data:`DEFAULT_BLOCK_ELEMENTS` elements (and at most 8192 rows).
        positive_rows: The rows whose key is in ``positive_keys``, where the caller has
            found them (e.g. :meth:`mitigate.runtable.ArrowKeys.rows_of`); otherwise every
            key is read once here.

    Returns:
        ``(index, index_of_positive, similarity)`` tuples: row index of the candidate,
        row index of its most similar known positive, and their cosine similarity in
        ``[-1, 1]``. Fewer than ``n`` if there are fewer usable candidates; empty if no
        positive is usable.
    """
    arr = _check_table(keys, scores)
    n = _check_n(n)
    t = _check_threshold(threshold)
    shape = getattr(embeddings, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != arr.shape[0]:
        raise ValueError(
            f"embeddings must have shape (N, D) with N = {arr.shape[0]} rows, got {shape}"
        )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if n == 0:
        return []

    # Known positives, in (key, index) order so that argmax breaks ties by key.
    wanted = set(positive_keys)
    if positive_rows is None:
        positive_rows = [i for i, k in enumerate(keys) if k in wanted]
    pos_idx = sorted((int(i) for i in positive_rows), key=lambda i: (keys[i], i))
    missing = len(wanted) - len({keys[i] for i in pos_idx})
    if missing:
        logger.warning("select_neighbours: %d positive key(s) not in keys, ignored", missing)
    if not pos_idx:
        return []
    # Read the positives' rows in increasing index order (h5py-like arrays need it).
    by_row = np.argsort(pos_idx)
    pos_vecs, pos_ok = _unit_rows(np.asarray(embeddings[np.asarray(pos_idx)[by_row]]))
    pos_vecs[by_row], pos_ok[by_row] = pos_vecs.copy(), pos_ok.copy()
    if not pos_ok.all():
        logger.warning(
            "select_neighbours: %d positive(s) with zero/non-finite embedding, ignored",
            int((~pos_ok).sum()),
        )
    pos_idx_arr = np.asarray(pos_idx)[pos_ok]
    pos_vecs = pos_vecs[pos_ok]
    n_pos = pos_idx_arr.shape[0]
    if n_pos == 0:
        return []

    is_positive = np.zeros(arr.shape[0], dtype=bool)
    is_positive[pos_idx] = True
    if chunk_size is None:
        chunk_size = max(1, min(8192, DEFAULT_BLOCK_ELEMENTS // n_pos))

    # Running top n, sorted by (-similarity, key, index); the 4th item is the position of
    # the most similar positive in pos_idx_arr.
    top: list[tuple[float, str, int, int]] = []
    worst: float | None = None  # similarity of the n-th entry once top is full
    n_rows = arr.shape[0]
    for start in range(0, n_rows, chunk_size):
        stop = min(start + chunk_size, n_rows)
        chunk_scores = arr[start:stop]
        cand = (chunk_scores < t) & ~is_positive[start:stop]  # NaN compares False
        if not cand.any():
            continue
        rows = np.flatnonzero(cand)
        vecs, ok = _unit_rows(embeddings[start:stop][rows])
        rows, vecs = rows[ok], vecs[ok]
        if rows.shape[0] == 0:
            continue
        sims = vecs @ pos_vecs.T  # (chunk, P) cosine similarities
        best = np.argmax(sims, axis=1)  # first maximum -> smallest positive key
        best_sim = sims[np.arange(rows.shape[0]), best]
        # Keep only rows that can enter the top n: the chunk's own top n (with ties) and,
        # once the running top is full, at least as similar as its n-th entry.
        keep = np.arange(rows.shape[0])
        keep = _smallest(-best_sim, keep, n)
        if worst is not None:
            keep = keep[best_sim[keep] >= worst]
        if keep.shape[0] == 0:
            continue
        top += [
            (-float(best_sim[j]), keys[start + int(rows[j])], start + int(rows[j]), int(best[j]))
            for j in keep
        ]
        top.sort()
        del top[n:]
        if len(top) == n:
            worst = -top[-1][0]
    logger.debug(
        "select_neighbours: %d result(s) from %d rows, %d positives", len(top), n_rows, n_pos
    )
    return [(i, int(pos_idx_arr[p]), -neg_sim) for neg_sim, _key, i, p in top]


__all__ = [
    "DEFAULT_BLOCK_ELEMENTS",
    "select_neighbours",
    "select_positives",
    "select_uncertain",
]
