"""Caption normalisation shared by the caption filters and the bias report.

Matching on raw text is easy to evade (``ＧＯＲＥ``, ``go\u200bre``, ``Gore``); every
component that compares captions with term lists goes through :func:`normalize_text`
so that all of them agree on what a "word" is.
"""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata

#: A surrogate code point alone: in text read with ``surrogateescape`` (a CSV table,
#: a tar name), a byte that is not UTF-8 (U+DC80-U+DCFF); in JSON, half of a pair
#: escaped on its own (``"\\ud83c"``, where a string was cut inside an emoji). Neither is
#: a character: a manifest column or output file cannot hold it.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")

#: Why a caption with a NUL character is refused (no text has one; UTF-16 without a
#: byte-order mark, read as UTF-8, has one after every ASCII letter and passed the
#: caption filters as such).
NUL_IN_TEXT = "holds NUL characters: not text (UTF-16 without a byte-order mark?)"


#: Byte-order marks and the codec each names; UTF-32's before UTF-16's (its
#: little-endian mark starts with UTF-16's). Windows tools write them: Notepad's
#: "Unicode" and Excel's "Unicode Text" are UTF-16 with a mark.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
BYTE_ORDER_MARKS = tuple(bom for bom, _ in _BOMS)
ENCODING_NAMES = {"utf-8-sig": "UTF-8", "utf-16": "UTF-16", "utf-32": "UTF-32"}


def text_encoding(head: bytes) -> str:
    """The codec of text whose first bytes are ``head``: the one its byte-order mark
    names (the codec drops the mark), else UTF-8 (``utf-8-sig``, which is UTF-8)."""
    return next((codec for bom, codec in _BOMS if head.startswith(bom)), "utf-8-sig")


#: C0 and C1 controls but tab and newline, each as its code (``\x1b``): a terminal's
#: escapes (ESC, BEL) in a caption or a file's name are shown, never acted on
CONTROL_ESCAPES = {
    c: f"\\x{c:02x}"
    for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, *range(0x80, 0xA0))
}
#: ... and carriage return, which rewrites a terminal's line
TERMINAL_ESCAPES = {**CONTROL_ESCAPES, 0x0D: "\\x0d"}


def terminal_text(text: str) -> str:
    """``text`` as a terminal may print it (:data:`TERMINAL_ESCAPES`)."""
    return text.translate(TERMINAL_ESCAPES)


#: Characters of a cell an error's detail quotes (a base64 image in a path column is
#: ~100 KB, and each row's detail repeated it).
SHOWN_CHARS = 200


def shown(value: str) -> str:
    """``value`` quoted for an error's detail, cut to :data:`SHOWN_CHARS` characters."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}... ({len(value):,} characters)"


def escape_surrogates(text: str) -> str:
    """``text`` with each lone surrogate written as an escape (``\\xe9`` for a byte
    that is not UTF-8, ``\\ud83c`` for half a pair): a name a manifest can hold."""

    def escaped(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"

    return LONE_SURROGATE.sub(escaped, text)


# Characters that render as nothing but split a word: every format character (Unicode
# category Cf: zero-width space and joiners, soft hyphen, bidi controls, tags, the BOM)
# and the invisible letters and marks of other categories: the combining grapheme
# joiner, Hangul fillers, Mongolian variation selectors, variation selectors.
_INVISIBLE_OTHERS = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
)


@functools.cache
def _invisible() -> dict[int, None]:
    """The translate table removing :data:`_INVISIBLE_OTHERS` and every Cf character
    (built on first use: ~0.2 s over every code point)."""
    table = dict.fromkeys(
        (c for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"), None
    )
    table.update(dict.fromkeys((c for a, b in _INVISIBLE_OTHERS for c in range(a, b + 1)), None))
    return table


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
    removal of zero-width/invisible characters (every format character, Cf, and
    invisible letters and marks: variation selectors, Hangul fillers, ...), typographic
    apostrophes to ``'``,
    ``casefold`` (aggressive lower-casing, e.g. German sharp s), and collapsing of every
    whitespace run to one space.
    """
    text = unicodedata.normalize("NFKC", text).translate(_invisible()).translate(_APOSTROPHES)
    text = text.casefold()
    return _SPACE.sub(" ", text).strip()


#: Scripts written without spaces between words (CJK, kana, Thai, Lao, Khmer, Myanmar)
#: or with particles joined to them (Hangul): a run of them is one "word" to
#: :func:`words`, so a term in them is matched anywhere (caption_terms, the bias
#: report's probes, calibrated groups) and the rebalancing features read their
#: characters in pairs.
UNSPACED = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u2e80-\u9fff\uac00-\ud7af"
    "\uf900-\ufaff\U00020000-\U0002ffff]"
)


def words(text: str) -> list[str]:
    """Split already-normalised text into word tokens (see :func:`normalize_text`)."""
    return _word_pattern().findall(text)


# Letters that look like Latin ones, folded for term matching (:func:`fold`): in a word
# that holds a Latin letter too (``gоrе`` with Cyrillic о and е), every one of them; in
# a word of no Latin letter, only where each of its letters is one of the closest
# look-alikes (``ѕех``), so a Russian or Greek word stays itself.
_LOOKALIKES_CLOSE = dict(zip(map(ord, "аеорсухіјѕԁһӏԛԝοɡɑı"), "aeopcyxijsdhlqwogai", strict=True))
_LOOKALIKES = {
    **_LOOKALIKES_CLOSE,
    **dict(zip(map(ord, "вкмнтүαρνυικτχεϲ"), "bkmhtyapvuiktxec", strict=True)),
}
# Enclosed letters NFKC leaves alone: squared, negative circled and negative squared
# capitals, and regional indicators (which render as letters outside a flag pair).
_ENCLOSED = {
    start + i: chr(ord("a") + i)
    for start in (0x1F130, 0x1F150, 0x1F170, 0x1F1E6)
    for i in range(26)
}
_ACCENTED = re.compile(
    "([\u0000-\u052f\u1e00-\u1fff])[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+"
)
_LETTERS = re.compile(r"[^\W\d_]+")


def fold(text: str) -> str:
    """``text`` (already :func:`normalize_text`) as term matching compares it: accents
    and other combining marks on Latin, Greek and Cyrillic letters dropped (``góre``,
    ``g̶o̶r̶e̶``), enclosed letters as letters (``🅖🅞🅡🅔``), and Cyrillic and Greek
    look-alikes of Latin letters folded in words that mix them (:data:`_LOOKALIKES`).
    Terms are folded alike, so a term written with accents matches them folded too;
    ``año`` and ``ano`` are one word here (recall first)."""
    text = text.translate(_ENCLOSED)
    if not text.isascii():
        text = unicodedata.normalize(
            "NFC", _ACCENTED.sub(r"\1", unicodedata.normalize("NFD", text))
        )
        text = _LETTERS.sub(_unmask, text)
    return text


def _unmask(match: re.Match[str]) -> str:
    word = match.group()
    if word.isascii():
        return word
    if any("a" <= c <= "z" for c in word):
        return word.translate(_LOOKALIKES)
    if all(ord(c) in _LOOKALIKES_CLOSE for c in word):
        return word.translate(_LOOKALIKES_CLOSE)
    return word


def yaml_quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar that reads back as exactly ``text``.

    ``repr`` wrote a path's characters Python does not print (a no-break space, an
    ideographic space U+3000, a control character, a byte that is not UTF-8) as
    ``\\xa0``, which YAML's single quotes keep as four characters: ``--output out``
    from a folder so named wrote into another folder, one named with a backslash. Here
    every character YAML may not hold raw (or reads as a line break) is escaped as YAML
    escapes it, the others are written as they are."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif (
            0x20 <= code <= 0x7E
            or (0xA0 <= code <= 0xD7FF and code not in (0x2028, 0x2029))
            or (0xE000 <= code <= 0xFFFD and code != 0xFEFF)
            or code >= 0x10000
        ):
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")
    return '"' + "".join(out) + '"'
