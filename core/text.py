"""Caption normalisation shared by the caption filters and the bias report.

Matching on raw text is easy to evade (``ＧＯＲＥ``, ``go\u200bre``, ``Gore``); every
component that compares captions with term lists goes through :func:`normalize_text`
so that all of them agree on what a "word" is.
"""

from __future__ import annotations

import re
import unicodedata

# Zero-width and invisible formatting characters that survive NFKC and are used to
# split words without changing how they render.
_INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e"),
    None,
)
_SPACE = re.compile(r"\s+")
# A word is a run of letters, digits, marks or underscores (any script), with inner
# apostrophes/hyphens kept so "don't" and "x-ray" stay single words.
_WORD = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*")


def normalize_text(text: str) -> str:
    """Return ``text`` in the canonical form used for all caption matching.

    Steps, in order: Unicode NFKC (folds full-width and compatibility forms),
    removal of zero-width/invisible characters, ``casefold`` (aggressive lower-casing,
    e.g. German sharp s), and collapsing of every whitespace run to one space.
    """
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
    return _SPACE.sub(" ", text).strip()


def words(text: str) -> list[str]:
    """Split already-normalised text into word tokens (see :func:`normalize_text`)."""
    return _WORD.findall(text)
