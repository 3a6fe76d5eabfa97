"""The one filter interface: a batched ``score`` and a ``decide`` on stored scores.

Scoring and deciding are separate on purpose (as in NeMo Curator): scores are stored
in the manifest, so a threshold change can be re-decided later without re-running any
model. A filter module defines a config model (validated from YAML before any Beam
object exists) and a :class:`Filter` subclass registered under a short name.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    ClassVar,
    Generic,
    Literal,
    NamedTuple,
    TypeVar,
    get_args,
    get_origin,
)

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

if TYPE_CHECKING:
    from PIL import Image

    from mitigate.records import SampleRecord


def _numeric(annotation: Any) -> bool:
    """Whether a field's type is a number (int/float, optionally in a union with None)."""
    if annotation in (int, float):
        return True
    args = get_args(annotation)
    if get_origin(annotation) is Annotated:
        return _numeric(args[0])
    return bool(args) and bool not in args and any(_numeric(a) for a in args)


def _texts_allowed(annotation: Any) -> set[str] | None:
    """The texts a field takes (its ``Literal`` strings: ``"auto"``), None for any text."""
    if annotation is str:
        return None
    if get_origin(annotation) is Literal:
        return {a for a in get_args(annotation) if isinstance(a, str)}
    out: set[str] = set()
    for arg in (
        get_args(annotation)[:1] if get_origin(annotation) is Annotated else get_args(annotation)
    ):
        allowed = _texts_allowed(arg)
        if allowed is None:
            return None
        out |= allowed
    return out


class NoBoolNumbers(BaseModel):
    """Base for config models: YAML ``true`` is not the number 1, nor ``"0.5"`` (quoted:
    text) the number 0.5. Pydantic's lax mode would turn ``threshold: true`` into 1.0
    and take the text; here either is an error naming the field."""

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None:
            _check_number(value, field.annotation, "")
        return value


def _check_number(value: Any, annotation: Any, where: str) -> None:
    """ValueError where ``value`` is a boolean or text for a number field, or (a list
    of numbers: ``C_grid``) holds one."""
    if isinstance(value, bool) and _numeric(annotation):
        raise ValueError(f"{where}must be a number, not a boolean")
    texts = _texts_allowed(annotation) if isinstance(value, str) else None
    if texts is not None and value not in texts and _numeric(annotation):
        raise ValueError(f"{where}must be a number, not text (quoted in YAML?)")
    item_type = _item_type(annotation) if isinstance(value, list | tuple) else None
    if item_type is not None and _numeric(item_type):
        for i, item in enumerate(value):
            _check_number(item, item_type, f"item {i} ")


def _item_type(annotation: Any) -> Any:
    """The item type of a ``list[X]`` field (or of such a list in a union), else None."""
    args = get_args(annotation)
    if get_origin(annotation) is list:
        return args[0] if args else None
    return next((t for t in map(_item_type, args) if t is not None), None)


class FilterConfig(NoBoolNumbers):
    """Fields every filter entry in YAML has. Subclasses add their own thresholds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Registered short name of the filter.")
    id: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Column name for this filter's score; defaults to `name`. Needed "
        "only when the same filter is configured twice.",
    )
    category: str = Field(
        default="quality",
        pattern=r"^[a-z][a-z0-9_]*$",
        description="What the filter protects against (sexual, violence, quality, ...).",
    )

    @property
    def filter_id(self) -> str:
        return self.id or self.name

    # Capabilities: what the pipeline may ask of any filter's config, declared here so
    # that no caller reads a subclass's field or private attribute by name.
    @property
    def provides_embeddings(self) -> bool:
        """Whether the filter's model outputs an image embedding."""
        return False

    @property
    def stores_embeddings(self) -> bool:
        """Whether those embeddings are written beside the manifest (``embeddings/``)."""
        return False

    @property
    def pixels_needed(self) -> int:
        """Shorter side, in pixels, of the decoded image the filter reads (0: none);
        ``decode.working_size: auto`` decodes at least this large."""
        return 0

    @property
    def matched_terms(self) -> frozenset[tuple[str, ...]]:
        """Normalised caption terms (word tuples) the filter drops on; rebalancing masks
        them from its features when ``rebalance.mask_filter_terms`` is on."""
        return frozenset()


class Score(NamedTuple):
    """A filter's output for one sample: a number, and what it found (free text)."""

    value: float
    info: str = ""


@dataclass(frozen=True)
class Drop:
    """A filter's decision to drop a sample, with everything needed to audit it."""

    reason: str  # fixed snake_case reason code
    score: float
    threshold: float
    detail: str  # human-readable, e.g. 'matched "gore" (violence)'


@dataclass(frozen=True)
class ScoringItem:
    """What a filter sees of one sample: the record (caption, size, signals) and, for
    filters that need pixels, the pipeline's single decode (RGB, reduced size)."""

    record: SampleRecord
    image: Image.Image | None


C = TypeVar("C", bound=FilterConfig)

Prediction = tuple[float, "np.ndarray | None"]
"""A model filter's output for one image: its score and, if the model gives one, its
embedding."""


@dataclass(frozen=True)
class Failure:
    """Stands in for a prediction when one image could not be scored."""

    detail: str


class Filter(ABC, Generic[C]):
    """Base class. Constructors only store the config, so filters pickle cleanly for
    distributed runners; heavy resources (models, term tables) load in :meth:`setup`,
    which the pipeline calls once per worker process."""

    name: ClassVar[str]
    config_model: ClassVar[type[FilterConfig]]
    #: Whether :meth:`score` reads only signals the manifest stores (sha256, pHash,
    #: size), so ``redecide`` may score it again instead of reusing the stored score.
    scores_from_signals: ClassVar[bool] = False

    def __init__(self, config: C) -> None:
        self.config = config

    @property
    def filter_id(self) -> str:
        return self.config.filter_id

    def setup(self) -> None:
        """Load resources. Called once per process before the first :meth:`score`."""

    def score_before_decoding(self, record: SampleRecord) -> Score | None:
        """A score known from the bytes' sha256 alone, before the image is decoded, or
        ``None``. When it drops the sample, the sample is decided without decoding."""
        return None

    @abstractmethod
    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        """Score a batch; one :class:`Score` per item, in order. Must not raise for one
        bad item: return a score that :meth:`decide` understands instead."""

    @abstractmethod
    def decide(self, record: SampleRecord) -> Drop | None:
        """Decide from stored signals only (``record.scores[self.filter_id]`` and the
        record's size fields). ``None`` means keep."""


def config_path(value: str, info: ValidationInfo) -> Path:
    """A path from a config, resolved against the config's folder (``base_dir`` in the
    validation context), so the effective config holds it absolute and re-runs anywhere.
    Where no such file is there but one is in the working folder, that one: a path given
    with ``--set`` and no ``--config`` was looked for inside the installed package (the
    default config's folder)."""
    path = (Path((info.context or {}).get("base_dir", ".")) / value).expanduser().resolve()
    here = Path(value).expanduser().resolve()
    return here if not path.exists() and here.exists() else path


def _probability(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be between 0 and 1")
    return value


Probability = Annotated[float, AfterValidator(_probability)]
"""A threshold on a probability-like score; out of range gives the message the
config errors promise (``filters[1].threshold: must be between 0 and 1, got 1.7``)."""


class ModelFilter(Filter[C]):
    """A filter backed by a model that scores images in batches.

    In the pipeline the model runs inside Beam's ``RunInference`` (batching, one model
    per process, latency metrics), fed from the pipeline's single decode: the pipeline
    calls :meth:`load_model` once per process, :meth:`preprocess` per image and
    :meth:`predict` per batch. :meth:`score` runs the same steps without Beam.
    """

    batch_size: int = 32

    @abstractmethod
    def load_model(self) -> Any:
        """Load the model (called once per process)."""

    @abstractmethod
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One decoded RGB image -> the model's input tensor for it (no batch axis)."""

    @abstractmethod
    def predict(self, model: Any, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """A stacked batch -> (scores of shape (N,), embeddings (N, D) or None)."""

    def provenance(self) -> dict[str, Any]:
        """What identifies the model (name, file, sha256), recorded in the summary."""
        return {"filter": self.filter_id, "name": self.name}

    def predict_batch(
        self, model: Any, images: Sequence[Image.Image | None]
    ) -> list[Prediction | Failure | None]:
        """One batch through :meth:`preprocess` and :meth:`predict`, one result per image
        in order: ``(score, embedding or None)``; ``None`` for an image that is absent
        (the sample is already an error); a :class:`Failure` for an image whose
        preprocessing failed (that image alone) or whose batch the model failed on
        (every image of the batch). The pipeline's RunInference handler and
        :meth:`score` both batch through here."""
        out: list[Prediction | Failure | None] = [None] * len(images)
        tensors, ok = [], []
        for i, image in enumerate(images):
            if image is None:
                continue
            try:
                tensors.append(self.preprocess(image))
                ok.append(i)
            except Exception as exc:  # one item's failure stays with that item
                out[i] = Failure(f"preprocessing: {exc!r}")
        if ok:
            try:
                scores, embeddings = self.predict(model, np.stack(tensors))
            except Exception as exc:  # the model failed on the batch: every item in it
                failure = Failure(f"model failed on this sample's batch: {exc!r}")
                for i in ok:
                    out[i] = failure
            else:
                for n, i in enumerate(ok):
                    score = float(scores[n])
                    if not math.isfinite(score):  # NaN >= threshold is False: it was kept
                        # (fp16 overflow, a broken export; helper-36): not a score at all
                        out[i] = Failure(f"the model gave {score}, not a finite score")
                        continue
                    out[i] = (score, None if embeddings is None else embeddings[n])
        return out

    def score(self, items: Sequence[ScoringItem]) -> list[Score]:
        """Scores without Beam (tests, scripts). Unlike the pipeline, which records an
        ``inference_error`` per failed item, this raises on the first failure: a score
        cannot stand for "not scored" (a NaN would be kept)."""
        model = getattr(self, "_model", None)
        if model is None:
            model = self._model = self.load_model()
        out: list[Score] = []
        for start in range(0, len(items), self.batch_size):
            part = items[start : start + self.batch_size]
            for item, result in zip(
                part, self.predict_batch(model, [item.image for item in part]), strict=True
            ):
                if result is None or isinstance(result, Failure):
                    what = "no image" if result is None else result.detail
                    raise ValueError(f"{self.filter_id}: {item.record.key}: {what}")
                out.append(Score(result[0]))
        return out
