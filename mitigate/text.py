"""Caption normalisation shared by the caption filters and the bias report.

Matching on raw text is easy to evade (``ＧＯＲＥ``, ``go\u200bre``, ``Gore``); every
component that compares captions with term lists goes through :func:`normalize_text`
so that all of them agree on what a "word" is.
"""

from __future__ import annotations

import functools
import re
import unicodedata

# Zero-width and invisible formatting characters that survive NFKC and are used to
# split words without changing how they render.
_INVISIBLE = dict.fromkeys(
    map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff\u00ad\u180e"),
    None,
)
# Typographic apostrophes become ASCII so "woman’s" and "woman's" tokenise alike.
_APOSTROPHES = {ord(c): "'" for c in "\u2019\u02bc\u2018\uff07"}
_SPACE = re.compile(r"\s+")


def _mark_class() -> str:
    """A regex class of the combining marks in the Basic Multilingual Plane (Python's
    ``re`` has no ``\\p{M}``): vowel signs of Indic scripts and the like belong inside
    words, not between them."""
    out, start = [], None
    for code in range(0x10000):
        is_mark = unicodedata.category(chr(code)).startswith("M")
        if is_mark and start is None:
            start = code
        elif not is_mark and start is not None:
            out.append(f"\\u{start:04x}-\\u{code - 1:04x}")
            start = None
    return "".join(out)


@functools.cache
def _word_pattern() -> re.Pattern[str]:
    """A word is a run of letters, digits and combining marks (any script), with inner
    apostrophes/hyphens kept so "don't" and "x-ray" stay single words. Built on first
    use: scanning the BMP for marks costs ~0.1 s, which commands that never split
    captions (``mitigate validate``, ``--help``) should not pay."""
    char = rf"(?:[^\W_]|[{_mark_class()}])"
    return re.compile(rf"{char}+(?:['\-]{char}+)*")


def normalize_text(text: str) -> str:
    """Return ``text`` in the canonical form used for all caption matching.

    Steps, in order: Unicode NFKC (folds full-width and compatibility forms),
    removal of zero-width/invisible characters, typographic apostrophes to ``'``,
    ``casefold`` (aggressive lower-casing, e.g. German sharp s), and collapsing of every
    whitespace run to one space.
    """
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).translate(_APOSTROPHES)
    text = text.casefold()
    return _SPACE.sub(" ", text).strip()


def words(text: str) -> list[str]:
    """Split already-normalised text into word tokens (see :func:`normalize_text`)."""
    return _word_pattern().findall(text)
