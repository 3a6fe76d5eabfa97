"""``blocklist``: drop samples whose image is on a list of known-bad hashes.

The list file holds sha256 values of image bytes (64 hex digits) and pHash values (16
hex digits); an optional ``sha256:``/``phash:`` prefix says which, ``#`` starts a
comment. It is read when the config is validated, so workers never need the file.

Score: Hamming bits (of 64) from the sample's pHash, or its mirror's, to the nearest
listed pHash; 0 for a listed sha256. ``inf`` when the list holds no pHash (or the sample
has none) and the sha256 is not listed. Drops when the score is at most
``max_distance``. The score depends only on the sha256 and pHash signals the manifest
stores, so ``mitigate redecide`` re-scores it against the list in its config (a changed
file or ``max_distance`` takes effect without decoding).

A sample whose sha256 is listed is decided before its image is decoded (see
:meth:`Blocklist.score_before_decoding`): it is never decoded, so it has no pHash or
size, and no later run can re-decide it (re-run the pipeline to decode it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from mitigate import neardup
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

SHA256_INFO = "sha256 is on the blocklist"


class BlocklistConfig(FilterConfig):
    name: Literal["blocklist"] = "blocklist"
    # 'quality' keeps blocklist drops out of the population rebalancing reweights by
    # default (a list of known images is not a learned policy with a bias to undo).
    category: str = Field(default="quality", pattern=r"^[a-z][a-z0-9_]*$")
    path: str = Field(
        description="File of known-bad sha256 (matched before decoding) and/or pHash "
        "values, one a line; relative to the config file."
    )
    max_distance: int = Field(
        default=0, ge=0, le=16, description="Bits within which a listed pHash matches."
    )

    _entries: Any = PrivateAttr(default=None)

    @field_validator("path")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        """Resolve against the config's folder (so the effective config holds an
        absolute path and can be re-run from anywhere) and read the list: a missing or
        malformed file is an error on ``path``."""
        path = config_path(value, info)
        if not path.is_file():
            raise ValueError(f"file not found: {path}")
        _read(path)
        return str(path)

    @model_validator(mode="after")
    def _load(self) -> BlocklistConfig:
        self._entries = _read(Path(self.path))  # read once: the validator above cached it
        return self

    @property
    def entries(self) -> Any:
        """The listed hashes (:class:`mitigate.near.Blocklist`)."""
        return self._entries


def _read(path: Path) -> Any:
    stat = path.stat()
    return _read_cached(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_cached(path: str, mtime_ns: int, size: int) -> Any:
    from mitigate.near import Blocklist as Entries

    try:
        return Entries.read(Path(path))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8: {exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


@register
class Blocklist(Filter[BlocklistConfig]):
    """Score: bits to the nearest listed hash (0 for a listed sha256). Drops at or
    below ``max_distance`` with reason ``blocklist``."""

    name = "blocklist"
    config_model = BlocklistConfig
    scores_from_signals = True

    def score_before_decoding(self, record: SampleRecord) -> Score | None:
        """The score when the bytes alone decide it (a listed sha256), else ``None``."""
        if record.sha256 is not None and record.sha256 in self.config.entries.sha256:
            return Score(0.0, SHA256_INFO)
        return None

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        return [self._score(item.record) for item in items]

    def _score(self, record: SampleRecord) -> Score:
        early = self.score_before_decoding(record)
        if early is not None:
            return early
        listed = self._listed()
        if not len(listed) or record.phash is None:
            return Score(math.inf)
        best: tuple[int, int] | None = None
        for value in (record.phash, record.phash_mirror):
            if value is None:
                continue
            dist = neardup.popcount64(listed ^ np.uint64(int(value, 16)))
            i = int(dist.argmin())  # listed is sorted: ties go to the smallest value
            if best is None or (int(dist[i]), int(listed[i])) < best:
                best = (int(dist[i]), int(listed[i]))
        if best is None:
            return Score(math.inf)
        return Score(float(best[0]), f"pHash {best[0]} bits from listed {best[1]:016x}")

    def _listed(self) -> np.ndarray:
        if getattr(self, "_array", None) is None:
            values = sorted(self.config.entries.phash)
            self._array = np.array(values, dtype=np.uint64)
        return self._array

    def decide(self, record: SampleRecord) -> Drop | None:
        value = record.scores.get(self.filter_id, math.inf)
        limit = self.config.max_distance
        if value > limit:
            return None
        info = record.score_info.get(self.filter_id) or ""
        if info.startswith("pHash"):
            detail = f"{info} (max_distance {limit})"
        else:
            detail = info or f"blocklist score {value:g} <= {limit}"
        return Drop(Reason.BLOCKLIST, value, limit, detail)
