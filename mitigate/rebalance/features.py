"""Featurisation: signed hashed caption unigrams/bigrams, optionally with image embeddings."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import scipy.sparse as sp

from mitigate.text import UNSPACED, normalize_text, words

#: Default number of hashed caption-feature buckets (columns).
DEFAULT_N_FEATURES = 2**18


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

    A word in a script written without spaces (Chinese, Japanese, Thai, ...) is a whole
    run of text, unique to its caption: its characters in pairs are terms too (as
    ``"女人"`` in ``"一个女人在"``), masked terms cut out of the run first; without them a
    Chinese caption gave the classifier nothing to learn (helper-37: weights 0.9999 to
    1.0002 where a term filter had taken 30 % of one group).
    """
    if not caption:
        return []
    toks = words(normalize_text(caption))
    segments = _cut(toks, masked) if masked else [toks]
    out = [t for seg in segments for t in seg]
    out += [f"{a} {b}" for seg in segments for a, b in pairwise(seg)]
    needles = [" ".join(m) for m in masked if UNSPACED.search(" ".join(m))] if masked else []
    for seg in segments:
        for tok in seg:
            if UNSPACED.search(tok):
                out += _char_pairs(tok, needles)
    return out


def _char_pairs(run: str, needles: list[str]) -> list[str]:
    """Adjacent character pairs of a run of text, none across a masked term."""
    pieces = [run]
    for needle in needles:
        pieces = [p for piece in pieces for p in piece.split(needle)]
    return [p[i : i + 2] for p in pieces for i in range(len(p) - 1)]


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
