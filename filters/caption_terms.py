"""``caption_terms``: drop samples whose caption contains a listed word or phrase.

Terms and captions are both normalised with :func:`mitigate.text.normalize_text`
(NFKC, casefold, invisible characters removed) and folded (:func:`mitigate.text.fold`:
accents, look-alike letters), then matched as whole words, in every reading of the
caption (:func:`readings`: its words, their parts, CamelCase split, letters spelled out)
and with a plural ``s``/``es`` dropped: the term ``gore`` matches "Gore", "ＧＯＲＥ",
"go\u200bre", "gоrе" (Cyrillic о, е), "gore's" and "g o r e" but not "gored" or
"Algore". A phrase matches its words in sequence ("graphic violence"). A term in a
script written without spaces (CJK, Thai, ...) or with joined particles (Hangul)
matches anywhere in the caption. The sample's other captions (a sidecar's or a table
row's carried ``caption``/``text``/``prompt``/``txt`` that differs:
:func:`mitigate.sidecar.other_captions`, kept in its shard's ``KEY.json``) are read
too; a term found only there is named with its field.

Term lists come inline (``terms:``), from a file (``terms_file:``, one term a line,
``#`` starts a comment), or per category (``categories: {violence: {terms_file: ...}}``).
Files are read when the config is validated, so workers never need the file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mitigate.filters import register
from mitigate.filters.base import (
    Drop,
    Filter,
    FilterConfig,
    Score,
    ScoringItem,
    config_path,
)
from mitigate.reasons import Reason
from mitigate.records import SampleRecord
from mitigate.text import UNSPACED, fold, normalize_text, words

REASON = Reason.CAPTION_TERM_MATCH


def _check_file(value: str | None, info: ValidationInfo) -> str | None:
    """Resolve against the config's folder; the effective config then holds absolute
    paths and can be re-run from anywhere."""
    if value is None:
        return None
    path = config_path(value, info)
    if not path.is_file():
        raise ValueError(f"file not found: {path}")
    return str(path)


class TermList(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    terms: list[str] = Field(default_factory=list, description="Inline words or phrases.")
    terms_file: str | None = Field(
        default=None, description="Text file, one term a line; relative to the config file."
    )

    _file_exists = field_validator("terms_file")(_check_file)


class CaptionTermsConfig(FilterConfig):
    name: Literal["caption_terms"] = "caption_terms"
    category: str = Field(default="unsafe", pattern=r"^[a-z][a-z0-9_]*$")
    terms: list[str] = Field(default_factory=list, description="Terms of `category`.")
    terms_file: str | None = Field(default=None, description="File of terms of `category`.")
    categories: dict[str, TermList] = Field(
        default_factory=dict, description="More term lists, one per category name."
    )
    min_matches: int = Field(
        default=1, ge=1, description="Drop when at least this many distinct terms match."
    )

    _term_table: dict[tuple[str, ...], str] = PrivateAttr(default_factory=dict)
    _file_exists = field_validator("terms_file")(_check_file)

    @model_validator(mode="after")
    def _load_terms(self, info: ValidationInfo) -> CaptionTermsConfig:
        base = Path((info.context or {}).get("base_dir", "."))
        lists = {
            self.category: TermList.model_construct(terms=self.terms, terms_file=self.terms_file)
        }
        for cat, term_list in self.categories.items():
            if cat in lists:
                raise ValueError(f"category {cat!r} given twice")
            lists[cat] = term_list
        table: dict[tuple[str, ...], str] = {}
        for cat, term_list in lists.items():
            terms = list(term_list.terms)
            if term_list.terms_file is not None:
                terms += read_terms_file(base / term_list.terms_file)
            for term in terms:
                key = tuple(words(normalize_text(term)))
                if not key:
                    raise ValueError(f"term {term!r} ({cat}) has no words after normalisation")
                table.setdefault(key, cat)
        if not table:
            raise ValueError("no terms given: set terms, terms_file or categories")
        self._term_table = table
        return self

    @property
    def matched_terms(self) -> frozenset[tuple[str, ...]]:
        return frozenset(self._term_table)


_UNSPACED = UNSPACED  # a term in such a script matches anywhere
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_POSSESSIVE = re.compile(r"'s$")
_PARTS = re.compile(r"['\-]")


def readings(caption: str, text: str) -> list[list[str]]:
    """The ways a caption's words are read for terms: its words; each word's parts
    (``gore's``, ``blood-and-gore``); CamelCase split (``#GraphicViolence``); and runs of
    three or more single letters joined (``g o r e``, ``g-o-r-e``, ``g.o.r.e``).
    ``text``: the caption normalised and folded. Only readings that differ are given."""
    base = words(text)
    parts = [p for w in base for p in _PARTS.split(_POSSESSIVE.sub("", w)) if p]
    out = [base]
    if parts != base:
        out.append(parts)
    if _CAMEL.search(caption):
        out.append(words(fold(normalize_text(_CAMEL.sub(" ", caption)))))
    joined: list[str] = []
    run: list[str] = []
    for p in [*parts, ""]:
        if len(p) == 1:
            run.append(p)
            continue
        joined += ["".join(run)] if len(run) >= 3 else run
        run = []
        joined.append(p)
    if joined[:-1] != parts:
        out.append(joined[:-1])
    return out


def _singulars(gram: tuple[str, ...]) -> list[tuple[str, ...]]:
    """``gram`` with its last word's plural ``s`` or ``es`` dropped (``massacres``,
    ``torches``); none for a word of three letters or fewer, or ending in ``ss``."""
    last = gram[-1]
    if len(last) <= 3 or not last.endswith("s") or last.endswith("ss"):
        return []
    out = [(*gram[:-1], last[:-1])]
    if last.endswith("es"):
        out.append((*gram[:-1], last[:-2]))
    return out


def read_terms_file(path: Path) -> list[str]:
    """Read one term per line; blank lines and ``#`` comments (a ``#`` that starts the
    line or follows a space) are skipped."""
    if not path.is_file():
        raise ValueError(f"terms_file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"terms_file {path} is not UTF-8: {exc}") from None
    out = []
    for line in text.splitlines():
        term = _COMMENT.sub("", line).strip()  # "c# programming" keeps its '#'
        if term:
            out.append(term)
    return out


#: A comment: ``#`` at the start of a line or after a space, to the line's end.
_COMMENT = re.compile(r"(?:^|\s)#.*$")


@register
class CaptionTerms(Filter[CaptionTermsConfig]):
    """Score: the number of distinct terms found in the caption. Info: each match as
    ``category:"term"``. Drops when the score reaches ``min_matches``."""

    name = "caption_terms"
    config_model = CaptionTermsConfig
    # the caption is in the manifest: a redecide matches the terms as configured now
    scores_from_signals = True

    def setup(self) -> None:
        # terms folded as captions are (accents, look-alikes), each naming its term
        self._folded: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._unspaced: list[tuple[str, tuple[str, ...]]] = []  # CJK, Thai, Hangul terms
        for gram in self.config._term_table:
            folded = tuple(fold(w) for w in gram)
            self._folded.setdefault(folded, gram)
            if _UNSPACED.search("".join(gram)):
                self._unspaced.append(("".join(folded), gram))
        self._lengths = sorted({len(k) for k in self._folded}, reverse=True)

    def match(self, caption: str) -> list[tuple[str, str]]:
        """Distinct ``(category, term)`` matches in ``caption``, in caption order (of
        the first way of reading it that finds each: :func:`readings`)."""
        if not hasattr(self, "_lengths"):
            self.setup()
        table, folded = self.config._term_table, self._folded
        found: dict[tuple[str, ...], str] = {}
        text = fold(normalize_text(caption))
        for tokens in readings(caption, text):
            for start in range(len(tokens)):
                for n in self._lengths:
                    gram = tuple(tokens[start : start + n])
                    if len(gram) < n:
                        continue
                    term = folded.get(gram) or next(
                        (folded[g] for g in _singulars(gram) if g in folded), None
                    )
                    if term is not None and term not in found:
                        found[term] = table[term]
        if self._unspaced:  # scripts written without spaces: the term anywhere
            joined = text.replace(" ", "")
            for needle, term in self._unspaced:
                if term not in found and needle in joined:
                    found[term] = table[term]
        return [(cat, " ".join(gram)) for gram, cat in found.items()]

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        out = []
        for item in items:
            # the sidecar's other captions too (a kept KEY.json carries them): a term
            # counts once, named where first found
            found: dict[tuple[str, str], str] = {}
            texts = [("", item.record.caption or ""), *(item.record.other_captions or ())]
            for field, text in texts:
                for match in self.match(text):
                    found.setdefault(match, f" (.json {field!r})" if field else "")
            info = "; ".join(f'{cat}:"{term}"{where}' for (cat, term), where in found.items())
            out.append(Score(float(len(found)), info))
        return out

    def decide(self, record: SampleRecord) -> Drop | None:
        value = record.scores.get(self.filter_id, 0.0)
        if value >= self.config.min_matches:
            info = record.score_info.get(self.filter_id, "")
            return Drop(REASON, value, float(self.config.min_matches), f"matched {info}")
        return None
