"""Train a filter from labels: a linear probe on a finished run's stored embeddings.

DALL·E 2's filters for graphic violence and sexual content were trained from a few
hundred labelled examples per category, improved by active learning and run at a
conservative threshold. This module is that step: ``mitigate train`` reads the
embeddings an ``onnx_image`` filter stored (``embeddings/<filter>/part-N.npy``, rows
aligned with ``manifest/part-N.parquet``) and a ``key,label`` CSV, and writes

* ``NAME.onnx``: the head alone (``embedding`` ``(N, D)`` float -> ``probability``
  ``(N, 1)``: MatMul, Add, Sigmoid), checked with onnxruntime against scikit-learn;
* ``NAME.yaml``: a ``linear_probe`` filter entry for the config, threshold included;
* ``report.json`` / ``report.md``: k-fold out-of-fold ROC AUC, average precision, the
  ROC and precision-recall curves, the threshold for the target recall with its
  interval (:func:`mitigate.calibrate.calibrate`), what it would drop of the run;
* ``review/selection.csv`` / ``review/contact_sheet.html``: the labelled samples the
  out-of-fold models get wrong (label errors or hard cases) and their nearest
  unlabelled neighbours in embedding space, to label next.

The model: features standardised with the mean and spread of every embedding of the
run (label-free, so no label leaks into the folds), scikit-learn's
``LogisticRegression`` with ``class_weight="balanced"``, and the inverse regularisation
``C`` chosen from a grid by the class-balanced log loss of stratified k-fold
out-of-fold predictions (what ``LogisticRegressionCV(scoring="neg_log_loss")`` does;
done here so the out-of-fold predictions of the chosen ``C`` are kept: they are the
report's curves, the threshold's input and the mistakes). Along the grid each fold's
fit starts from the previous ``C``'s solution (warm start). The final head is refit on
every label at the chosen ``C`` and the standardisation is folded into its weights.

Why the threshold comes from out-of-fold scores: the final head has seen every label,
so its scores on them are optimistic (positives score near 1) and a threshold chosen
on them would be too high for new data. Out-of-fold scores come from models that did
not see the sample, like the run's unlabelled samples.

Bad input stops before anything is written, with one line naming the problem
(:class:`TrainError`): labels for keys the run does not have, labelled samples without
an embedding, fewer than :data:`MIN_PER_CLASS` positives or negatives, missing or
misaligned embedding files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from mitigate import calibrate, review, select
from mitigate.runtable import ArrowKeys, PartedEmbeddings, RowSubset, RunTable
from mitigate.train_output import (
    finite,
    markdown,
    model_sha256,
    output_problem,
    snippet,
    write_review,
)

log = logging.getLogger(__name__)
Opener = Callable[[str], IO[bytes]]

MIN_PER_CLASS = 10  #: fewer labelled positives (or negatives) than this is an error
DEFAULT_CS = tuple(float(c) for c in np.logspace(-4, 2, 7))  #: inverse regularisation grid
DEFAULT_FOLDS = 5
MAX_CV_LABELS = 20_000  #: labels cross-validated at most (a stratified sample beyond)
ONNX_TOLERANCE = 1e-4  #: largest |onnxruntime - scikit-learn| probability accepted
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_CURVE_POINTS = 200


class TrainError(ValueError):
    """Bad input to ``mitigate train``: one line naming the problem; nothing written."""


@dataclass(frozen=True)
class RunEmbeddings:
    """A finished run's keys and one filter's embeddings, row for row (NaN rows: no
    embedding, e.g. samples that failed to decode)."""

    keys: ArrowKeys  # a str made when read (no Python object a row)
    embeddings: PartedEmbeddings  # (N, D), rows read from the parts' files when asked for
    has_embedding: np.ndarray  # (N,) bool


def load_run_embeddings(out_dir: str | Path, filter_id: str) -> RunEmbeddings:
    """Keys of every manifest row and ``filter_id``'s embeddings, checked for alignment.

    Neither is held a Python object or an embedding a row: the keys are one Arrow array,
    the embeddings are read from the parts' files a chunk of rows at a time
    (:mod:`mitigate.runtable`; a run of 160,000 rows took 1.4 GB here before)."""
    import pyarrow.parquet as pq

    try:
        parts = review.manifest_parts(out_dir)
    except FileNotFoundError as exc:
        raise TrainError(f"--from: {exc}") from None
    width = None
    for part in parts:
        rows = pq.read_metadata(part).num_rows
        path = Path(out_dir, "embeddings", filter_id, part.name.replace(".parquet", ".npy"))
        if not path.is_file():
            raise TrainError(
                f"--embeddings: {path} is missing (the run stored no {filter_id!r} embeddings "
                f"for {part.name}; set store_embeddings: true on that filter and re-run)"
            )
        try:
            matrix = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise TrainError(f"--embeddings: {path} is not a readable .npy file: {exc}") from None
        if matrix.ndim != 2 or matrix.shape[0] != rows:
            raise TrainError(
                f"--embeddings: {path} has shape {matrix.shape} but {part.name} has {rows} "
                "rows: embeddings and manifest are misaligned"
            )
        if rows and matrix.shape[1] == 0 and width is None:
            pass  # a part whose samples all failed has no width; others decide it
        elif rows and width is not None and matrix.shape[1] not in (0, width):
            raise TrainError(
                f"--embeddings: {path} has {matrix.shape[1]}-d rows, earlier parts {width}-d"
            )
        elif rows and matrix.shape[1]:
            width = matrix.shape[1]
        del matrix
    if width is None:
        raise TrainError(f"--embeddings: the run holds no {filter_id!r} embedding at all")
    table = RunTable(out_dir, ["key"])
    embeddings = PartedEmbeddings(table, filter_id)
    has = np.empty(len(table), dtype=bool)
    for s in range(0, len(table), 65536):
        has[s : s + 65536] = np.isfinite(embeddings[s : s + 65536]).all(axis=1)
    return RunEmbeddings(table.keys(), embeddings, has)


def labelled_rows(
    run: RunEmbeddings, labels: dict[str, bool], filter_id: str
) -> tuple[np.ndarray, np.ndarray]:
    """Row index and label of every labelled sample (two normal forms of one key, one
    label); TrainError when a key is not in the run or its sample has no embedding, or
    when there are too few of either class."""
    if not labels:
        raise TrainError("--labels: no labelled rows")
    index: dict[str, int] = {}
    for i in run.keys.rows_of(review.all_key_forms(labels)).tolist():  # theirs only
        key = run.keys[i]
        # a key repeated in the input: the occurrence with an embedding stands
        if key not in index or (run.has_embedding[i] and not run.has_embedding[index[key]]):
            index[key] = i
    try:  # an NFD label of an NFC key
        at, missing = review.resolve_labels(labels, index)
    except ValueError as exc:
        raise TrainError(f"--labels: {exc}") from None
    labels = {k: labels[k] for k in at}  # one label a sample
    if missing:
        raise TrainError(
            f"--labels: {len(missing)} labelled key(s) are not in the run "
            f"(e.g. {', '.join(map(repr, missing[:3]))}); label samples of this run"
        )
    rows = np.array([index[at[k]] for k in labels], dtype=np.int64)
    empty = [k for k, r in zip(labels, rows, strict=True) if not run.has_embedding[r]]
    if empty:
        raise TrainError(
            f"--labels: {len(empty)} labelled sample(s) have no {filter_id!r} embedding "
            f"(they failed in the run, e.g. {', '.join(map(repr, empty[:3]))}); drop them"
        )
    n_pos = sum(labels.values())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        only = "positive" if n_neg == 0 else "negative"
        raise TrainError(f"--labels: every label is {only}; a probe needs both classes")
    if min(n_pos, n_neg) < MIN_PER_CLASS:
        raise TrainError(
            f"--labels: {n_pos} positive and {n_neg} negative labels; at least "
            f"{MIN_PER_CLASS} of each are needed"
        )
    return rows, np.array(list(labels.values()), dtype=bool)


@dataclass
class ProbeFit:
    """A fitted probe on raw embeddings: ``p = sigmoid(x @ weights + bias)``."""

    weights: np.ndarray  # (D,) float64
    bias: float
    C: float
    cs: list[float]
    cv_log_loss: list[float]  # class-balanced, pooled over folds, one per C
    oof: np.ndarray  # out-of-fold probabilities of the chosen C, one per row of cv_rows
    cv_rows: np.ndarray  # labels that were cross-validated (all, up to max_cv_labels)
    folds: int
    n_iter: int  # iterations of the final fit
    sklearn_model: Any  # the final LogisticRegression (on standardised features)
    mean: np.ndarray
    scale: np.ndarray

    def predict(self, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """Probabilities for the rows of ``x`` (float64 math, ``chunk`` rows at a time)."""
        out = np.empty(x.shape[0])
        for s in range(0, x.shape[0], chunk):
            logit = np.asarray(x[s : s + chunk], dtype=np.float64) @ self.weights + self.bias
            out[s : s + chunk] = 1.0 / (1.0 + np.exp(-logit))
        return out


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    return np.where(y, len(y) / (2 * n_pos), len(y) / (2 * n_neg))


def _log_loss(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-(w * np.where(y, np.log(p), np.log1p(-p))).sum() / w.sum())


def standardiser(x: np.ndarray, chunk: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and spread of ``x`` (float64, computed in chunks); a constant
    feature gets spread 1 so it stays 0 after scaling."""
    n = x.shape[0]
    total = np.zeros(x.shape[1])
    for s in range(0, n, chunk):
        total += _rows_sum(x, s, min(s + chunk, n), lambda b: b.astype(np.float64))
    mean = total / n
    sq = np.zeros(x.shape[1])
    for s in range(0, n, chunk):
        sq += _rows_sum(x, s, min(s + chunk, n), lambda b: (b - mean) ** 2)
    scale = np.sqrt(sq / n)
    scale[scale < 1e-6] = 1.0
    return mean, scale


def _rows_sum(x: Any, start: int, stop: int, f: Callable[[np.ndarray], np.ndarray]) -> Any:
    """``f(x[start:stop]).sum(axis=0)`` bit for bit (numpy sums axis 0 row after row),
    8,192 rows at a time: each block's sum starts from the running one, so the float64
    temporaries are a block's (64 MB at 1,024 wide), not a 65,536-row chunk's."""
    acc = None
    for b in range(start, stop, 8192):
        part = f(np.asarray(x[b : min(b + 8192, stop)]))
        acc = part.sum(axis=0) if acc is None else np.concatenate([acc[None], part]).sum(axis=0)
    return acc


def fit_probe(
    x: np.ndarray,
    y: np.ndarray,
    *,
    folds: int = DEFAULT_FOLDS,
    cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
    mean: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    max_cv_labels: int = MAX_CV_LABELS,
) -> ProbeFit:
    """Class-balanced logistic regression with ``C`` chosen by out-of-fold log loss.

    Args:
        x: ``(n, D)`` labelled embeddings (any float dtype; finite).
        y: ``(n,)`` labels, True = positive.
        folds: Stratified folds (shuffled with ``seed``), at least 2.
        cs: Inverse regularisation strengths to try (ascending is fastest: warm starts).
        mean, scale: Standardisation; default: that of ``x`` itself.
        max_cv_labels: With more labels than this, ``C`` is chosen and the out-of-fold
            scores are computed on a stratified sample of this many (seeded); the final
            head is still fit on every label. Bounds the cost of the ``folds x len(cs)``
            fits, where extra labels change the chosen ``C`` little (n >> D).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(y, dtype=bool)
    if folds < 2:
        raise TrainError(f"--folds: at least 2, got {folds}")
    if min(int(y.sum()), int((~y).sum())) < folds:
        raise TrainError(f"--folds: {folds} folds need at least {folds} labels of each class")
    if mean is None or scale is None:
        mean, scale = standardiser(x)
    z = (np.asarray(x, dtype=np.float32) - mean.astype(np.float32)) / scale.astype(np.float32)
    cs = sorted(float(c) for c in cs)
    cv_rows = np.arange(len(y))
    if len(y) > max_cv_labels:
        from sklearn.model_selection import train_test_split

        cv_rows, _ = train_test_split(
            cv_rows, train_size=max_cv_labels, stratify=y, random_state=seed
        )
        cv_rows = np.sort(cv_rows)
        log.info("cross-validating %d of %d labels (stratified sample)", len(cv_rows), len(y))
    zc, yc = z[cv_rows], y[cv_rows]
    weights = _balanced_weights(yc)
    oof = np.zeros((len(cs), len(yc)))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_idx, test_idx in splitter.split(zc, yc):
        clf = LogisticRegression(class_weight="balanced", max_iter=1000, warm_start=True)
        for j, c in enumerate(cs):
            clf.set_params(C=c)
            clf.fit(zc[train_idx], yc[train_idx])
            oof[j, test_idx] = clf.predict_proba(zc[test_idx])[:, 1]
    losses = [_log_loss(yc, oof[j], weights) for j in range(len(cs))]
    best = int(np.argmin(losses))  # first minimum: the strongest regularisation on ties
    final = LogisticRegression(C=cs[best], class_weight="balanced", max_iter=1000).fit(z, y)
    coef = final.coef_[0].astype(np.float64) / scale
    bias = float(final.intercept_[0]) - float(mean @ coef)
    return ProbeFit(
        weights=coef,
        bias=bias,
        C=cs[best],
        cs=cs,
        cv_log_loss=losses,
        oof=oof[best],
        cv_rows=cv_rows,
        folds=folds,
        n_iter=int(np.max(final.n_iter_)),
        sklearn_model=final,
        mean=mean,
        scale=scale,
    )


def head_model(fit: ProbeFit, name: str, metadata: dict[str, str]) -> Any:
    """The probe as an ONNX model: ``embedding`` (N, D) -> MatMul -> Add -> Sigmoid ->
    ``probability`` (N, 1); float32 weights; ``metadata`` as metadata_props."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dim = fit.weights.shape[0]
    w = numpy_helper.from_array(fit.weights.astype(np.float32).reshape(dim, 1), "weights")
    b = numpy_helper.from_array(np.array([fit.bias], dtype=np.float32), "bias")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["embedding", "weights"], ["logit_raw"]),
            helper.make_node("Add", ["logit_raw", "bias"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["probability"]),
        ],
        f"linear_probe_{name}",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 1])],
        initializer=[w, b],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 13)],
        producer_name="mitigate train",
        doc_string=f"Linear probe {name!r}: P(category) from a backbone embedding.",
    )
    model.ir_version = 8  # readable by every onnxruntime this project supports
    for key, value in sorted(metadata.items()):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    return model


def check_export(path: Path, fit: ProbeFit, x: np.ndarray) -> float:
    """Largest |onnxruntime - scikit-learn predict_proba| on ``x``; RuntimeError above
    :data:`ONNX_TOLERANCE` (a head that would not score as it was trained)."""
    from mitigate.filters.probe import open_head

    session = open_head(str(path))
    (got,) = session.run(None, {"embedding": np.asarray(x, dtype=np.float32)})
    z = (np.asarray(x, dtype=np.float64) - fit.mean) / fit.scale
    want = fit.sklearn_model.predict_proba(z)[:, 1]
    diff = float(np.max(np.abs(np.asarray(got, dtype=np.float64).reshape(-1) - want)))
    if diff > ONNX_TOLERANCE:
        raise RuntimeError(f"exported head differs from scikit-learn by {diff:.2e}")
    return diff


def _curve(xs: np.ndarray, ys: np.ndarray, ts: np.ndarray) -> list[list[float]]:
    """At most _CURVE_POINTS evenly spaced points of a curve, ends included."""
    idx = np.unique(np.linspace(0, len(xs) - 1, min(len(xs), _CURVE_POINTS)).round().astype(int))
    return [[round(float(xs[i]), 6), round(float(ys[i]), 6), float(ts[i])] for i in idx]


def evaluate(y: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """ROC AUC, average precision and both curves (``[x, y, threshold]`` points)."""
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    fpr, tpr, roc_t = roc_curve(y, scores)
    precision, recall, pr_t = precision_recall_curve(y, scores)
    return {
        "roc_auc": float(roc_auc_score(y, scores)),
        "average_precision": float(average_precision_score(y, scores)),
        "roc_curve": {"columns": ["fpr", "tpr", "threshold"], "points": _curve(fpr, tpr, roc_t)},
        "pr_curve": {
            "columns": ["recall", "precision", "threshold"],
            # the last point (recall 0, precision 1) has no threshold
            "points": _curve(recall[:-1], precision[:-1], pr_t),
        },
    }


@dataclass
class TrainResult:
    output: Path
    report: dict[str, Any]


#: What a probe's folder holds besides its NAME.onnx and NAME.yaml.
def train(
    from_dir: str | Path,
    filter_id: str,
    labels_path: str | Path,
    name: str,
    output: str | Path,
    *,
    category: str | None = None,
    target_recall: float = 0.95,
    confidence: float = 0.95,
    folds: int = DEFAULT_FOLDS,
    cs: Sequence[float] = DEFAULT_CS,
    n_review: int = 50,
    overwrite: bool = False,
    seed: int = 0,
    opener: Opener | None = None,
) -> TrainResult:
    """Fit, export and report a linear probe (see the module docstring). Every input is
    checked before anything is written; the output folder appears complete or not at
    all (it is assembled under a temporary name and renamed)."""
    started = time.perf_counter()
    output = Path(output).resolve()
    category = category or name
    for label, value in (("--name", name), ("--category", category)):
        if not _NAME.fullmatch(value):
            raise TrainError(f"{label}: must match [a-z][a-z0-9_]*, got {value!r}")
    if not 0 < target_recall <= 1:
        raise TrainError(f"--target-recall: must be in (0, 1], got {target_recall}")
    if problem := output_problem(output, overwrite):
        raise TrainError(f"--output: {output} {problem}")
    try:
        entry = review.run_filter_config(from_dir, filter_id)
    except KeyError as exc:
        raise TrainError(f"--embeddings: {exc.args[0]}") from None
    except FileNotFoundError:
        raise TrainError(f"--from: {from_dir} holds no finished run (no config.yaml)") from None
    if name == filter_id:
        raise TrainError(f"--name: {name!r} is the backbone's id; name the new filter")
    taken = [f.get("id") or f.get("name") for f in review.run_config(from_dir)["filters"]]
    if name in taken:  # its snippet could never be added: "id ... used twice"
        raise TrainError(
            f"--name: {name!r} is the id of a filter of that run ({', '.join(taken)}); "
            "name the new filter otherwise"
        )
    try:
        labels = review.read_labels(labels_path)
    except FileNotFoundError:
        raise TrainError(f"--labels: {labels_path} not found") from None
    except ValueError as exc:
        raise TrainError(f"--labels: {exc}") from None
    run = load_run_embeddings(from_dir, filter_id)
    rows, y = labelled_rows(run, labels, filter_id)
    x = run.embeddings[rows].astype(np.float32)

    # the rows with an embedding, read a chunk at a time by the two passes below
    present = RowSubset(run.embeddings, np.flatnonzero(run.has_embedding))
    mean, scale = standardiser(present)
    fit = fit_probe(x, y, folds=folds, cs=cs, seed=seed, mean=mean, scale=scale)
    all_scores = np.full(len(run.keys), np.nan)
    all_scores[run.has_embedding] = fit.predict(present)
    del present
    y_cv, cv_keys = y[fit.cv_rows], rows[fit.cv_rows]
    cal = calibrate.calibrate(
        fit.oof, y_cv, all_scores[run.has_embedding], target_recall, confidence=confidence
    )
    metrics = evaluate(y_cv, fit.oof)

    # what the out-of-fold models get wrong at the chosen threshold, worst first
    wrong = np.flatnonzero((fit.oof >= cal.threshold) != y_cv)
    wrong = wrong[np.argsort(-np.abs(fit.oof[wrong] - y_cv[wrong]), kind="stable")]
    mistakes = [
        {
            "key": run.keys[cv_keys[i]],
            "label": int(y_cv[i]),
            "oof_score": float(fit.oof[i]),
            "kind": "missed positive" if y_cv[i] else "false positive",
        }
        for i in wrong
    ]
    candidates = np.where(run.has_embedding, 0.0, np.nan)
    candidates[rows] = np.nan  # labelled samples are not candidates
    seeds = [m["key"] for m in mistakes[:n_review]]
    found = select.select_neighbours(
        run.keys,
        run.embeddings,
        seeds,
        candidates,
        1.0,
        n_review,
        positive_rows=run.keys.rows_of(seeds),
    )
    neighbours = [
        {
            "key": run.keys[i],
            "score": float(all_scores[i]),
            "near": run.keys[j],
            "cosine": round(float(sim), 6),
        }
        for i, j, sim in found
    ]

    report: dict[str, Any] = {
        "name": name,
        "category": category,
        "run": str(Path(from_dir).resolve()),
        "backbone": filter_id,
        "backbone_model_sha256": model_sha256(from_dir, filter_id),
        "labels": str(Path(labels_path).resolve()),
        "embedding_dim": int(x.shape[1]),
        "n_run": len(run.keys),
        "n_run_with_embedding": int(run.has_embedding.sum()),
        "n_labelled": len(y),
        "n_positive": int(y.sum()),
        "n_negative": int((~y).sum()),
        "n_cross_validated": len(fit.cv_rows),
        "model": {
            "kind": "LogisticRegression(class_weight='balanced'), standardised features",
            "C": fit.C,
            "C_grid": fit.cs,
            "cv_log_loss": fit.cv_log_loss,
            "folds": folds,
            "seed": seed,
            "final_fit_iterations": fit.n_iter,
        },
        "out_of_fold": metrics,
        "threshold": {
            **{
                k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(cal).items()
            },
            "chosen_on": "out-of-fold scores of the labelled samples",
        },
        "mistakes": mistakes,
        "neighbours": neighbours,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    old: Path | None = None
    try:
        onnx_path = work / f"{name}.onnx"
        import onnx

        metadata = {
            "mitigate.backbone": filter_id,
            "mitigate.category": category,
            "mitigate.C": repr(fit.C),
            "mitigate.threshold": repr(cal.threshold),
        }
        onnx.save(head_model(fit, name, metadata), str(onnx_path))
        report["onnx_max_abs_diff"] = check_export(onnx_path, fit, x)
        report["seconds"] = round(time.perf_counter() - started, 3)
        final_onnx = output / onnx_path.name
        (work / f"{name}.yaml").write_text(
            snippet(name, category, filter_id, final_onnx, cal, metrics), encoding="utf-8"
        )
        (work / "report.json").write_text(
            json.dumps(finite(report), indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        (work / "report.md").write_text(markdown(report), encoding="utf-8")
        write_review(work / "review", from_dir, run, report, entry, opener, n_review)
        # the old probe moved aside first, deleted once the new one is in place: a kill
        # between the two steps left neither (helper-42)
        old = work.with_name(work.name + ".old") if output.exists() else None
        if old is not None:
            output.rename(old)
        work.rename(output)
        if old is not None:
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        if old is not None and old.exists() and not output.exists():
            old.rename(output)  # the new one failed to take its place: the old goes back
        raise
    log.info(
        "probe %s on %s: out-of-fold ROC AUC %.4f, threshold %r -> %s",
        name,
        filter_id,
        metrics["roc_auc"],
        cal.threshold,
        output,
    )
    return TrainResult(output, report)
